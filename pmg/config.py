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
        url: endpoint base URL for `openai`-kind LLMs.
        dtype: `auto` (fp16 on CUDA, fp32 on CPU), `float32`, `float16` or `bfloat16`.
    """

    kind: str
    path: str | None = None
    name: str | None = None
    url: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"


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


# ------------------------------------------------------------------------ params


class Params(Section):
    """All of `params.yaml`."""

    base: BaseConfig = BaseConfig()
    profiles: dict[str, ProfileConfig]
    assets: AssetsConfig = AssetsConfig()
    prepare: PrepareConfig = PrepareConfig()

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
