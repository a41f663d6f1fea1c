"""Typed, frozen configuration parsed once per entry point from `params.yaml`.

`load_params()` reads the file, applies optional dotted overrides
(`{"base.profile": "full"}`), and returns a frozen :class:`Params`. Every
section rejects keys it does not know, with a message naming the full dotted
key, so a typo in `params.yaml` fails at start-up instead of being ignored.
Library code takes these objects (or one section of them), never the file.

Profiles: `profiles.mini` (default; CPU, offline, small models built from
packaged assets) and `profiles.full` (real checkpoints by hub id or local path,
on GPU) name the models. `base.profile` picks one; the code path is the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pmg.errors import ConfigError
from pmg.schemas import SCENARIOS

Scenario = Literal["clothing", "movies", "emoji"]


class Section(BaseModel):
    """A frozen config section that forbids unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- base


class BaseConfig(Section):
    """Settings every stage shares.

    Attributes:
        seed: the one seed all randomness derives from.
        profile: which entry of `profiles` names the models.
        scenarios: the scenarios the pipeline runs, in order.
    """

    seed: int = 0
    profile: str = "mini"
    scenarios: tuple[Scenario, ...] = SCENARIOS

    @model_validator(mode="after")
    def _scenarios_unique(self) -> BaseConfig:
        if len(set(self.scenarios)) != len(self.scenarios) or not self.scenarios:
            raise ValueError(f"scenarios must be a non-empty list without repeats, got {list(self.scenarios)}")
        return self


# ------------------------------------------------------------------------ models


class ModelSpec(Section):
    """Where one model comes from.

    Attributes:
        kind: the loader to use (e.g. `hf`, `gguf`, `openai` for LLMs;
            `diffusers` for generators; `open_clip` for scorers).
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
            error, a timeout or a 5xx answer (4xx answers are not retried).
        api_key_env: name of the environment variable holding the endpoint's
            API key (sent as a bearer token); null sends none. The key itself
            never goes in `params.yaml`.
        safety_checker: generators only; `false` loads the pipeline without
            its safety checker, `true` keeps whatever the pipeline folder has.
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


class ProfileConfig(Section):
    """The models of one profile and where they run.

    Attributes:
        device: `auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`.
        llm: the LLM for summaries and keywords, and the base of the
            bias-correcting LLM.
        captioner: image-to-text model.
        generator: text-to-image diffusion pipeline.
        scorer: image-text model (CLIP) for candidate selection.
        lpips: LPIPS weights folder (safetensors made by the assets stage).
    """

    device: str = "auto"
    llm: ModelSpec
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


class MoviesSource(Section):
    """Where the movie scenario's data comes from.

    Attributes:
        source: `default` (MovieLens-100K from the RecBole package archive,
            posters rendered), `ml-latest-small` (GroupLens CSVs),
            `ml-100k` (GroupLens `u.data`/`u.item`), or `recbole` (RecBole
            atomic files `*.inter`/`*.item`).
        path: folder of the real files, for every source but `default`.
        posters: optional folder of poster images named `<movieId>.<ext>`;
            movies without one get a rendered poster.
        min_rating: ratings below this are not behaviour (paper: 4).
        history_len: history items per user (paper: 3).
        max_users: keep at most this many users (the first by id); null keeps all.
    """

    source: Literal["default", "ml-latest-small", "ml-100k", "recbole"] = "default"
    path: str | None = None
    posters: str | None = None
    min_rating: float = 4.0
    history_len: int = Field(default=3, ge=1)
    max_users: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _path_given(self) -> MoviesSource:
        if self.source != "default" and not self.path:
            raise ValueError(f"source {self.source!r} needs 'path' (the folder of its files)")
        return self


class ClothingSource(Section):
    """Where the clothing scenario's data comes from.

    Attributes:
        source: `default` (simulated users over a rendered garment catalogue)
            or `pog` (Alibaba POG `user_data.txt`/`item_data.txt`/`outfit_data.txt`).
        path: folder of the POG files.
        images: folder of POG item images named `<item_id>.<ext>`.
        history_len: history items per user (paper: last 5 clicked with images).
        n_items: catalogue size of the default world.
        n_users: simulated users of the default world.
        clicks_per_user: inclusive range of clicks a simulated user makes.
        preference_strength: probability that a simulated click follows the
            user's latent preference rather than being uniform.
        max_users: keep at most this many users; null keeps all.
    """

    source: Literal["default", "pog"] = "default"
    path: str | None = None
    images: str | None = None
    history_len: int = Field(default=5, ge=1)
    n_items: int = Field(default=600, ge=10)
    n_users: int = Field(default=200, ge=1)
    clicks_per_user: tuple[int, int] = (8, 14)
    preference_strength: float = Field(default=0.8, ge=0.0, le=1.0)
    max_users: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ClothingSource:
        if self.source == "pog" and not (self.path and self.images):
            raise ValueError("source 'pog' needs 'path' (the POG text files) and 'images' (item images)")
        low, high = self.clicks_per_user
        if low > high or low < self.history_len + 2:
            raise ValueError(
                f"clicks_per_user {list(self.clicks_per_user)} must be an ordered range starting at "
                f"history_len + 2 = {self.history_len + 2} or more"
            )
        return self


class EmojiSource(Section):
    """The emoji scenario (default world only: no public data exists).

    Attributes:
        source: `default`, built from the Noto Color Emoji font's glyphs.
        n_users: simulated users.
        history_len: emoji a user used before the conversation.
        turns: conversation turns per user.
        max_users: keep at most this many users; null keeps all.
    """

    source: Literal["default"] = "default"
    n_users: int = Field(default=120, ge=1)
    history_len: int = Field(default=4, ge=1)
    turns: int = Field(default=3, ge=1)
    max_users: int | None = Field(default=None, ge=1)


class PrepareConfig(Section):
    """The `prepare` stage: canonical tables and images per scenario.

    Attributes:
        out: output folder; one sub-folder per scenario.
        image_size: side in pixels of rendered item images (square, RGB).
    """

    out: str = "data/prepared"
    image_size: int = Field(default=128, ge=16)
    movies: MoviesSource = MoviesSource()
    clothing: ClothingSource = ClothingSource()
    emoji: EmojiSource = EmojiSource()


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

    @model_validator(mode="after")
    def _check(self) -> RegistryConfig:
        metrics = [gate.metric for gate in self.gates]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"gates name a metric more than once: {metrics}")
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
    """

    out: str = "data/zoo/clip"
    image_size: int = Field(default=64, ge=16)
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=2)
    lr: float = Field(default=1e-3, gt=0)
    heldout_fraction: float = Field(default=0.15, gt=0, lt=1)
    min_gate_ratio: float = Field(default=3.0, ge=0)


class ZooSDConfig(Section):
    """Training of the mini Stable Diffusion pipeline of the `mini` profile.

    Attributes:
        out: output folder (diffusers `StableDiffusionPipeline` format).
        resolution: image side in pixels (32-64 on a CPU).
        steps: optimisation steps.
        batch_size: images per step.
        lr: AdamW learning rate.
        inference_steps: denoising steps used by the gates.
        min_prompt_match: share of held-out prompts whose image must be
            closer (mini CLIP) to its own prompt than to a mismatched one.
        min_colour_ratio: clothing colour accuracy must reach this multiple
            of chance.
    """

    out: str = "data/zoo/sd"
    resolution: int = Field(default=32, ge=16)
    steps: int = Field(default=3000, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=5e-4, gt=0)
    inference_steps: int = Field(default=20, ge=1)
    min_prompt_match: float = Field(default=0.7, ge=0, le=1)
    min_colour_ratio: float = Field(default=3.0, ge=0)


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

# ------------------------------------------------------------------------ params


class Params(Section):
    """All of `params.yaml`."""

    base: BaseConfig = BaseConfig()
    profiles: dict[str, ProfileConfig]
    assets: AssetsConfig = AssetsConfig()
    prepare: PrepareConfig = PrepareConfig()
    registry: RegistryConfig = RegistryConfig()
    zoo: ZooConfig = ZooConfig()

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
            lines.append(f"{source}: {key}: {problem['msg']} (got {problem.get('input')!r})")
    return "\n".join(lines)


def _apply_override(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_params(raw: Mapping[str, Any], source: str = "params") -> Params:
    """Validate a parsed YAML mapping into frozen `Params`.

    Raises:
        ConfigError: naming each unknown, missing or ill-typed key.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return Params.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


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
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for key, value in (overrides or {}).items():
        _apply_override(raw, key, value)
    return parse_params(raw, source=str(path))
