"""Rendered movie posters for movies without a real one.

A poster is drawn from what the catalogue knows, so the image carries the
movie's genres and title and nothing invented:

* background: a vertical gradient through the genres' palette colours (one
  genre: its two colours; several: the first colour of each of the first
  three), so genre shows in the pixels;
* the first genre's emoji, large, at the top; the second and third genres'
  emoji small in the top corners (from Noto Color Emoji). Genres are taken
  most distinctive first (:data:`GENRE_PRIORITY`: Sci-Fi before Action);
* the title, wrapped to at most three lines, and the year, in Pillow's
  built-in scalable font;
* a small "SYNTHETIC" tag in the bottom-right corner, so nobody mistakes
  the image for a real poster; `attributes["poster"]` says the same.

Rendering is a pure function of the item (no randomness). Genre names are
matched loosely (case and punctuation ignored: `Children's` = `Children`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from pmg import schemas
from pmg.data.images import safe_file_stem
from pmg.data.world.render import fit_glyph, load_emoji_font, relative_image_path, render_glyph, save_png

SYNTHETIC_MARK = "SYNTHETIC"

# genre -> (emoji, fallback emoji, (palette colour 1, palette colour 2))
GENRES: dict[str, tuple[str, str, tuple[tuple[int, int, int], tuple[int, int, int]]]] = {
    "Action": ("💥", "🔥", ((205, 45, 25), (255, 150, 20))),
    "Adventure": ("🧭", "🗺️", ((35, 125, 60), (215, 185, 90))),
    "Animation": ("🎨", "🖌️", ((255, 110, 180), (110, 200, 255))),
    "Children's": ("🧸", "🎈", ((255, 210, 40), (120, 205, 250))),
    "Comedy": ("😂", "😄", ((255, 190, 30), (250, 110, 70))),
    "Crime": ("🕵️", "🔫", ((45, 45, 70), (135, 25, 30))),
    "Documentary": ("🎥", "📽️", ((105, 110, 100), (195, 185, 150))),
    "Drama": ("🎭", "🎬", ((95, 30, 115), (185, 85, 125))),
    "Fantasy": ("🐉", "🧙", ((75, 40, 165), (40, 175, 150))),
    "Film-Noir": ("🕶️", "🎩", ((15, 15, 15), (125, 125, 125))),
    "Horror": ("👻", "💀", ((20, 0, 5), (120, 0, 25))),
    "Musical": ("🎵", "🎶", ((215, 60, 165), (250, 205, 85))),
    "Mystery": ("🔍", "❓", ((20, 40, 85), (75, 95, 145))),
    "Romance": ("❤️", "💘", ((225, 55, 100), (255, 185, 205))),
    "Sci-Fi": ("🚀", "👽", ((10, 20, 65), (0, 195, 215))),
    "Thriller": ("🔪", "😱", ((35, 35, 35), (165, 20, 40))),
    "War": ("🪖", "⚔️", ((85, 90, 45), (155, 145, 95))),
    "Western": ("🤠", "🌵", ((165, 90, 35), (235, 185, 115))),
    "IMAX": ("🎞️", "🎬", ((0, 90, 160), (200, 200, 210))),
}
"""Genre -> (emoji, fallback emoji, two palette colours)."""

UNKNOWN_GENRE = ("🎬", "🎥", ((90, 90, 95), (165, 165, 170)))
"""Emoji and palette of a movie whose genres are none of :data:`GENRES`."""

GENRE_PRIORITY = (
    "Sci-Fi", "Horror", "Western", "Film-Noir", "Animation", "Fantasy", "Musical", "War", "Documentary",
    "Children's", "Crime", "Mystery", "Romance", "Thriller", "Adventure", "Comedy", "Action", "Drama", "IMAX",
)  # fmt: skip
"""Which genres a poster shows first: the most distinctive. MovieLens lists
genres alphabetically, so without this most posters would lead with Action."""


def _genre_key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower()).removesuffix("s")


_BY_KEY = {_genre_key(name): spec for name, spec in GENRES.items()}
_RANK = {_genre_key(name): rank for rank, name in enumerate(GENRE_PRIORITY)}


def poster_genres(genres: list[str]) -> list[str]:
    """The genres in the order a poster shows them (:data:`GENRE_PRIORITY`; unknown ones last)."""
    return sorted(dict.fromkeys(genres), key=lambda g: _RANK.get(_genre_key(g), len(_RANK)))


def genre_spec(genre: str) -> tuple[str, str, tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """Emoji, fallback emoji and palette of a genre (:data:`UNKNOWN_GENRE` if unknown)."""
    return _BY_KEY.get(_genre_key(genre), UNKNOWN_GENRE)


def display_title(title: str) -> str:
    """The title as printed: a trailing `(year)` dropped, `Matrix, The` -> `The Matrix`."""
    text = re.sub(r"\s*\((?:\d{4}|\d{4}-\d{0,4})\)\s*$", "", title.strip()) or title.strip()
    match = re.fullmatch(r"(.+), (The|A|An|La|Le|Les|Il|Das|Der|Die|El)", text)
    if match:
        text = f"{match.group(2)} {match.group(1)}"
    return text


def background(genres: list[str], size: int) -> np.ndarray:
    """The genre gradient, `(size, size, 3)` uint8, top to bottom."""
    specs = [genre_spec(g) for g in genres[:3]] or [UNKNOWN_GENRE]
    stops = list(specs[0][2]) if len(specs) == 1 else [spec[2][0] for spec in specs]
    stops_array = np.asarray(stops, dtype=np.float32)
    position = np.linspace(0.0, len(stops) - 1, size, dtype=np.float32)
    lower = np.minimum(position.astype(int), len(stops) - 2)
    frac = (position - lower)[:, None]
    column = stops_array[lower] * (1.0 - frac) + stops_array[lower + 1] * frac  # (size, 3)
    return np.repeat(np.rint(column)[:, None, :], size, axis=1).astype(np.uint8)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _fit_title(text: str, size: int, max_lines: int = 3) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """The largest font (down to ~7% of the side) that wraps `text` in `max_lines`."""
    width = 0.92 * size
    points = max(4, round(0.11 * size))
    smallest = max(4, round(0.07 * size))
    while True:
        font = _font(points)
        lines = _wrap(text, font, width)
        fits = len(lines) <= max_lines and all(font.getlength(line) <= width for line in lines)
        if fits or points <= smallest:
            break
        points = max(smallest, int(points * 0.9))
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += "…"
    return font, [_ellipsize(line, font, width) for line in lines]


def _ellipsize(line: str, font: ImageFont.FreeTypeFont, width: float) -> str:
    """`line`, cut and ended with an ellipsis where it is wider than `width`."""
    if font.getlength(line) <= width:
        return line
    line = line.removesuffix("…")
    while line and font.getlength(line + "…") > width:
        line = line[:-1].rstrip()
    return line + "…"


_FONTS: dict[int, ImageFont.FreeTypeFont] = {}


def _font(points: int) -> ImageFont.FreeTypeFont:
    if points not in _FONTS:
        _FONTS[points] = ImageFont.load_default(size=points)
    return _FONTS[points]


def _stroke(font: ImageFont.FreeTypeFont) -> int:
    # An outline keeps text legible on any palette, but swamps letters under 6 px.
    return max(1, round(font.size / 9)) if font.size >= 6 else 0


class PosterRenderer:
    """Draws posters of one size, caching glyphs and backgrounds.

    Args:
        size: poster side in pixels.
        emoji_font: the Noto Color Emoji font file.
    """

    def __init__(self, size: int, emoji_font: Path) -> None:
        self.size = size
        self.font = load_emoji_font(emoji_font)
        self._glyphs: dict[tuple[str, int], Image.Image | None] = {}
        self._backgrounds: dict[tuple[str, ...], np.ndarray] = {}

    def glyph(self, genre: str, side: int) -> Image.Image | None:
        """The genre's emoji at `side` px (its fallback, or the unknown-genre one, if absent)."""
        key = (genre, side)
        if key not in self._glyphs:
            emoji, fallback, _ = genre_spec(genre)
            drawn = None
            for candidate in (emoji, fallback, UNKNOWN_GENRE[0], UNKNOWN_GENRE[1]):
                drawn = render_glyph(self.font, candidate)
                if drawn is not None:
                    break
            self._glyphs[key] = None if drawn is None else fit_glyph(drawn, side)
        return self._glyphs[key]

    def render(self, title: str, year: str, genres: list[str]) -> Image.Image:
        """One poster, RGB `size` x `size`."""
        size = self.size
        genres = poster_genres(genres)
        key = tuple(genres[:3])
        if key not in self._backgrounds:
            self._backgrounds[key] = background(list(key), size)
        poster = Image.fromarray(self._backgrounds[key], "RGB").convert("RGBA")
        main_genre = genres[0] if genres else "unknown"
        big = max(4, round(0.40 * size))
        glyph = self.glyph(main_genre, big)
        if glyph is not None:
            poster.alpha_composite(glyph, ((size - big) // 2, round(0.07 * size)))
        small = max(3, round(0.17 * size))
        margin = max(1, round(0.04 * size))
        for genre, x in zip(genres[1:3], (margin, size - margin - small), strict=False):
            glyph = self.glyph(genre, small)
            if glyph is not None:
                poster.alpha_composite(glyph, (x, margin))
        draw = ImageDraw.Draw(poster)
        font, lines = _fit_title(display_title(title), size)
        line_height = font.size * 1.15
        y = 0.50 * size
        for line in lines:
            draw.text(
                (size / 2, y),
                line,
                font=font,
                anchor="ma",
                fill=(255, 255, 255),
                stroke_width=_stroke(font),
                stroke_fill=(0, 0, 0),
            )
            y += line_height
        if year:
            year_font = _font(max(4, round(0.075 * size)))
            draw.text(
                (size / 2, y + 0.02 * size),
                year,
                font=year_font,
                anchor="ma",
                fill=(255, 225, 140),
                stroke_width=_stroke(year_font),
                stroke_fill=(0, 0, 0),
            )
        self._mark(poster)
        return poster.convert("RGB")

    def _mark(self, poster: Image.Image) -> None:
        size = self.size
        font = _font(max(4, round(0.06 * size)))
        left, top, right, bottom = font.getbbox(SYNTHETIC_MARK)
        pad = max(1, round(0.012 * size))
        box = (size - (right - left) - 3 * pad, size - (bottom - top) - 3 * pad, size - pad, size - pad)
        overlay = Image.new("RGBA", poster.size, (0, 0, 0, 0))
        tag = ImageDraw.Draw(overlay)
        tag.rectangle(box, fill=(0, 0, 0, 170))
        tag.text(
            (box[0] + pad - left, box[1] + pad - top), SYNTHETIC_MARK, font=font, fill=(255, 255, 255, 235)
        )
        poster.alpha_composite(overlay)


def _parse_attributes(text: str) -> dict:
    value = json.loads(text) if isinstance(text, str) and text else {}
    return value if isinstance(value, dict) else {}


def render_posters(items: pd.DataFrame, images_dir: Path, size: int, *, emoji_font: Path) -> pd.DataFrame:
    """Render a poster for every movie without an image.

    Args:
        items: an `Items` table of movies; `attributes` holds `genres` (a
            list of names) and `year` (a string); both may be missing.
        images_dir: where the PNGs go (`<scenario folder>/images`); files are
            named `poster-<item_id>.png`.
        size: poster side in pixels.
        emoji_font: the Noto Color Emoji font.

    Returns:
        A copy of `items` where each rendered movie has `image_path`
        `images/poster-<item_id>.png` and `attributes["poster"] = "synthetic"`;
        movies that had an image are unchanged.

    Raises:
        AssetError: the emoji font is missing or corrupt (only when some
            movie needs a poster).
    """
    items = items.copy()
    missing = np.flatnonzero(items["image_path"].isna().to_numpy())
    if missing.size == 0:
        return items
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    renderer = PosterRenderer(size, Path(emoji_font))
    image_paths = items["image_path"].astype(object).to_numpy(copy=True)
    attributes_column = items["attributes"].astype(object).to_numpy(copy=True)
    for position in missing:
        attributes = _parse_attributes(attributes_column[position])
        genres = attributes.get("genres") or []
        genres = [genres] if isinstance(genres, str) else [str(g) for g in genres if str(g).strip()]
        year = str(attributes.get("year") or "").strip()
        item_id, title = str(items["item_id"].iloc[position]), str(items["title"].iloc[position])
        file_name = f"poster-{safe_file_stem(item_id)}.png"
        save_png(renderer.render(title, year, genres), images_dir / file_name)
        attributes["poster"] = "synthetic"
        image_paths[position] = relative_image_path(images_dir, file_name)
        attributes_column[position] = json.dumps(attributes, ensure_ascii=False)
    items["image_path"] = image_paths
    items["attributes"] = attributes_column
    return schemas.Items.validate(items)
