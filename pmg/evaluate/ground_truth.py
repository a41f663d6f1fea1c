"""Did personalisation recover what the simulation put in? (default world only)

The default world's users have latent preferences (`GroundTruth` table), which
the method never reads. These checks compare them with what the method made;
none uses CLIP (it selected the outputs).

* **clothing** — the user's latent colour and pattern, measured on the output
  image's pixels with :func:`pmg.data.world.clothing.measure_colour` /
  :func:`measure_pattern`. Hit rate per variant; the non-personalised variant
  (`none`) is the baseline, and the target item's own image (pseudo-variant
  `target_image`) shows what a generator that copied the target would score.
  Because targets are drawn independently of the preference, most of them
  have another colour: the rate among pairs whose *target* colour (pattern)
  differs from the preferred one is where personalisation has to change the
  image, and it is reported separately (`*_target_differs`).
* **movies** — the genres named by the preference keywords against the genres
  of the user's history items: precision (of the genres named, the share the
  history has) and recall (of the history's genres, the share named). The
  same on the target keywords (the non-personalised text) is the baseline.
  Genre names are matched as whole words after lower-casing, with a few
  synonyms (`GENRE_WORDS`).
* **emoji** — whether the preference keywords mention the user's latent
  character (face, cat, monkey, person) and the conversation's emotion, via a
  small fixed lexicon (`CHARACTER_WORDS`, `EMOTION_WORDS`); also on the target
  keywords, and on both together.

Rows are `GroundTruthHits` (`pmg.schemas`); :func:`summarize_hits` turns them
into the rates written next to LPIPS / SSIM.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from PIL import Image

TARGET_IMAGE = "target_image"
"""Pseudo-variant: the target item's own image measured like an output."""

GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "action": ("action",),
    "adventure": ("adventure", "adventures", "adventurous"),
    "animation": ("animation", "animated", "cartoon"),
    "children": ("children", "childrens", "children s", "kids", "family"),
    "comedy": ("comedy", "comedies", "comedic", "funny", "humor", "humour"),
    "crime": ("crime", "criminal", "gangster"),
    "documentary": ("documentary", "documentaries"),
    "drama": ("drama", "dramas", "dramatic"),
    "fantasy": ("fantasy",),
    "film noir": ("film noir", "noir"),
    "horror": ("horror", "scary"),
    "musical": ("musical", "musicals"),
    "mystery": ("mystery", "mysteries", "mysterious"),
    "romance": ("romance", "romantic", "love story"),
    "sci fi": ("sci fi", "scifi", "science fiction"),
    "thriller": ("thriller", "thrillers", "suspense"),
    "war": ("war",),
    "western": ("western", "westerns", "cowboy"),
    "imax": ("imax",),
}
"""Canonical genre -> words that name it (normalised: lower case, non-letters as spaces)."""

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

_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalise(text: str) -> str:
    """Lower case, every run of non-alphanumerics one space: `"Children's"` -> `"children s"`."""
    return " " + _NON_WORD.sub(" ", text.lower()).strip() + " "


def canonical_genre(genre: str) -> str:
    """A catalogue genre's canonical name (`"Sci-Fi"` -> `"sci fi"`, `"Children's"` -> `"children"`)."""
    key = normalise(genre).strip()
    for canonical, words in GENRE_WORDS.items():
        if key == canonical or key in words:
            return canonical
    return key


def named(keywords: Iterable[str], lexicon: Mapping[str, Iterable[str]]) -> set[str]:
    """The lexicon entries whose words occur (as whole words) in any keyword."""
    text = " | ".join(normalise(k) for k in keywords)
    return {name for name, words in lexicon.items() if any(f" {w} " in text for w in (name, *words))}


# ---------------------------------------------------------------- clothing


def _attributes(prepared, item_id: str) -> dict:
    row = prepared.items.loc[prepared.items["item_id"] == item_id, "attributes"]
    return json.loads(row.iloc[0]) if len(row) else {}


def _preferences(prepared) -> dict[str, dict]:
    if prepared.ground_truth is None:
        return {}
    return {
        str(u): json.loads(p)
        for u, p in zip(prepared.ground_truth["user_id"], prepared.ground_truth["preferences"])
    }


def clothing_hits(outputs: pd.DataFrame, prepared, *, include_target_image: bool = True) -> pd.DataFrame:
    """Colour and pattern hits of clothing outputs against the users' latent preference.

    Args:
        outputs: one row per output: `variant`, `user_id`, `target_item`,
            `image` (absolute path of the output PNG).
        prepared: the clothing `PreparedScenario` (with `ground_truth`).
        include_target_image: add the pseudo-variant `target_image` (the
            target item's own image, once per pair).

    Returns:
        `GroundTruthHits` rows (`check` = `colour` or `pattern`); users with
        no ground truth are left out. An unreadable or missing image is a
        miss with `observed` = `unreadable`.
    """
    from pmg.data.world.clothing import measure_colour, measure_pattern

    preferences = _preferences(prepared)
    rows: list[dict] = []

    def measure(path: Path | None) -> tuple[str, str]:
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError, TypeError, AttributeError):
            return "unreadable", "unreadable"
        return measure_colour(rgb) or "none", measure_pattern(rgb)

    def add(variant: str, user: str, target: str, colour: str, pattern: str) -> None:
        wanted = preferences[user]
        target_attrs = _attributes(prepared, target)
        for check, expected, observed, target_value in (
            ("colour", wanted.get("colour"), colour, target_attrs.get("colour")),
            ("pattern", wanted.get("pattern"), pattern, target_attrs.get("elements")),
        ):
            rows.append(
                {
                    "scenario": "clothing",
                    "variant": variant,
                    "user_id": user,
                    "target_item": target,
                    "check": check,
                    "expected": str(expected),
                    "observed": observed,
                    "value": float(observed == expected),
                    "target_differs": None if target_value is None else bool(target_value != expected),
                }
            )

    pairs_seen: set[tuple[str, str]] = set()
    for row in outputs.itertuples(index=False):
        user, target = str(row.user_id), str(row.target_item)
        if user not in preferences:
            continue
        add(str(row.variant), user, target, *measure(row.image))
        if include_target_image and (user, target) not in pairs_seen:
            pairs_seen.add((user, target))
            add(TARGET_IMAGE, user, target, *measure(prepared.image_file(target)))
    return pd.DataFrame(rows, columns=HIT_COLUMNS)


# ------------------------------------------------------------------ movies


def movies_hits(keywords: pd.DataFrame, prepared) -> pd.DataFrame:
    """Genre precision / recall of preference (and target) keywords against the history's genres.

    Args:
        keywords: the scenario's `Keywords` table.
        prepared: the movies `PreparedScenario`.

    Returns:
        `GroundTruthHits` rows with variant `preference_keywords` or
        `target_keywords` and check `genre_precision` (null when the
        keywords name no genre) or `genre_recall`.
    """
    genres_of = {
        str(i): {canonical_genre(g) for g in json.loads(a).get("genres", [])}
        for i, a in zip(prepared.items["item_id"], prepared.items["attributes"])
    }
    lexicon = dict(GENRE_WORDS)
    for genres in genres_of.values():  # genres outside the synonym table match by name
        for g in genres:
            lexicon.setdefault(g, ())
    history_of = {
        str(u): json.loads(h) for u, h in zip(prepared.splits["user_id"], prepared.splits["history_items"])
    }
    rows: list[dict] = []
    for row in keywords.itertuples(index=False):
        user = str(row.user_id)
        if user not in history_of:
            continue
        history = set().union(*(genres_of.get(str(i), set()) for i in history_of[user]))
        for variant, column in (
            ("preference_keywords", "preference_keywords"),
            ("target_keywords", "target_keywords"),
        ):
            found = named(json.loads(getattr(row, column)), lexicon)
            common = found & history
            base = {
                "scenario": "movies",
                "variant": variant,
                "user_id": user,
                "target_item": str(row.target_item),
                "expected": ", ".join(sorted(history)),
                "observed": ", ".join(sorted(found)),
                "target_differs": None,
            }
            rows.append(
                {**base, "check": "genre_precision", "value": len(common) / len(found) if found else None}
            )
            rows.append(
                {**base, "check": "genre_recall", "value": len(common) / len(history) if history else None}
            )
    return pd.DataFrame(rows, columns=HIT_COLUMNS)


# ------------------------------------------------------------------- emoji


def emoji_hits(keywords: pd.DataFrame, prepared) -> pd.DataFrame:
    """Whether keywords mention the latent character and the conversation's emotion.

    Returns:
        `GroundTruthHits` rows with variant `preference_keywords`,
        `target_keywords` or `all_keywords` and check `character` or
        `emotion`; `target_differs` says whether the target emoji shows
        another character (emotion) than the latent one.
    """
    preferences = _preferences(prepared)
    rows: list[dict] = []
    for row in keywords.itertuples(index=False):
        user = str(row.user_id)
        if user not in preferences:
            continue
        wanted = preferences[user]
        target_attrs = _attributes(prepared, str(row.target_item))
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
                        "scenario": "emoji",
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


HIT_COLUMNS = [
    "scenario",
    "variant",
    "user_id",
    "target_item",
    "check",
    "expected",
    "observed",
    "value",
    "target_differs",
]


# ---------------------------------------------------------------- summary


def summarize_hits(hits: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Rates per variant: `{variant: {<check>: mean, <check>_target_differs: mean, n_<check>: count, ...}}`.

    A check's rate is the mean of `value` over rows where it is defined;
    `<check>_target_differs` restricts to rows whose target lacks the
    expected value (only where that is known), with its own count.
    """
    out: dict[str, dict] = {}
    if hits.empty:
        return out
    for variant, part in hits.groupby("variant", sort=True):
        entry: dict[str, float | int | None] = {}
        for check, rows in part.groupby("check", sort=True):
            values = rows["value"].dropna()
            entry[check] = round(float(values.mean()), 6) if len(values) else None
            entry[f"n_{check}"] = len(values)
            known = rows[rows["target_differs"].notna()]
            if len(known):
                differs = known[known["target_differs"].astype(bool)]["value"].dropna()
                entry[f"{check}_target_differs"] = round(float(differs.mean()), 6) if len(differs) else None
                entry[f"n_{check}_target_differs"] = len(differs)
        out[str(variant)] = entry
    return out
