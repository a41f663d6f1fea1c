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
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx
import torch

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.io import output_folder
from pmg.models.common import Source, as_device, loading, require, resolve_source
from pmg.models.device import resolve_dtype

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


class LocalLLM:
    """A causal LM and its tokenizer held in this process.

    Args:
        model: a transformers causal LM, already on its device.
        tokenizer: its tokenizer; its padding side is set to left and a pad
            token is added (the EOS token) when missing.
        model_id: stable name for caches.
        context_length: the context window; None reads the model config.
        seed: seed of every `generate` call (only matters when sampling).
        batch_size: prompts per forward batch.
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
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.seed = seed
        self.batch_size = batch_size
        # Left padding: generation appends at the right end of every row.
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

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    def format_prompt(self, prompt: str) -> str:
        """Wrap one user message with the chat template, when the tokenizer has one."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def generate(self, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        """Answer each prompt; greedy at temperature 0, seeded sampling above.

        Args:
            prompts: user messages, any number (batched internally).
            max_new_tokens: the most tokens generated per answer.
            temperature: 0 for greedy decoding.

        Returns:
            One answer per prompt, special tokens removed, whitespace stripped.

        Raises:
            ModelError: a prompt plus `max_new_tokens` exceeds the context.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        texts = [self.format_prompt(p) for p in prompts]
        answers: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            answers.extend(
                self._generate_batch(
                    texts[start : start + self.batch_size], start, max_new_tokens, temperature
                )
            )
        return answers

    def _generate_batch(
        self, texts: list[str], offset: int, max_new_tokens: int, temperature: float
    ) -> list[str]:
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        # A chat template writes its own BOS where the model wants one.
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not templated)
        lengths = enc["attention_mask"].sum(dim=1)  # (B,)
        if self.context_length is not None:
            for i, length in enumerate(lengths.tolist()):
                if length + max_new_tokens > self.context_length:
                    raise ModelError(
                        f"{self.model_id}: prompt {offset + i} has {length} tokens; with max_new_tokens="
                        f"{max_new_tokens} it exceeds the context length {self.context_length}"
                    )
        enc = {name: tensor.to(self.device) for name, tensor in enc.items()}
        sampling = temperature > 0
        kwargs = {"do_sample": sampling, "temperature": temperature if sampling else None}
        if not sampling:
            kwargs.update(top_p=None, top_k=None)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(self.seed)
            output = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )  # (B, T_prompt + T_new)
        new_tokens = output[:, enc["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


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
        model, tokenizer = _load_hf(source, dtype, key)
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


def _load_hf(source: Source, dtype: torch.dtype, key: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with loading(
        key,
        source.value,
        "a Hugging Face causal LM (config.json + weights + tokenizer)",
        hub=not source.local,
    ):
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
    are plain tensors. The folder appears complete or not at all (written to
    a temporary sibling, then renamed).

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
