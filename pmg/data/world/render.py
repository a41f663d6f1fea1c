"""Drawing helpers the default-world builders share.

The emoji font is Noto Color Emoji, whose glyphs are CBDT colour bitmaps of one
strike: FreeType only opens it at 109 px, and Pillow only draws the colours with
`embedded_color=True`. Every glyph is therefore drawn once at 109 px, cropped to
its visible pixels and resized to the size wanted.

Images are written as RGB PNG through :func:`pmg.io.write_bytes_atomic`, so a
killed run never leaves a truncated image under its final name. PNG encoding
is deterministic, so the same pixels always give the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from pmg.errors import AssetError
from pmg.io import write_bytes_atomic

EMOJI_FONT_PIXELS = 109
"""The only size at which FreeType opens the Noto Color Emoji bitmap strike."""

_GLYPH_CANVAS = (160, 160)  # the 109 px strike draws into about 136 x 128 px
_PROBE = "\U0001f600"  # GRINNING FACE: present in every colour emoji font

FETCH_HINT = "run `pmg assets fetch` to download and verify the offline assets"


def asset_error(path: str | Path, problem: str) -> AssetError:
    """An :class:`AssetError` naming the file, what is wrong and how to fix it."""
    return AssetError(f"{path}: {problem}; {FETCH_HINT}")


def load_emoji_font(path: str | Path) -> ImageFont.FreeTypeFont:
    """Open the colour emoji font at its bitmap size and check it draws.

    Raises:
        AssetError: the file is missing, not a font FreeType can open at
            109 px, or draws nothing for a grinning face (not an emoji font).
    """
    path = Path(path)
    if not path.is_file():
        raise asset_error(path, "emoji font not found")
    try:
        # From the bytes, not the path: given a path it cannot open, Pillow
        # looks the file name up among the system fonts, and would silently
        # use an installed NotoColorEmoji.ttf instead of the asset.
        font = ImageFont.truetype(io.BytesIO(path.read_bytes()), EMOJI_FONT_PIXELS)
    except OSError as err:
        raise asset_error(path, f"cannot open the emoji font ({err})") from None
    if render_glyph(font, _PROBE) is None:
        raise asset_error(path, "the font draws no colour glyph for U+1F600; it is not Noto Color Emoji")
    return font


def render_glyph(font: ImageFont.FreeTypeFont, text: str) -> Image.Image | None:
    """Draw one emoji (a code point, optionally with U+FE0F) at the font's size.

    Returns:
        The glyph cropped to its visible pixels, RGBA; None where the font
        has no glyph for `text` (it draws nothing).
    """
    canvas = Image.new("RGBA", _GLYPH_CANVAS, (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((4, 4), text, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        return None
    return canvas.crop(box)


def fit_glyph(glyph: Image.Image, side: int) -> Image.Image:
    """Scale an RGBA glyph to fit a `side` x `side` square, centred, keeping its aspect."""
    width, height = glyph.size
    scale = side / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Pillow resizes RGBA with premultiplied alpha, so edges do not darken.
    resized = glyph.resize(new, Image.Resampling.LANCZOS)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(resized, ((side - new[0]) // 2, (side - new[1]) // 2))
    return square


def glyph_on_white(glyph: Image.Image, size: int, fill: float = 0.84) -> Image.Image:
    """An RGB `size` x `size` image of `glyph` centred on white, filling `fill` of the side."""
    side = max(1, round(size * fill))
    background = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    offset = (size - side) // 2
    background.alpha_composite(fit_glyph(glyph, side), (offset, offset))
    return background.convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    """Encode `image` as an RGB PNG (deterministic bytes for the same pixels)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def save_png(image: Image.Image, path: Path) -> None:
    """Write `image` to `path` as an RGB PNG, atomically."""
    write_bytes_atomic(path, png_bytes(image))


def relative_image_path(images_dir: Path, file_name: str) -> str:
    """The POSIX path of an image relative to the scenario folder (`images_dir`'s parent)."""
    return f"{images_dir.name}/{file_name}"
