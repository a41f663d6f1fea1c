"""Typed, frozen configuration parsed once per entry point from `params.yaml`.

`load_params()` reads the file, applies optional dotted overrides
(`{"base.profile": "full"}`), and returns a frozen :class:`Params`. Every
section rejects keys it does not know, with a message naming the full dotted
key, so a typo in `params.yaml` fails at start-up instead of being ignored.
Library code takes these objects (or one section of them), never the file.

Profiles: `profiles.mini` (default; CPU, offline, small models built from
packaged assets), `profiles.full` (the real checkpoints, fetched into local
folders by `pmg models fetch`, on GPU) and `profiles.rehearsal` (the full
profile's classes and configurations with random weights and small sizes,
`pmg models build-rehearsal`) name the models. `base.profile` picks one; the
code path is the same.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pmg.data.dataset import UserSplitConfig
from pmg.errors import ConfigError
from pmg.frozen import Section
from pmg.scenarios import ScenarioSection, all_scenarios, names as scenario_names
from pmg.scenarios import get as get_scenario


def _registered(scenarios: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [s for s in scenarios if s not in scenario_names()]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; registered scenarios: {list(scenario_names())}")
    return scenarios


# --------------------------------------------------------------------------- base


class BaseConfig(Section):
    """Settings every stage shares.

    Attributes:
        seed: the one seed all randomness derives from: 0 to 2**31 - 1
            (numpy and torch take no negative seed, and stages derive
            seeds from it by multiplying by up to about a million, which
            must stay within 64 bits).
        profile: which entry of `profiles` names the models.
        scenarios: the scenarios the pipeline runs, in order (registered
            ones, see `pmg.scenarios`; default: all of them).
    """

    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    profile: str = "mini"
    scenarios: tuple[str, ...] = Field(default_factory=scenario_names)

    @field_validator("scenarios")
    @classmethod
    def _known(cls, scenarios: tuple[str, ...]) -> tuple[str, ...]:
        return _registered(scenarios)

    @model_validator(mode="after")
    def _scenarios_unique(self) -> BaseConfig:
        if len(set(self.scenarios)) != len(self.scenarios) or not self.scenarios:
            raise ValueError(f"scenarios must be a non-empty list without repeats, got {list(self.scenarios)}")
        return self


# ------------------------------------------------------------------------ models


class ModelSpec(Section):
    """Where one model comes from.

    Attributes:
        kind: the loader to use (`pmg.models`): `hf`, `gguf` or `openai`
            for LLMs; `diffusers` for generators; `open_clip` for scorers;
            `blip`, `blip2` or `clip-retrieval` for captioners; `lpips`.
        path: a local folder or file, or a hub id (hub ids only work where
            the hub is reachable; the `mini` profile only names local paths).
        name: a model/architecture name where the loader needs one besides
            the weights (open_clip model name, GGUF file name, endpoint model).
        url: endpoint base URL for `openai`-kind LLMs (e.g.
            `http://127.0.0.1:8000`; `/v1/chat/completions` is appended).
        dtype: `auto` (fp16 on CUDA, fp32 on CPU), `float32`, `float16` or
            `bfloat16`; fp16 is never used on CPU (it falls back to fp32).
        context_length: LLM context window in tokens. Local LLMs read it from
            their config when this is null; endpoints do not report it, so
            set it for them.
        timeout_s: per-request timeout of an endpoint, in seconds.
        max_retries: retries of an endpoint request after a connection
            error, a timeout, a 5xx or a 429 answer (other 4xx answers are
            not retried).
        api_key_env: name of the environment variable holding the endpoint's
            API key (sent as a bearer token); null sends none. The key itself
            never goes in `params.yaml`.
        safety_checker: generators only; `false` loads the pipeline without
            its safety checker, `true` keeps whatever the pipeline folder has.
        hub: the hub repository `path` is fetched from (`pmg models fetch`),
            e.g. `meta-llama/Llama-2-7b-chat-hf`; `path` is then always a local
            folder, and a missing one is an error naming the fetch command.
        revision: the commit of `hub` to fetch (40 hex digits): a commit's
            files never change, so it pins every file's sha256 too.
        architecture: the class the checkpoint must hold, checked before
            the weights are read (`LlamaForCausalLM`, `StableDiffusionPipeline`,
            `Blip2ForConditionalGeneration`; for open_clip the built-in
            architecture in `name` plays this role).
    """

    kind: str
    path: str | None = None
    name: str | None = None
    url: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    context_length: int | None = Field(default=None, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    api_key_env: str | None = None
    safety_checker: bool = True
    hub: str | None = None
    revision: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")
    architecture: str | None = None

    @model_validator(mode="after")
    def _revision_with_hub(self) -> ModelSpec:
        if self.hub and not self.revision:
            raise ValueError(f"hub {self.hub!r} needs 'revision' (a 40-hex commit: the files are pinned by it)")
        if self.hub and not self.path:
            raise ValueError(f"hub {self.hub!r} needs 'path' (the local folder it is fetched into)")
        return self


class ProfileConfig(Section):
    """The models of one profile and where they run.

    Attributes:
        device: `auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`.
        llm: the LLM that writes the descriptions (summaries) and the
            keywords: any kind (`hf`, `gguf`, or an `openai` endpoint).
        soft_llm: the base of the soft preference model (the bias-correcting
            LLM of PMG §3.3), which must run here: a local kind (`hf` or
            `gguf`). null = `llm` (then `llm` must be local wherever an
            adapter is trained or used). An endpoint for the keywords with a
            local soft base is `llm: {kind: openai, ...}` plus
            `soft_llm: {kind: hf, path: ...}`.
        captioner: image-to-text model.
        generator: text-to-image diffusion pipeline.
        scorer: image-text model (CLIP) for candidate selection.
        lpips: LPIPS weights folder (safetensors made by the assets stage).
    """

    device: str = "auto"
    llm: ModelSpec
    soft_llm: ModelSpec | None = None
    captioner: ModelSpec
    generator: ModelSpec
    scorer: ModelSpec
    lpips: ModelSpec


# ------------------------------------------------------------------------ assets


class AssetsConfig(Section):
    """Where the offline assets go.

    Attributes:
        folder: extracted assets and `manifest.json` (a DVC output).
        download_cache: package archives as downloaded, reused between runs
            (not tracked; deleting it only costs a re-download).
    """

    folder: str = "data/assets"
    download_cache: str = ".asset-cache"


# ----------------------------------------------------------------------- prepare


class PrepareConfig(Section):
    """The `prepare` stage: canonical tables and images per scenario.

    Besides its own keys it holds one section per registered scenario
    (`prepare.clothing`, `prepare.movies`, ...), typed by that scenario's
    module (`pmg.scenarios.<name>`): read them with :meth:`section` or as
    attributes. A scenario absent from the file gets its section's defaults;
    a key that names no registered scenario is an unknown key.

    Attributes:
        out: output folder; one sub-folder per scenario.
        image_size: side in pixels of rendered item images (square, RGB).
        user_split: shares of the train / validation / test users.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    out: str = "data/prepared"
    image_size: int = Field(default=128, ge=16)
    user_split: UserSplitConfig = UserSplitConfig()

    @model_validator(mode="before")
    @classmethod
    def _scenario_sections(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for name in [key for key in data if key not in cls.model_fields]:
            if name not in scenario_names():
                raise ValidationError.from_exception_data(
                    cls.__name__, [{"type": "extra_forbidden", "loc": (name,), "input": data[name]}]
                )
            data[name] = _validate_section(name, get_scenario(name).section, data[name])
        for scenario in all_scenarios():
            data.setdefault(scenario.name, scenario.section())
        return data

    def section(self, scenario: str) -> ScenarioSection:
        """The `prepare.<scenario>` section.

        Raises:
            ConfigError: `scenario` is not registered.
        """
        found = (self.__pydantic_extra__ or {}).get(scenario)
        if found is None:
            get_scenario(scenario)  # raises, naming the registered scenarios
            raise ConfigError(f"prepare.{scenario}: the scenario was registered after the config was read")
        return found


def _validate_section(name: str, model: type[ScenarioSection], raw: Any) -> ScenarioSection:
    """`raw` as the scenario's section; errors keep their location under the scenario's key."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ValidationError.from_exception_data(
            model.__name__,
            [
                {"type": e["type"], "loc": (name, *e["loc"]), "input": e["input"], **({"ctx": e["ctx"]} if "ctx" in e else {})}
                for e in err.errors()
            ],
        ) from None


# ---------------------------------------------------------------------- registry


class MetricGate(Section):
    """One promotion gate: a metric the candidate may not regress on.

    Against the current `production` version the candidate passes when it is
    no worse than production by more than `tolerance` (for `lower`: candidate
    <= production + tolerance; for `higher`: candidate >= production -
    tolerance). With `relative`, the tolerance is a fraction of production's
    value. With no production (or production lacking the metric) the gate
    compares against `threshold` when one is set, and otherwise passes.

    Attributes:
        metric: the metric's name in a version's metrics (nested metrics
            files are flattened with dots, e.g. `clothing.lpips_history`).
        direction: `lower` (e.g. LPIPS) or `higher` (e.g. SSIM) is better.
        tolerance: how much worse than production the candidate may be.
        relative: read `tolerance` as a fraction of production's value.
        threshold: absolute bound used when there is no production value.
    """

    metric: str = Field(min_length=1)
    direction: Literal["lower", "higher"]
    tolerance: float = Field(default=0.0, ge=0.0)
    relative: bool = False
    threshold: float | None = None


class PairedGateConfig(Section):
    """How a candidate is compared with production: paired, over the same evaluation pairs.

    Each version carries its per-pair evaluation table (`PairMetrics`, the
    evaluate stage's `pairs.parquet`). A gate joins the candidate's and
    production's rows on the pair columns both tables share (`user_id`,
    `target_item`, `seed`, and the reference image: `reference`, `position`,
    `reference_item`), averages each pair's history rows (as the evaluate
    stage does), and bootstraps the mean per-pair difference: the gate passes
    only if, at `confidence`, the candidate is worse than production by no
    more than the gate's tolerance (a one-sided non-inferiority bound).

    Attributes:
        confidence: one-sided confidence of the bound (0.95: 95 % of
            bootstrap means of the difference are within the bound).
        min_pairs: fewer pairs in common than this refuses the promotion:
            a bound over a handful of pairs means nothing.
        resamples: bootstrap resamples of the pairs.
        seed: the bootstrap's seed (the same data give the same verdict).
        variant: compare the rows of this `variant` only; null takes each
            table's one variant (the evaluate stage's main run has one,
            named after its switches, e.g. `soft+keywords`) and refuses a
            table that holds several.
    """

    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    min_pairs: int = Field(default=30, ge=2)
    resamples: int = Field(default=10000, ge=100)
    seed: int = 0
    variant: str | None = None


class RegistryConfig(Section):
    """The S3 model registry of trained adapters (see `pmg.registry`).

    Credentials are never configured here: boto3 reads the standard AWS
    environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    `AWS_PROFILE`, ...) and profile files.

    Attributes:
        bucket: the S3 bucket (may be shared with the DVC remote).
        prefix: key prefix of the registry inside the bucket.
        endpoint_url: S3-compatible endpoint (SeaweedFS, MinIO, ...); null
            means AWS S3. A set endpoint uses path-style addressing.
        region: the bucket's region.
        max_attempts: botocore's `retries.max_attempts` (`standard` mode):
            retries after the first request, so a down server fails after at
            most `max_attempts + 1` requests with jittered backoff.
        connect_timeout: seconds to wait for a TCP connection.
        read_timeout: seconds to wait for an answer.
        gates: the metric gates a candidate must pass to move a gated alias.
        gated_aliases: aliases that only move when the gates pass
            (`--force` overrides, and is recorded as forced).
        paired: the paired comparison the gates make against production.
        promotion_order: each alias accepts only versions that have been
            the alias before it (default: `production` only takes a version
            that has been `staging`); `--force` overrides and is recorded.
            Empty: any order.
    """

    bucket: str = Field(default="pmg", min_length=3)
    prefix: str = "pmg/registry"
    endpoint_url: str | None = None
    region: str | None = "us-east-1"
    max_attempts: int = Field(default=4, ge=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=30.0, gt=0)
    gates: tuple[MetricGate, ...] = (
        MetricGate(metric="lpips_history", direction="lower", tolerance=0.01),
        MetricGate(metric="lpips_target", direction="lower", tolerance=0.02),
    )
    gated_aliases: tuple[Literal["staging", "production"], ...] = ("production",)
    paired: PairedGateConfig = PairedGateConfig()
    promotion_order: tuple[Literal["staging", "production"], ...] = ("staging", "production")

    @model_validator(mode="after")
    def _check(self) -> RegistryConfig:
        metrics = [gate.metric for gate in self.gates]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"gates name a metric more than once: {metrics}")
        if len(set(self.promotion_order)) != len(self.promotion_order):
            raise ValueError(f"promotion_order names an alias twice: {list(self.promotion_order)}")
        if self.prefix != self.prefix.strip("/") or "//" in self.prefix:
            raise ValueError(f"prefix must have no leading, trailing or doubled '/', got {self.prefix!r}")
        return self



# -------------------------------------------------------------------------- zoo


class ZooClipConfig(Section):
    """Training of the mini CLIP (open_clip custom model) of the `mini` profile.

    Attributes:
        out: output folder (open_clip local-dir format).
        image_size: input resolution of the image tower.
        epochs: passes over the training pairs.
        batch_size: contrastive batch size.
        lr: AdamW learning rate.
        heldout_fraction: share of items kept out for the quality gate.
        min_gate_ratio: zero-shot top-1 must reach this multiple of chance
            in every scenario, else the stage fails.
        image_tower: a timm architecture name, trained from scratch.
        embed_dim: joint embedding width; equal to the text tower's width
            (384 for MiniLM) the text projection starts as the identity.
        context_length: tokens per caption (captions are a few words).
        weight_decay: AdamW weight decay of the trained matrices.
        augment_shift: largest random translation (fraction of half-width).
        augment_scale: largest random relative zoom.
        min_scenario_share: a scenario with fewer training images is
            repeated until it supplies about this share of an epoch (the
            67 emoji against 1,682 posters).
        semantic_tau: temperature of the soft caption targets taken from
            the text tower's own caption similarities.
        semantic_weight: weight of the soft-target loss (0 disables it);
            it is what lets unseen captions be recognised zero-shot.
        logit_scale_init: initial inverse temperature (learnable, capped
            at 100). Captions of one scenario are close in the text tower's
            space, so CLIP's usual 1/0.07 is too soft to separate them.
        bf16: train the image tower under bf16 autocast where the CPU
            computes bf16 natively (elsewhere fp32, with one log line); the
            weights, the optimiser and the loss stay fp32.
    """

    out: str = "data/zoo/clip"
    image_size: int = Field(default=64, ge=16)
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=2)
    lr: float = Field(default=1e-3, gt=0)
    heldout_fraction: float = Field(default=0.15, gt=0, lt=1)
    min_gate_ratio: float = Field(default=3.0, ge=0)
    image_tower: str = "test_convnext"
    embed_dim: int = Field(default=384, ge=8)
    context_length: int = Field(default=32, ge=8)
    weight_decay: float = Field(default=0.05, ge=0)
    augment_shift: float = Field(default=0.1, ge=0, lt=1)
    augment_scale: float = Field(default=0.1, ge=0, lt=1)
    min_scenario_share: float = Field(default=0.45, ge=0, le=1)
    semantic_tau: float = Field(default=0.05, gt=0)
    semantic_weight: float = Field(default=1.0, ge=0)
    logit_scale_init: float = Field(default=30.0, ge=1, le=100)
    bf16: bool = False


class ZooSDConfig(Section):
    """Training of the mini Stable Diffusion pipeline of the `mini` profile.

    The pipeline is a real diffusers `StableDiffusionPipeline`: an
    `AutoencoderKL` (pre-trained on reconstruction, then frozen), a
    `UNet2DConditionModel` with cross-attention and a `CLIPTextModel` over
    CLIP's BPE vocabulary, the latter two trained jointly from scratch.

    Attributes:
        out: output folder (diffusers `StableDiffusionPipeline` format).
        resolution: image side in pixels (32-64 on a CPU).
        steps: optimisation steps of the UNet and text encoder.
        batch_size: images per step.
        lr: AdamW learning rate of the UNet and text encoder (linear
            warm-up, then cosine decay to a tenth).
        inference_steps: denoising steps used by the gates.
        guidance_scale: classifier-free guidance weight used by the gates.
        caption_dropout: share of training captions replaced by the empty
            prompt, so classifier-free guidance has an unconditional model.
        ema_decay: exponential moving average of the UNet and text encoder
            weights that is saved (0 saves the raw weights).
        max_length: tokens per prompt, BOS and EOS included (the
            tokenizer's `model_max_length`, the text encoder's positions).
        text_width: text encoder width = the UNet's cross-attention width.
        text_layers: text encoder transformer layers.
        text_heads: text encoder attention heads.
        unet_channels: UNet block widths, one per resolution level.
        unet_layers_per_block: ResNet (+ transformer) layers per UNet block.
        unet_head_dim: channels per UNet attention head.
        vae_channels: VAE block widths; the VAE downsamples by
            `2 ** (len(vae_channels) - 1)`.
        latent_channels: VAE latent channels.
        vae_steps: reconstruction pre-training steps of the VAE.
        vae_batch_size: images per VAE step (small batches, many steps:
            the autoencoder converges faster per image seen).
        vae_lr: AdamW learning rate of the VAE.
        log_every: training losses are averaged and reported every this
            many steps.
        colour_prompts: clothing prompts per colour in the colour gate.
        min_prompt_match: share of held-out prompts whose image must be
            closer (mini CLIP) to its own prompt than to a mismatched one.
        min_colour_ratio: clothing colour accuracy must reach this multiple
            of chance.
        bf16: train the VAE, UNet and text encoder under bf16 autocast where
            the CPU computes bf16 natively (elsewhere fp32, with one log
            line); the weights, the optimisers, the EMA and the losses stay fp32.
    """

    out: str = "data/zoo/sd"
    resolution: int = Field(default=32, ge=16, le=64)
    steps: int = Field(default=3000, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=5e-4, gt=0)
    inference_steps: int = Field(default=20, ge=1)
    guidance_scale: float = Field(default=4.0, ge=0)
    caption_dropout: float = Field(default=0.1, ge=0, lt=1)
    ema_decay: float = Field(default=0.995, ge=0, lt=1)
    max_length: int = Field(default=32, ge=4, le=77)
    text_width: int = Field(default=128, ge=8)
    text_layers: int = Field(default=3, ge=1)
    text_heads: int = Field(default=4, ge=1)
    unet_channels: tuple[int, ...] = (32, 64, 128)
    unet_layers_per_block: int = Field(default=1, ge=1)
    unet_head_dim: int = Field(default=32, ge=4)
    vae_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = Field(default=4, ge=1)
    vae_steps: int = Field(default=1200, ge=1)
    vae_batch_size: int = Field(default=8, ge=1)
    vae_lr: float = Field(default=1e-3, gt=0)
    log_every: int = Field(default=50, ge=1)
    colour_prompts: int = Field(default=12, ge=1)
    min_prompt_match: float = Field(default=0.7, ge=0, le=1)
    min_colour_ratio: float = Field(default=3.0, ge=0)
    bf16: bool = False

    @model_validator(mode="after")
    def _check(self) -> ZooSDConfig:
        if not self.unet_channels or not self.vae_channels or min(self.unet_channels + self.vae_channels) < 4:
            raise ValueError(
                f"unet_channels {list(self.unet_channels)} and vae_channels {list(self.vae_channels)} "
                "must be non-empty lists of widths >= 4"
            )
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width {self.text_width} must be a multiple of text_heads {self.text_heads}")
        if any(width % min(width, self.unet_head_dim) for width in self.unet_channels):
            raise ValueError(
                f"every unet_channels entry {list(self.unet_channels)} must be a multiple of "
                f"unet_head_dim {self.unet_head_dim} (or smaller than it)"
            )
        # The VAE halves the side (len(vae_channels) - 1) times, the UNet (len(unet_channels) - 1) times more.
        factor = 2 ** (len(self.vae_channels) - 1 + len(self.unet_channels) - 1)
        if self.resolution % factor or self.resolution % 8:
            raise ValueError(
                f"resolution {self.resolution} must be a multiple of 8 and of {factor} "
                f"(2 ** (len(vae_channels) - 1 + len(unet_channels) - 1))"
            )
        return self


class ZooConfig(Section):
    """The mini model zoo, built from packaged assets and the default world.

    Attributes:
        llm_out: the base LLM converted from GGUF to a Hugging Face folder.
        clip: mini CLIP training.
        sd: mini Stable Diffusion training.
    """

    llm_out: str = "data/zoo/llm"
    clip: ZooClipConfig = ZooClipConfig()
    sd: ZooSDConfig = ZooSDConfig()


# --------------------------------------------------------------------- rehearsal

#: Per model of the rehearsal: the keys of the real checkpoint's configuration
#: that are sizes, and so may differ in the rehearsal (nested configurations as
#: `part.key`). Everything else is the real checkpoint's value.
REHEARSAL_SIZE_KEYS: dict[str, frozenset[str]] = {
    "llm": frozenset({"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"}),
    "generator": frozenset(
        {
            "unet.block_out_channels",
            "unet.layers_per_block",
            "unet.sample_size",
            "vae.block_out_channels",
            "vae.layers_per_block",
            "vae.sample_size",
            "text_encoder.num_hidden_layers",
            "text_encoder.intermediate_size",
        }
    ),
    "captioner": frozenset(
        {
            "vision_config.hidden_size",
            "vision_config.intermediate_size",
            "vision_config.num_hidden_layers",
            "vision_config.num_attention_heads",
            "qformer_config.hidden_size",
            "qformer_config.intermediate_size",
            "qformer_config.num_hidden_layers",
            "qformer_config.num_attention_heads",
            "text_config.hidden_size",
            "text_config.ffn_dim",
            "text_config.num_hidden_layers",
            "text_config.num_attention_heads",
        }
    ),
    "scorer": frozenset(
        {
            "embed_dim",
            "vision_cfg.width",
            "vision_cfg.layers",
            "vision_cfg.head_width",
            "text_cfg.width",
            "text_cfg.heads",
            "text_cfg.layers",
        }
    ),
}


def flatten_keys(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one flat mapping with dotted keys (`{"a": {"b": 1}}` -> `{"a.b": 1}`)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class RehearsalConfig(Section):
    """The rehearsal models: the `full` profile's classes and configurations, random weights, small sizes.

    `pmg models build-rehearsal` writes one folder per model of `profile`
    (its `llm`, `generator`, `captioner` and `scorer` paths) from the real
    checkpoints' configurations (`pmg.models.rehearsal`) with only the size
    keys below replaced — never a width at a hand-over: the generator's text
    width (768) and its 77 positions, the 4 latent channels and SD's VAE
    scaling factor stay real, and the soft model's projection maps the small
    LLM width to 768.

    Attributes:
        profile: whose model folders are written.
        scale: `tiny` (the sizes below: runs on 2 CPU cores) or `real` (the
            real checkpoints' sizes, random weights: for `make gpu-check` on
            a GPU machine without the checkpoints).
        seed: seed of the random weights.
        device: where the random weights are made (`cpu`, `cuda`, `auto`;
            `make gpu-check` makes the real-size ones on `cuda`).
        llm: size keys of `LlamaForCausalLM`'s config (Llama-2-7b-chat).
        generator: size keys of SD 1.5's `unet`, `vae` and `text_encoder` configs.
        captioner: size keys of BLIP-2 OPT-2.7b's `vision_config`,
            `qformer_config` and `text_config`.
        scorer: size keys of open_clip `ViT-B-32`'s `model_cfg`.
    """

    profile: str = "rehearsal"
    scale: Literal["tiny", "real"] = "tiny"
    seed: int = 0
    device: str = "cpu"
    llm: dict[str, Any] = Field(default_factory=dict)
    generator: dict[str, Any] = Field(default_factory=dict)
    captioner: dict[str, Any] = Field(default_factory=dict)
    scorer: dict[str, Any] = Field(default_factory=dict)

    @field_validator("llm", "generator", "captioner", "scorer")
    @classmethod
    def _only_sizes(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        allowed = REHEARSAL_SIZE_KEYS[info.field_name]
        unknown = sorted(set(flatten_keys(value)) - allowed)
        if unknown:
            raise ValueError(
                f"{unknown} are not size keys of the real configuration; the rehearsal may change only "
                f"{sorted(allowed)}"
            )
        return value

    def sizes(self, part: str) -> dict[str, Any]:
        """The flat (`a.b`) size overrides of one model; none at `scale: real`."""
        return {} if self.scale == "real" else flatten_keys(getattr(self, part))


# ------------------------------------------------------------- describe/keywords


class DescribeConfig(Section):
    """The `describe` stage: behaviour to text (history items, turns, target).

    Attributes:
        out: output folder; one `<scenario>.parquet` Descriptions table each.
        max_users: users described per scenario under the evaluation
            protocol (`pmg.method.describe.select_users_by_split`): the test
            users first (at most `max_test_users`), the rest of the budget
            shared by validation and train users, each first by user id
            (natural order); null describes all. A scenario that trains no
            soft adapter (not in `train_soft.scenarios`) describes its test
            users only: nothing would learn from the others.
        max_test_users: cap on the test users described (they are the
            evaluated ones); null = as many as `max_users` allows.
        max_text_chars: texts longer than this are summarised by the LLM.
        max_line_chars: lines (summaries, text + caption) are cut to this.
        summary_max_new_tokens: token budget of one summary.
        captions: append the captioner's description of each item image.
        caption_top_k: phrases per caption of a clip-retrieval captioner.
        batch_size: prompts per LLM call, images per captioner call.
        llm_cache: folder of the content-addressed cache of LLM answers and
            captions (shared with `keywords`, DVC and Prefect runs).
    """

    out: str = "data/describe"
    max_users: int | None = Field(default=64, ge=1)
    max_test_users: int | None = Field(default=40, ge=1)
    max_text_chars: int = Field(default=160, ge=1)
    max_line_chars: int = Field(default=240, ge=16)
    summary_max_new_tokens: int = Field(default=40, ge=1)
    captions: bool = True
    caption_top_k: int = Field(default=3, ge=1)
    batch_size: int = Field(default=8, ge=1)
    llm_cache: str = "data/cache/llm"


class KeywordsConfig(Section):
    """The `keywords` stage: preference keywords k_p and target keywords k_t.

    Attributes:
        out: output folder; one `<scenario>.parquet` Keywords table each.
        keywords_per_attribute: keywords asked for, and kept, per attribute.
        target_keywords: keywords asked for, and kept, for the target item.
        max_words: an answer phrase longer than this is prose, not a keyword.
        max_new_tokens: token budget of one per-attribute answer.
        target_max_new_tokens: token budget of the target answer.
        max_prompt_tokens: a prompt budget tighter than the LLM's context
            (null: the context minus the answer's budget). History lines are
            dropped oldest-first until a prompt fits.
        batch_size: prompts per LLM call (and per forward batch of a local
            LLM; prompts sharing a prefix compute it once per batch).
        llm_cache: folder of the LLM answer cache (see `describe.llm_cache`).
        use_llm: false skips the LLM and keeps only the documented fallback
            (most frequent history attribute values): a no-LLM baseline.
        stop_at_answer: stop an answer once its cloze sentence is filled and
            closed (`pmg.method.parsing.ClozeStop`); the keywords read from
            it are the same, the tokens after it are not generated.
    """

    out: str = "data/keywords"
    keywords_per_attribute: int = Field(default=3, ge=1)
    target_keywords: int = Field(default=10, ge=1)
    max_words: int = Field(default=4, ge=1)
    max_new_tokens: int = Field(default=24, ge=1)
    target_max_new_tokens: int = Field(default=40, ge=1)
    max_prompt_tokens: int | None = Field(default=None, ge=16)
    batch_size: int = Field(default=32, ge=1)
    llm_cache: str = "data/cache/llm"
    use_llm: bool = True
    stop_at_answer: bool = True


# ------------------------------------------------------------- generate/select


class GenerateConfig(Section):
    """The `generate` stage: candidate images per (user, target) (PMG §3.4).

    Attributes:
        out: output folder; one `<scenario>/` folder each, holding
            `candidates.parquet` and `<user>/<target>/cand_<k>.png`.
        mode: `weighted_embeddings` (the paper: the generator conditioned on
            `w_p·E_p` and `w_t·E_t`, one candidate per weight pair) or
            `repeat_keywords` (the authors' demo: the preference keywords
            repeated `r` times after the target keywords in the prompt text,
            one candidate per entry of `repeats`).
        weights: the `(w_p, w_t)` pairs of `weighted_embeddings`, candidate
            `k` = pair `k` (paper: 0:4, 1:3, 2:2, 3:1, 4:0). Only the ratio
            matters; two pairs of the same ratio are refused.
        repeats: how often the preference keywords are repeated, candidate
            `k` = entry `k` (`repeat_keywords` only; demo: 1 and 2).
        use_soft: condition on the soft preference embeddings `E_m` (needs a
            trained soft preference model).
        use_keywords: condition on the preference keywords (`E_k`, or the
            repeated keywords). Both off = no personalisation: the target
            keywords alone, still one candidate per weight pair (its own
            seed; the same budget as the personalised variants).
        shared_noise: every candidate of a pair starts from the same noise
            (a controlled comparison of the weights, as in the paper's case
            study); off, each candidate has its own seed.
        steps: denoising steps.
        guidance_scale: classifier-free guidance weight (<= 1 disables it).
        height: image height in pixels (multiple of 8); null = the UNet's size.
        width: likewise.
    """

    out: str = "data/generate"
    mode: Literal["weighted_embeddings", "repeat_keywords"] = "weighted_embeddings"
    weights: tuple[tuple[float, float], ...] = ((0, 4), (1, 3), (2, 2), (3, 1), (4, 0))
    repeats: tuple[int, ...] = (1, 2)
    use_soft: bool = True
    use_keywords: bool = True
    shared_noise: bool = False
    steps: int = Field(default=20, ge=1)
    guidance_scale: float = Field(default=7.5, ge=0)
    height: int | None = Field(default=None, ge=8)
    width: int | None = Field(default=None, ge=8)

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        if not self.weights:
            raise ValueError("weights must name at least one (w_p, w_t) pair")
        ratios = []
        for w_p, w_t in self.weights:
            if not (math.isfinite(w_p) and math.isfinite(w_t)) or w_p < 0 or w_t < 0 or w_p + w_t <= 0:
                raise ValueError(
                    f"weights: each (w_p, w_t) must be finite, >= 0 and not both 0, got {[w_p, w_t]}"
                )
            top = max(w_p, w_t)
            ratios.append((round(w_p / top, 9), round(w_t / top, 9)))
        if len(set(ratios)) != len(ratios):
            raise ValueError(
                f"weights {[list(w) for w in self.weights]} repeat a ratio w_p:w_t (only the ratio matters)"
            )
        if not self.repeats or any(r < 0 for r in self.repeats) or len(set(self.repeats)) != len(self.repeats):
            raise ValueError(f"repeats must be distinct counts >= 0, at least one, got {list(self.repeats)}")
        for name in ("height", "width"):
            size = getattr(self, name)
            if size is not None and size % 8:
                raise ValueError(f"{name} must be a multiple of 8, got {size}")
        return self


class SelectConfig(Section):
    """The `select` stage: the CLIP score `z` of every candidate, and the best one.

    `z = alpha·log d_p + (1 - alpha)·log d_t` with `d_p`, `d_t` the cosines of
    the candidate image to the preference and target keyword strings.

    Attributes:
        out: output folder; one `<scenario>.parquet` Scores table each.
        alpha: weight of the preference score (paper: 0.5; the authors'
            demo weights preference 2:1, i.e. 2/3). 0 is the rule "best
            target similarity" (`z = log d_t`), the one the
            non-personalised variant `none` selects with.
        min_cosine: cosines below this floor (zero or negative ones
            included) are raised to it before the log (see
            `pmg.method.select`).
    """

    out: str = "data/select"
    alpha: float = Field(default=0.5, ge=0, le=1)
    min_cosine: float = Field(default=1e-6, gt=0, lt=1)


# -------------------------------------------------------------------- train_soft


class TrainSoftConfig(Section):
    """The `train_soft` stage: the bias-correcting LLM's adapter (PMG §3.3).

    Attributes:
        out: output folder; one adapter folder per scenario.
        scenarios: scenarios trained (default: those whose declaration asks
            for an adapter; the paper trains none for emoji).
        num_tokens: L, multimodal tokens after the behaviour prompt (paper:
            4 or 8 best; 0 = no soft embeddings).
        prefix_length: S, P-Tuning v2 prefix key/values per layer.
        use_prefix: P-Tuning v2 on/off (the paper's Table 3 ablation).
        reparameterize: learn the prefix through an MLP (P-Tuning v2 option).
        reparam_hidden: that MLP's hidden width.
        max_prompt_tokens: behaviour prompts are cut from the left to this.
        steps: optimisation steps.
        batch_size: examples (users) per step.
        lr: AdamW learning rate of the adapter.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping norm.
        val_fraction: share of users held out for validation, chosen by a
            hash of the user id, when no user split is given (the stages
            give one: `prepare`'s validation users validate, its train
            users train, its test users are never seen).
        val_every: steps between validation losses (and at the end).
        val_draws: fixed (noise, timestep) draws per validation user.
        bucket_batches: batches are drawn from length buckets: each pass
            over the users is cut into runs of `bucket_batches` batches,
            each run sorted by prompt length, so a batch's prompts have
            similar lengths and little padding runs through the LLM
            (1 = plain random batches).
        bf16: run the frozen LLM and UNet under bf16 autocast where the
            device computes bf16 natively (`pmg.models.device.bf16_supported`;
            elsewhere fp32, with one log line); the adapter's weights, its
            optimiser and the loss stay fp32.
    """

    out: str = "data/soft"
    scenarios: tuple[str, ...] = Field(
        default_factory=lambda: tuple(s.name for s in all_scenarios() if s.soft_adapter)
    )
    num_tokens: int = Field(default=4, ge=0)
    prefix_length: int = Field(default=4, ge=1)
    use_prefix: bool = True
    reparameterize: bool = False
    reparam_hidden: int = Field(default=512, ge=1)
    max_prompt_tokens: int = Field(default=192, ge=8)
    steps: int = Field(default=60, ge=0)
    batch_size: int = Field(default=2, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    val_fraction: float = Field(default=0.25, ge=0, lt=1)
    val_every: int = Field(default=20, ge=1)
    val_draws: int = Field(default=4, ge=1)
    bucket_batches: int = Field(default=8, ge=1)
    bf16: bool = False

    @field_validator("scenarios")
    @classmethod
    def _known(cls, scenarios: tuple[str, ...]) -> tuple[str, ...]:
        return _registered(scenarios)


# --------------------------------------------------------------- evaluate/report

ABLATION_VARIANTS = ("none", "keywords", "soft", "soft+keywords", "no_prefix")
"""Named ablation variants besides `L<n>` (see `pmg.evaluate.ablations`)."""


class EvaluateConfig(Section):
    """The `evaluate` and `ablations` stages: LPIPS / SSIM against history and target (PMG §4.1.2).

    Attributes:
        out: output folder; one `<scenario>/` each with `pairs.parquet`,
            `issues.parquet`, `metrics.json`, `ground_truth.json` and the
            weight case study (`weights.csv`, `weights.svg`).
        image_size: every image is compared at this side in pixels (RGB,
            bicubic resize, alpha on white).
        nets: LPIPS trunks; `alex` is the one the registry gates read.
        batch_size: images per LPIPS forward pass.
        chunk_users: outputs whose images are held in memory at once.
        chunk_pairs: (output, reference) pairs whose trunk features are held
            at once (VGG: about 2 MB per 64 px image).
        case_study_pairs: (user, target) pairs of the weight case study.
        ablations_out: output folder of the ablation runs; one
            `<scenario>/` each.
        ablations: variants run on the same pairs and seeds: `none`,
            `keywords`, `soft`, `soft+keywords` (paper Table 2),
            `no_prefix` and `L<n>` (Table 3).
        ablation_max_users: pairs per scenario in the ablation runs (the
            first users by id); null runs all.
        ablation_adapters: folder of the extra soft adapters the ablations
            need, `<scenario>/<key>/` with key `L<n>-prefix` or
            `L<n>-noprefix`; the main `train_soft` adapter is used for its
            own key.
        permutations: random assignments of histories to outputs in the
            mismatched-user control's permutation test (at least 1000, the
            protocol's floor; seeded from `base.seed`).
        bootstrap_resamples: resamples of the test users behind every 95%
            paired interval (at least 1000; seeded from `base.seed`).
        control_seed: seed of the derangement that gives each test user
            another user's history (`pmg.evaluate.stats.mismatched_users`).
    """

    out: str = "data/evaluate"
    image_size: int = Field(default=64, ge=16)
    nets: tuple[Literal["alex", "vgg"], ...] = ("alex", "vgg")
    batch_size: int = Field(default=32, ge=1)
    chunk_users: int = Field(default=64, ge=1)
    chunk_pairs: int = Field(default=256, ge=1)
    case_study_pairs: int = Field(default=3, ge=1)
    ablations_out: str = "data/ablations"
    ablations: tuple[str, ...] = ("none", "keywords", "soft", "soft+keywords", "no_prefix", "L0", "L4", "L8")
    ablation_max_users: int | None = Field(default=None, ge=1)
    ablation_adapters: str = "data/soft_ablations"
    # 1000 = pmg.evaluate.stats.MIN_PERMUTATIONS / MIN_RESAMPLES (config sits below pmg.evaluate).
    permutations: int = Field(default=1000, ge=1000)
    bootstrap_resamples: int = Field(default=1000, ge=1000)
    control_seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        if "alex" not in self.nets:
            raise ValueError(f"nets must include 'alex' (the registry gates read it), got {list(self.nets)}")
        if len(set(self.nets)) != len(self.nets):
            raise ValueError(f"nets repeat a trunk: {list(self.nets)}")
        bad = [v for v in self.ablations if v not in ABLATION_VARIANTS and not re.fullmatch(r"L\d+", v)]
        if bad or len(set(self.ablations)) != len(self.ablations):
            raise ValueError(
                f"ablations: unknown or repeated variants {bad or list(self.ablations)}; "
                f"use {list(ABLATION_VARIANTS)} or L<n> (e.g. L4)"
            )
        return self


class ReportConfig(Section):
    """The `report` stage: one self-contained HTML report (no network).

    Attributes:
        out: output folder: `index.html` and `headline.md` (PMG vs no
            personalisation per scenario, from the ablation metrics).
        gallery_pairs: (user, target) pairs shown per scenario.
        thumbnail: side in pixels images are embedded at (PNG data URIs).
        title: the report's title.
        grid_png: a small PNG for the README (kept in git, not in the DVC
            cache): per scenario, the gallery's first pair — history,
            target, every candidate, the chosen one framed.
        grid_tile: side in pixels of every image of `grid_png` (small
            images are scaled up nearest-neighbour).
    """

    out: str = "data/report"
    gallery_pairs: int = Field(default=4, ge=0)
    thumbnail: int = Field(default=96, ge=16)
    title: str = "PMG — personalised generation report"
    grid_png: str = "docs/gallery.png"
    grid_tile: int = Field(default=64, ge=16, le=256)


# --------------------------------------------------------------------- recommend


class RecommendConfig(Section):
    """The recommendation experiment (PMG §4.6, RQ5, Table 4): MMGCN with image features.

    Sizing, measured on the default movie world (ML-100K: 942 users with
    positives, 1,682 movies, 54,763 training edges; `benchmarks/bench_recommend.py`
    and a stand-in run of the first three settings): a step (batch 4096, the
    whole graph) costs 0.44 GFLOP without images and 1.14 GFLOP with the visual
    branch; three settings x 3 seeds x 20 epochs took 220 CPU seconds in all
    (poster features included) and 1.4 GB peak, so the four settings need
    about 5 CPU minutes plus the preference-only images. All users are kept
    (`max_users: null`); 20 epochs because validation recall stops improving
    at 10-20 epochs at this learning rate (lr 0.005, batch 4096, reg 1e-3 were
    picked on the validation users of the ID-only model).

    Off by default (`enabled: false`): the stages `preference_images` and
    `recommend` then write only a metrics file saying so (a few seconds in
    `make demo`). Run the experiment with
    `dvc exp run -S recommend.enabled=true` (or set it in params.yaml and
    `pmg preference_images && pmg recommend`).

    Attributes:
        enabled: run the experiment (see above).
        out: output folder: `<out>/<scenario>/` (poster features, tables),
            `<out>/preference_images/<scenario>/` (the users' features).
        image_cache: the preference-only PNGs by content key (outside DVC's
            outputs, like the LLM cache: an unchanged user is never redrawn).
        validation_fraction: share of users (by hash of the id) that pick
            the epoch (`pmg.recommend.data.hash_user_split`).
        test_fraction: share of users (the next hash range) that are tested.
        scenario: the scenario whose interactions and item images are used
            (the paper: MovieLens, `movies`).
        settings: the Table-4 settings to run (`pmg.recommend.data.SETTINGS`).
        seeds: training seeds; each setting runs once per seed (>= 3 for
            the reported intervals).
        holdout_last: positives held out per validation/test user (2 = the
            items after PMG's history window: the target and supervision items).
        max_users: keep the first this many users by id; null keeps all.
        dim: ID embedding and layer width.
        latent_dim: width visual features are projected to.
        layers: graph layers per branch (MMGCN's code: 3).
        epochs: passes over the training edges.
        batch_size: training edges per step (each step runs the whole graph).
        lr: Adam's learning rate.
        reg_weight: L2 penalty on the batch's ID embeddings and preferences.
        validate_every: validation (epoch selection) every this many epochs.
        select_metric: the validation metric that picks the epoch.
        top_k: cut-offs of Recall@K and NDCG@K.
        bootstrap_resamples: replicates of the 95% intervals.
        max_generated_users: preference-only images are generated for at most
            this many users (the first by id among those with keywords);
            null = all users with keywords.
    """

    enabled: bool = False
    out: str = "data/recommend"
    image_cache: str = "data/cache/preference_images"
    validation_fraction: float = Field(default=0.1, ge=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    scenario: str = "movies"
    settings: tuple[Literal["no_image", "item_image", "mean_user", "generated_user"], ...] = (
        "no_image", "item_image", "mean_user", "generated_user",
    )  # fmt: skip
    seeds: tuple[int, ...] = (0, 1, 2)
    holdout_last: int = Field(default=2, ge=1)
    max_users: int | None = Field(default=None, ge=1)
    dim: int = Field(default=64, ge=1)
    latent_dim: int = Field(default=64, ge=1)
    layers: int = Field(default=2, ge=1)
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=4096, ge=1)
    lr: float = Field(default=0.005, gt=0)
    reg_weight: float = Field(default=1e-3, ge=0)
    validate_every: int = Field(default=5, ge=1)
    select_metric: str = "recall@20"
    top_k: tuple[int, ...] = (10, 20)
    bootstrap_resamples: int = Field(default=2000, ge=100)
    max_generated_users: int | None = Field(default=None, ge=1)

    @field_validator("scenario")
    @classmethod
    def _known_scenario(cls, scenario: str) -> str:
        return _registered((scenario,))[0]

    @model_validator(mode="after")
    def _check(self) -> RecommendConfig:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list without repeats, got {list(self.seeds)}")
        if not self.settings or len(set(self.settings)) != len(self.settings):
            raise ValueError(f"settings must be a non-empty list without repeats, got {list(self.settings)}")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"validation_fraction + test_fraction must be below 1, got "
                f"{self.validation_fraction} + {self.test_fraction}"
            )
        if not self.top_k or min(self.top_k) < 1:
            raise ValueError(f"top_k must be positive cut-offs, got {list(self.top_k)}")
        metric, _, k = self.select_metric.partition("@")
        if metric not in ("recall", "ndcg") or not k.isdigit() or int(k) not in self.top_k:
            raise ValueError(
                f"select_metric must be recall@K or ndcg@K with K in top_k {list(self.top_k)}, "
                f"got {self.select_metric!r}"
            )
        return self


# ------------------------------------------------------------------------ params


class Params(Section):
    """All of `params.yaml`."""

    base: BaseConfig = BaseConfig()
    profiles: dict[str, ProfileConfig]
    assets: AssetsConfig = AssetsConfig()
    prepare: PrepareConfig = PrepareConfig()
    registry: RegistryConfig = RegistryConfig()
    zoo: ZooConfig = ZooConfig()
    rehearsal: RehearsalConfig = RehearsalConfig()
    describe: DescribeConfig = DescribeConfig()
    keywords: KeywordsConfig = KeywordsConfig()
    generate: GenerateConfig = GenerateConfig()
    select: SelectConfig = SelectConfig()
    train_soft: TrainSoftConfig = TrainSoftConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()
    recommend: RecommendConfig = RecommendConfig()

    @model_validator(mode="after")
    def _profile_exists(self) -> Params:
        if self.base.profile not in self.profiles:
            raise ValueError(
                f"base.profile is {self.base.profile!r} but profiles defines only {sorted(self.profiles)}"
            )
        return self

    @property
    def profile(self) -> ProfileConfig:
        """The model profile selected by `base.profile`."""
        return self.profiles[self.base.profile]


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = []
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "<top>"
        if problem["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key {key!r}")
        elif problem["type"] == "missing":
            lines.append(f"{source}: missing key {key!r}")
        else:
            lines.append(f"{source}: {key}: {problem['msg']} (got {_short_repr(problem.get('input'))})")
    return "\n".join(lines)


def _short_repr(value: Any, limit: int = 120) -> str:
    """`repr(value)`, cut to `limit` characters so one bad value stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _apply_override(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


MAX_NESTING = 1000
"""Deepest nesting of lists and mappings a parameter value may have.

Checked explicitly: catching `RecursionError` alone depends on the
interpreter's recursion limit, which imported libraries raise."""


def _too_deep(value: Any) -> bool:
    """Whether `value` nests lists/mappings deeper than `MAX_NESTING` (iterative, no recursion)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            return True
        if isinstance(node, Mapping):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((child, depth + 1) for child in node)
    return False


def parse_params(raw: Mapping[str, Any], source: str = "params") -> Params:
    """Validate a parsed YAML mapping into frozen `Params`.

    Raises:
        ConfigError: naming each unknown, missing or ill-typed key.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    if _too_deep(raw):
        raise ConfigError(f"{source}: a value is nested too deeply to be a setting (over {MAX_NESTING} levels)")
    try:
        return Params.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None
    except RecursionError:
        raise ConfigError(f"{source}: a value is nested too deeply to be a setting") from None


def load_params(path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None) -> Params:
    """Read `params.yaml` (plus dotted `overrides`) into frozen `Params`.

    Args:
        path: the YAML file.
        overrides: `{"dotted.key": value}` applied on top of the file, e.g.
            `{"base.profile": "full", "prepare.out": "/tmp/x"}`.

    Raises:
        ConfigError: the file is missing, not YAML, or has a bad key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a parameters file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start} is {err.object[err.start:err.start + 1]!r})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a parameters file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for key, value in (overrides or {}).items():
        _apply_override(raw, key, value)
    return parse_params(raw, source=str(path))
