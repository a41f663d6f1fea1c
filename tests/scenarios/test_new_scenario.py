"""A fourth scenario is one declaration: registered at run time, it goes through the real stages.

The test declares a tiny `stickers` scenario the way `pmg/scenarios/<name>.py`
does (its section, loader, prompt file, noun, caption), writes its prompt
templates and a params file, registers it, and runs `prepare -> describe ->
keywords` through the `pmg` command on tiny models. No other project file
knows it: the config, the CLI's choices, the schemas, the stages' paths, the
soft model's prompt and the zoo's captions all come from the registry.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Literal

import pandas as pd
import pytest
import yaml
from PIL import Image
from pydantic import Field

from pmg import scenarios, schemas
from pmg.cli import build_parser, main
from pmg.data.dataset import ScenarioData, empty_conversations
from pmg.data.store import read_scenario
from pmg.io import read_table
from pmg.scenarios import LoadContext, Scenario, ScenarioSection

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ("star", "heart", "moon")
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220)}


class StickerSource(ScenarioSection):
    """`prepare.stickers`: a tiny simulated world."""

    source: Literal["default"] = "default"
    n_users: int = Field(default=3, ge=1)
    history_len: int = Field(default=2, ge=1)
    max_users: int | None = None


def load(cfg: StickerSource, ctx: LoadContext) -> ScenarioData:
    """Six stickers (three shapes in two colours) and users who each used five."""
    images = ctx.scenario_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (shape, (colour, rgb)) in enumerate((s, c) for s in SHAPES for c in COLOURS.items()):
        item = f"s{index + 1}"
        Image.new("RGB", (ctx.image_size, ctx.image_size), rgb).save(images / f"{item}.png")
        rows.append(
            {
                "item_id": item,
                "scenario": "stickers",
                "title": f"{colour} {shape}",
                "text": f"A {colour} {shape} sticker.",
                "attributes": json.dumps({"shape": shape, "colour": colour}),
                "image_path": f"images/{item}.png",
            }
        )
    items = pd.DataFrame(rows)
    clicks = [
        {"user_id": f"k{u}", "item_id": f"s{(u + k) % 6 + 1}", "timestamp": k, "rating": None}
        for u in range(cfg.n_users)
        for k in range(5)
    ]
    interactions = pd.DataFrame(clicks)
    interactions["rating"] = interactions["rating"].astype(float)
    return ScenarioData(
        scenario="stickers",
        items=schemas.Items.validate(items),
        interactions=schemas.Interactions.validate(interactions),
        conversations=empty_conversations(),
        skipped=Counter(),
    )


PROMPTS = """\
version: stickers-1
scenario: stickers
item_noun: sticker
summary: |-
  Describe this {noun} in a few words: {text}
preference: |-
  Used:
  {history}
  {conversations}
  Fill in the blank with {attribute} words: {cloze}
attributes:
  - name: shape
    phrase: shape
    cloze: The user likes ____ stickers.
    example: [triangle]
    fallback_fields: [shape]
  - name: colour
    phrase: colour
    cloze: The user likes ____ colours.
    example: [green]
    fallback_fields: [colour]
target: |-
  Item: {line}
  {cloze}
target_example: [sticker]
target_cloze: This sticker is ____.
target_fallback_fields: [shape, colour]
caption_fields: [shape, colour]
"""


@pytest.fixture
def stickers(tmp_path: Path):
    prompts = tmp_path / "stickers.yaml"
    prompts.write_text(PROMPTS, encoding="utf-8")
    spec = scenarios.register(
        Scenario(
            name="stickers",
            section=StickerSource,
            load=load,
            seed_index=3,
            prompts=str(prompts),
            noun="stickers",
            caption=lambda title, attributes: f"{title} sticker",
            soft_adapter=False,
        )
    )
    yield spec
    scenarios.unregister("stickers")


@pytest.mark.slow  # tiny models, three stages: ~30 s
def test_a_fourth_scenario_runs_prepare_describe_keywords(stickers: Scenario, tmp_path: Path) -> None:
    from pmg.models.tiny import save_tiny_llm, save_tiny_open_clip

    llm, clip = save_tiny_llm(tmp_path / "llm", seed=0), save_tiny_open_clip(tmp_path / "clip", seed=0)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["base"]["scenarios"] = ["stickers"]
    raw["prepare"] = {"out": str(tmp_path / "prepared"), "image_size": 32, "stickers": {"n_users": 3}}
    mini = raw["profiles"]["mini"]
    mini.update(device="cpu", llm={"kind": "hf", "path": str(llm)})
    mini["captioner"] = {"kind": "clip-retrieval", "name": "pmg-tiny-clip", "path": str(clip)}
    raw["describe"].update(out=str(tmp_path / "describe"), llm_cache=str(tmp_path / "cache"), max_users=3)
    # An adapter scenario describes its train and validation users too (else only its test users).
    raw["train_soft"]["scenarios"] = ["stickers"]
    raw["keywords"].update(
        out=str(tmp_path / "keywords"), llm_cache=str(tmp_path / "cache"), max_new_tokens=4, target_max_new_tokens=4
    )
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw), encoding="utf-8")

    # The CLI offers it (choices come from the registry).
    assert build_parser().parse_args(["describe", "--scenario", "stickers"]).scenario == "stickers"
    args = ["--params", str(params_file), "--metrics-root", str(tmp_path / "metrics")]
    for command in ("prepare", "describe", "keywords"):
        assert main([*args, command, "--scenario", "stickers"]) == 0, command

    prepared = read_scenario(tmp_path / "prepared" / "stickers")
    assert prepared.scenario == "stickers" and len(prepared.splits) == 3
    descriptions = read_table(tmp_path / "describe" / "stickers.parquet", schemas.Descriptions)
    # The captioner chose from the scenario's own vocabulary (its caption_fields).
    captions = descriptions["line"].str.extract(r"Image: (.*)\.$")[0].dropna()
    assert len(captions) and all(set(c.split(", ")) <= {*SHAPES, *COLOURS} for c in captions)
    keywords = read_table(tmp_path / "keywords" / "stickers.parquet", schemas.Keywords)
    assert sorted(keywords["user_id"]) == ["k0", "k1", "k2"]
    assert set(keywords["template_version"]) == {"stickers-1"}
    for stage in ("prepare", "describe", "keywords"):
        assert (tmp_path / "metrics" / stage / "stickers.json").is_file()
        assert (tmp_path / "metrics" / "timings" / stage / "stickers.json").is_file()

    # Everything else that is per scenario reads the registry too.
    from pmg.method.soft import behaviour_prompts
    from pmg.zoo.pairs import caption_for_item

    assert behaviour_prompts("stickers", descriptions)["k0"].startswith("The user liked these stickers:")
    assert caption_for_item("stickers", "red star", {}) == "red star sticker"


def test_a_scenario_section_is_typed_by_its_declaration(stickers: Scenario, tmp_path: Path) -> None:
    from pmg.config import load_params
    from pmg.errors import ConfigError

    params = load_params(ROOT / "params.yaml", {"base.scenarios": ["stickers"], "prepare.stickers": {"n_users": 5}})
    assert params.prepare.section("stickers") == StickerSource(n_users=5)
    assert params.prepare.section("clothing").history_len == 5  # the others keep their defaults
    with pytest.raises(ConfigError, match="unknown key 'prepare.stickers.size'"):
        load_params(ROOT / "params.yaml", {"prepare.stickers": {"size": 5}})
    scenarios.unregister("stickers")
    with pytest.raises(ConfigError, match="unknown key 'prepare.stickers'"):
        load_params(ROOT / "params.yaml", {"prepare.stickers": {"n_users": 5}})
    with pytest.raises(ConfigError, match=r"base.scenarios: .*unknown scenario\(s\) \['stickers'\]"):
        load_params(ROOT / "params.yaml", {"base.scenarios": ["stickers"]})
