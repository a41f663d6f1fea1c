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


# ---------------------------------------------------------------- subsets

SUBSET_CHECKS: dict[str, tuple[str, ...]] = {
    "clothing": ("colour", "pattern"),
    "movies": ("genre_precision", "genre_recall"),
    "emoji": ("character",),
}
"""The checks split by target subset (issue 11): clothing colour and pattern,
movie genre, emoji character."""

TARGET_HAS = "target has it"
TARGET_LACKS = "target lacks it"
SUBSET_COLUMNS = ["scenario", "variant", "check", "subset", "n", "rate"]


def movies_target_shares_genre(prepared) -> dict[tuple[str, str], bool]:
    """Per (user, target): whether the target movie has a genre of the user's history.

    MovieLens users have no latent preference; the genres of their history
    stand in for it (as in :func:`movies_hits`), so the target "already has
    the preferred value" when it shares at least one genre with the history.
    """
    genres_of = {
        str(i): {canonical_genre(g) for g in json.loads(a).get("genres", [])}
        for i, a in zip(prepared.items["item_id"], prepared.items["attributes"])
    }
    out = {}
    for row in prepared.splits.itertuples(index=False):
        history = set().union(*(genres_of.get(str(i), set()) for i in json.loads(row.history_items)))
        target = genres_of.get(str(row.target_item), set())
        out[(str(row.user_id), str(row.target_item))] = bool(target & history)
    return out


def target_subsets(hits: pd.DataFrame, *, movies_prepared=None) -> pd.DataFrame:
    """Ground-truth rates split by whether the target already has the preferred value.

    Where the target already shows the user's preferred colour (pattern,
    genre, character), even a generator that copies the target scores a
    hit; where it does not, a hit means personalisation changed the item.
    The two subsets are reported apart, with their sizes, next to all pairs.

    Args:
        hits: `GroundTruthHits` rows of any scenarios and variants. Clothing
            and emoji rows carry `target_differs`; movie rows do not (no
            latent truth), so their subset comes from `movies_prepared`.
        movies_prepared: the movies `PreparedScenario`, needed when `hits`
            has movie rows (:func:`movies_target_shares_genre`).

    Returns:
        Columns `scenario`, `variant`, `check`, `subset` (`all`,
        :data:`TARGET_HAS`, :data:`TARGET_LACKS`), `n` (rows with a defined
        value) and `rate` (their mean; null when `n` is 0), one row per
        combination present, for the checks of :data:`SUBSET_CHECKS`, in
        scenario / variant / check / subset order. Rows whose subset is
        unknown count in `all` only.

    Raises:
        ValueError: movie rows without `movies_prepared`.
    """
    wanted = hits[[c in SUBSET_CHECKS.get(str(s), ()) for s, c in zip(hits["scenario"], hits["check"])]]
    if wanted.empty:
        return pd.DataFrame(columns=SUBSET_COLUMNS)
    has = pd.Series(pd.NA, index=wanted.index, dtype="object")
    known = wanted["target_differs"].notna()
    has[known] = ~wanted.loc[known, "target_differs"].astype(bool)
    movies = wanted["scenario"] == "movies"
    if movies.any():
        if movies_prepared is None:
            raise ValueError("movie ground-truth rows need movies_prepared (which targets share a genre)")
        shares = movies_target_shares_genre(movies_prepared)
        pairs = zip(wanted.loc[movies, "user_id"], wanted.loc[movies, "target_item"])
        has[movies] = [shares.get((str(u), str(t)), pd.NA) for u, t in pairs]
    frame = wanted.assign(_has=has)
    rows = []
    for scenario, checks in SUBSET_CHECKS.items():
        in_scenario = frame[frame["scenario"] == scenario]
        for variant in sorted(in_scenario["variant"].unique()):
            for check in checks:
                part = in_scenario[(in_scenario["variant"] == variant) & (in_scenario["check"] == check)]
                if part.empty:
                    continue
                for subset, rows_of in (
                    ("all", part),
                    (TARGET_HAS, part[part["_has"].eq(True)]),  # unknown (NA) subsets count in "all" only
                    (TARGET_LACKS, part[part["_has"].eq(False)]),
                ):
                    values = rows_of["value"].dropna()
                    rows.append(
                        {
                            "scenario": scenario,
                            "variant": variant,
                            "check": check,
                            "subset": subset,
                            "n": len(values),
                            "rate": round(float(values.mean()), 6) if len(values) else None,
                        }
                    )
    return pd.DataFrame(rows, columns=SUBSET_COLUMNS)


def subsets_markdown(table: pd.DataFrame) -> str:
    """The :func:`target_subsets` table in Markdown: a row per (scenario, check, variant), in table order.

    Columns: the rate and size of each subset, e.g. `0.350 (n=40)`; `—`
    where a subset has no rows.
    """
    header = ["scenario", "check", "variant", "all pairs", TARGET_HAS, TARGET_LACKS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if table.empty:
        return "\n".join(lines) + "\n"
    cell = {
        (r.scenario, r.check, r.variant, r.subset): "—" if pd.isna(r.rate) else f"{r.rate:.3f} (n={r.n})"
        for r in table.itertuples(index=False)
    }
    keys = dict.fromkeys((r.scenario, r.check, r.variant) for r in table.itertuples(index=False))
    for scenario, check, variant in keys:
        values = [cell.get((scenario, check, variant, s), "—") for s in ("all", TARGET_HAS, TARGET_LACKS)]
        lines.append("| " + " | ".join([scenario, check, variant, *values]) + " |")
    return "\n".join(lines) + "\n"
