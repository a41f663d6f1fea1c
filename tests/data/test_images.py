"""Image normalisation: any mode and shape in, square RGB PNG out, bad files counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pmg.data.images import index_images, materialise_images, safe_file_stem

SIZE = 16
WHITE = (255, 255, 255)
RED = (255, 0, 0)


def items_for(paths: dict[str, str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": list(paths),
            "scenario": "clothing",
            "title": [f"item {i}" for i in paths],
            "text": "",
            "attributes": json.dumps({}),
            "image_path": pd.Series(list(paths.values()), dtype=object),
        }
    )


def run_one(tmp_path: Path, image: Image.Image, name: str = "x.png", **save) -> np.ndarray:
    source = tmp_path / "src" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    image.save(source, **save)
    out, skipped = materialise_images(items_for({"x": source.as_posix()}), tmp_path / "out", SIZE)
    assert skipped == {}
    assert out.loc[0, "image_path"] == "images/x.png"
    with Image.open(tmp_path / "out" / "images" / "x.png") as result:
        assert (result.mode, result.size) == ("RGB", (SIZE, SIZE))
        return np.asarray(result)


def test_rgba_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (SIZE, SIZE), (255, 0, 0, 255))
    image.paste((0, 0, 255, 0), (0, 0, SIZE // 2, SIZE))  # left half: transparent blue
    pixels = run_one(tmp_path, image)
    assert tuple(pixels[8, 2]) == WHITE  # not blue, not black
    assert tuple(pixels[8, 13]) == RED


def test_palette_with_transparent_index_becomes_white(tmp_path: Path) -> None:
    image = Image.new("P", (SIZE, SIZE), 0)
    image.putpalette([0, 255, 0, 255, 0, 0] + [0] * (256 * 3 - 6))  # 0 = green, 1 = red
    image.paste(1, (SIZE // 2, 0, SIZE, SIZE))
    pixels = run_one(tmp_path, image, transparency=0)
    assert tuple(pixels[8, 2]) == WHITE
    assert tuple(pixels[8, 13]) == RED


def test_greyscale_and_greyscale_alpha(tmp_path: Path) -> None:
    assert tuple(run_one(tmp_path, Image.new("L", (SIZE, SIZE), 90))[8, 8]) == (90, 90, 90)
    assert tuple(run_one(tmp_path, Image.new("LA", (SIZE, SIZE), (0, 0)))[8, 8]) == WHITE


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    array = np.full((SIZE, SIZE), 65535, dtype=np.uint16)
    array[:, : SIZE // 2] = 32896  # half of full scale -> 128, not clipped to 255
    pixels = run_one(tmp_path, Image.fromarray(array))
    assert tuple(pixels[8, 2]) == (128, 128, 128)
    assert tuple(pixels[8, 13]) == WHITE


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    image = Image.new("CMYK", (SIZE, SIZE), (0, 255, 255, 0))  # red in CMYK
    pixels = run_one(tmp_path, image, name="x.jpg", quality=95)
    assert np.abs(pixels[8, 8].astype(int) - np.array(RED)).max() < 12


def test_aspect_is_kept_by_letterboxing_on_white(tmp_path: Path) -> None:
    pixels = run_one(tmp_path, Image.new("RGB", (40, 20), RED))
    # 40x20 fits as 16x8, centred: white bands of 4 rows above and below.
    assert all(tuple(p) == WHITE for p in pixels[:3].reshape(-1, 3))
    assert all(tuple(p) == WHITE for p in pixels[13:].reshape(-1, 3))
    assert tuple(pixels[8, 0]) == RED and tuple(pixels[8, 15]) == RED


def test_missing_and_corrupt_images_are_counted_not_fatal(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = src / "good.png"
    Image.new("RGB", (30, 30), RED).save(good)
    png = good.read_bytes()
    (src / "truncated.png").write_bytes(png[: len(png) // 2])
    buffer = src / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer)
    (src / "truncated.jpg").write_bytes(buffer.read_bytes()[:-400])
    (src / "empty.png").write_bytes(b"")
    (src / "text.jpg").write_text("not an image at all")
    items = items_for(
        {
            "good": good.as_posix(),
            "truncated_png": (src / "truncated.png").as_posix(),
            "truncated_jpg": (src / "truncated.jpg").as_posix(),
            "empty": (src / "empty.png").as_posix(),
            "text": (src / "text.jpg").as_posix(),
            "gone": (src / "gone.png").as_posix(),
            "folder": src.as_posix(),
            "none": None,
        }
    )

    out, skipped = materialise_images(items, tmp_path / "out", SIZE)

    assert skipped == {"corrupt_image": 4, "missing_image": 2}
    paths = dict(zip(out["item_id"], out["image_path"], strict=True))
    assert paths["good"] == "images/good.png"
    assert all(pd.isna(paths[i]) for i in paths if i != "good")
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["good.png"]


def test_odd_item_ids_get_safe_distinct_file_names(tmp_path: Path) -> None:
    source = tmp_path / "red.png"
    Image.new("RGB", (5, 5), RED).save(source)
    ids = ["1", "a", "A", "a/b", "a:b", "../escape", "ü 1", "con", ".hidden", "x" * 300]
    items = items_for(dict.fromkeys(ids, source.as_posix()))
    out, skipped = materialise_images(items, tmp_path / "out", SIZE)

    assert skipped == {}
    paths = list(out["image_path"])
    assert paths[0] == "images/1.png" and paths[1] == "images/a.png"
    # Distinct even on a case-insensitive file system; all directly under images/.
    assert len({p.lower() for p in paths}) == len(ids)
    for path in paths:
        assert path.startswith("images/") and "/" not in path[len("images/") :]
        assert len(Path(path).name) < 100
        assert (tmp_path / "out" / path).is_file()
    assert safe_file_stem("a/b") != safe_file_stem("a:b")
    assert safe_file_stem("a/b") == safe_file_stem("a/b")


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    Image.new("RGB", (5, 5), RED).save(tmp_path / "p.png")
    out, skipped = materialise_images(items_for({"p": "p.png"}), tmp_path / "out", SIZE, base_dir=tmp_path)
    assert (skipped, out.loc[0, "image_path"]) == ({}, "images/p.png")


def test_index_images_prefers_extensions_in_order_and_matches_case(tmp_path: Path) -> None:
    for name in ("1.png", "1.jpg", "2.WEBP", "3.gif", "a.b.jpeg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "4.png").mkdir()
    index = index_images(tmp_path)
    assert index == {
        "1": (tmp_path / "1.jpg").resolve(),
        "2": (tmp_path / "2.WEBP").resolve(),
        "a.b": (tmp_path / "a.b.jpeg").resolve(),
    }


def test_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        materialise_images(items_for({}), tmp_path, 0)
