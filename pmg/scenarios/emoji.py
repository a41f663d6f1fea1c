"""The emoji scenario: conversations ending in an emoji (no public data: the default world only).

Declared here and nowhere else: the `prepare.emoji` section, the loader (the
default world of `pmg.data.world.emoji`), the prompt templates
(`emoji.yaml`), the zoo caption (the glyph's Unicode name, e.g. "crying cat
face emoji") and the ground-truth check: whether the keywords mention the
user's latent character and the conversation's emotion. The paper trains no
soft preference adapter for emoji (keywords only), so none is trained by
default.
"""

from __future__ import annotations

import json
from typing import Literal

import pandas as pd
from pydantic import Field

from pmg.data.dataset import ScenarioData
from pmg.data.store import PreparedScenario
from pmg.scenarios.base import (
    HIT_COLUMNS,
    LoadContext,
    Scenario,
    ScenarioSection,
    item_attributes,
    latent_preferences,
)
from pmg.text import named

NAME = "emoji"


class EmojiSource(ScenarioSection):
    """The emoji scenario (`prepare.emoji`; default world only: no public data exists).

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


def load(cfg: EmojiSource, ctx: LoadContext) -> ScenarioData:
    """The default world of `pmg.data.world.emoji`."""
    from pmg.data.world.emoji import build_emoji_world

    return build_emoji_world(
        cfg, assets=ctx.assets, images_dir=ctx.scenario_dir / "images", size=ctx.image_size, seed=ctx.seed
    )


def caption(title: str, attributes: dict) -> str:
    """A glyph's caption: its Unicode name, e.g. "crying cat face emoji"."""
    return f"{title.lower()} emoji"


# ------------------------------------------------------------- ground truth

CHARACTER_WORDS: dict[str, tuple[str, ...]] = {
    "face": ("face", "faces", "smiley", "smileys", "smiling face", "emoticon"),
    "cat": ("cat", "cats", "kitten", "kitty", "feline"),
    "monkey": ("monkey", "monkeys", "ape", "chimp"),
    "person": ("person", "people", "man", "woman", "boy", "girl", "human", "dancer", "couple", "gesture"),
}
EMOTION_WORDS: dict[str, tuple[str, ...]] = {
    "joy": (
        "joy",
        "joyful",
        "happy",
        "happiness",
        "cheerful",
        "laugh",
        "laughing",
        "excited",
        "glad",
        "delighted",
    ),
    "sadness": ("sad", "sadness", "crying", "cry", "tears", "unhappy", "upset", "disappointed", "lonely"),
    "anger": ("anger", "angry", "mad", "furious", "rage", "annoyed", "frustrated"),
    "surprise": ("surprise", "surprised", "shocked", "astonished", "amazed", "wow"),
    "love": ("love", "loving", "romantic", "heart", "hearts", "affection", "kiss"),
    "fear": ("fear", "scared", "afraid", "terrified", "anxious", "nervous", "worried", "fearful", "panic"),
}


def emoji_hits(keywords: pd.DataFrame, prepared: PreparedScenario) -> pd.DataFrame:
    """Whether keywords mention the latent character and the conversation's emotion.

    Matched through a small fixed lexicon (`CHARACTER_WORDS`, `EMOTION_WORDS`),
    on the preference keywords, the target keywords and both together.

    Returns:
        `GroundTruthHits` rows with variant `preference_keywords`,
        `target_keywords` or `all_keywords` and check `character` or
        `emotion`; `target_differs` says whether the target emoji shows
        another character (emotion) than the latent one.
    """
    preferences = latent_preferences(prepared)
    rows: list[dict] = []
    for row in keywords.itertuples(index=False):
        user = str(row.user_id)
        if user not in preferences:
            continue
        wanted = preferences[user]
        target_attrs = item_attributes(prepared, str(row.target_item))
        lists = {
            "preference_keywords": json.loads(row.preference_keywords),
            "target_keywords": json.loads(row.target_keywords),
        }
        lists["all_keywords"] = lists["preference_keywords"] + lists["target_keywords"]
        for variant, words in lists.items():
            for check, lexicon in (("character", CHARACTER_WORDS), ("emotion", EMOTION_WORDS)):
                expected = str(wanted.get(check))
                found = named(words, lexicon)
                target_value = target_attrs.get(check)
                rows.append(
                    {
                        "scenario": NAME,
                        "variant": variant,
                        "user_id": user,
                        "target_item": str(row.target_item),
                        "check": check,
                        "expected": expected,
                        "observed": ", ".join(sorted(found)),
                        "value": float(expected in found),
                        "target_differs": None if target_value is None else bool(target_value != expected),
                    }
                )
    return pd.DataFrame(rows, columns=HIT_COLUMNS)


def ground_truth(
    prepared: PreparedScenario, *, outputs: pd.DataFrame | None, keywords: pd.DataFrame | None
) -> pd.DataFrame | None:
    """Keyword checks against the latent character and emotion (default world only)."""
    if prepared.ground_truth is None or keywords is None or not len(keywords):
        return None
    return emoji_hits(keywords, prepared)


SCENARIO = Scenario(
    name=NAME,
    section=EmojiSource,
    load=load,
    seed_index=2,
    prompts="emoji.yaml",
    noun="emoji",
    caption=caption,
    assets=("noto-emoji",),
    ground_truth=ground_truth,
    ground_truth_note=(
        "Share of users whose keywords mention their latent character and the conversation's emotion; "
        "*_target_differs: only users whose target emoji shows another character / emotion."
    ),
    soft_adapter=False,
)
