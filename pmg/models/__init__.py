"""One loading path for every model: each loader takes a `ModelSpec`, a device and the spec's config key.

- `pmg.models.llm.load_llm` — `hf`, `gguf` or `openai` LLMs behind one `generate` interface.
- `pmg.models.generator.load_generator` — a Stable-Diffusion-family diffusers pipeline,
  conditioned by `prompt_embeds`.
- `pmg.models.scorer.load_scorer` — an open_clip model for candidate selection.
- `pmg.models.captioner.load_captioner` — BLIP / BLIP-2, or CLIP retrieval over a caller's vocabulary.
- `pmg.models.lpips_metric.load_lpips` and `ssim` — the evaluation metrics.

Every failure a user can fix is a :class:`pmg.errors.ModelError` naming the
config key (e.g. `profiles.mini.llm.path`) and the path or URL. Which model a
stage loads, from which profile key, is decided in `pmg.stages.loaders`.

Import from the submodules: this package imports none of them, so a stage
that uses one model does not load (or depend on) the others.
"""
