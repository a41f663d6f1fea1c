"""The movie-poster scenario: MovieLens users and movies, posters real or rendered.

Declared here and nowhere else: the `prepare.movies` section, the loader
(one of the public MovieLens layouts via `pmg.data.movielens`, posters
rendered by `pmg.data.world.posters` where none is given), the prompt
templates (`movies.yaml`), the zoo caption (the poster's genres: the title is
in the pixels but unreadable at the zoo's resolution) and the ground-truth
check: the genres named by the keywords against the genres of the user's
history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, model_validator

from pmg.data.dataset import ScenarioData
from pmg.data.store import PreparedScenario
from pmg.scenarios.base import HIT_COLUMNS, LoadContext, Scenario, ScenarioSection
from pmg.text import named, normalise

NAME = "movies"


class MoviesSource(ScenarioSection):
    """Where the movie scenario's data comes from (`prepare.movies`).

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


def load(cfg: MoviesSource, ctx: LoadContext) -> ScenarioData:
    """Read the configured MovieLens layout; movies without a usable poster get a rendered one."""
    from pmg.data import movielens
    from pmg.data.images import materialise_images
    from pmg.data.world.posters import render_posters

    posters = Path(cfg.posters) if cfg.posters else None
    if cfg.source == "default":
        data = movielens.load_recbole_atomic(ctx.assets / "ml-100k", dataset="ml-100k")
    elif cfg.source == "ml-latest-small":
        data = movielens.load_ml_latest_small(Path(cfg.path), posters=posters)
    elif cfg.source == "ml-100k":
        data = movielens.load_ml_100k(Path(cfg.path), posters=posters)
    else:
        data = movielens.load_recbole_atomic(Path(cfg.path), posters=posters)
    data.items, image_skips = materialise_images(data.items, ctx.scenario_dir, ctx.image_size)
    data.skipped.update(image_skips)
    # Movies without a usable real poster get a rendered one (labelled
    # synthetic in the image and in attributes["poster"]).
    data.items = render_posters(
        data.items,
        ctx.scenario_dir / "images",
        ctx.image_size,
        emoji_font=ctx.assets / "noto-emoji" / "NotoColorEmoji.ttf",
    )
    return data


def caption(title: str, attributes: dict) -> str:
    """A poster's caption: its genres, e.g. "comedy romance movie poster"."""
    genres = [g.lower() for g in attributes.get("genres", [])]
    return " ".join(genres + ["movie", "poster"]) if genres else "movie poster"


# ------------------------------------------------------------- ground truth

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


def canonical_genre(genre: str) -> str:
    """A catalogue genre's canonical name (`"Sci-Fi"` -> `"sci fi"`, `"Children's"` -> `"children"`)."""
    key = normalise(genre).strip()
    for canonical, words in GENRE_WORDS.items():
        if key == canonical or key in words:
            return canonical
    return key


def movies_hits(keywords: pd.DataFrame, prepared: PreparedScenario) -> pd.DataFrame:
    """Genre precision / recall of preference (and target) keywords against the history's genres.

    Precision: of the genres the keywords name, the share the history has;
    recall: of the history's genres, the share named. The same on the target
    keywords (the non-personalised text) is the baseline. Genre names are
    matched as whole words after lower-casing, with a few synonyms
    (`GENRE_WORDS`).

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
                "scenario": NAME,
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


def ground_truth(
    prepared: PreparedScenario, *, outputs: pd.DataFrame | None, keywords: pd.DataFrame | None
) -> pd.DataFrame | None:
    """Genre checks of the keywords (real users: the history's genres are the truth)."""
    if keywords is None or not len(keywords):
        return None
    return movies_hits(keywords, prepared)


SCENARIO = Scenario(
    name=NAME,
    section=MoviesSource,
    load=load,
    seed_index=1,
    prompts="movies.yaml",
    noun="movies",
    caption=caption,
    assets=("ml-100k", "noto-emoji"),
    ground_truth=ground_truth,
    ground_truth_note=(
        "Genres named by the keywords vs the genres of the user's history items: precision (of the genres "
        "named) and recall (of the history's genres). target_keywords = the non-personalised baseline."
    ),
)
