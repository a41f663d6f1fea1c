"""The LLM behind summaries, keywords and the bias-correcting LLM, from any source.

Three kinds, one interface (`generate(prompts, max_new_tokens=..., temperature=...)`):

- `hf`: a Hugging Face causal LM by hub id or local folder
  (`AutoModelForCausalLM` + `AutoTokenizer`).
- `gguf`: a GGUF file read by transformers (`gguf_file=`), de-quantized into
  a regular torch model. `spec.path` is the `.gguf` file, or its folder with
  the file name in `spec.name`.
- `openai`: an OpenAI-compatible `/v1/chat/completions` endpoint (vLLM,
  Ollama, llama.cpp server, ...), `spec.url` + `spec.name` as the model.

Each prompt is one user message, wrapped with the tokenizer's chat template
when it has one (endpoints apply their own). Local kinds generate in batches
with LEFT padding — so every prompt's last token sits at the same position and
the first new token follows it directly — greedily unless a temperature is
given, and seeded, so a prompt gives the same answer alone and in a batch.
They expose `.model` and `.tokenizer` for the bias-correcting LLM (P-Tuning v2
prefixes trained on the same base model).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx
import torch

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.io import output_folder
from pmg.models.common import Source, as_device, loading, require, require_architecture, resolve_source
from pmg.models.device import resolve_dtype
from pmg.progress import progress

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


@runtime_checkable
class LLM(Protocol):
    """What every LLM kind offers.

    Attributes:
        model_id: a stable name of the model (kind, path or URL, file or model
            name) for content-addressed caches.
        context_length: the context window in tokens, or None where unknown.
    """

    model_id: str
    context_length: int | None

    def generate(self, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        """Answer each prompt (one user message each); answers in prompt order."""
        ...


# --------------------------------------------------------------------------- local


class StopRule(Protocol):
    """Says, from the answer so far, that an answer is complete (generation of it stops).

    Attributes:
        key: a stable name of the rule; content-addressed answer caches put it
            in the key, since stopping early shortens the stored answer.
    """

    key: str

    def __call__(self, answer: str) -> bool:
        """True when `answer` (decoded, special tokens removed) needs no more tokens."""
        ...


@dataclass(frozen=True)
class PrefixGroup:
    """Prompts that share their first `prefix` tokens; that prefix is computed once for all of them.

    Attributes:
        prefix: the number of leading tokens the rows share (at least the
            call's common prefix; every row keeps at least one token after it).
        rows: indices of the prompts, shortest first.
    """

    prefix: int
    rows: tuple[int, ...]


@dataclass(frozen=True)
class BatchPlan:
    """How `LocalLLM.generate` runs one call's prompts.

    Attributes:
        common: leading tokens every prompt of the call shares (the chat
            template's system turn, the instruction's start): run once, with
            batch 1, and reused by every batch.
        batches: forward batches, each a tuple of `PrefixGroup`s holding at
            most `batch_size` rows in all; batches of similar lengths, so
            little padding is computed.
    """

    common: int
    batches: tuple[tuple[PrefixGroup, ...], ...]

    def order(self) -> list[int]:
        """The prompt indices in the order they run."""
        return [row for batch in self.batches for group in batch for row in group.rows]


def _shared_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token id lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def plan_batches(ids: Sequence[Sequence[int]], *, batch_size: int, min_shared: int = 16) -> BatchPlan:
    """Group prompts by shared prefix and pack them into batches of similar length.

    Sorting the token id lists puts prompts with a long common start next to
    each other (in PMG: the attribute prompts of one user share the chat
    template and the user's whole history, and differ only in the final
    instruction). Neighbours that share at least `min_shared` tokens more
    than the whole call does form a `PrefixGroup`, whose shared part is
    computed once. Groups are then ordered by their longest row and packed,
    whole where they fit, into batches of at most `batch_size` rows.

    Args:
        ids: token ids of each (templated) prompt; none empty.
        batch_size: the most rows (prompts) per forward batch.
        min_shared: the fewest extra shared tokens worth a group stage.

    Returns:
        The plan; every prompt index appears exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not ids:
        return BatchPlan(0, ())
    if any(len(row) == 0 for row in ids):
        raise ValueError("a prompt encodes to no tokens")
    # Every row keeps at least one token of its own: its last position gives the first logits.
    common = min(len(row) for row in ids) - 1
    for row in ids[1:]:
        common = min(common, _shared_length(ids[0], row))
    order = sorted(range(len(ids)), key=lambda i: list(ids[i]))
    groups: list[tuple[int, list[int]]] = []
    rows, prefix = [order[0]], len(ids[order[0]]) - 1
    for previous, index in zip(order, order[1:]):
        shared = min(prefix, _shared_length(ids[previous], ids[index]), len(ids[index]) - 1)
        if shared - common >= min_shared:
            rows.append(index)
            prefix = shared
        else:
            groups.append((prefix, rows))
            rows, prefix = [index], len(ids[index]) - 1
    groups.append((prefix, rows))
    pieces: list[PrefixGroup] = []
    for prefix, members in groups:
        members = sorted(members, key=lambda i: (len(ids[i]), i))
        shared = prefix if len(members) > 1 else common
        for start in range(0, len(members), batch_size):
            pieces.append(PrefixGroup(shared, tuple(members[start : start + batch_size])))
    pieces.sort(key=lambda g: (max(len(ids[i]) for i in g.rows), g.prefix, g.rows[0]))
    batches: list[tuple[PrefixGroup, ...]] = []
    current: list[PrefixGroup] = []
    size = 0
    for group in pieces:
        if current and size + len(group.rows) > batch_size:
            batches.append(tuple(current))
            current, size = [], 0
        current.append(group)
        size += len(group.rows)
    batches.append(tuple(current))
    return BatchPlan(common, tuple(batches))


def _left_pad(
    rows: Sequence[Sequence[int]], pad: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), each (B, T): rows right-aligned (left padding), mask 1 on real tokens."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


class LocalLLM:
    """A causal LM and its tokenizer held in this process.

    Generation is our own loop over the model's forward with a KV cache, not
    `model.generate`, because it shares work `generate` cannot:

    1. the tokens every prompt of a call starts with (the chat template's
       system turn) run once, at batch 1;
    2. prompts that share a longer start (PMG: one user's attribute prompts
       share the whole behaviour history) run it once per group
       (`plan_batches`), and the group's cache is copied to its rows;
    3. each row's own remainder runs left-padded, rows of similar length
       batched together;
    4. decoding drops each row from the batch as soon as it is finished — by
       EOS, by its budget, or by a `StopRule` that sees the answer is
       complete — so short answers do not wait for long ones.

    Padding sits between the segments (masked out, positions counted over
    real tokens only), so a prompt's answer does not depend on what it is
    batched with, up to floating-point summation order.

    Args:
        model: a transformers causal LM, already on its device.
        tokenizer: its tokenizer; a pad token is added (the EOS token) when missing.
        model_id: stable name for caches.
        context_length: the context window; None reads the model config.
        seed: seed of sampling (temperature > 0); each prompt samples from its
            own generator seeded by `seed` and the prompt text.
        batch_size: rows (prompts) per forward batch.
        min_shared_tokens: the fewest tokens (beyond the call's common start)
            prompts must share to have that part computed once for them.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        model_id: str,
        context_length: int | None = None,
        seed: int = 0,
        batch_size: int = 8,
        min_shared_tokens: int = 16,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.seed = seed
        self.batch_size = batch_size
        self.min_shared_tokens = min_shared_tokens
        # Left padding for callers that batch the tokenizer themselves (the soft model).
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ModelError(f"{model_id}: tokenizer has neither a pad nor an EOS token to pad with")
            tokenizer.pad_token = tokenizer.eos_token
        if (
            getattr(model, "generation_config", None) is not None
            and model.generation_config.pad_token_id is None
        ):
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        config_length = getattr(model.config, "max_position_embeddings", None)
        self.context_length: int | None = context_length or config_length
        # Work done so far (for benchmarks and monitoring): prompt tokens asked for and
        # actually computed (shared prefixes once), tokens generated, seconds per phase.
        self.stats = {
            "prompts": 0,
            "prompt_tokens": 0,
            "computed_prompt_tokens": 0,
            "new_tokens": 0,
            "prefill_seconds": 0.0,
            "decode_seconds": 0.0,
        }

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in."""
        return next(self.model.parameters()).dtype

    def format_prompt(self, prompt: str) -> str:
        """Wrap one user message with the chat template, when the tokenizer has one."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt as the model reads it (chat template included)."""
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        # A chat template writes its own BOS where the model wants one.
        texts = [self.format_prompt(p) for p in prompts]
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=not templated)["input_ids"]]

    def batch_order(self, prompts: Sequence[str]) -> list[int]:
        """The order in which `generate` would run `prompts` (shared prefixes together,
        similar lengths together), for callers that split a long list into calls."""
        return plan_batches(
            self.encode(prompts), batch_size=self.batch_size, min_shared=self.min_shared_tokens
        ).order()

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: StopRule | Sequence[StopRule | None] | None = None,
    ) -> list[str]:
        """Answer each prompt; greedy at temperature 0, seeded sampling above.

        Args:
            prompts: user messages, any number (batched internally).
            max_new_tokens: the most tokens generated per answer.
            temperature: 0 for greedy decoding.
            stop: a rule for every prompt, or one per prompt (None: none),
                that ends an answer before its budget once it is complete.

        Returns:
            One answer per prompt, special tokens removed, whitespace stripped.

        Raises:
            ModelError: a prompt plus `max_new_tokens` exceeds the context.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        prompts = list(prompts)
        stops = _per_prompt(stop, len(prompts))
        ids = self.encode(prompts)
        if self.context_length is not None:
            for i, row in enumerate(ids):
                if len(row) + max_new_tokens > self.context_length:
                    raise ModelError(
                        f"{self.model_id}: prompt {i} has {len(row)} tokens; with max_new_tokens="
                        f"{max_new_tokens} it exceeds the context length {self.context_length}"
                    )
        plan = plan_batches(ids, batch_size=self.batch_size, min_shared=self.min_shared_tokens)
        answers: list[str] = [""] * len(prompts)
        samplers = (
            [torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(p.encode())) for p in prompts]
            if temperature > 0
            else None
        )
        with torch.inference_mode():
            common = self._prefill(ids[0][: plan.common]) if plan.common else None
            for batch in progress(plan.batches, desc=f"llm {len(prompts)} prompts, batches"):
                produced = self._generate_batch(
                    ids, batch, common, plan.common, max_new_tokens, temperature, stops, samplers
                )
                for row, tokens in produced.items():
                    answers[row] = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        self.stats["prompts"] += len(prompts)
        self.stats["prompt_tokens"] += sum(len(row) for row in ids)
        return answers

    # ----------------------------------------------------------- internals

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _forward(
        self,
        tokens: torch.Tensor,
        segment_mask: torch.Tensor,
        past_mask: torch.Tensor,
        positions: torch.Tensor,
        cache,
        *,
        logits: bool,
    ) -> torch.Tensor | None:
        """Run one left-padded segment on top of `cache` (updated in place).

        Args:
            tokens, segment_mask: (B, S) the segment's ids and mask.
            past_mask: (B, P) the mask of what `cache` holds.
            positions: (B,) real tokens each row has read so far.
            logits: return the last position's logits (B, V); else only fill the cache.
        """
        attention_mask = torch.cat([past_mask, segment_mask], dim=1)  # (B, P + S)
        position_ids = (positions[:, None] + segment_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, S)
        kwargs = dict(
            input_ids=tokens,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        )
        prefill = tokens.shape[1] > 1
        if prefill:
            self.stats["computed_prompt_tokens"] += int(segment_mask.sum())
        started = time.perf_counter()
        if logits:
            out = self.model(**kwargs, logits_to_keep=1).logits[:, -1]  # (B, V)
        else:
            self.model.base_model(**kwargs)
            out = None
        self.stats["prefill_seconds" if prefill else "decode_seconds"] += time.perf_counter() - started
        return out

    def _prefill(self, tokens: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values, per layer (1, kv_heads, T, head_dim), of the call's common start."""
        cache = self._new_cache()
        ids = torch.tensor([list(tokens)], device=self.device)
        start = torch.zeros(1, dtype=torch.long, device=self.device)
        self._forward(ids, torch.ones_like(ids), ids[:, :0], start, cache, logits=False)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _generate_batch(
        self,
        ids: list[list[int]],
        groups: Sequence[PrefixGroup],
        common: list[tuple[torch.Tensor, torch.Tensor]] | None,
        common_length: int,
        max_new_tokens: int,
        temperature: float,
        stops: list[StopRule | None],
        samplers: list[torch.Generator] | None,
    ) -> dict[int, list[int]]:
        device = self.device
        pad = self.tokenizer.pad_token_id
        cache = self._new_cache()
        n_groups = len(groups)
        if common is not None:
            for layer, (keys, values) in enumerate(common):
                cache.update(keys.expand(n_groups, -1, -1, -1), values.expand(n_groups, -1, -1, -1), layer)
        mask = torch.ones(n_groups, common_length, dtype=torch.long, device=device)  # (G, C)
        positions = torch.full((n_groups,), common_length, dtype=torch.long, device=device)
        # Each group's shared part, beyond the call's common start, once per group.
        shared = [ids[g.rows[0]][common_length : g.prefix] for g in groups]
        if any(shared):
            tokens, segment = _left_pad(shared, pad, device)
            self._forward(tokens, segment, mask, positions, cache, logits=False)
            mask = torch.cat([mask, segment], dim=1)
            positions = positions + segment.sum(dim=1)
        # Copy each group's cache to its rows.
        rows = [row for g in groups for row in g.rows]
        group_of = torch.tensor([i for i, g in enumerate(groups) for _ in g.rows], device=device)
        if cache.get_seq_length() > 0:
            cache.batch_select_indices(group_of)
        mask, positions = mask[group_of], positions[group_of]
        tokens, segment = _left_pad([ids[row][g.prefix :] for g in groups for row in g.rows], pad, device)
        logits = self._forward(tokens, segment, mask, positions, cache, logits=True)  # (R, V)
        mask = torch.cat([mask, segment], dim=1)
        positions = positions + segment.sum(dim=1)

        eos = self._eos_ids()
        alive = list(range(len(rows)))  # batch row -> index into `rows`
        produced: dict[int, list[int]] = {row: [] for row in rows}
        for step in range(max_new_tokens):
            chosen = self._choose(logits, [rows[a] for a in alive], temperature, samplers)  # (A,)
            keep: list[int] = []
            for j, token in enumerate(chosen.tolist()):
                row = rows[alive[j]]
                if token in eos:
                    continue
                produced[row].append(token)
                self.stats["new_tokens"] += 1
                if step + 1 == max_new_tokens:
                    continue
                rule = stops[row]
                if rule is not None and rule(self.tokenizer.decode(produced[row], skip_special_tokens=True)):
                    continue
                keep.append(j)
            if not keep:
                break
            if len(keep) < len(alive):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, positions, chosen = mask[index], positions[index], chosen[index]
                alive = [alive[j] for j in keep]
            one = torch.ones(len(alive), 1, dtype=torch.long, device=device)
            logits = self._forward(chosen[:, None], one, mask, positions, cache, logits=True)
            mask = torch.cat([mask, one], dim=1)
            positions = positions + 1
        return produced

    def _choose(
        self,
        logits: torch.Tensor,
        rows: list[int],
        temperature: float,
        samplers: list[torch.Generator] | None,
    ) -> torch.Tensor:
        """The next token of each row: argmax, or a draw from its own seeded generator."""
        if samplers is None:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
        draws = [int(torch.multinomial(probs[j], 1, generator=samplers[row])) for j, row in enumerate(rows)]
        return torch.tensor(draws, device=logits.device)

    def _eos_ids(self) -> set[int]:
        found: set[int] = set()
        config = getattr(self.model, "generation_config", None)
        for value in (getattr(config, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(value, int):
                found.add(value)
            elif value is not None:
                found.update(int(v) for v in value)
        return found


def _per_prompt(stop, n: int) -> list:
    """One stop rule (or None) per prompt from one rule, a sequence, or None."""
    if stop is None or callable(stop):
        return [stop] * n
    stops = list(stop)
    if len(stops) != n:
        raise ValueError(f"{len(stops)} stop rules given for {n} prompts")
    return stops


# ------------------------------------------------------------------------ endpoint


class EndpointLLM:
    """A client of an OpenAI-compatible `/v1/chat/completions` endpoint.

    Retries, with exponential backoff, what can be transient — connection
    errors, timeouts, 5xx and 429 answers — at most `max_retries` times; a
    4xx answer (wrong model name, bad request) and an answer that is not a
    chat completion fail at once.

    Args:
        url: base URL (`http://host:port` or `.../v1`).
        model: the model name the server knows.
        key: the spec's config key, for messages.
        timeout_s: per-request timeout.
        max_retries: retries after the first attempt.
        backoff_s: first wait between attempts; doubled each retry (capped at 30 s).
        api_key: sent as `Authorization: Bearer ...` when given.
        context_length: the server's context window, when known.
        seed: sent with each request (servers that support it sample reproducibly).
        concurrency: requests in flight at once.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        key: str = "llm",
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        api_key: str | None = None,
        context_length: int | None = None,
        seed: int = 0,
        concurrency: int = 4,
    ) -> None:
        base = url.rstrip("/")
        self.endpoint = f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"
        self.model_name = model
        self.key = key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.context_length = context_length
        self.seed = seed
        self.concurrency = max(1, concurrency)
        self.model_id = f"openai:{base}:{model}"
        self.attempts = 0  # requests sent, retries included (for monitoring and tests)
        self._lock = threading.Lock()
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._headers = headers

    def generate(self, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        """Answer each prompt with one chat completion request.

        Raises:
            ModelError: naming `<key>.url` and the endpoint, after the retries
                are spent, on a 4xx answer, or on an answer that is not a chat
                completion.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not prompts:
            return []
        with httpx.Client(timeout=self.timeout_s, headers=self._headers) as client:
            if self.concurrency == 1 or len(prompts) == 1:
                return [self._complete(client, p, max_new_tokens, temperature) for p in prompts]
            with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
                return list(
                    pool.map(lambda p: self._complete(client, p, max_new_tokens, temperature), prompts)
                )

    def _where(self) -> str:
        return f"{self.key}.url: endpoint {self.endpoint} (model {self.model_name!r})"

    def _complete(self, client: httpx.Client, prompt: str, max_new_tokens: int, temperature: float) -> str:
        body = {
            "model": self.model_name,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "seed": self.seed,
        }
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 30.0))
            with self._lock:
                self.attempts += 1
            try:
                response = client.post(self.endpoint, json=body)
            except httpx.TimeoutException:
                last_problem = f"timed out after {self.timeout_s:g} s"
                continue
            except httpx.TransportError as err:
                last_problem = f"connection failed: {type(err).__name__}: {err}"
                continue
            if response.status_code >= 500 or response.status_code == 429:
                last_problem = f"HTTP {response.status_code}: {_snippet(response.text)}"
                continue
            if response.status_code >= 400:
                status, text = response.status_code, _snippet(response.text)
                raise ModelError(f"{self._where()} refused the request: HTTP {status}: {text}")
            return self._parse(response)
        raise ModelError(f"{self._where()} failed {self.max_retries + 1} attempt(s); last: {last_problem}")

    def _parse(self, response: httpx.Response) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ModelError(
                f"{self._where()} answered something that is not a chat completion: {_snippet(response.text)}"
            ) from None
        if not isinstance(content, str):
            raise ModelError(
                f"{self._where()} answered a non-text message content: {_snippet(response.text)}"
            )
        return content.strip()


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return repr(text[:limit] + (" ..." if len(text) > limit else ""))


# -------------------------------------------------------------------------- loading


def load_llm(
    spec: ModelSpec,
    device: str | torch.device = "auto",
    *,
    key: str = "llm",
    seed: int = 0,
    batch_size: int = 8,
) -> LocalLLM | EndpointLLM:
    """Load the LLM a spec names.

    Args:
        spec: `kind` `hf`, `gguf` or `openai`.
        device: where local kinds run (`auto`, `cpu`, `cuda[:N]` or a device).
        key: the spec's config key (e.g. `profiles.mini.llm`), for messages.
        seed: seed of generation.
        batch_size: prompts per batch (local kinds) or requests in flight (endpoints).

    Raises:
        ModelError: naming `key` and the path or URL.
    """
    if spec.kind == "openai":
        api_key = None
        if spec.api_key_env:
            api_key = os.environ.get(spec.api_key_env)
            if not api_key:
                raise ModelError(f"{key}.api_key_env: environment variable {spec.api_key_env!r} is not set")
        return EndpointLLM(
            require(spec, "url", key),
            require(spec, "name", key),
            key=key,
            timeout_s=spec.timeout_s,
            max_retries=spec.max_retries,
            api_key=api_key,
            context_length=spec.context_length,
            seed=seed,
            concurrency=batch_size,
        )
    if spec.kind not in ("hf", "gguf"):
        raise ModelError(f"{key}.kind: unknown LLM kind {spec.kind!r}; use hf, gguf or openai")
    torch_device = as_device(device, key)
    dtype = resolve_dtype(spec.dtype, torch_device, key=f"{key}.dtype")
    if spec.kind == "hf":
        source = resolve_source(spec, key)
        model, tokenizer = _load_hf(source, dtype, key, architecture=spec.architecture)
        model_id = f"hf:{source.value}"
    else:
        gguf_path = gguf_file_of(spec, key)
        model, tokenizer = _load_gguf(gguf_path, dtype, key)
        model_id = f"gguf:{gguf_path}"
    model.to(torch_device).eval()
    return LocalLLM(
        model,
        tokenizer,
        model_id=model_id,
        context_length=spec.context_length,
        seed=seed,
        batch_size=batch_size,
    )


def _load_hf(source: Source, dtype: torch.dtype, key: str, *, architecture: str | None = None):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with loading(
        key,
        source.value,
        "a Hugging Face causal LM (config.json + weights + tokenizer)",
        hub=not source.local,
    ):
        if architecture:
            # Checked before the weights are read: another causal LM would load without complaint.
            config = AutoConfig.from_pretrained(source.value, local_files_only=source.local)
            require_architecture(config, architecture, key, source.value)
        tokenizer = AutoTokenizer.from_pretrained(source.value, local_files_only=source.local)
        model, info = AutoModelForCausalLM.from_pretrained(
            source.value, dtype=dtype, local_files_only=source.local, output_loading_info=True
        )
    # transformers fills absent weights with random values and only warns.
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ModelError(
            f"{key}.path = {source.value!r}: checkpoint lacks {len(missing)} weights, e.g. {missing[:5]}"
        )
    return model, tokenizer


def gguf_file_of(spec: ModelSpec, key: str) -> Path:
    """The GGUF file a `gguf` spec names: `path` itself, or `path/name`.

    With a folder and no `name`, the folder's only `.gguf` file is used.

    Raises:
        ModelError: no such file, or a folder holding none or several.
    """
    path = Path(require(spec, "path", key)).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelError(
            f"{key}.path = {spec.path!r}: no such GGUF file or folder (resolved to {path.resolve()})"
        )
    if spec.name:
        file = path / spec.name
        if not file.is_file():
            raise ModelError(f"{key}.name = {spec.name!r}: no such file in {key}.path = {spec.path!r}")
        return file
    found = sorted(path.glob("*.gguf"))
    if len(found) != 1:
        raise ModelError(
            f"{key}.path = {spec.path!r} holds {len(found)} .gguf files ({[f.name for f in found]}); "
            f"name the one to use in {key}.name"
        )
    return found[0]


def _load_gguf(file: Path, dtype: torch.dtype, key: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with file.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(
            f"{key}.path: {file} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})"
        )
    # transformers reads the folder + file name; the GGUF holds config, tokenizer and weights.
    with loading(key, str(file), "a GGUF causal LM (needs the gguf and accelerate packages)"):
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=dtype)
    return model, tokenizer


def convert_gguf_to_hf(
    gguf_file: str | Path,
    out_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    key: str = "gguf_file",
) -> Path:
    """De-quantize a GGUF LLM into a Hugging Face folder that `kind: hf` loads.

    The model is saved as safetensors in `dtype` with its tokenizer; the GGUF
    quantization entry is dropped from the config, since the weights written
    are plain tensors. The folder appears complete or not at all
    (`pmg.io.output_folder`).

    Args:
        gguf_file: the `.gguf` file.
        out_dir: the folder to write (replaced when it exists).
        dtype: the dtype of the saved weights (fp32 by default; bf16 halves
            the size).
        key: what to call the input in messages.

    Returns:
        `out_dir`.

    Raises:
        ModelError: the file is missing or not a GGUF LLM transformers reads.
    """
    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    if not gguf_file.is_file():
        raise ModelError(f"{key}: {gguf_file}: no such GGUF file")
    model, tokenizer = _load_gguf(gguf_file, dtype, key)
    # The weights are de-quantized; a leftover `quantization_config` would make
    # `from_pretrained` look for a GGUF file that is not in the folder.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    with output_folder(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out_dir
