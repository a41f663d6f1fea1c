"""POG loader on small files written in the published format (no header)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pmg import schemas
from pmg.data.dataset import make_splits
from pmg.data.pog import load_pog
from pmg.errors import DataError

ITEM_DATA = "\n".join(
    [
        "101,50010850,http://img.alicdn.com/a.jpg,女装 连衣裙 夏季",
        "102,50008901,http://img.alicdn.com/b.jpg,Slim jeans, blue",  # a comma in the title
        "103,50010850,http://img.alicdn.com/c.jpg,衬衫",
        "104,50012010,,  ",  # no URL, blank title
        "105,50012010,http://img.alicdn.com/e.jpg,凉鞋",
        "",
    ]
)
USER_DATA = "\n".join(
    [
        "u1,101;102;103,o9",
        "u2,103;999;105,o7",  # 999 is not an item
        "u1,105;101,o8",  # u1's second line continues after the first
        "u2,103;999;105,o7",  # exact repeat of a line
        "u3,,o1",  # no clicks
        "",
    ]
)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


@pytest.fixture
def pog(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "pog"
    write(folder / "item_data.txt", ITEM_DATA)
    write(folder / "user_data.txt", USER_DATA)
    write(folder / "outfit_data.txt", "o9,101;102\no7,103;105\n")
    images = tmp_path / "images"
    images.mkdir()
    for item_id, ext in (("101", "jpg"), ("102", "PNG"), ("105", "webp")):
        Image.new("RGB", (3, 5), (10, 20, 30)).save(images / f"{item_id}.{ext}")
    return folder, images


def test_pog_items_field_by_field(pog: tuple[Path, Path]) -> None:
    folder, images = pog
    data = load_pog(folder, images)

    assert data.scenario == "clothing"
    schemas.Items.validate(data.items)
    items = data.items.set_index("item_id")
    assert list(items.index) == ["101", "102", "103", "104", "105"]
    assert items.loc["101", "title"] == "女装 连衣裙 夏季"
    assert items.loc["101", "text"] == "女装 连衣裙 夏季 (category 50010850)"
    assert json.loads(items.loc["101", "attributes"]) == {
        "category": "50010850",
        "title_words": ["女装", "连衣裙", "夏季"],
        "pic_url": "http://img.alicdn.com/a.jpg",
    }
    assert items.loc["102", "title"] == "Slim jeans, blue"
    assert items.loc["104", "title"] == "item 104"
    assert json.loads(items.loc["104", "attributes"]) == {"category": "50012010", "title_words": []}
    assert items.loc["101", "image_path"] == (images / "101.jpg").resolve().as_posix()
    assert items.loc["102", "image_path"] == (images / "102.PNG").resolve().as_posix()
    assert pd.isna(items.loc["103", "image_path"]) and pd.isna(items.loc["104", "image_path"])


def test_pog_clicks_are_sequenced_and_bad_rows_counted(pog: tuple[Path, Path]) -> None:
    folder, images = pog
    data = load_pog(folder, images)

    schemas.Interactions.validate(data.interactions)
    assert data.interactions[["user_id", "item_id", "timestamp"]].to_dict("records") == [
        {"user_id": "u1", "item_id": "101", "timestamp": 0},
        {"user_id": "u1", "item_id": "102", "timestamp": 1},
        {"user_id": "u1", "item_id": "103", "timestamp": 2},
        {"user_id": "u2", "item_id": "103", "timestamp": 0},
        {"user_id": "u2", "item_id": "105", "timestamp": 2},
        {"user_id": "u1", "item_id": "105", "timestamp": 3},
        {"user_id": "u1", "item_id": "101", "timestamp": 4},
    ]
    assert data.interactions["rating"].isna().all()
    assert data.skipped == {"unknown_item": 1, "duplicate_row": 1, "empty_click_list": 1}
    assert data.conversations.empty and data.ground_truth is None


def test_pog_split_keeps_only_items_with_images(pog: tuple[Path, Path]) -> None:
    folder, images = pog
    # u1's clicks with images, in order: 101, 102, (103 none), 105, 101 -> 102, 105, 101.
    splits, skipped = make_splits(load_pog(folder, images), 1)
    assert splits[["user_id", "history_items", "target_item", "supervision_item"]].to_dict("records") == [
        {
            "user_id": "u1",
            "history_items": json.dumps(["102"]),
            "target_item": "105",
            "supervision_item": "101",
        }
    ]
    assert skipped == {"too_few_interactions": 1}


def test_pog_skips_a_documented_header_line(pog: tuple[Path, Path]) -> None:
    folder, images = pog
    write(folder / "item_data.txt", "item_id,cate_id,pic_url,title\n" + ITEM_DATA)
    assert len(load_pog(folder, images).items) == 5


@pytest.mark.parametrize(
    ("file", "content", "row", "column", "message"),
    [
        ("item_data.txt", "", None, None, "file is empty"),
        ("user_data.txt", "", None, None, "file is empty"),
        ("item_data.txt", "101,50010850,http://x/a.jpg\n", 1, "title", "expected 4"),
        ("item_data.txt", ",50010850,http://x/a.jpg,裙\n", 1, "item_id", "id is empty"),
        ("item_data.txt", "101,1,u,a\n101,2,u,b\n", 2, "item_id", "described differently on line 1"),
        ("user_data.txt", "u1,101;102\n", 1, "outfit_id", "expected 3"),
        ("user_data.txt", "u1,101;102,o1\nu2,101,o1,extra\n", 2, None, "expected 3"),
        ("user_data.txt", ",101;102,o1\n", 1, "user_id", "id is empty"),
        ("user_data.txt", "u1,999;998,o1\n", None, None, "no click names an item"),
        ("user_data.txt", b"u1,101;102,o1\nu2,101;1\xff2,o1\n", 2, "item_ids", "not valid UTF-8"),
        ("item_data.txt", "101,1,u,a\n102,1,u,\xe8\xa3\x99\n".encode() + b"103,1,u,\xe8\xa3\n", 3, "title",
         "not valid UTF-8"),
    ],
)  # fmt: skip
def test_pog_structural_problems_raise_located_data_error(
    pog: tuple[Path, Path], file: str, content: str | bytes, row: int | None, column: str | None, message: str
) -> None:
    folder, images = pog
    write(folder / file, content)
    with pytest.raises(DataError) as caught:
        load_pog(folder, images)
    err = caught.value
    assert (Path(err.path), err.row, err.column) == (folder / file, row, column)
    assert message in err.reason


def test_pog_missing_files_and_image_folder(pog: tuple[Path, Path], tmp_path: Path) -> None:
    folder, images = pog
    with pytest.raises(DataError, match="POG image folder does not exist"):
        load_pog(folder, tmp_path / "no-images")
    (folder / "user_data.txt").unlink()
    with pytest.raises(DataError, match="does not exist") as caught:
        load_pog(folder, images)
    assert Path(caught.value.path) == folder / "user_data.txt"
