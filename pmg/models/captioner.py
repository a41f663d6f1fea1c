"""Image-to-text for the behaviour-to-text step (paper: BLIP-2).

Kinds:

- `blip` / `blip2`: a transformers captioning model
  (`BlipForConditionalGeneration` / `Blip2ForConditionalGeneration` + its
  processor) by hub id or local folder.
- `clip-retrieval`: no generative captioner exists offline, so an image is
  described by the phrases of a caller-given vocabulary (scenario attributes,
  genres, emoji names) whose CLIP text embeddings are closest to the image's:
  the top-k phrases by cosine similarity, best first, joined with ", ".

Interface: `caption(images) -> list[str]`, one caption per image.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from PIL import Image

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.models.common import as_device, loading, require_architecture, resolve_source
from pmg.models.device import resolve_dtype
from pmg.models.scorer import Scorer, load_scorer

_MODEL_TYPES = {"blip": "blip", "blip2": "blip-2"}


@runtime_checkable
class Captioner(Protocol):
    """What every captioner kind offers."""

    def caption(self, images: list[Image.Image]) -> list[str]:
        """One caption per image, in order."""
        ...


class BlipCaptioner:
    """A BLIP or BLIP-2 captioning model with its processor.

    Args:
        model: `BlipForConditionalGeneration` or `Blip2ForConditionalGeneration`, on its device.
        processor: the matching processor.
        prompt: optional text the caption continues (e.g. "a photo of");
            it is removed from the returned captions.
        max_new_tokens: caption length bound.
        batch_size: images per generate call.
    """

    def __init__(
        self, model, processor, *, prompt: str | None = None, max_new_tokens: int = 30, batch_size: int = 8
    ):
        self.model = model
        self.processor = processor
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    @torch.inference_mode()
    def caption(self, images: list[Image.Image]) -> list[str]:
        """Caption images greedily.

        Args:
            images: N PIL images (converted to RGB).

        Returns:
            N captions, special tokens and the prompt removed.
        """
        device, dtype = next(self.model.parameters()).device, next(self.model.parameters()).dtype
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            text = [self.prompt] * len(chunk) if self.prompt else None
            inputs = self.processor(images=chunk, text=text, return_tensors="pt")
            inputs = {
                name: value.to(device, dtype) if value.is_floating_point() else value.to(device)
                for name, value in inputs.items()
            }
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            for caption in self.processor.batch_decode(output, skip_special_tokens=True):
                caption = caption.strip()
                if self.prompt and caption.lower().startswith(self.prompt.lower()):
                    caption = caption[len(self.prompt) :].strip()
                captions.append(caption)
        return captions


class ClipRetrievalCaptioner:
    """Describe an image by its best-matching phrases from a vocabulary.

    Args:
        scorer: the CLIP model that embeds images and phrases.
        vocabulary: candidate phrases (duplicates dropped, order kept).
        top_k: phrases per caption.
        template: how a phrase is written before embedding, e.g.
            "a photo of {}"; the caption uses the bare phrase.
        separator: joins the phrases.
    """

    def __init__(
        self,
        scorer: Scorer,
        vocabulary: list[str],
        *,
        top_k: int = 3,
        template: str = "{}",
        separator: str = ", ",
    ) -> None:
        phrases = list(dict.fromkeys(p.strip() for p in vocabulary if p and p.strip()))
        if not phrases:
            raise ModelError("clip-retrieval captioner: the vocabulary is empty; pass the scenario's phrases")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.scorer = scorer
        self.vocabulary = phrases
        self.top_k = min(top_k, len(phrases))
        self.template = template
        self.separator = separator
        self.phrase_embeddings = scorer.embed_texts([template.format(p) for p in phrases])  # (V, D)

    def with_vocabulary(self, vocabulary: list[str], *, top_k: int | None = None) -> ClipRetrievalCaptioner:
        """The same scorer over another vocabulary (e.g. another scenario's)."""
        return ClipRetrievalCaptioner(
            self.scorer,
            vocabulary,
            top_k=top_k or self.top_k,
            template=self.template,
            separator=self.separator,
        )

    def similarities(self, images: list[Image.Image]) -> torch.Tensor:
        """Cosine similarity of each image to each phrase.

        Returns:
            (N, V).
        """
        return self.scorer.embed_images(images) @ self.phrase_embeddings.T

    def caption(self, images: list[Image.Image]) -> list[str]:
        """The `top_k` closest phrases per image, best first, joined.

        Args:
            images: N PIL images.

        Returns:
            N captions.
        """
        if not images:
            return []
        best = self.similarities(images).topk(self.top_k, dim=1).indices  # (N, k)
        return [self.separator.join(self.vocabulary[i] for i in row) for row in best.tolist()]


def load_captioner(
    spec: ModelSpec,
    device: str | torch.device = "auto",
    *,
    key: str = "captioner",
    vocabulary: list[str] | None = None,
    scorer: Scorer | None = None,
    top_k: int = 3,
    prompt: str | None = None,
    max_new_tokens: int = 30,
) -> BlipCaptioner | ClipRetrievalCaptioner:
    """Load the captioner a spec names.

    Args:
        spec: `kind` `blip`, `blip2` or `clip-retrieval`.
        device: `auto`, `cpu`, `cuda[:N]` or a `torch.device`.
        key: the spec's config key, for messages.
        vocabulary: clip-retrieval only: the phrases to choose from.
        scorer: clip-retrieval only: an already loaded scorer to share
            (else one is loaded from `spec.path`, an open_clip folder or file).
        top_k: clip-retrieval only: phrases per caption.
        prompt: blip kinds only: text the caption continues.
        max_new_tokens: blip kinds only: caption length bound.

    Raises:
        ModelError: naming `key` and the path.
    """
    if spec.kind == "clip-retrieval":
        if vocabulary is None:
            raise ModelError(f"{key}: a clip-retrieval captioner needs the caller's vocabulary")
        return ClipRetrievalCaptioner(scorer or load_scorer(spec, device, key=key), vocabulary, top_k=top_k)
    if spec.kind not in _MODEL_TYPES:
        raise ModelError(
            f"{key}.kind: unknown captioner kind {spec.kind!r}; use blip, blip2 or clip-retrieval"
        )
    from transformers import (
        AutoConfig,
        AutoProcessor,
        Blip2ForConditionalGeneration,
        BlipForConditionalGeneration,
    )

    torch_device = as_device(device, key)
    dtype = resolve_dtype(spec.dtype, torch_device, key=f"{key}.dtype")
    source = resolve_source(spec, key)
    model_class = BlipForConditionalGeneration if spec.kind == "blip" else Blip2ForConditionalGeneration
    with loading(
        key, source.value, f"a {model_class.__name__} checkpoint with its processor", hub=not source.local
    ):
        config = AutoConfig.from_pretrained(source.value, local_files_only=source.local)
        # Checked first: transformers would load another model type with a
        # warning and randomly initialised weights.
        if config.model_type != _MODEL_TYPES[spec.kind]:
            raise ModelError(
                f"{key}.path = {source.value!r}: holds a {config.model_type!r} model, but {key}.kind is "
                f"{spec.kind!r} (expects {_MODEL_TYPES[spec.kind]!r})"
            )
        if spec.architecture:
            require_architecture(config, spec.architecture, key, source.value)
        model, info = model_class.from_pretrained(
            source.value, dtype=dtype, local_files_only=source.local, output_loading_info=True
        )
        processor = AutoProcessor.from_pretrained(source.value, local_files_only=source.local)
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ModelError(
            f"{key}.path = {source.value!r}: checkpoint lacks {len(missing)} weights, e.g. {missing[:5]}"
        )
    model.to(torch_device).eval()
    return BlipCaptioner(model, processor, prompt=prompt, max_new_tokens=max_new_tokens)
