"""The default emoji world: a character-preferring history, a conversation, then target and supervision."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from world_helpers import tree_bytes

from pmg import schemas
from pmg.scenarios.emoji import EmojiSource
from pmg.data.dataset import ScenarioData, make_splits
from pmg.data.world import emoji as world
from pmg.data.world.emoji import (
    _TEMPLATES,
    EMOJI,
    EMOTIONS,
    GENERIC_CHARACTER,
    build_emoji_world,
    catalogue_entries,
    conversation,
    emoji_item_id,
    emoji_title,
    item_row,
    simulate_users,
)
from pmg.errors import AssetError


def _items() -> pd.DataFrame:
    rows = [item_row(g, c, e, f"images/{emoji_item_id(g)}.png") for g, c, e in catalogue_entries()]
    return schemas.Items.validate(pd.DataFrame(rows))


def _check_world(
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    conversations: pd.DataFrame,
    truth: pd.DataFrame,
    cfg: EmojiSource,
) -> None:
    """The split is exactly history / generic emotion emoji / character emoji."""
    data = ScenarioData("emoji", items, interactions, conversations, truth)
    splits, skipped = make_splits(data, cfg.history_len)
    assert len(splits) == cfg.n_users and not skipped
    attributes = {i: json.loads(a) for i, a in zip(items["item_id"], items["attributes"], strict=True)}
    preferences = {r.user_id: json.loads(r.preferences) for r in truth.itertuples()}
    own_history = 0
    for split in splits.itertuples():
        truth_of = preferences[split.user_id]
        assert set(truth_of) == {"character", "emotion"}
        history = json.loads(split.history_items)
        assert len(history) == len(set(history)) == cfg.history_len
        target, supervision = attributes[split.target_item], attributes[split.supervision_item]
        assert target == {"character": GENERIC_CHARACTER, "emotion": truth_of["emotion"]}
        assert supervision["character"] == truth_of["character"]
        own_history += sum(attributes[i]["character"] == truth_of["character"] for i in history)
        turns = conversations[conversations["user_id"] == split.user_id]
        assert list(turns["turn"]) == list(range(cfg.turns))
        patterns = _template_patterns(truth_of["emotion"])
        assert all(any(p.fullmatch(text) for p in patterns) for text in turns["text"])
    assert own_history >= 0.6 * cfg.n_users * cfg.history_len  # "mostly" their character


def _template_patterns(emotion: str) -> list[re.Pattern[str]]:
    """The emotion's templates as regexes, each slot matching any text."""
    return [
        re.compile(".+".join(re.escape(part) for part in re.split(r"\{\w+\}", t)))
        for t in _TEMPLATES[emotion]
    ]


# ------------------------------------------------------------------ pure functions


def test_emoji_table_is_well_formed() -> None:
    entries = catalogue_entries()
    glyphs = [g for g, _, _ in entries]
    assert len(glyphs) == len(set(glyphs))
    assert len({emoji_item_id(g) for g in glyphs}) == len(glyphs)
    for glyph, _character, emotion in entries:
        assert emoji_title(glyph), glyph
        assert emotion in (*EMOTIONS, "neutral")
        assert "\u200d" not in glyph  # no ZWJ sequences
    assert set(EMOJI[GENERIC_CHARACTER]) == set(EMOTIONS)  # a generic target for every emotion
    for character, by_emotion in EMOJI.items():
        assert sum(len(v) for v in by_emotion.values()) >= 5, character
        assert len(set(by_emotion) & set(EMOTIONS)) >= 3, character


def test_titles_are_unicode_names() -> None:
    assert emoji_title("\U0001f63f") == "crying cat face"
    assert emoji_item_id("\U0001f63f") == "emoji-1f63f"
    assert emoji_title("\U000f0000") is None  # private use: no name, so the glyph is skipped


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_conversations_are_varied_and_name_no_character(emotion: str) -> None:
    rng = np.random.default_rng(0)
    turns = conversation(emotion, 4, rng)
    assert len(turns) == 4 and len(set(turns)) == 4
    assert all("{" not in t and t.strip() for t in turns)
    assert len(_TEMPLATES[emotion]) >= 8
    characters = {c for c in EMOJI} | {"cats", "kitten", "monkeys", "dog"}
    for template in _TEMPLATES[emotion]:
        words = set(re.findall(r"[a-z]+", template.lower()))
        assert not words & characters, template
    assert len(conversation(emotion, 25, rng)) == 25  # more turns than templates: reused


def test_simulated_users_give_exactly_the_split_the_method_needs() -> None:
    items = _items()
    cfg = EmojiSource(n_users=80, history_len=4, turns=3)
    interactions, conversations, truth, skipped = simulate_users(items, cfg, np.random.default_rng(0))
    assert not skipped
    schemas.Interactions.validate(interactions)
    schemas.Conversations.validate(conversations)
    schemas.GroundTruth.validate(truth)
    assert {json.loads(p)["character"] for p in truth["preferences"]} == set(EMOJI)
    assert interactions.groupby("user_id").size().eq(cfg.history_len + 2).all()
    _check_world(items, interactions, conversations, truth, cfg)


def test_long_histories_borrow_other_characters() -> None:
    items = _items()
    cfg = EmojiSource(n_users=30, history_len=9, turns=1)
    interactions, conversations, truth, skipped = simulate_users(items, cfg, np.random.default_rng(1))
    assert not skipped
    data = ScenarioData("emoji", items, interactions, conversations, truth)
    splits, _ = make_splits(data, cfg.history_len)
    assert len(splits) == 30


def test_ground_truth_is_not_written_into_behaviour() -> None:
    items = _items()
    cfg = EmojiSource(n_users=40)
    _, conversations, _, _ = simulate_users(items, cfg, np.random.default_rng(2))
    text = " ".join(conversations["text"]).lower()
    for character in EMOJI:
        assert not re.search(rf"\b{character}\b", text)


# --------------------------------------------------------------- the world, real font


def test_world_renders_glyphs_and_splits(emoji_assets: Path, tmp_path: Path) -> None:
    cfg = EmojiSource(n_users=25, history_len=4, turns=3)
    data = build_emoji_world(cfg, assets=emoji_assets, images_dir=tmp_path / "images", size=32, seed=4)
    assert data.scenario == "emoji" and not data.skipped
    assert len(data.items) == len(catalogue_entries())
    for row in data.items.itertuples():
        image = Image.open(tmp_path / row.image_path)
        assert image.mode == "RGB" and image.size == (32, 32)
        pixels = np.asarray(image)
        assert tuple(pixels[0, 0]) == (255, 255, 255) and pixels.std() > 10
        assert row.title == unicodedata.name(chr(int(row.item_id.split("-")[1], 16))).lower()
    _check_world(data.items, data.interactions, data.conversations, data.ground_truth, cfg)


def test_world_is_deterministic(emoji_assets: Path, tmp_path: Path) -> None:
    cfg = EmojiSource(n_users=10)
    a = build_emoji_world(cfg, assets=emoji_assets, images_dir=tmp_path / "a" / "images", size=24, seed=1)
    b = build_emoji_world(cfg, assets=emoji_assets, images_dir=tmp_path / "b" / "images", size=24, seed=1)
    c = build_emoji_world(cfg, assets=emoji_assets, images_dir=tmp_path / "c" / "images", size=24, seed=2)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    for name in ("items", "interactions", "conversations", "ground_truth"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not a.interactions.equals(c.interactions)


def test_glyphs_the_font_lacks_are_skipped_and_counted(
    emoji_assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = {character: dict(by_emotion) for character, by_emotion in EMOJI.items()}
    table["cat"]["joy"] = (*table["cat"]["joy"], "a")  # LATIN SMALL LETTER A: not in the emoji font
    monkeypatch.setattr(world, "EMOJI", table)
    data = build_emoji_world(
        EmojiSource(n_users=3), assets=emoji_assets, images_dir=tmp_path / "images", size=24, seed=0
    )
    assert data.skipped == {"glyph_missing": 1}
    assert "emoji-61" not in set(data.items["item_id"])


def test_missing_font_is_an_asset_error(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="NotoColorEmoji.ttf.*pmg assets fetch"):
        build_emoji_world(EmojiSource(), assets=tmp_path, images_dir=tmp_path / "images", size=32, seed=0)
