"""Soft preference embeddings `E_m`: the bias-correcting LLM of PMG (§3.3).

A frozen causal LLM reads the user's behaviour prompt followed by `L`
learnable multimodal tokens `m_1..m_L`; P-Tuning v2 adds `S` learnable
prefix key/values to the self-attention of every layer. The LLM's last hidden
states at the `L` token positions go through one linear layer into the
generator's text-encoder width, giving `E_m` of shape (B, L, D_text), which
joins the keyword embeddings as `concat(E_m, E_k)`.

Only three things train: the prefix, the `L` token embeddings and the
projection. They are the whole state of :class:`SoftPreferenceModel`; the LLM
is held beside it, not registered as a sub-module, so `state_dict()`,
`parameters()` and `.train()` touch the adapter only and the LLM stays
frozen and in eval mode.

Why our own prefix rather than peft's prefix tuning: the adapter needs the
LLM's hidden states (not logits — skipping the LM head saves a
(B, T, vocab) tensor per step), learnable input tokens beside the prefix,
exact positions for left-padded batches, and one file holding all three
parts. The prefix is handed to the unmodified model as a `DynamicCache`
(transformers' own Cache API) with the attention mask extended by `S`, which
is all peft does for decoder-only models too. Keys and values are stored per
key/value head, so grouped-query attention (SmolLM2: 3 KV heads for 9 query
heads) needs nothing special: the model repeats them per query group as it
does for its own keys.

Positions: prompts are left-padded; every row gets explicit `position_ids`
counting its real tokens from 0, so a prompt gives the same `E_m` alone and
in a padded batch. The prefix keys are not rotated (they are learnt as the
post-rotary keys the cache holds), as in P-Tuning v2; the prompt's positions
start at `S`, as if the prefix were `S` virtual tokens read first (peft
offsets them the same way). The prefix starts as the LLM's own cache of a
short text, so at step 0 the model reads exactly "that text + prompt".

Inference (the `generate` step), with the same prompt and keyword assembly
as training::

    model = SoftPreferenceModel.load(folder, llm, text_width=generator.text_width)
    prompts = behaviour_prompts(scenario, descriptions)                # user -> prompt
    soft = model.soft_preference_embeddings([prompts[u] for u in users])  # E_m (B, L, D)
    keywords = generator.encode_text([keyword_string(k_p) for k_p in ...])  # E_k (B, 77, D)
    preference = torch.cat([soft.to(keywords), keywords], dim=1)      # E_p (B, L + 77, D)

Adapter folder (written atomically: a temporary sibling, then a rename)::

    adapter.safetensors   the trainable tensors only
    adapter_config.json   shapes, base LLM identity and fingerprint, text
                          width, L, S, use_prefix, reparameterisation, prompt
                          template version, pmg version, + the caller's extra
                          (generator, training params, data hash, metrics)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from pmg.errors import DataError, ModelError
from pmg.io import output_folder, write_json_atomic
from pmg.scenarios import get as get_scenario
from pmg.scenarios import names as scenario_names

log = logging.getLogger(__name__)

ADAPTER_FORMAT = "pmg-soft-preference-adapter"
ADAPTER_FORMAT_VERSION = 1
ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"
# Bump when `behaviour_prompt` changes: an adapter is trained on one wording.
PROMPT_TEMPLATE_VERSION = "soft-v1"
# Text whose own key/values initialise the prefix, and whose tokens initialise
# the multimodal tokens (cycled to the needed length).
INIT_TEXT = " the user's visual preference: image style colour"

# Keys of adapter_config.json written by `save_adapter` itself; `extra_config` may not override them.
_RESERVED_KEYS = frozenset(
    {
        "format",
        "format_version",
        "pmg_version",
        "prompt_template_version",
        "base_llm",
        "text_width",
        "num_tokens",
        "prefix_length",
        "use_prefix",
        "reparameterize",
        "reparam_hidden",
        "max_prompt_tokens",
        "tensors",
        "adapter_sha256",
    }
)


# ---------------------------------------------------------------------- prompt


def behaviour_prompt(scenario: str, history_lines: Sequence[str], conversation_lines: Sequence[str]) -> str:
    """The behaviour prompt `(p, x, y)` the multimodal tokens follow — training and inference alike.

    The instruction comes last, so that when a prompt has to be cut to the
    token budget (from the left, see `SoftPreferenceModel.tokenize`) the
    oldest history goes first and the instruction stays. Attributes and
    format examples are not used (PMG §3.3: the prefix learns them).

    Args:
        scenario: a registered scenario, whose declared `noun` names its
            items ("clothing items"); any other name is used as is.
        history_lines: the history items' lines `x_i`, oldest first.
        conversation_lines: the conversation turns' lines `y_i`, in order.

    Returns:
        The prompt text (no chat template: the output is hidden states, not an answer).
    """
    noun = get_scenario(scenario).noun if scenario in scenario_names() else scenario
    parts = [f"The user liked these {noun}:"]
    parts += [f"- {' '.join(str(line).split())}" for line in history_lines]
    if conversation_lines:
        parts.append("The user said:")
        parts += [f"- {' '.join(str(line).split())}" for line in conversation_lines]
    parts.append("Describe the user's visual preference:")
    return "\n".join(parts)


def behaviour_prompts(
    scenario: str, descriptions: pd.DataFrame, users: Sequence[str] | None = None
) -> dict[str, str]:
    """Each user's behaviour prompt from a `Descriptions` table — the one assembly
    training (`train_soft`) and inference (`generate`) share.

    Args:
        scenario: the scenario; rows of other scenarios are ignored.
        descriptions: a `Descriptions` table; `history` and `conversation`
            lines are used (ordered by `position`), `target` and
            `supervision` lines never.
        users: the users wanted; None = every user with history lines
            (users without any have no prompt, and generation skips them).

    Returns:
        user id -> prompt.

    Raises:
        DataError: a named user has no history line.
    """
    descriptions = descriptions[descriptions["scenario"] == scenario]
    if users is None:
        users = sorted(descriptions.loc[descriptions["kind"] == "history", "user_id"].astype(str).unique())
    frame = descriptions[descriptions["kind"].isin(("history", "conversation"))]
    by_user = {str(user): rows for user, rows in frame.groupby(frame["user_id"].astype(str))}
    prompts: dict[str, str] = {}
    for user in map(str, users):
        rows = by_user.get(user, frame.iloc[:0]).sort_values("position")
        history = rows.loc[rows["kind"] == "history", "line"].tolist()
        if not history:
            raise DataError("descriptions table", f"user {user!r} has no history lines", column="kind")
        prompts[user] = behaviour_prompt(
            scenario, history, rows.loc[rows["kind"] == "conversation", "line"].tolist()
        )
    return prompts


def keyword_string(keywords: Sequence[str]) -> str:
    """Preference keywords as the one prompt `E_k` encodes ("red, wool, casual"), train and inference."""
    return ", ".join(str(k).strip() for k in keywords if str(k).strip())


# ------------------------------------------------------------------ LLM facts


def _text_config(model: nn.Module):
    config = model.config
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def llm_architecture(llm) -> dict[str, Any]:
    """The shape facts of an LLM an adapter depends on.

    Args:
        llm: a `LocalLLM` (anything with `.model` and `.tokenizer`).

    Returns:
        `model_type`, `hidden_size`, `num_layers`, `num_attention_heads`,
        `num_key_value_heads`, `head_dim`, `vocab_size` (the tokenizer's length).
    """
    config = _text_config(llm.model)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return {
        "model_type": str(getattr(config, "model_type", "")),
        "hidden_size": int(config.hidden_size),
        "num_layers": int(config.num_hidden_layers),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": int(head_dim),
        "vocab_size": len(llm.tokenizer),
    }


def llm_fingerprint(llm) -> str:
    """A short content hash of an LLM's input embedding table and architecture.

    The table is hashed in float16, so fp32 and fp16 loads of one checkpoint
    agree; another checkpoint of the same shape does not.
    """
    digest = hashlib.sha256(json.dumps(llm_architecture(llm), sort_keys=True).encode())
    weight = llm.model.get_input_embeddings().weight.detach()
    digest.update(weight.to("cpu", torch.float16).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _base_model(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (its last hidden state is all we read)."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    return base if isinstance(base, nn.Module) else model


# ------------------------------------------------------------------------ model


class PrefixEncoder(nn.Module):
    """P-Tuning v2's reparameterisation: prefix = MLP(embedding).

    Args:
        prefix_length: S.
        width: the LLM width (embedding size of the S prefix tokens).
        hidden: the MLP's hidden width.
        out_features: num_layers * 2 * num_kv_heads * head_dim.
    """

    def __init__(self, prefix_length: int, width: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(prefix_length, width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, out_features))

    def forward(self) -> torch.Tensor:
        """(S, out_features)."""
        return self.mlp(self.embedding.weight)


class SoftPreferenceModel(nn.Module):
    """The bias-correcting LLM: a frozen causal LLM plus a small trainable adapter.

    Args:
        llm: a `LocalLLM` (`.model`, `.tokenizer`); frozen and put in eval mode here.
        text_width: D, the generator's text-encoder width.
        num_tokens: L, multimodal tokens appended after the prompt (0 allowed:
            then `E_m` is empty).
        prefix_length: S, prefix key/values per layer (P-Tuning v2).
        use_prefix: False leaves the prefix out (the ablation "w/o P-Tuning v2").
        reparameterize: learn the prefix through an MLP (P-Tuning v2's
            option) instead of directly.
        reparam_hidden: the MLP's hidden width.
        max_prompt_tokens: prompts longer than this are cut from the left.
        seed: seed of the initialisation.

    Attributes:
        token_embeddings: (L, W) the multimodal tokens' input embeddings.
        prefix: (num_layers, 2, num_kv_heads, S, head_dim) keys and values,
            when `use_prefix` and not `reparameterize`.
        prefix_encoder: the `PrefixEncoder`, when `use_prefix` and `reparameterize`.
        projection: Linear(W -> D).
    """

    def __init__(
        self,
        llm,
        text_width: int,
        *,
        num_tokens: int = 4,
        prefix_length: int = 4,
        use_prefix: bool = True,
        reparameterize: bool = False,
        reparam_hidden: int = 512,
        max_prompt_tokens: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_tokens < 0:
            raise ValueError(f"num_tokens (L) must be >= 0, got {num_tokens}")
        if use_prefix and prefix_length < 1:
            raise ValueError(f"prefix_length (S) must be >= 1 with use_prefix, got {prefix_length}")
        if text_width < 1:
            raise ValueError(f"text_width must be >= 1, got {text_width}")
        if max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be >= 1, got {max_prompt_tokens}")
        # Held, not registered: the adapter's state and .train() never reach the LLM.
        self.llm = llm
        llm.model.requires_grad_(False)
        llm.model.eval()
        self.arch = llm_architecture(llm)
        self.text_width = int(text_width)
        self.num_tokens = int(num_tokens)
        self.prefix_length = int(prefix_length) if use_prefix else 0
        self.use_prefix = bool(use_prefix)
        self.reparameterize = bool(reparameterize) and self.use_prefix
        self.reparam_hidden = int(reparam_hidden)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.truncated_prompts = 0  # prompts cut to the budget so far (for monitoring)

        width = self.arch["hidden_size"]
        device = llm.device
        embedding = llm.model.get_input_embeddings().weight.detach()
        init_ids = self._init_ids(max(self.num_tokens, self.prefix_length, 1))
        # Seeded initialisation that leaves the caller's global RNG state alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # Multimodal tokens start as real token embeddings (in-distribution for the LLM).
            tokens = embedding[init_ids[: self.num_tokens]].float().clone().to(device)
            self.token_embeddings = nn.Parameter(tokens)  # (L, W)

            self.prefix: nn.Parameter | None = None
            self.prefix_encoder: PrefixEncoder | None = None
            if self.use_prefix and self.reparameterize:
                a = self.arch
                out_features = a["num_layers"] * 2 * a["num_key_value_heads"] * a["head_dim"]
                encoder = PrefixEncoder(self.prefix_length, width, self.reparam_hidden, out_features)
                with torch.no_grad():
                    encoder.embedding.weight.copy_(embedding[init_ids[: self.prefix_length]].float())
                self.prefix_encoder = encoder.to(device)
            own, hidden_rms = self._init_forward(init_ids[: max(self.prefix_length, 1)])
            if self.use_prefix and not self.reparameterize:
                # The LLM's own keys/values of real tokens: the right scale from step 0.
                self.prefix = nn.Parameter(own.to(device))  # (layers, 2, kv_heads, S, head_dim)

            # E_m starts at root-mean-square ~1 per element — the scale of a text
            # encoder's layer-normed output — whatever the LLM's hidden-state scale,
            # so the soft tokens neither vanish nor swamp E_k in cross-attention.
            self.projection = nn.Linear(width, self.text_width).to(device)
            bound = (3.0 / width) ** 0.5 / max(hidden_rms, 1e-6)
            with torch.no_grad():
                nn.init.uniform_(self.projection.weight, -bound, bound)
                self.projection.bias.zero_()

    # ------------------------------------------------------------- helpers

    def _init_ids(self, n: int) -> list[int]:
        ids = self.llm.tokenizer(INIT_TEXT, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ModelError("the LLM's tokenizer encodes the initialisation text to no tokens")
        return [ids[i % len(ids)] for i in range(n)]

    @torch.no_grad()
    def _init_forward(self, ids: list[int]) -> tuple[torch.Tensor, float]:
        """The LLM over `ids`: its cache (num_layers, 2, num_kv_heads, len(ids), head_dim)
        and the root-mean-square of its last hidden states."""
        from transformers import DynamicCache

        model = self.llm.model
        cache = DynamicCache(config=_text_config(model))
        input_ids = torch.tensor([ids], device=self.llm.device)
        output = _base_model(model)(input_ids=input_ids, past_key_values=cache, use_cache=True)
        layers = [torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers]
        hidden_rms = float(output.last_hidden_state.float().pow(2).mean().sqrt())
        return torch.stack(layers).float(), hidden_rms

    @property
    def device(self) -> torch.device:
        """Where the adapter (and the LLM) run."""
        return self.projection.weight.device

    def prefix_key_values(self) -> torch.Tensor | None:
        """(num_layers, 2, num_kv_heads, S, head_dim), or None without a prefix."""
        if not self.use_prefix:
            return None
        if self.prefix_encoder is not None:
            a = self.arch
            flat = self.prefix_encoder()  # (S, num_layers * 2 * kv_heads * head_dim)
            shaped = flat.view(
                self.prefix_length, a["num_layers"], 2, a["num_key_value_heads"], a["head_dim"]
            )
            return shaped.permute(1, 2, 3, 0, 4)
        return self.prefix

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Everything that trains: prefix (or its encoder), tokens, projection."""
        return [p for p in self.parameters() if p.requires_grad]

    # -------------------------------------------------------------- inputs

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids of behaviour prompts.

        A prompt over `max_prompt_tokens` keeps its last tokens (the newest
        behaviour and the instruction) and is counted in `truncated_prompts`.

        Args:
            prompts: B behaviour prompts (see `behaviour_prompt`).

        Returns:
            input_ids (B, T) and attention_mask (B, T), on the model's device.
        """
        if isinstance(prompts, str):
            raise TypeError("tokenize takes a list of prompts, not one string")
        return self.collate([self.token_ids(prompt) for prompt in prompts])

    def token_ids(self, prompt: str) -> list[int]:
        """One prompt's token ids, cut from the left to `max_prompt_tokens` (and counted when cut)."""
        ids = list(self.llm.tokenizer(prompt)["input_ids"])
        if len(ids) > self.max_prompt_tokens:
            self.truncated_prompts += 1
            ids = ids[-self.max_prompt_tokens :]
        return ids

    def collate(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad token id lists (from `token_ids`) into a batch.

        Returns:
            input_ids (B, T), attention_mask (B, T), on the model's device.
        """
        rows = [list(r)[-self.max_prompt_tokens :] for r in rows]
        if any(len(r) == 0 for r in rows):
            raise ValueError("a behaviour prompt encodes to no tokens")
        pad = self.llm.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, length - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # ------------------------------------------------------------- forward

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Soft preference embeddings of left-padded prompts.

        Args:
            input_ids: (B, T) prompt tokens, left-padded.
            attention_mask: (B, T), 1 on real tokens.

        Returns:
            E_m, (B, L, D) float32 (D = `text_width`); (B, 0, D) when L = 0.
        """
        batch = input_ids.shape[0]
        if self.num_tokens == 0:
            return torch.zeros(batch, 0, self.text_width, device=self.device)
        model = self.llm.model
        dtype = model.get_input_embeddings().weight.dtype
        prompt = model.get_input_embeddings()(input_ids)  # (B, T, W)
        tokens = self.token_embeddings.to(dtype).unsqueeze(0).expand(batch, -1, -1)  # (B, L, W)
        inputs_embeds = torch.cat([prompt, tokens], dim=1)  # (B, T + L, W)
        ones = torch.ones(batch, self.num_tokens, dtype=attention_mask.dtype, device=attention_mask.device)
        mask = torch.cat([attention_mask, ones], dim=1)  # (B, T + L)
        # Each row counts its own real tokens (left padding shifts nothing), after
        # the S prefix positions: the prefix acts as S virtual tokens read first.
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0) + self.prefix_length  # (B, T + L)
        cache = None
        kv = self.prefix_key_values()
        if kv is not None:
            from transformers import DynamicCache

            kv = kv.to(dtype)  # (layers, 2, kv_heads, S, head_dim)
            expand = (batch, *kv.shape[2:])
            cache = DynamicCache(
                [
                    (kv[i, 0].unsqueeze(0).expand(expand), kv[i, 1].unsqueeze(0).expand(expand))
                    for i in range(kv.shape[0])
                ],
                config=_text_config(model),
            )
            prefix_mask = torch.ones(batch, self.prefix_length, dtype=mask.dtype, device=mask.device)
            mask = torch.cat([prefix_mask, mask], dim=1)  # (B, S + T + L)
        output = _base_model(model)(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=cache is not None,
        )
        hidden = output.last_hidden_state[:, -self.num_tokens :]  # (B, L, W)
        return self.projection(hidden.float())  # (B, L, D)

    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        """`forward` on prompt texts (with gradient when enabled): (B, L, D)."""
        return self(*self.tokenize(prompts))

    @torch.no_grad()
    def soft_preference_embeddings(self, prompts: Sequence[str], *, batch_size: int = 8) -> torch.Tensor:
        """E_m for inference: no gradient, batched.

        Args:
            prompts: B behaviour prompts (see `behaviour_prompt`).
            batch_size: prompts per LLM forward.

        Returns:
            (B, L, D) float32 on the model's device; cast to the generator's
            dtype before joining with `E_k`.
        """
        if not prompts:
            return torch.zeros(0, self.num_tokens, self.text_width, device=self.device)
        parts = [self.embed(list(prompts[i : i + batch_size])) for i in range(0, len(prompts), batch_size)]
        return torch.cat(parts)

    # ------------------------------------------------------------ save/load

    def adapter_config(self) -> dict[str, Any]:
        """The adapter's own settings and its base LLM's identity (no training facts)."""
        return {
            "format": ADAPTER_FORMAT,
            "format_version": ADAPTER_FORMAT_VERSION,
            "pmg_version": pmg_version(),
            "prompt_template_version": PROMPT_TEMPLATE_VERSION,
            "base_llm": {
                "model_id": getattr(self.llm, "model_id", None),
                "fingerprint": llm_fingerprint(self.llm),
                **self.arch,
            },
            "text_width": self.text_width,
            "num_tokens": self.num_tokens,
            "prefix_length": self.prefix_length,
            "use_prefix": self.use_prefix,
            "reparameterize": self.reparameterize,
            "reparam_hidden": self.reparam_hidden,
            "max_prompt_tokens": self.max_prompt_tokens,
            "tensors": {name: list(t.shape) for name, t in self.state_dict().items()},
        }

    @classmethod
    def load(
        cls, folder: str | Path, llm, *, text_width: int, check_fingerprint: bool = True
    ) -> SoftPreferenceModel:
        """Load an adapter folder onto a base LLM.

        Args:
            folder: written by `save_adapter`.
            llm: the base LLM (`LocalLLM`); must match the one trained on.
            text_width: the generator's text-encoder width D.
            check_fingerprint: refuse an LLM whose embedding table differs
                from the one trained on (same shapes, other weights).

        Returns:
            The model in eval mode on the LLM's device.

        Raises:
            ModelError: the folder is missing or not an adapter, or the LLM or
                the text width differ from those the adapter was trained for
                (every difference is named).
        """
        folder = Path(folder)
        config_file, tensor_file = folder / CONFIG_FILE, folder / ADAPTER_FILE
        if not config_file.is_file() or not tensor_file.is_file():
            raise ModelError(
                f"{folder}: not a soft preference adapter (needs {CONFIG_FILE} and {ADAPTER_FILE})"
            )
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ModelError(f"{config_file}: not valid JSON: {err}") from None
        if config.get("format") != ADAPTER_FORMAT:
            raise ModelError(
                f"{config_file}: format is {config.get('format')!r}, expected {ADAPTER_FORMAT!r}"
            )
        if config.get("format_version") != ADAPTER_FORMAT_VERSION:
            raise ModelError(
                f"{config_file}: format_version {config.get('format_version')!r} is not "
                f"{ADAPTER_FORMAT_VERSION} (written by another pmg version)"
            )
        base = config["base_llm"]
        actual = llm_architecture(llm)
        problems = [
            f"{key} {base.get(key)!r} (adapter) != {actual[key]!r} (given LLM)"
            for key in (
                "model_type",
                "hidden_size",
                "num_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
                "vocab_size",
            )
            if base.get(key) != actual[key]
        ]
        if config["text_width"] != text_width:
            problems.append(f"text_width {config['text_width']} (adapter) != {text_width} (given generator)")
        if problems:
            raise ModelError(
                f"{folder}: adapter does not fit: it was trained on LLM {base.get('model_id')!r}, given "
                f"{getattr(llm, 'model_id', None)!r}: " + "; ".join(problems)
            )
        if check_fingerprint and base.get("fingerprint") != llm_fingerprint(llm):
            raise ModelError(
                f"{folder}: adapter was trained on LLM {base.get('model_id')!r} with weights fingerprint "
                f"{base.get('fingerprint')}, but the given LLM {getattr(llm, 'model_id', None)!r} has "
                f"{llm_fingerprint(llm)} (same shapes, other weights); pass check_fingerprint=False to force"
            )
        sha = _sha256(tensor_file)
        if config.get("adapter_sha256") not in (None, sha):
            raise ModelError(
                f"{tensor_file}: checksum {sha} does not match adapter_config.json {config['adapter_sha256']}"
            )
        model = cls(
            llm,
            text_width,
            num_tokens=config["num_tokens"],
            prefix_length=config["prefix_length"] or 1,
            use_prefix=config["use_prefix"],
            reparameterize=config["reparameterize"],
            reparam_hidden=config["reparam_hidden"],
            max_prompt_tokens=config["max_prompt_tokens"],
        )
        from safetensors.torch import load_file

        state = load_file(str(tensor_file), device=str(model.device))
        expected = {name: list(t.shape) for name, t in model.state_dict().items()}
        found = {name: list(t.shape) for name, t in state.items()}
        if expected != found:
            raise ModelError(f"{tensor_file}: tensors {found} do not match the adapter's {expected}")
        model.load_state_dict(state)
        model.loaded_config = config
        return model.eval()


def pmg_version() -> str:
    """The installed pmg package's version ("unknown" when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pmg")
    except PackageNotFoundError:
        return "unknown"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_adapter(
    model: SoftPreferenceModel, folder: str | Path, extra_config: Mapping[str, Any] | None = None
) -> Path:
    """Write an adapter folder atomically: only the trainable tensors, plus its config.

    Args:
        model: the trained model.
        folder: the folder to write (replaced as a whole when it exists).
        extra_config: facts of the run to record beside the adapter's own
            settings, e.g. `{"generator": {...}, "training": {...},
            "data_hash": ..., "metrics": {...}}`; must be JSON-serialisable and
            may not reuse the adapter's own keys.

    Returns:
        `folder`.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    extra = dict(extra_config or {})
    clash = sorted(_RESERVED_KEYS & extra.keys())
    if clash:
        raise ValueError(f"extra_config may not set the adapter's own keys {clash}")
    config = model.adapter_config()
    with output_folder(folder) as tmp:
        state = {
            name: t.detach().to("cpu", torch.float32).contiguous() for name, t in model.state_dict().items()
        }
        save_file(state, str(tmp / ADAPTER_FILE), metadata={"format": ADAPTER_FORMAT})
        config["adapter_sha256"] = _sha256(tmp / ADAPTER_FILE)
        config.update(extra)
        write_json_atomic(tmp / CONFIG_FILE, config)
    return folder
