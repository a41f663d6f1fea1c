"""Loaders for the public MovieLens formats, into the movie scenario's tables.

Three layouts of the same kind of data are read:

* GroupLens `ml-latest-small` (`load_ml_latest_small`): comma-separated files
  with a header, quoted as CSV where a title holds a comma or a quote:
  `ratings.csv` (userId,movieId,rating,timestamp), `movies.csv`
  (movieId,title,genres with `|`), `links.csv` (movieId,imdbId,tmdbId;
  optional) and `tags.csv` (userId,movieId,tag,timestamp; optional).
* GroupLens `ml-100k` (`load_ml_100k`): `u.data` (tab-separated user, item,
  rating, timestamp; no header) and `u.item` (`|`-separated, no header:
  id|title|release date|video release date|IMDb URL|19 genre flags).
  `u.item` is Latin-1 as published; it is decoded as UTF-8 when it is valid
  UTF-8 (a re-encoded copy) and as Latin-1 otherwise, which never fails.
* RecBole atomic files (`load_recbole_atomic`): tab-separated `<name>.inter`
  and `<name>.item` whose header names each column with its type
  (`item_id:token`, `class:token_seq`, ...). The default movie world reads
  RecBole's `ml-100k` copy with this loader.

Every loader returns a `ScenarioData` whose `items` and `interactions` are
valid under `pmg.schemas`. Ids are kept as the strings the files hold. An item
has `title` without the year, `text` a one-line description for prompts
("Toy Story (1995). Genres: Animation, Children's, Comedy. Tags: pixar, fun"),
and `attributes` a JSON object: `year`, `genres`, `tags` (ml-latest-small:
the `TOP_TAGS` tags most users gave the movie) and what else the source gives
(`imdb_id`, `tmdb_id`, `imdb_url`, `release_date`, other RecBole columns).
The genre placeholders "unknown" (ml-100k) and "(no genres listed)"
(ml-latest-small) are read as "no genres", not as a genre named so.

Posters: with `posters` set, a file `<movieId>.<ext>` (jpg, jpeg, png, webp)
in that folder becomes the item's absolute `image_path`; other items get a
null `image_path` (the prepare stage renders posters for them).

Bad input. Problems with the file's structure stop loading with a
`DataError` that names the file, the 1-based line and the column, because
guessing would quietly load something else than the user's data:

* a missing required file, an empty file, or one with a header and no rows
  (`tags.csv` may have no rows); a `posters` folder that does not exist;
* a header without a required column (extra columns are ignored), or a line
  with more or fewer fields than the header (or the fixed layout) has;
* an empty user or item id;
* a rating, timestamp or genre flag that is not a number, a rating outside
  the source's scale (`RATING_SCALE`, `ML_100K_RATING_SCALE`), a negative
  timestamp; fractional timestamps are rounded down to whole seconds;
* bytes that are not valid UTF-8 (the column is found from the separators
  before the bad byte); malformed CSV quoting;
* an empty title, one item id with two different descriptions, or one
  (user, item, timestamp) with two different ratings: there is no way to know
  which one is right.

Rows that the paper's pipeline would drop anyway are skipped and counted in
`ScenarioData.skipped`, so the prepare report shows them:

* `duplicate_row`: an interaction line identical to an earlier one;
* `unknown_item`: an interaction naming an item the item file lacks (but if
  *every* interaction does, the files do not belong together: `DataError`);
* `duplicate_item_row`: an item line identical to an earlier one;
* `tag_unknown_item`, `tag_duplicate_row`, `empty_tag`: the same for
  `tags.csv`; `link_unknown_item` for `links.csv`.

Blank lines are ignored everywhere; line numbers in messages count them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pmg import schemas
from pmg.data.dataset import ScenarioData, empty_conversations
from pmg.data.images import index_images
from pmg.data.records import iter_records, numbers, read_headed, read_text, records_frame
from pmg.errors import DataError
from pmg.io import validate

SCENARIO = "movies"

#: How many of a movie's tags (those the most users gave it) go into
#: `attributes["tags"]` and the text.
TOP_TAGS = 5

#: Inclusive rating scale of ml-latest-small and of RecBole's MovieLens copies
#: (half stars from 0.5); ml-100k uses whole stars from 1.
RATING_SCALE = (0.5, 5.0)
ML_100K_RATING_SCALE = (1.0, 5.0)

#: The 19 genre flag columns of `u.item`, in file order.
ML_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML_100K_ITEM_COLUMNS = (
    "movie_id", "title", "release_date", "video_release_date", "imdb_url", *ML_100K_GENRES,
)  # fmt: skip
ML_100K_DATA_COLUMNS = ("user_id", "item_id", "rating", "timestamp")

#: Genre values that mean "no genre known".
NO_GENRE = frozenset({"unknown", "(no genres listed)"})

#: RecBole column types (https://recbole.io/docs/user_guide/data/atomic_files.html).
RECBOLE_TYPES = frozenset({"token", "token_seq", "float", "float_seq"})

_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*\d{0,4})?\)\s*$")
_YEAR = re.compile(r"\d{4}")

_INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "rating"]


def _timestamps(path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    """Parse seconds since the epoch; fractions are dropped, negatives refused."""
    return np.floor(numbers(path, frame, column, low=0)).astype(np.int64)


def _require_ids(path: Path, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Refuse empty ids: a row without its user or item cannot be placed."""
    for column in columns:
        empty = (frame[column] == "").to_numpy()
        if empty.any():
            first = int(np.argmax(empty))
            raise DataError(path, "id is empty", row=int(frame["_line"].iloc[first]), column=column)


# -------------------------------------------------------------- shared building


def split_title_year(raw_title: str) -> tuple[str, str | None]:
    """Split "Toy Story (1995)" into ("Toy Story", "1995").

    A title without a trailing year is returned whole with year None. A year
    range ("Babylon 5 (1994-1998)") gives its first year.
    """
    match = _TITLE_YEAR.match(raw_title)
    if match and match.group("title"):
        return match.group("title"), match.group("year")
    return raw_title.strip(), None


def movie_text(title: str, year: str | None, genres: Sequence[str], tags: Sequence[str]) -> str:
    """The one-line description of a movie that prompts read."""
    parts = [f"{title} ({year})" if year else title]
    if genres:
        parts.append("Genres: " + ", ".join(genres))
    if tags:
        parts.append("Tags: " + ", ".join(tags))
    return ". ".join(parts)


def _movie_row(
    path: Path,
    line: int,
    item_id: str,
    title: str,
    year: str | None,
    genres: Sequence[str],
    *,
    tags: Sequence[str] = (),
    extra: Mapping[str, str | list[str]] | None = None,
) -> dict[str, object]:
    if not title:
        raise DataError(path, f"movie {item_id!r} has an empty title", row=line, column="title")
    genres = [g for g in genres if g and g not in NO_GENRE]
    attributes: dict[str, str | list[str]] = {}
    if year:
        attributes["year"] = year
    attributes["genres"] = genres
    attributes["tags"] = list(tags)
    for key, value in (extra or {}).items():
        if value not in ("", []):
            attributes[key] = value
    return {
        "item_id": item_id,
        "scenario": SCENARIO,
        "title": title,
        "text": movie_text(title, year, genres, tags),
        "attributes": json.dumps(attributes, ensure_ascii=False),
    }


def _dedupe_items(path: Path, frame: pd.DataFrame, id_column: str, skipped: Counter[str]) -> pd.DataFrame:
    """Drop exact repeats of an item line; refuse one id described twice."""
    data_columns = [c for c in frame.columns if c != "_line"]
    exact = frame.duplicated(subset=data_columns).to_numpy()
    skipped["duplicate_item_row"] += int(exact.sum())
    frame = frame[~exact]
    clash = frame.duplicated(subset=[id_column]).to_numpy()
    if clash.any():
        first = int(np.argmax(clash))
        item_id = frame[id_column].iloc[first]
        earlier = int(frame.loc[frame[id_column] == item_id, "_line"].iloc[0])
        raise DataError(
            path,
            f"item {item_id!r} is described differently on line {earlier} and here",
            row=int(frame["_line"].iloc[first]),
            column=id_column,
        )
    return frame


def _items_table(path: Path, rows: list[dict[str, object]], posters: Path | None) -> pd.DataFrame:
    images = index_images(posters, what="poster folder") if posters is not None else {}
    items = pd.DataFrame(rows, columns=["item_id", "scenario", "title", "text", "attributes"])
    paths = [images[i].as_posix() if i in images else None for i in items["item_id"]]
    items["image_path"] = pd.Series(paths, index=items.index, dtype=object)
    return validate(items, schemas.Items, path)


def _interactions_table(
    path: Path,
    frame: pd.DataFrame,
    known_items: set[str],
    skipped: Counter[str],
) -> pd.DataFrame:
    """Drop repeated and unknown-item rows; refuse conflicting ratings.

    Args:
        path: the interactions file, for messages.
        frame: `user_id`, `item_id` (str), `timestamp` (int), `rating`
            (float, NaN where the source has none) and `_line`.
        known_items: the ids of the item file.
        skipped: counts to add to.
    """
    exact = frame.duplicated(subset=_INTERACTION_COLUMNS).to_numpy()
    skipped["duplicate_row"] += int(exact.sum())
    frame = frame[~exact]
    known = frame["item_id"].isin(known_items).to_numpy()
    if not known.any():
        raise DataError(
            path,
            f"none of its {len(frame)} interactions names an item of the item file "
            "(are the two files from the same dataset?)",
        )
    skipped["unknown_item"] += int((~known).sum())
    frame = frame[known]
    clash = frame.duplicated(subset=["user_id", "item_id", "timestamp"]).to_numpy()
    if clash.any():
        first = int(np.argmax(clash))
        row = frame.iloc[first]
        raise DataError(
            path,
            f"user {row['user_id']!r} rated item {row['item_id']!r} at time {row['timestamp']} twice, "
            "with different ratings",
            row=int(row["_line"]),
            column="rating",
        )
    table = frame[_INTERACTION_COLUMNS].reset_index(drop=True)
    return validate(table, schemas.Interactions, path)


def _scenario(items: pd.DataFrame, interactions: pd.DataFrame, skipped: Counter[str]) -> ScenarioData:
    return ScenarioData(
        scenario=SCENARIO,
        items=items,
        interactions=interactions,
        conversations=empty_conversations(),
        ground_truth=None,
        skipped=+skipped,
    )


# ------------------------------------------------------------ ml-latest-small


def _top_tags(path: Path, known_items: set[str], skipped: Counter[str]) -> dict[str, list[str]]:
    """Movie id -> its `TOP_TAGS` tags, by number of users who gave each.

    Tags are compared lower-cased (users write "Pixar" and "pixar"); ties are
    broken alphabetically so the choice is stable.
    """
    if not path.is_file():
        return {}
    required = ("userId", "movieId", "tag")
    frame, _ = read_headed(path, sep=",", required=required, quoted=True, allow_no_rows=True)
    if frame.empty:
        return {}
    frame = frame[["userId", "movieId", "tag", "_line"]]
    _require_ids(path, frame, ["userId", "movieId"])
    exact = frame.duplicated(subset=["userId", "movieId", "tag"]).to_numpy()
    skipped["tag_duplicate_row"] += int(exact.sum())
    frame = frame[~exact]
    frame = frame.assign(tag=frame["tag"].str.lower())
    empty = (frame["tag"] == "").to_numpy()
    skipped["empty_tag"] += int(empty.sum())
    frame = frame[~empty]
    known = frame["movieId"].isin(known_items).to_numpy()
    skipped["tag_unknown_item"] += int((~known).sum())
    frame = frame[known]
    users = frame.groupby(["movieId", "tag"], sort=False)["userId"].nunique().rename("users").reset_index()
    users = users.sort_values(["movieId", "users", "tag"], ascending=[True, False, True], kind="stable")
    top = users.groupby("movieId", sort=False).head(TOP_TAGS)
    return {movie: list(tags) for movie, tags in top.groupby("movieId", sort=False)["tag"]}


def _links(path: Path, known_items: set[str], skipped: Counter[str]) -> dict[str, dict[str, str]]:
    """Movie id -> {"imdb_id", "tmdb_id"} from `links.csv` (optional file)."""
    if not path.is_file():
        return {}
    frame, _ = read_headed(path, sep=",", required=("movieId", "imdbId", "tmdbId"), quoted=True)
    frame = frame[["movieId", "imdbId", "tmdbId", "_line"]]
    _require_ids(path, frame, ["movieId"])
    frame = _dedupe_items(path, frame, "movieId", Counter())
    known = frame["movieId"].isin(known_items).to_numpy()
    skipped["link_unknown_item"] += int((~known).sum())
    frame = frame[known]
    return {
        movie: {"imdb_id": imdb, "tmdb_id": tmdb}
        for movie, imdb, tmdb in zip(frame["movieId"], frame["imdbId"], frame["tmdbId"], strict=True)
    }


def load_ml_latest_small(folder: str | Path, *, posters: str | Path | None = None) -> ScenarioData:
    """Load GroupLens `ml-latest-small` (or any dataset in its CSV layout).

    Args:
        folder: holds `ratings.csv` and `movies.csv`, and optionally
            `links.csv` and `tags.csv`.
        posters: optional folder of `<movieId>.<ext>` poster images.

    Returns:
        The movie scenario: one item per line of `movies.csv`, one
        interaction per rating (rating on the 0.5-5 scale, timestamp in
        seconds).

    Raises:
        DataError: see the module docstring.
    """
    folder = Path(folder)
    skipped: Counter[str] = Counter()
    movies_path = folder / "movies.csv"
    movies, _ = read_headed(movies_path, sep=",", required=("movieId", "title", "genres"), quoted=True)
    movies = movies[["movieId", "title", "genres", "_line"]]
    _require_ids(movies_path, movies, ["movieId"])
    movies = _dedupe_items(movies_path, movies, "movieId", skipped)
    known = set(movies["movieId"])
    tags = _top_tags(folder / "tags.csv", known, skipped)
    links = _links(folder / "links.csv", known, skipped)
    rows = []
    for movie_id, raw_title, genres, line in movies.itertuples(index=False, name=None):
        title, year = split_title_year(raw_title)
        rows.append(
            _movie_row(
                movies_path,
                line,
                movie_id,
                title,
                year,
                genres.split("|") if genres else [],
                tags=tags.get(movie_id, ()),
                extra=links.get(movie_id),
            )
        )
    items = _items_table(movies_path, rows, Path(posters) if posters is not None else None)

    ratings_path = folder / "ratings.csv"
    ratings, _ = read_headed(
        ratings_path, sep=",", required=("userId", "movieId", "rating", "timestamp"), quoted=True
    )
    _require_ids(ratings_path, ratings, ["userId", "movieId"])
    frame = pd.DataFrame(
        {
            "user_id": ratings["userId"],
            "item_id": ratings["movieId"],
            "timestamp": _timestamps(ratings_path, ratings, "timestamp"),
            "rating": numbers(ratings_path, ratings, "rating", low=RATING_SCALE[0], high=RATING_SCALE[1]),
            "_line": ratings["_line"],
        }
    )
    interactions = _interactions_table(ratings_path, frame, known, skipped)
    return _scenario(items, interactions, skipped)


# -------------------------------------------------------------------- ml-100k


def load_ml_100k(folder: str | Path, *, posters: str | Path | None = None) -> ScenarioData:
    """Load GroupLens `ml-100k` from `u.data` and `u.item`.

    Args:
        folder: holds `u.data` and `u.item`.
        posters: optional folder of `<movie id>.<ext>` poster images.

    Returns:
        The movie scenario; `attributes` also hold `release_date` and
        `imdb_url` where `u.item` gives them.

    Raises:
        DataError: see the module docstring.
    """
    folder = Path(folder)
    skipped: Counter[str] = Counter()
    item_path = folder / "u.item"
    text = read_text(item_path, sep="|", columns=ML_100K_ITEM_COLUMNS, latin1_fallback=True)
    movies = records_frame(item_path, iter_records(item_path, text, sep="|"), ML_100K_ITEM_COLUMNS)
    if movies.empty:
        raise DataError(item_path, "file has no rows")
    _require_ids(item_path, movies, ["movie_id"])
    movies = _dedupe_items(item_path, movies, "movie_id", skipped)
    flags = np.column_stack([numbers(item_path, movies, g, low=0, high=1).to_numpy() for g in ML_100K_GENRES])
    rows = []
    for position, (movie_id, raw_title, release, video_release, url, line) in enumerate(
        movies[["movie_id", "title", "release_date", "video_release_date", "imdb_url", "_line"]].itertuples(
            index=False, name=None
        )
    ):
        title, year = split_title_year(raw_title)
        if year is None and _YEAR.search(release):
            year = _YEAR.findall(release)[-1]
        genres = [g for g, flag in zip(ML_100K_GENRES, flags[position], strict=True) if flag]
        extra = {"release_date": release, "video_release_date": video_release, "imdb_url": url}
        rows.append(_movie_row(item_path, line, movie_id, title, year, genres, extra=extra))
    items = _items_table(item_path, rows, Path(posters) if posters is not None else None)

    data_path = folder / "u.data"
    text = read_text(data_path, sep="\t", columns=ML_100K_DATA_COLUMNS)
    ratings = records_frame(data_path, iter_records(data_path, text, sep="\t"), ML_100K_DATA_COLUMNS)
    if ratings.empty:
        raise DataError(data_path, "file has no rows")
    _require_ids(data_path, ratings, ["user_id", "item_id"])
    frame = pd.DataFrame(
        {
            "user_id": ratings["user_id"],
            "item_id": ratings["item_id"],
            "timestamp": _timestamps(data_path, ratings, "timestamp"),
            "rating": numbers(
                data_path, ratings, "rating", low=ML_100K_RATING_SCALE[0], high=ML_100K_RATING_SCALE[1]
            ),
            "_line": ratings["_line"],
        }
    )
    interactions = _interactions_table(data_path, frame, set(items["item_id"]), skipped)
    return _scenario(items, interactions, skipped)


# ------------------------------------------------------------- RecBole atomic


def _read_atomic(path: Path, required: Sequence[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a RecBole atomic file; columns are renamed to their bare names.

    Returns:
        The frame (one string column per field, plus `_line`) and field name
        -> RecBole type.

    Raises:
        DataError: a header field is not `name:type` with a RecBole type, or
            a required field is missing; see also `read_headed`.
    """
    text = read_text(path, sep="\t", typed_header=True)
    records = iter_records(path, text, sep="\t")
    header_line, header = next(records)  # read_text refused a blank file
    types: dict[str, str] = {}
    for field in header:
        name, _, kind = field.partition(":")
        if not name or kind not in RECBOLE_TYPES:
            raise DataError(
                path,
                f"header field {field!r} is not 'name:type' with type one of "
                f"{', '.join(sorted(RECBOLE_TYPES))}",
                row=header_line,
                column=field,
            )
        if name in types:
            raise DataError(path, f"header names field {name!r} twice", row=header_line, column=field)
        types[name] = kind
    missing = [name for name in required if name not in types]
    if missing:
        raise DataError(
            path,
            f"header {' '.join(header)!r} lacks field(s) {', '.join(missing)}",
            row=header_line,
            column=missing[0],
        )
    frame = records_frame(path, records, list(types))
    if frame.empty:
        raise DataError(path, "file has a header but no rows", row=header_line + 1)
    return frame, types


def _find_atomic(folder: Path, dataset: str | None) -> str:
    if dataset is not None:
        return dataset
    if not folder.is_dir():
        raise DataError(folder, "RecBole dataset folder does not exist")
    names = sorted(p.stem for p in folder.glob("*.inter"))
    if len(names) != 1:
        raise DataError(
            folder,
            f"expected exactly one '<name>.inter' file to pick the dataset from, found {names or 'none'} "
            "(name the dataset explicitly)",
        )
    return names[0]


def _first_present(types: Mapping[str, str], names: Sequence[str]) -> str | None:
    return next((name for name in names if name in types), None)


def load_recbole_atomic(
    folder: str | Path, *, dataset: str | None = None, posters: str | Path | None = None
) -> ScenarioData:
    """Load a MovieLens dataset in RecBole's atomic-file layout.

    Reads `<folder>/<dataset>.inter` (fields `user_id`, `item_id`, and
    optionally `rating` and `timestamp`) and `<folder>/<dataset>.item`
    (field `item_id`; the title from `movie_title` or `title`, the year from
    `release_year` or `year`, the genres from `class`, `genre` or `genres`;
    every other field goes into `attributes`, `token_seq`/`float_seq` as lists).
    Without a `rating` field ratings are null; without a `timestamp` field
    the line order is the time order (timestamp = 0, 1, 2, ...). The
    `<dataset>.user` file is not read: PMG uses no user features.

    Args:
        folder: the folder of the atomic files.
        dataset: the file name stem; by default the one `*.inter` file.
        posters: optional folder of `<item_id>.<ext>` poster images.

    Returns:
        The movie scenario.

    Raises:
        DataError: see the module docstring.
    """
    folder = Path(folder)
    name = _find_atomic(folder, dataset)
    skipped: Counter[str] = Counter()

    item_path = folder / f"{name}.item"
    movies, item_types = _read_atomic(item_path, ["item_id"])
    title_field = _first_present(item_types, ("movie_title", "title"))
    if title_field is None:
        raise DataError(
            item_path, "header has no title field (movie_title or title)", row=1, column="movie_title"
        )
    year_field = _first_present(item_types, ("release_year", "year"))
    genre_field = _first_present(item_types, ("class", "genre", "genres"))
    _require_ids(item_path, movies, ["item_id"])
    movies = _dedupe_items(item_path, movies, "item_id", skipped)
    for field, kind in item_types.items():
        if kind == "float" and field not in (title_field, year_field, genre_field):
            numbers(item_path, movies[movies[field] != ""], field)
    special = {"item_id", title_field, year_field, genre_field, "_line"}
    others = [f for f in item_types if f not in special]
    rows = []
    for record in movies.to_dict("records"):
        raw_year = record[year_field] if year_field else ""
        year = raw_year if _YEAR.fullmatch(raw_year) else None
        title = record[title_field]
        if year is None:
            title, year = split_title_year(title)
        genres = record[genre_field].split() if genre_field else []
        extra = {
            f: (record[f].split() if item_types[f].endswith("_seq") else record[f]) for f in others
        }
        line, item_id = record["_line"], record["item_id"]
        rows.append(_movie_row(item_path, line, item_id, title, year, genres, extra=extra))
    items = _items_table(item_path, rows, Path(posters) if posters is not None else None)

    inter_path = folder / f"{name}.inter"
    inter, inter_types = _read_atomic(inter_path, ["user_id", "item_id"])
    _require_ids(inter_path, inter, ["user_id", "item_id"])
    if "timestamp" in inter_types:
        timestamps = _timestamps(inter_path, inter, "timestamp")
    else:
        timestamps = pd.Series(np.arange(len(inter), dtype=np.int64), index=inter.index)
    if "rating" in inter_types:
        ratings = numbers(inter_path, inter, "rating", low=RATING_SCALE[0], high=RATING_SCALE[1])
    else:
        ratings = pd.Series(np.nan, index=inter.index, dtype=np.float64)
    frame = pd.DataFrame(
        {
            "user_id": inter["user_id"],
            "item_id": inter["item_id"],
            "timestamp": timestamps,
            "rating": ratings,
            "_line": inter["_line"],
        }
    )
    interactions = _interactions_table(inter_path, frame, set(items["item_id"]), skipped)
    return _scenario(items, interactions, skipped)
