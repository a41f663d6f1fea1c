"""Shared drawing helpers of the default world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pmg.data.world.render import (
    fit_glyph,
    glyph_on_white,
    load_emoji_font,
    png_bytes,
    relative_image_path,
    render_glyph,
    save_png,
)
from pmg.errors import AssetError


def test_missing_font_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "noto-emoji" / "NotoColorEmoji.ttf"
    with pytest.raises(AssetError, match="pmg assets fetch") as err:
        load_emoji_font(path)
    assert str(path) in str(err.value)


def test_corrupt_font_is_an_asset_error(tmp_path: Path) -> None:
    path = tmp_path / "NotoColorEmoji.ttf"
    path.write_bytes(b"not a font at all" * 100)
    with pytest.raises(AssetError, match="cannot open the emoji font"):
        load_emoji_font(path)


def test_fit_glyph_keeps_aspect_and_centres() -> None:
    glyph = Image.new("RGBA", (20, 10), (255, 0, 0, 255))
    fitted = fit_glyph(glyph, 40)
    assert fitted.size == (40, 40)
    assert fitted.getchannel("A").getbbox() == (0, 10, 40, 30)


def test_glyph_on_white_is_rgb_on_white() -> None:
    glyph = Image.new("RGBA", (10, 10), (0, 0, 255, 255))
    image = glyph_on_white(glyph, 32)
    assert image.mode == "RGB" and image.size == (32, 32)
    pixels = np.asarray(image)
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[16, 16]) == (0, 0, 255)


def test_png_is_deterministic_and_written_atomically(tmp_path: Path) -> None:
    image = Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    assert png_bytes(image) == png_bytes(image.copy())
    save_png(image, tmp_path / "images" / "a.png")
    assert (tmp_path / "images" / "a.png").read_bytes() == png_bytes(image)
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["a.png"]  # no temporary left


def test_relative_image_path_is_posix_under_images() -> None:
    assert relative_image_path(Path("/x/clothing/images"), "g00001.png") == "images/g00001.png"


def test_render_glyph_draws_emoji_and_nothing_for_missing(emoji_font: Path) -> None:
    font = load_emoji_font(emoji_font)
    glyph = render_glyph(font, "\U0001f63f")  # CRYING CAT FACE
    assert glyph is not None and glyph.mode == "RGBA"
    assert min(glyph.size) > 50  # cropped from the 109 px strike
    assert render_glyph(font, "a") is None  # the emoji font has no Latin letters
