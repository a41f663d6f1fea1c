"""A content-addressed, on-disk cache of LLM answers and image captions.

Why: `describe` and `keywords` are the only steps that call a generative
model per user, and they are re-run by DVC and by Prefect whenever anything
upstream changes. With this cache an unchanged prompt is never sent twice, so a
re-run with unchanged inputs makes zero model calls and adding one user
computes only that user's prompts.

Key. An entry's key is the sha256 of a canonical JSON document (sorted keys,
no whitespace, UTF-8)::

    {"kind": "llm", "model_id": ..., "template_version": ...,
     "prompt": <the fully rendered prompt>, "params": {"max_new_tokens": ..., "temperature": ...,
     "stop": <the stop rule's key, only when one is used>}}

for LLM answers, and ``{"kind": "caption", "model_id": ..., "image": <sha256 of
the pixels>}`` for captions. Anything that can change an answer is in the key:
the weights (through the model id's content fingerprint, see
:func:`model_fingerprint`), the template (its version and the rendered text),
the generation parameters. Nothing else is (no paths, no timestamps), so the
cache is valid across machines, folders and front doors (DVC or Prefect).

Storage. One small JSON file per entry, ``<folder>/<key[:2]>/<key>.json``,
written to a temporary file in the same folder and renamed into place
(`pmg.io.atomic_path`: `os.replace`, atomic on POSIX, under the entry's own
file lock, which also sweeps the temporary files of writers killed
mid-write). Chosen over SQLite because:

* two processes (a DVC run and a Prefect run) may write at once: a reader
  sees either no file or a complete one (readers take no lock), and two
  writers of the same key take turns and write the same answer;
* it needs no server and no WAL file, and it works on network file systems
  where SQLite's locking does not;
* entries are plain text, easy to inspect (`grep -r`), prune (delete files)
  or ship (copy the folder).

A file that does not parse (e.g. truncated by a full disk outside the rename
protocol) counts as a miss and is overwritten.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pmg.config import ModelSpec
from pmg.io import write_bytes_atomic

log = logging.getLogger(__name__)

# Files at most this large are hashed whole; larger ones (weights) are sampled.
_WHOLE_FILE_LIMIT = 16 * 2**20
_SAMPLE_CHUNKS = 16
_CHUNK = 64 * 2**10


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no insignificant whitespace, non-ASCII kept."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_key(document: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of `document`."""
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def generation_params(max_new_tokens: int, temperature: float, stop: Any = None) -> dict[str, Any]:
    """The generation settings that change an answer, as they enter the key.

    A stop rule (`pmg.models.llm.StopRule`) shortens the stored answer, so its
    `key` is part of the settings; without one the settings are those of
    answers cached before stop rules existed, which stay valid.

    Raises:
        ValueError: a stop rule without a `key` (its answers could not be told apart).
    """
    params: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature)}
    if stop is not None:
        name = getattr(stop, "key", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"stop rule {stop!r} has no `key`; cached answers need one")
        params["stop"] = name
    return params


def llm_key(
    model_id: str,
    template_version: str,
    prompt: str,
    max_new_tokens: int,
    temperature: float,
    stop: Any = None,
) -> str:
    """The cache key of one LLM answer (see the module docstring)."""
    return content_key(
        {
            "kind": "llm",
            "model_id": model_id,
            "template_version": template_version,
            "prompt": prompt,
            "params": generation_params(max_new_tokens, temperature, stop),
        }
    )


# --------------------------------------------------------------------------- store


class ContentCache:
    """A folder of JSON entries addressed by their key.

    Args:
        folder: where entries live (created on first write).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        """The file of one entry: two-character shard folder, then the key."""
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record, or None when absent or unreadable."""
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        try:
            # Not UTF-8 (UnicodeDecodeError is a ValueError) or not JSON: a miss.
            record = json.loads(data.decode("utf-8"))
        except ValueError:
            log.warning("cache entry %s does not parse; treated as a miss", self.path(key))
            return None
        return record if isinstance(record, dict) and record.get("key") == key else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store `record` (plus its key) atomically: temp file, then rename (`pmg.io.atomic_path`)."""
        data = json.dumps({**record, "key": key}, sort_keys=True, ensure_ascii=False, indent=1).encode(
            "utf-8"
        )
        write_bytes_atomic(self.path(key), data)

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("??/*.json")) if self.folder.is_dir() else 0


# ---------------------------------------------------------------------- model ids


def _file_digest(path: Path, hasher: hashlib._Hash) -> None:
    """Feed a file into `hasher`: whole when small, else size + header + samples.

    Large weight files are sampled, not read whole (a 7B checkpoint is 14 GB):
    the safetensors header (names, dtypes, shapes, offsets) plus 16 chunks of
    64 KiB spread evenly over the file. Retrained or swapped weights differ
    throughout, so a sample tells them apart; a copy or a move does not change
    the digest (no mtime, no path).
    """
    size = path.stat().st_size
    hasher.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as handle:
        if size <= _WHOLE_FILE_LIMIT:
            for block in iter(lambda: handle.read(2**20), b""):
                hasher.update(block)
            return
        if path.suffix == ".safetensors":
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len < size:
                hasher.update(handle.read(header_len))
        for i in range(_SAMPLE_CHUNKS):
            handle.seek((size - _CHUNK) * i // (_SAMPLE_CHUNKS - 1))
            hasher.update(handle.read(_CHUNK))


def model_fingerprint(path: str | Path) -> str | None:
    """A content fingerprint of a local model file or folder, or None if not local.

    Every regular file of a folder (not hidden, recursively, in sorted order)
    counts: config, tokenizer and chat template are hashed whole, weights
    sampled (see `_file_digest`). So swapping the weights, the tokenizer or
    the chat template at the same path changes the fingerprint.
    """
    path = Path(path).expanduser()
    if not path.exists():
        return None
    hasher = hashlib.sha256()
    files = (
        [path]
        if path.is_file()
        else sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    )
    for file in files:
        hasher.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        _file_digest(file, hasher)
    return hasher.hexdigest()


def model_id_of(spec: ModelSpec, llm: Any = None) -> str:
    """The cache identity of the model a spec names.

    Local files and folders: `<kind>@<content fingerprint>` (plus the dtype the
    weights run in, which changes greedy answers). Hub ids and endpoints have
    no local content, so their name stands for them: `<kind>:<path or url>:<name>`
    (an endpoint that silently swaps its model is not detected; give it a new
    model name).
    """
    dtype = None
    if llm is not None and hasattr(llm, "model"):
        try:
            dtype = str(next(llm.model.parameters()).dtype).removeprefix("torch.")
        except (StopIteration, AttributeError, TypeError):
            dtype = None
    dtype = dtype or spec.dtype
    if spec.path:
        fingerprint = model_fingerprint(spec.path)
        if fingerprint is not None:
            name = f":{spec.name}" if spec.name else ""
            return f"{spec.kind}{name}@{fingerprint[:32]}:{dtype}"
    return ":".join(str(part) for part in (spec.kind, spec.path or spec.url, spec.name, dtype) if part)


# ------------------------------------------------------------------------- wrappers


@dataclass
class CacheStats:
    """What a cached wrapper did.

    Attributes:
        hits: prompts (or images) answered from the cache.
        misses: distinct prompts (or images) sent to the model.
        calls: batched calls made to the model (per `generate`/`caption`
            call with misses: one, or one per `batch_size` misses).
    """

    hits: int = 0
    misses: int = 0
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, hits: int, misses: int, calls: int) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses
            self.calls += calls

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "calls": self.calls}


class CachedLLM:
    """An LLM whose answers are read from and written to a `ContentCache`.

    Implements the `pmg.models.llm.LLM` protocol (plus `template_version`).
    Every prompt of a batch is looked up; the misses (de-duplicated) go to the
    wrapped LLM in ONE `generate` call — or, with `batch_size`, in calls of at
    most `batch_size` prompts, each stored as soon as it returns, so a run
    killed half-way keeps what it computed.

    Args:
        llm: the real LLM.
        model_id: its cache identity (see `model_id_of`).
        cache: the store.
        batch_size: most prompts per call to the real LLM; None sends all
            misses of a `generate` call at once.
    """

    def __init__(
        self, llm: Any, model_id: str, cache: ContentCache, *, batch_size: int | None = None
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        self.llm = llm
        self.model_id = model_id
        self.cache = cache
        self.batch_size = batch_size
        self.stats = CacheStats()

    @property
    def context_length(self) -> int | None:
        return getattr(self.llm, "context_length", None)

    def count_tokens(self, prompt: str) -> int:
        """Tokens `prompt` takes once wrapped in the chat template.

        Uses the wrapped LLM's tokenizer when it has one; otherwise a
        conservative estimate of one token per 3 characters.
        """
        return count_tokens(self.llm, prompt)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        template_version: str = "",
        stop: Any = None,
    ) -> list[str]:
        """Answers in prompt order, from the cache where possible.

        The misses are sent in the order the wrapped LLM batches best (its
        `batch_order`: prompts sharing a prefix together, similar lengths
        together), else shortest first, in calls of at most `batch_size`.

        Args:
            prompts: user messages.
            max_new_tokens: as for the wrapped LLM (part of the key).
            temperature: as for the wrapped LLM (part of the key).
            template_version: the version of the template that rendered the
                prompts (part of the key).
            stop: a stop rule for every prompt, or one per prompt (None:
                none); each prompt's rule key is part of its key. A wrapped
                LLM whose `generate` takes no `stop` (endpoints) answers in
                full: its rules are dropped, keys included.
        """
        prompts = list(prompts)
        stops = stop if isinstance(stop, (list, tuple)) else [stop] * len(prompts)
        if len(stops) != len(prompts):
            raise ValueError(f"{len(stops)} stop rules given for {len(prompts)} prompts")
        if not takes_stop_rules(self.llm):
            stops = [None] * len(prompts)
        keys = [
            llm_key(self.model_id, template_version, p, max_new_tokens, temperature, rule)
            for p, rule in zip(prompts, stops)
        ]
        answers: dict[str, str] = {}
        for key in dict.fromkeys(keys):
            record = self.cache.get(key)
            if record is not None and isinstance(record.get("answer"), str):
                answers[key] = record["answer"]
        pending = {
            key: (prompt, rule) for key, prompt, rule in zip(keys, prompts, stops) if key not in answers
        }
        missing = list(pending.items())
        missing = [missing[i] for i in self._order([prompt for _, (prompt, _) in missing])]
        step = self.batch_size or max(1, len(missing))
        calls = 0
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            chunk_prompts = [prompt for _, (prompt, _) in chunk]
            chunk_stops = [rule for _, (_, rule) in chunk]
            kwargs = {"stop": chunk_stops} if any(rule is not None for rule in chunk_stops) else {}
            fresh = self.llm.generate(
                chunk_prompts, max_new_tokens=max_new_tokens, temperature=temperature, **kwargs
            )
            calls += 1
            if len(fresh) != len(chunk):
                raise RuntimeError(f"{self.model_id}: asked {len(chunk)} prompts, got {len(fresh)} answers")
            for (key, (prompt, rule)), answer in zip(chunk, fresh):
                self.cache.put(
                    key,
                    {
                        "kind": "llm",
                        "model_id": self.model_id,
                        "template_version": template_version,
                        "prompt": prompt,
                        "params": generation_params(max_new_tokens, temperature, rule),
                        "answer": answer,
                    },
                )
                answers[key] = answer
        missed = {key for key, _ in missing}
        self.stats.add(hits=sum(1 for k in keys if k not in missed), misses=len(missing), calls=calls)
        return [answers[key] for key in keys]

    def _order(self, prompts: list[str]) -> list[int]:
        """The order to send misses in: the wrapped LLM's `batch_order`, else shortest first."""
        if not prompts:
            return []
        order = getattr(self.llm, "batch_order", None)
        if callable(order):
            return list(order(prompts))
        return sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))


def takes_stop_rules(llm: Any) -> bool:
    """Whether `llm.generate` accepts `stop` (a keyword of that name, or `**kwargs`)."""
    try:
        parameters = inspect.signature(llm.generate).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "stop" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def ask_llm(
    llm: Any, prompts: list[str], *, max_new_tokens: int, template_version: str, stop: Any = None
) -> list[str]:
    """One answer per prompt from `llm`, passing the template version on when it is a `CachedLLM`.

    `stop` (one rule, or one rule or None per prompt) is passed on only when
    given and the LLM takes it (`takes_stop_rules`): endpoints answer in full.
    """
    if not prompts:
        return []
    extra = {"stop": stop} if stop is not None and takes_stop_rules(llm) else {}
    if isinstance(llm, CachedLLM):
        return llm.generate(prompts, max_new_tokens=max_new_tokens, template_version=template_version, **extra)
    return llm.generate(prompts, max_new_tokens=max_new_tokens, **extra)


def count_tokens(llm: Any, prompt: str) -> int:
    """Tokens of `prompt` as `llm` will see it (chat template included).

    Falls back to `ceil(len / 3)` when the LLM has no tokenizer (endpoints):
    English runs about 4 characters per token, so this errs on the long side.
    """
    inner = getattr(llm, "llm", llm)
    tokenizer = getattr(inner, "tokenizer", None)
    if tokenizer is not None:
        text = inner.format_prompt(prompt) if hasattr(inner, "format_prompt") else prompt
        templated = bool(getattr(tokenizer, "chat_template", None))
        return len(tokenizer(text, add_special_tokens=not templated)["input_ids"])
    return -(-len(prompt) // 3)


def image_digest(image: Image.Image) -> str:
    """sha256 of an image's mode, size and pixels (not of its file encoding)."""
    hasher = hashlib.sha256(f"{image.mode}\0{image.size[0]}x{image.size[1]}\0".encode())
    hasher.update(image.tobytes())
    return hasher.hexdigest()


def captioner_id_of(spec: ModelSpec, captioner: Any) -> str:
    """The cache identity of a captioner: its model plus its vocabulary settings.

    A clip-retrieval captioner's answers depend on its vocabulary, `top_k`,
    template and separator as much as on its weights, so those are hashed in.
    """
    base = model_id_of(spec, captioner)
    vocabulary = getattr(captioner, "vocabulary", None)
    if vocabulary is None:
        extras = {
            "prompt": getattr(captioner, "prompt", None),
            "max_new_tokens": getattr(captioner, "max_new_tokens", None),
        }
    else:
        extras = {
            "vocabulary": list(vocabulary),
            "top_k": getattr(captioner, "top_k", None),
            "template": getattr(captioner, "template", None),
            "separator": getattr(captioner, "separator", None),
        }
    return f"{base}+{content_key(extras)[:16]}"


class CachedCaptioner:
    """A captioner whose captions are cached by image content.

    Args:
        captioner: anything with `caption(images) -> list[str]`.
        model_id: its cache identity (see `captioner_id_of`).
        cache: the store.
    """

    def __init__(self, captioner: Any, model_id: str, cache: ContentCache) -> None:
        self.captioner = captioner
        self.model_id = model_id
        self.cache = cache
        self.stats = CacheStats()

    def caption(self, images: list[Image.Image]) -> list[str]:
        """One caption per image; the uncached ones in one call to the captioner."""
        keys = [
            content_key({"kind": "caption", "model_id": self.model_id, "image": image_digest(im)})
            for im in images
        ]
        captions: dict[str, str] = {}
        for key in dict.fromkeys(keys):
            record = self.cache.get(key)
            if record is not None and isinstance(record.get("caption"), str):
                captions[key] = record["caption"]
        missing: dict[str, Image.Image] = {}
        for key, image in zip(keys, images):
            if key not in captions:
                missing.setdefault(key, image)
        if missing:
            fresh = self.captioner.caption(list(missing.values()))
            if len(fresh) != len(missing):
                raise RuntimeError(f"{self.model_id}: asked {len(missing)} captions, got {len(fresh)}")
            for key, caption in zip(missing, fresh):
                self.cache.put(key, {"kind": "caption", "model_id": self.model_id, "caption": caption})
                captions[key] = caption
        self.stats.add(
            hits=len(keys) - sum(1 for k in keys if k in missing),
            misses=len(missing),
            calls=int(bool(missing)),
        )
        return [captions[key] for key in keys]
