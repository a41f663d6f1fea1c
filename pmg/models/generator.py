"""The text-to-image generator: a Stable-Diffusion-family diffusers pipeline.

PMG conditions the generator on embeddings, not on text: the soft preference
embeddings `E_m` joined with the keyword embeddings `E_k` (and the target
keyword embeddings `E_t`), weighted per candidate. They enter the unmodified
pipeline as `prompt_embeds` / `negative_prompt_embeds`; the pipeline is not
forked. Their length need not be 77: the UNet's cross-attention reads any
number of tokens, so `concat(E_m, E_k)` of length `L + 77` goes in as is.

Every image gets its own seeded `torch.Generator` (on CPU, so the starting
noise is the same on every device), so candidate `i` with seed `s` is the same
image whether generated alone or in a batch.
"""

from __future__ import annotations

import logging

import torch
from PIL import Image

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.models.common import as_device, loading, resolve_source
from pmg.models.device import resolve_dtype

log = logging.getLogger(__name__)


class ImageGenerator:
    """A loaded Stable Diffusion pipeline with an embeddings-first interface.

    Args:
        pipeline: a `StableDiffusionPipeline` (or compatible), on its device.

    Attributes:
        pipeline: the diffusers pipeline itself.
        text_encoder: its CLIP text encoder (frozen in PMG).
        tokenizer: its tokenizer.
        text_width: the text encoder's hidden size `D`, the width every
            conditioning embedding must have.
    """

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.text_encoder = pipeline.text_encoder
        self.tokenizer = pipeline.tokenizer
        self.text_width: int = int(self.text_encoder.config.hidden_size)
        pipeline.set_progress_bar_config(disable=True)

    @property
    def device(self) -> torch.device:
        """Where the pipeline runs."""
        return self.pipeline.device

    @property
    def dtype(self) -> torch.dtype:
        """The pipeline's weight dtype (fp16 on CUDA, fp32 on CPU by default)."""
        return self.pipeline.unet.dtype

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels the UNet was built for."""
        sample = self.pipeline.unet.config.sample_size
        height, width = (sample, sample) if isinstance(sample, int) else tuple(sample)
        factor = self.pipeline.vae_scale_factor
        return height * factor, width * factor

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Embed texts exactly as the pipeline embeds a prompt.

        Uses the pipeline's own `encode_prompt` (padding to the tokenizer's
        maximum length, truncation, the text encoder's last hidden state).

        Args:
            texts: B prompts.

        Returns:
            (B, T, D) token embeddings, T = the tokenizer's max length (77 for
            CLIP), D = `text_width`, on the pipeline's device and dtype.
        """
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not one string")
        prompt_embeds, _ = self.pipeline.encode_prompt(
            list(texts), self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return prompt_embeds  # (B, T, D)

    @torch.no_grad()
    def unconditional_embeds(self, batch: int, length: int) -> torch.Tensor:
        """Negative (unconditional) embeddings of any length, from the empty prompt.

        The empty prompt encodes to BOS, EOS and padding; a longer sequence
        repeats its last (padding) position, a shorter one is cut.

        Args:
            batch: B.
            length: T, to match `prompt_embeds` of shape (B, T, D).

        Returns:
            (B, T, D).
        """
        empty = self.encode_text([""])  # (1, 77, D)
        if length <= empty.shape[1]:
            empty = empty[:, :length]
        else:
            extra = empty[:, -1:].expand(1, length - empty.shape[1], empty.shape[2])
            empty = torch.cat([empty, extra], dim=1)
        return empty.expand(batch, length, empty.shape[2]).clone()

    def generate(
        self,
        prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor,
        *,
        steps: int,
        guidance_scale: float,
        seeds: list[int],
        height: int | None = None,
        width: int | None = None,
    ) -> list[Image.Image]:
        """Generate one image per row of `prompt_embeds`, each from its own seed.

        Args:
            prompt_embeds: (B, T, D) conditioning, any T, D = `text_width`.
            negative_prompt_embeds: (B, T, D), same shape (classifier-free
                guidance subtracts it); see `unconditional_embeds`.
            steps: denoising steps.
            guidance_scale: classifier-free guidance weight; <= 1 disables it.
            seeds: B seeds; image i starts from noise drawn with `seeds[i]`.
            height: output height in pixels, a multiple of 8; None uses the
                UNet's native size (`default_size`).
            width: likewise.

        Returns:
            B RGB images.

        Raises:
            ValueError: a shape, count or size that does not fit, with the
                offending values in the message.
        """
        # diffusers falls back to its default for *both* sides when either is None.
        default_height, default_width = self.default_size
        height, width = height or default_height, width or default_width
        self._check(prompt_embeds, negative_prompt_embeds, steps, seeds, height, width)
        generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
        output = self.pipeline(
            prompt_embeds=prompt_embeds.to(self.device, self.dtype),
            negative_prompt_embeds=negative_prompt_embeds.to(self.device, self.dtype),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generators,
            height=height,
            width=width,
            output_type="pil",
        )
        return list(output.images)

    def _check(
        self,
        prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor,
        steps: int,
        seeds: list[int],
        height: int,
        width: int,
    ) -> None:
        for name, value in (
            ("prompt_embeds", prompt_embeds),
            ("negative_prompt_embeds", negative_prompt_embeds),
        ):
            if not isinstance(value, torch.Tensor):
                width = self.text_width
                raise TypeError(
                    f"{name} must be a torch.Tensor of shape (B, T, {width}), got {type(value).__name__}"
                )
            if value.ndim != 3 or value.shape[-1] != self.text_width:
                raise ValueError(
                    f"{name} must have shape (B, T, {self.text_width}) (the text encoder's width), "
                    f"got {tuple(value.shape)}"
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"{name} of shape {tuple(value.shape)} contains NaN or infinite values")
        if prompt_embeds.shape != negative_prompt_embeds.shape:
            raise ValueError(
                f"prompt_embeds {tuple(prompt_embeds.shape)} and negative_prompt_embeds "
                f"{tuple(negative_prompt_embeds.shape)} must have the same shape (see unconditional_embeds)"
            )
        if len(seeds) != prompt_embeds.shape[0]:
            raise ValueError(
                f"{len(seeds)} seeds given for a batch of {prompt_embeds.shape[0]} prompt_embeds"
            )
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        # The pipeline wants multiples of 8, and whole latents.
        factor = max(8, self.pipeline.vae_scale_factor)
        for name, size in (("height", height), ("width", width)):
            if size <= 0 or size % factor:
                raise ValueError(f"{name} must be a positive multiple of {factor}, got {size}")


def load_generator(
    spec: ModelSpec, device: str | torch.device = "auto", *, key: str = "generator"
) -> ImageGenerator:
    """Load a Stable-Diffusion-family pipeline folder or hub id.

    Args:
        spec: `kind: diffusers`; `path` the pipeline folder (with
            `model_index.json`) or hub id; `safety_checker: false` drops the
            safety checker, otherwise whatever the pipeline has is kept.
        device: `auto`, `cpu`, `cuda[:N]` or a `torch.device`.
        key: the spec's config key, for messages.

    Raises:
        ModelError: naming `key` and the path, when it is missing, not a
            pipeline, or its text encoder and UNet disagree on the width.
    """
    from diffusers import StableDiffusionPipeline

    if spec.kind != "diffusers":
        raise ModelError(f"{key}.kind: unknown generator kind {spec.kind!r}; use diffusers")
    torch_device = as_device(device, key)
    dtype = resolve_dtype(spec.dtype, torch_device, key=f"{key}.dtype")
    source = resolve_source(spec, key)
    extra = {} if spec.safety_checker else {"safety_checker": None, "requires_safety_checker": False}
    what = "a Stable Diffusion pipeline (a diffusers folder with model_index.json)"
    expected = spec.architecture or "StableDiffusionPipeline"
    with loading(key, source.value, what, hub=not source.local):
        # Checked before the weights are read: diffusers would try to fit another
        # pipeline's folder into this class part by part.
        found = StableDiffusionPipeline.load_config(source.value, local_files_only=source.local).get("_class_name")
        if found != expected:
            raise ModelError(
                f"{key}.path = {source.value!r}: holds a {found} (model_index.json), but the generator "
                f"must be a {expected}" + (f" ({key}.architecture)" if spec.architecture else "")
            )
        pipeline = StableDiffusionPipeline.from_pretrained(
            source.value, dtype=dtype, local_files_only=source.local, **extra
        )
    for part in ("unet", "vae", "text_encoder", "tokenizer"):
        if getattr(pipeline, part, None) is None:
            raise ModelError(f"{key}.path = {source.value!r}: the pipeline has no {part}")
    width = pipeline.text_encoder.config.hidden_size
    cross = pipeline.unet.config.cross_attention_dim
    if width != cross:
        raise ModelError(
            f"{key}.path = {source.value!r}: text encoder width {width} != UNet cross-attention width {cross}"
        )
    pipeline.to(torch_device)
    return ImageGenerator(pipeline)
