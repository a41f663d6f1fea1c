"""One loading path for every model: each loader takes a `ModelSpec`, a device and the spec's config key.

- :func:`load_llm` — `hf`, `gguf` or `openai` LLMs behind one `generate` interface.
- :func:`load_generator` — a Stable-Diffusion-family diffusers pipeline, conditioned by `prompt_embeds`.
- :func:`load_scorer` — an open_clip model for candidate selection.
- :func:`load_captioner` — BLIP / BLIP-2, or CLIP retrieval over a caller's vocabulary.
- :func:`load_lpips` and :func:`ssim` — the evaluation metrics.

Every failure a user can fix is a :class:`pmg.errors.ModelError` naming the
config key (e.g. `profiles.mini.llm.path`) and the path or URL.
"""

from pmg.models.captioner import BlipCaptioner, Captioner, ClipRetrievalCaptioner, load_captioner
from pmg.models.device import resolve_device, resolve_dtype
from pmg.models.generator import ImageGenerator, load_generator
from pmg.models.llm import LLM, EndpointLLM, LocalLLM, convert_gguf_to_hf, load_llm
from pmg.models.lpips_metric import images_to_tensor, load_lpips, lpips_distance, ssim
from pmg.models.scorer import Scorer, load_scorer, save_open_clip_folder

__all__ = [
    "LLM",
    "BlipCaptioner",
    "Captioner",
    "ClipRetrievalCaptioner",
    "EndpointLLM",
    "ImageGenerator",
    "LocalLLM",
    "Scorer",
    "convert_gguf_to_hf",
    "images_to_tensor",
    "load_captioner",
    "load_generator",
    "load_llm",
    "load_lpips",
    "load_scorer",
    "lpips_distance",
    "resolve_device",
    "resolve_dtype",
    "save_open_clip_folder",
    "ssim",
]
