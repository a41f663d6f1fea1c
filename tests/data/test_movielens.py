"""MovieLens loaders on small files written in the real formats."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pmg import schemas
from pmg.data.dataset import make_splits
from pmg.data.movielens import (
    load_ml_100k,
    load_ml_latest_small,
    load_recbole_atomic,
    split_title_year,
)
from pmg.errors import DataError



def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def poster(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 6), colour).save(path)
    return path


def attrs(items, item_id: str) -> dict:
    return json.loads(items.set_index("item_id").loc[item_id, "attributes"])


def item(items, item_id: str):
    return items.set_index("item_id").loc[item_id]


# ------------------------------------------------------------ ml-latest-small

MOVIES_CSV = "\n".join(
    [
        "movieId,title,genres",
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy",
        '11,"American President, The (1995)",Comedy|Drama|Romance',
        '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama|Fantasy',
        '50,"""Great Performances"" Cats (1998)",Musical',
        "60,Babylon 5,(no genres listed)",
        "",
    ]
)

RATINGS_CSV = """userId,movieId,rating,timestamp
1,1,4.0,964982703
1,11,0.5,964981247
2,29,5.0,1445714835
2,50,3.5,1445714800
"""

LINKS_CSV = """movieId,imdbId,tmdbId
1,0114709,862
11,0112346,9087
60,0105946,
"""

TAGS_CSV = """userId,movieId,tag,timestamp
1,1,pixar,1139045764
2,1,Pixar,1139045765
3,1,fun,1139045766
3,1,animation,1139045767
1,29,dark,1139045768
1,999,orphan tag,1139045769
"""


@pytest.fixture
def ml_small(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-latest-small"
    write(folder / "movies.csv", MOVIES_CSV)
    write(folder / "ratings.csv", RATINGS_CSV)
    write(folder / "links.csv", LINKS_CSV)
    write(folder / "tags.csv", TAGS_CSV)
    return folder


def test_ml_latest_small_items_field_by_field(ml_small: Path, tmp_path: Path) -> None:
    posters = tmp_path / "posters"
    poster(posters / "1.png")
    poster(posters / "11.JPG")
    poster(posters / "notes.txt.png")  # an image for no movie: ignored

    data = load_ml_latest_small(ml_small, posters=posters)

    assert data.scenario == "movies"
    schemas.Items.validate(data.items)
    assert list(data.items["item_id"]) == ["1", "11", "29", "50", "60"]
    toy = item(data.items, "1")
    assert toy["title"] == "Toy Story"
    assert toy["scenario"] == "movies"
    # "pixar" was given by two users (case folded), "animation" and "fun" by one: alphabetical.
    assert toy["text"] == (
        "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. "
        "Tags: pixar, animation, fun"
    )
    assert attrs(data.items, "1") == {
        "year": "1995",
        "genres": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"],
        "tags": ["pixar", "animation", "fun"],
        "imdb_id": "0114709",
        "tmdb_id": "862",
    }
    assert toy["image_path"] == (posters / "1.png").resolve().as_posix()
    assert item(data.items, "11")["image_path"] == (posters / "11.JPG").resolve().as_posix()
    assert Path(item(data.items, "11")["image_path"]).is_absolute()
    # Quoted titles: a comma, a nested parenthesis, doubled quotes.
    assert item(data.items, "11")["title"] == "American President, The"
    assert item(data.items, "29")["title"] == "City of Lost Children, The (Cité des enfants perdus, La)"
    assert attrs(data.items, "29")["genres"] == ["Adventure", "Drama", "Fantasy"]
    assert item(data.items, "50")["title"] == '"Great Performances" Cats'
    assert attrs(data.items, "50")["year"] == "1998"
    # No year, the no-genre placeholder, and an empty tmdbId.
    assert item(data.items, "60")["text"] == "Babylon 5"
    assert attrs(data.items, "60") == {"genres": [], "tags": [], "imdb_id": "0105946"}
    assert pd.isna(item(data.items, "60")["image_path"])


def test_ml_latest_small_interactions_and_skips(ml_small: Path) -> None:
    data = load_ml_latest_small(ml_small)

    schemas.Interactions.validate(data.interactions)
    assert data.interactions.to_dict("records") == [
        {"user_id": "1", "item_id": "1", "timestamp": 964982703, "rating": 4.0},
        {"user_id": "1", "item_id": "11", "timestamp": 964981247, "rating": 0.5},
        {"user_id": "2", "item_id": "29", "timestamp": 1445714835, "rating": 5.0},
        {"user_id": "2", "item_id": "50", "timestamp": 1445714800, "rating": 3.5},
    ]
    assert data.items["image_path"].isna().all()
    assert data.conversations.empty and data.ground_truth is None
    assert data.skipped == {"tag_unknown_item": 1}


def test_ml_latest_small_optional_files_may_be_absent(ml_small: Path) -> None:
    (ml_small / "tags.csv").unlink()
    (ml_small / "links.csv").unlink()
    data = load_ml_latest_small(ml_small)
    assert attrs(data.items, "1") == {
        "year": "1995",
        "genres": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"],
        "tags": [],
    }


def test_ml_latest_small_skips_duplicate_and_unknown_item_rows(ml_small: Path) -> None:
    write(ml_small / "ratings.csv", RATINGS_CSV + "1,1,4.0,964982703\n3,12345,4.0,964982703\n")
    data = load_ml_latest_small(ml_small)
    assert data.skipped["duplicate_row"] == 1
    assert data.skipped["unknown_item"] == 1
    assert len(data.interactions) == 4
    assert "12345" not in set(data.interactions["item_id"])


@pytest.mark.parametrize(
    ("file", "content", "row", "column", "message"),
    [
        ("ratings.csv", "userId,movieId,score,timestamp\n1,1,4.0,1\n", 1, "rating", "lacks column"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,11,four,2\n", 3, "rating",
         "not a number"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,11,4.0,yesterday\n", 3, "timestamp",
         "not a number"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,,1\n", 2, "rating", "not a number"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,-1,1\n", 2, "rating", "outside the scale"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,5.5,1\n", 2, "rating", "outside the scale"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,-5\n", 2, "timestamp", "outside the scale"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0\n", 2, "timestamp", "expected 4 fields"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1,extra\n", 2, None, "expected 4 fields"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n,1,4.0,1\n", 2, "userId", "id is empty"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,1,3.0,1\n", 3, "rating",
         "different ratings"),
        ("ratings.csv", "", None, None, "file is empty"),
        ("ratings.csv", "\n\n", None, None, "file is empty"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n", 2, None, "header but no rows"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n7,777,4.0,1\n", None, None, "none of its 1"),
        ("movies.csv", "", None, None, "file is empty"),
        ("movies.csv", "movieId,name,genres\n1,Toy Story (1995),Comedy\n", 1, "title", "lacks column"),
        ("movies.csv", 'movieId,title,genres\n1,"Toy Story (1995)" x,Comedy\n', 2, None, "malformed CSV"),
        ("movies.csv", "movieId,title,genres\n1,Toy Story (1995),Comedy\n1,Toy Story 2 (1999),Comedy\n", 3,
         "movieId", "described differently on line 2"),
        ("movies.csv", "movieId,title,genres\n1,,Comedy\n", 2, "title", "empty title"),
        ("movies.csv", b"movieId,title,genres\n1,Toy Story (1995),Comedy\n11,Caf\xe9 (1995),Drama\n", 3,
         "title", "not valid UTF-8"),
        ("links.csv", "movieId,imdbId\n1,0114709\n", 1, "tmdbId", "lacks column"),
        ("tags.csv", b"userId,movieId,tag,timestamp\n1,1,f\xffn,1\n", 2, "tag", "not valid UTF-8"),
    ],
)  # fmt: skip
def test_ml_latest_small_structural_problems_raise_located_data_error(
    ml_small: Path, file: str, content: str | bytes, row: int | None, column: str | None, message: str
) -> None:
    write(ml_small / file, content)
    with pytest.raises(DataError) as caught:
        load_ml_latest_small(ml_small)
    err = caught.value
    assert Path(err.path) == ml_small / file
    assert err.row == row
    assert err.column == column
    assert message in err.reason


def test_ml_latest_small_missing_required_file(ml_small: Path) -> None:
    (ml_small / "ratings.csv").unlink()
    with pytest.raises(DataError, match="does not exist") as caught:
        load_ml_latest_small(ml_small)
    assert Path(caught.value.path) == ml_small / "ratings.csv"


def test_missing_poster_folder_is_a_data_error(ml_small: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="poster folder does not exist"):
        load_ml_latest_small(ml_small, posters=tmp_path / "nowhere")


def test_line_numbers_count_blank_lines_and_bom(ml_small: Path) -> None:
    write(ml_small / "ratings.csv", "\ufeffuserId,movieId,rating,timestamp\n\n1,1,4.0,1\r\n\r\n1,11,x,2\r\n")
    with pytest.raises(DataError) as caught:
        load_ml_latest_small(ml_small)
    assert (caught.value.row, caught.value.column) == (5, "rating")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Toy Story (1995)", ("Toy Story", "1995")),
        ("Babylon 5 (1994-1998)", ("Babylon 5", "1994")),
        ("Ready to Wear (Pret-A-Porter) (1994) ", ("Ready to Wear (Pret-A-Porter)", "1994")),
        ("Babylon 5", ("Babylon 5", None)),
        ("(1995)", ("(1995)", None)),
    ],
)
def test_split_title_year(raw: str, expected: tuple[str, str | None]) -> None:
    assert split_title_year(raw) == expected


# -------------------------------------------------------------------- ml-100k

U_ITEM_LINES = [
    "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)"
    "|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
    "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0",
    "543|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Mis%E9rables%2C%20Les"
    "|0|0|0|0|0|0|0|0|1|0|0|0|1|0|0|0|0|0|0",
]
U_DATA = "196\t1\t3\t881250949\n186\t543\t5\t891717742\n22\t267\t1\t878887116\n"


@pytest.fixture
def ml_100k(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-100k"
    # GroupLens publishes u.item in Latin-1.
    write(folder / "u.item", ("\n".join(U_ITEM_LINES) + "\n").encode("latin-1"))
    write(folder / "u.data", U_DATA)
    return folder


def test_ml_100k_field_by_field(ml_100k: Path, tmp_path: Path) -> None:
    poster(tmp_path / "posters" / "543.webp")
    data = load_ml_100k(ml_100k, posters=tmp_path / "posters")

    schemas.Items.validate(data.items)
    schemas.Interactions.validate(data.interactions)
    assert list(data.items["item_id"]) == ["1", "267", "543"]
    toy = item(data.items, "1")
    assert toy["title"] == "Toy Story"
    assert toy["text"] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert attrs(data.items, "1") == {
        "year": "1995",
        "genres": ["Animation", "Children's", "Comedy"],
        "tags": [],
        "release_date": "01-Jan-1995",
        "imdb_url": "http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)",
    }
    # Latin-1 decoded, not mangled; the "unknown" genre flag means no genre.
    assert item(data.items, "543")["title"] == "Misérables, Les"
    assert attrs(data.items, "543")["genres"] == ["Drama", "Musical"]
    assert item(data.items, "543")["image_path"] == (tmp_path / "posters" / "543.webp").resolve().as_posix()
    assert attrs(data.items, "267") == {"genres": [], "tags": []}
    assert item(data.items, "267")["text"] == "unknown"
    assert data.interactions.to_dict("records") == [
        {"user_id": "196", "item_id": "1", "timestamp": 881250949, "rating": 3.0},
        {"user_id": "186", "item_id": "543", "timestamp": 891717742, "rating": 5.0},
        {"user_id": "22", "item_id": "267", "timestamp": 878887116, "rating": 1.0},
    ]
    assert data.skipped == {}


def test_ml_100k_reads_a_utf8_copy_of_u_item_and_keeps_latin1_control_bytes(ml_100k: Path) -> None:
    write(ml_100k / "u.item", ("\n".join(U_ITEM_LINES) + "\n").encode("utf-8"))
    assert item(load_ml_100k(ml_100k).items, "543")["title"] == "Misérables, Les"
    # 0x85 is a character in Latin-1 (and a line break to str.splitlines): it must not split the line.
    lines = [*U_ITEM_LINES[:2], U_ITEM_LINES[2].replace("Misérables", "Mis\x85rables")]
    write(ml_100k / "u.item", ("\n".join(lines) + "\n").encode("latin-1"))
    assert item(load_ml_100k(ml_100k).items, "543")["title"] == "Mis\x85rables, Les"


def test_ml_100k_skips_duplicate_and_unknown_rows(ml_100k: Path) -> None:
    write(ml_100k / "u.data", U_DATA + "196\t1\t3\t881250949\n5\t9999\t4\t881250949\n")
    data = load_ml_100k(ml_100k)
    assert data.skipped == {"duplicate_row": 1, "unknown_item": 1}
    assert len(data.interactions) == 3


@pytest.mark.parametrize(
    ("file", "content", "row", "column", "message"),
    [
        ("u.data", "196\t1\t3\n", 1, "timestamp", "expected 4 fields"),
        ("u.data", "196 1 3 881250949\n", 1, "item_id", "expected 4 fields"),
        ("u.data", "196\t1\t3\t881250949\n186\t543\tgood\t891717742\n", 2, "rating", "not a number"),
        ("u.data", "196\t1\t0\t881250949\n", 1, "rating", "outside the scale"),
        ("u.data", "196\t1\t3\t8812x0949\n", 1, "timestamp", "not a number"),
        ("u.data", "196\t1\t3\t881250949\n196\t1\t4\t881250949\n", 2, "rating", "different ratings"),
        ("u.data", b"196\t1\t3\t881250949\n1\xff6\t1\t3\t881250949\n", 2, "user_id", "not valid UTF-8"),
        ("u.data", "", None, None, "file is empty"),
        ("u.item", "", None, None, "file is empty"),
        ("u.item", "1|Toy Story (1995)|01-Jan-1995||url|0|0|0|1\n", 1, "Children's", "expected 24 fields"),
        ("u.item", "1|Toy Story (1995)|01-Jan-1995||url" + "|x" * 19 + "\n", 1, "unknown", "not a number"),
    ],
)
def test_ml_100k_structural_problems_raise_located_data_error(
    ml_100k: Path, file: str, content: str | bytes, row: int | None, column: str | None, message: str
) -> None:
    write(ml_100k / file, content)
    with pytest.raises(DataError) as caught:
        load_ml_100k(ml_100k)
    err = caught.value
    assert (Path(err.path), err.row, err.column) == (ml_100k / file, row, column)
    assert message in err.reason


# -------------------------------------------------------------- RecBole atomic

ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def recbole(folder: Path, inter_rows: list[str], item_rows: list[str], name: str = "ml-mini") -> Path:
    write(folder / f"{name}.item", ITEM_HEADER + "".join(r + "\n" for r in item_rows))
    write(folder / f"{name}.inter", INTER_HEADER + "".join(r + "\n" for r in inter_rows))
    write(folder / f"{name}.user", "user_id:token\tage:token\n1\t24\n")
    return folder


ITEMS = [
    "1\tToy Story\t1995\tAnimation Children's Comedy",
    "2\tGoldenEye\t1995\tAction Adventure Thriller",
    "3\tFour Rooms\t1995\tThriller",
    "4\tGet Shorty\t1995\tAction Comedy Drama",
    "5\tCopycat\t1995\tCrime Drama Thriller",
    "6\tunkonwn\tunkonwn\tunknown",
]


def test_recbole_items_and_interactions_field_by_field(tmp_path: Path) -> None:
    folder = recbole(tmp_path / "rb", ["10\t1\t4\t881250949", "10\t2\t2.5\t881250950"], ITEMS)
    data = load_recbole_atomic(folder)  # the one *.inter names the dataset

    schemas.Items.validate(data.items)
    toy = item(data.items, "1")
    assert toy["title"] == "Toy Story"
    assert toy["text"] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert attrs(data.items, "1") == {
        "year": "1995",
        "genres": ["Animation", "Children's", "Comedy"],
        "tags": [],
    }
    # RecBole's ml-100k spells the unknown year "unkonwn": not a year.
    assert attrs(data.items, "6") == {"genres": [], "tags": []}
    assert item(data.items, "6")["text"] == "unkonwn"
    assert data.interactions.to_dict("records") == [
        {"user_id": "10", "item_id": "1", "timestamp": 881250949, "rating": 4.0},
        {"user_id": "10", "item_id": "2", "timestamp": 881250950, "rating": 2.5},
    ]


def test_recbole_generic_header_other_fields_and_no_rating_or_timestamp(tmp_path: Path) -> None:
    folder = tmp_path / "rb"
    write(
        folder / "x.item",
        "director:token\titem_id:token\ttitle:token_seq\tscore:float\nLynch\t7\tDune (1984)\t6.5\n",
    )
    write(folder / "x.inter", "item_id:token\tuser_id:token\n7\tu1\n7\tu2\n")
    data = load_recbole_atomic(folder, dataset="x")
    assert item(data.items, "7")["title"] == "Dune"
    assert attrs(data.items, "7") == {
        "year": "1984",
        "genres": [],
        "tags": [],
        "director": "Lynch",
        "score": "6.5",
    }
    assert list(data.interactions["user_id"]) == ["u1", "u2"]
    assert list(data.interactions["item_id"]) == ["7", "7"]
    # Without a timestamp field the line order is the time order; without ratings, null.
    assert list(data.interactions["timestamp"]) == [0, 1]
    assert data.interactions["rating"].isna().all()


@pytest.mark.parametrize(
    ("file", "content", "row", "column", "message"),
    [
        ("ml-mini.inter", "user_id\titem_id\trating\ttimestamp\n1\t1\t4\t1\n", 1, "user_id", "name:type"),
        ("ml-mini.inter", "user_id:token\trating:float\n1\t4\n", 1, "item_id", "lacks field"),
        ("ml-mini.inter", INTER_HEADER + "1\t1\tfour\t1\n", 2, "rating", "not a number"),
        ("ml-mini.inter", INTER_HEADER + "1\t1\t-4\t1\n", 2, "rating", "outside the scale"),
        ("ml-mini.inter", INTER_HEADER + "1\t1\t4\tnow\n", 2, "timestamp", "not a number"),
        ("ml-mini.inter", INTER_HEADER + "1\t1\t4\n", 2, "timestamp", "expected 4 fields"),
        ("ml-mini.inter", b"user_id:token\titem_id:token\n1\t1\n2\t\xe9\n", 3, "item_id", "not valid UTF-8"),
        ("ml-mini.inter", "", None, None, "file is empty"),
        ("ml-mini.inter", INTER_HEADER, 2, None, "header but no rows"),
        ("ml-mini.item", "", None, None, "file is empty"),
        ("ml-mini.item", "item_id:token\tyear:token\n1\t1995\n", 1, "movie_title", "no title field"),
        ("ml-mini.item", ITEM_HEADER + "1\tToy Story\t1995\n", 2, "class", "expected 4 fields"),
        ("ml-mini.item", ITEM_HEADER.encode() + b"1\tCaf\xe9\t1995\tDrama\n", 2, "movie_title",
         "not valid UTF-8"),
    ],
)
def test_recbole_structural_problems_raise_located_data_error(
    tmp_path: Path, file: str, content: str | bytes, row: int | None, column: str | None, message: str
) -> None:
    folder = recbole(tmp_path / "rb", ["1\t1\t4\t1"], ITEMS)
    write(folder / file, content)
    with pytest.raises(DataError) as caught:
        load_recbole_atomic(folder, dataset="ml-mini")
    err = caught.value
    assert (Path(err.path), err.row, err.column) == (folder / file, row, column)
    assert message in err.reason


def test_recbole_needs_one_inter_file_or_a_name(tmp_path: Path) -> None:
    folder = recbole(tmp_path / "rb", ["1\t1\t4\t1"], ITEMS)
    recbole(folder, ["1\t1\t4\t1"], ITEMS, name="other")
    with pytest.raises(DataError, match="exactly one"):
        load_recbole_atomic(folder)
    assert len(load_recbole_atomic(folder, dataset="other").interactions) == 1


def test_recbole_skips_duplicates_and_unknown_items(tmp_path: Path) -> None:
    folder = recbole(tmp_path / "rb", ["1\t1\t4\t1", "1\t1\t4\t1", "1\t99\t4\t2", "1\t2\t4\t3"], ITEMS)
    data = load_recbole_atomic(folder)
    assert data.skipped == {"duplicate_row": 1, "unknown_item": 1}
    assert list(data.interactions["item_id"]) == ["1", "2"]


def test_make_splits_on_recbole_files(tmp_path: Path) -> None:
    inter = [
        "10\t7\t4\t99",
        "10\t2\t5\t100",
        "10\t1\t4\t101",
        "10\t3\t5\t102",  # item 3 has no poster: left out
        "10\t4\t4.5\t103",
        "10\t5\t3.5\t104",  # below min_rating: not behaviour
        "10\t6\t5\t105",
        "10\t1\t5\t106",  # a repeat keeps its latest position
        "20\t1\t5\t100",  # user 20 has only 3 liked items with posters
        "20\t2\t1\t101",
        "20\t4\t5\t102",
        "20\t5\t5\t103",
    ]
    folder = recbole(tmp_path / "rb", inter, [*ITEMS, "7\tCasino\t1995\tDrama"])
    posters = tmp_path / "posters"
    for item_id in ("1", "2", "4", "5", "6", "7"):
        poster(posters / f"{item_id}.png")
    data = load_recbole_atomic(folder, posters=posters)

    splits, skipped = make_splits(data, 3, min_rating=4)

    assert splits.to_dict("records") == [
        {
            "user_id": "10",
            "scenario": "movies",
            "history_items": json.dumps(["7", "2", "4"]),
            "target_item": "6",
            "supervision_item": "1",
            "split": "train",  # by the hash of ("movies", "10"): pmg.data.dataset.user_split_of
        }
    ]
    assert skipped == {"too_few_interactions": 1}


@pytest.mark.slow
def test_recbole_real_ml_100k(packaged_data_assets: Path) -> None:
    data = load_recbole_atomic(packaged_data_assets / "ml-100k", dataset="ml-100k")
    assert data.interactions["user_id"].nunique() == 943
    assert len(data.items) == 1682
    assert len(data.interactions) == 100_000
    assert data.skipped == {}
    assert item(data.items, "543")["title"] == "Misérables, Les"
