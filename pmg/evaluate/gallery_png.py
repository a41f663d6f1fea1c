"""A small PNG of the report's gallery, for the README (`report.grid_png`).

One row per scenario (in `base.scenarios` order) showing the first pair the
HTML report's gallery shows: the history images, the target image and every
candidate labelled `w_p:w_t` and `z`, the chosen one in a coloured frame (the
HTML report's ring colour), and under the row a line with the user, the
preference keywords and the target keywords, cut to fit. Every image is
scaled so its longer side is `tile` px — nearest-neighbour when scaling up
(generator outputs are 32 px: their pixels stay visible), Lanczos when
scaling down. Text uses Pillow's bundled font (`ImageFont.load_default`), so
no font file is needed (it has Latin glyphs only: labels avoid dashes).
A scenario without pairs gets a row saying so.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

CHOSEN_COLOUR = (232, 89, 12)  # #e8590c, the HTML report's ring of the chosen candidate
BACKGROUND = (255, 255, 255)
TEXT = (34, 34, 34)
MUTED = (120, 120, 120)
MISSING = (221, 221, 221)
TILES_MIN = 6  # narrowest image: this many tiles (rows without pairs still have room for text)


@dataclass(frozen=True)
class Layout:
    """Pixel sizes of the grid for one tile side (every row has the same height)."""

    tile: int

    @property
    def gap(self) -> int:
        """Space between tiles; the chosen frame is drawn inside it."""
        return max(6, self.tile // 10)

    @property
    def frame(self) -> int:
        return max(2, self.gap // 2)

    @property
    def label_size(self) -> int:
        return max(9, self.tile // 6)

    @property
    def text_size(self) -> int:
        return self.label_size + 2

    @property
    def title_height(self) -> int:
        return self.text_size + 6

    @property
    def label_height(self) -> int:
        """Two label lines under each tile."""
        return 2 * (self.label_size + 2) + 2

    @property
    def group_gap(self) -> int:
        """Extra space between history, target and candidates."""
        return 2 * self.gap

    @property
    def row_height(self) -> int:
        return self.title_height + self.tile + self.label_height + self.text_size + 4 + self.gap


def row_height(tile: int) -> int:
    """Height in px of one scenario's row of the grid."""
    return Layout(tile).row_height


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit(text: str, font, width: float) -> str:
    """`text` cut (with an ellipsis) to at most `width` px in `font`."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def read_rgb(path: str | Path | None) -> Image.Image | None:
    """The image at `path` as RGB, or None when there is none or it cannot be read."""
    if path is None:
        return None
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError):
        return None


def tile_image(path: str | Path | None, tile: int) -> Image.Image | None:
    """The image at `path` scaled so its longer side is `tile` px, centred on a square; None if unreadable."""
    image = read_rgb(path)
    if image is None:
        return None
    scale = tile / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    image = image.resize(size, resample)
    square = Image.new("RGB", (tile, tile), BACKGROUND)
    square.paste(image, ((tile - size[0]) // 2, (tile - size[1]) // 2))
    return square


def _groups(pair: dict) -> list[list]:
    target = [pair["target"]] if pair.get("target") else []
    return [pair.get("history") or [], target, pair.get("candidates") or []]


def _row_width(pair: dict | None, layout: Layout) -> int:
    if pair is None:
        return 0
    groups = [g for g in _groups(pair) if g]
    tiles = sum(len(g) for g in groups)
    return layout.gap + tiles * (layout.tile + layout.gap) + max(0, len(groups) - 1) * layout.group_gap


def gallery_grid(rows: Sequence[tuple[str, dict | None]], *, tile: int = 64) -> Image.Image:
    """The grid image.

    Args:
        rows: `(scenario, pair)` per row; `pair` is one gallery entry of
            `pmg.evaluate.report` (`history`, `target`, `candidates` as
            `Cell`s with `path` / `label` / `chosen`, plus `user_id`,
            `preference_keywords`, `target_keywords`, `target_title`), or
            None for a scenario without pairs.
        tile: side in px of every image.

    Returns:
        An RGB image `len(rows) * row_height(tile)` px high.
    """
    layout = Layout(tile)
    label_font, text_font = _font(layout.label_size), _font(layout.text_size)
    narrowest = layout.gap + TILES_MIN * (tile + layout.gap)
    width = max([_row_width(pair, layout) for _, pair in rows] + [narrowest])
    grid = Image.new("RGB", (width, max(1, len(rows)) * layout.row_height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    text_width = width - 2 * layout.gap
    for index, (scenario, pair) in enumerate(rows):
        top = index * layout.row_height
        tiles_top = top + layout.title_height
        title = scenario
        if pair is not None:
            title += f": user {pair.get('user_id', '')}, target {pair.get('target_item', '')}"
            if pair.get("target_title"):
                title += f" ({pair['target_title']})"
        draw.text((layout.gap, top + 2), _fit(title, text_font, text_width), fill=TEXT, font=text_font)
        if pair is None:
            draw.rectangle(
                (layout.gap, tiles_top, width - layout.gap - 1, tiles_top + tile - 1), fill=MISSING
            )
            draw.text(
                (layout.gap + tile // 4, tiles_top + (tile - layout.text_size) // 2),
                "no pairs",
                fill=MUTED,
                font=text_font,
            )
            continue
        x = layout.gap
        for group in _groups(pair):
            if not group:
                continue
            for cell in group:
                image = tile_image(cell.path, tile)
                if image is None:
                    draw.rectangle((x, tiles_top, x + tile - 1, tiles_top + tile - 1), fill=MISSING)
                    draw.text((x + 2, tiles_top + 2), "missing", fill=MUTED, font=label_font)
                else:
                    grid.paste(image, (x, tiles_top))
                if cell.chosen:
                    f = layout.frame
                    draw.rectangle(
                        (x - f, tiles_top - f, x + tile - 1 + f, tiles_top + tile - 1 + f),
                        outline=CHOSEN_COLOUR,
                        width=f,
                    )
                for line_no, line in enumerate(cell.label[:2]):
                    draw.text(
                        (x, tiles_top + tile + layout.frame + 1 + line_no * (layout.label_size + 2)),
                        _fit(line, label_font, tile + layout.gap - 2),
                        fill=CHOSEN_COLOUR if cell.chosen else TEXT,
                        font=label_font,
                    )
                x += tile + layout.gap
            x += layout.group_gap
        words = (
            f"user {pair.get('user_id', '')} · preference: {pair.get('preference_keywords') or 'none'}"
            f" · target: {pair.get('target_keywords') or 'none'}"
        )
        draw.text(
            (layout.gap, tiles_top + tile + layout.label_height),
            _fit(words, text_font, text_width),
            fill=MUTED,
            font=text_font,
        )
    return grid


def gallery_png(rows: Sequence[tuple[str, dict | None]], *, tile: int = 64) -> bytes:
    """`gallery_grid(rows, tile=tile)` as optimised PNG bytes (the report stage writes them)."""
    buffer = io.BytesIO()
    gallery_grid(rows, tile=tile).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
