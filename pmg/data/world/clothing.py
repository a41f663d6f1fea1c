"""The default clothing world: rendered garments and simulated clickers.

Catalogue. Each garment is a Fashion-MNIST silhouette (test split, 28 x 28
greyscale) turned into a soft mask (threshold, holes filled, upscaled and
smoothed to the image size) and coloured in one of :data:`COLOURS` with one of
:data:`PATTERNS` drawn only inside the mask, on a white background. The
silhouette's own intensity shades the garment mildly (x0.80-1.00).

Colours are chosen to be told apart on pixels, not with CLIP: the seven
chromatic colours sit at least 34 degrees apart in hue (red 357, yellow 47,
green 134, teal 184, blue 227, purple 277, pink 323; orange would sit within
25 degrees of red and yellow, so it is left out), and black is the one
achromatic colour. Patterns are drawn in a dark shade of the garment colour
(x0.45; light grey on black), and shading only scales brightness, so every
garment pixel keeps the garment's exact hue: the mean hue inside the mask is
the named colour's hue, whatever the pattern. :func:`measure_colour` and
:func:`measure_pattern` read both back from an image.

Classes: T-shirt, trousers, pullover, dress, coat, shirt, sneakers, bag and
ankle boots. Sandals are left out: their thin straps cannot carry a visible
pattern.

Users. Each simulated user draws a latent preferred colour and pattern (the
ground truth) and a number of clicks from `clicks_per_user`. Each click follows
the preference with probability `preference_strength` (an unclicked item of
that colour and pattern; of that colour only when none is left; any item when
none of that colour is left either), else it is uniform over unclicked items.
"""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from pmg import schemas
from pmg.data.dataset import ScenarioData, empty_conversations
from pmg.data.world.render import asset_error, relative_image_path, save_png

if TYPE_CHECKING:  # the section type only; the scenario module imports this one
    from pmg.scenarios.clothing import ClothingSource

SCENARIO = "clothing"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 35),
    "yellow": (245, 195, 10),
    "green": (30, 160, 60),
    "teal": (0, 150, 160),
    "blue": (35, 75, 225),
    "purple": (135, 40, 195),
    "pink": (240, 85, 180),
    "black": (30, 30, 30),
}
"""Garment colour name -> base RGB. All but black are saturated and far apart in hue."""

ACHROMATIC = frozenset({"black"})

PATTERNS = ("plain", "striped", "dotted", "checked")
"""Garment patterns (the `elements` attribute)."""

PATTERN_SHADE = 0.45  # a pattern is the garment colour at this brightness
BLACK_PATTERN_RGB = (165, 165, 165)  # on black, a light grey
SHADING_RANGE = (0.80, 1.00)  # brightness the silhouette's intensity maps to
_PAD = 3  # silhouette pixels of white margin on each side (28 -> 34)


@dataclass(frozen=True)
class Category:
    """A Fashion-MNIST class as a catalogue category, with plausible attributes.

    Attributes:
        label: the Fashion-MNIST class.
        noun: how titles and descriptions name it ("ankle boots").
        materials, seasons, styles: what an item of it may be drawn with.
    """

    label: int
    noun: str
    materials: tuple[str, ...]
    seasons: tuple[str, ...]
    styles: tuple[str, ...]

    @property
    def name(self) -> str:
        """The `category` attribute: the noun, lower case, hyphenated ("ankle-boots")."""
        return self.noun.lower().replace(" ", "-")


# fmt: off
CATEGORIES: tuple[Category, ...] = (
    Category(0, "T-shirt", ("cotton", "jersey"), ("summer", "spring"), ("casual", "sporty")),
    Category(1, "trousers", ("denim", "cotton", "wool"), ("all-season", "autumn"), ("casual", "business")),
    Category(2, "pullover", ("wool", "cashmere", "knit"), ("winter", "autumn"), ("casual", "cosy")),
    Category(3, "dress", ("silk", "chiffon", "cotton"), ("summer", "spring"), ("elegant", "romantic")),
    Category(4, "coat", ("wool", "tweed", "polyester"), ("winter", "autumn"), ("classic", "formal")),
    Category(6, "shirt", ("cotton", "linen"), ("spring", "all-season"), ("business", "casual")),
    Category(7, "sneakers", ("canvas", "leather", "mesh"), ("all-season", "spring"), ("sporty", "street")),
    Category(8, "bag", ("leather", "canvas"), ("all-season",), ("elegant", "casual")),
    Category(9, "ankle boots", ("leather", "suede"), ("autumn", "winter"), ("classic", "edgy")),
)
# fmt: on
"""The classes kept from Fashion-MNIST (label 5, sandal, is left out)."""

FASHION_MNIST_IMAGES = "t10k-images-idx3-ubyte.gz"
FASHION_MNIST_LABELS = "t10k-labels-idx1-ubyte.gz"

_BASE_TIME = 1_577_836_800  # 2020-01-01T00:00:00Z


# ------------------------------------------------------------------ Fashion-MNIST


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    if not path.is_file():
        raise asset_error(path, "Fashion-MNIST file not found")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise asset_error(path, f"not a readable gzip file ({err})") from None
    header = 4 + 4 * dims
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise asset_error(path, f"not an IDX file with magic {magic}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if len(raw) != header + math.prod(shape):
        raise asset_error(path, f"IDX size mismatch: header says {shape}, file has {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The Fashion-MNIST test split.

    Returns:
        images `(N, 28, 28)` uint8 and labels `(N,)` uint8.

    Raises:
        AssetError: a file is missing, not gzip, not IDX, the two disagree,
            or a class of :data:`CATEGORIES` has no image.
    """
    images = _read_idx(folder / FASHION_MNIST_IMAGES, 2051, 3)
    labels = _read_idx(folder / FASHION_MNIST_LABELS, 2049, 1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise asset_error(
            folder / FASHION_MNIST_IMAGES, f"shape {images.shape} does not match {labels.shape[0]} labels"
        )
    absent = sorted({c.label for c in CATEGORIES} - set(np.unique(labels).tolist()))
    if absent:
        raise asset_error(folder / FASHION_MNIST_LABELS, f"no image of class {absent}")
    return images, labels


# ---------------------------------------------------------------------- rendering


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """`mask` with every region not connected (4-neighbour) to the border set, bool."""
    outside = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=bool)
    free = np.pad(~mask, 1, constant_values=True)
    outside[0, :] = outside[-1, :] = outside[:, 0] = outside[:, -1] = True
    while True:
        grown = outside.copy()
        grown[1:, :] |= outside[:-1, :]
        grown[:-1, :] |= outside[1:, :]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= free
        if np.array_equal(grown, outside):
            return ~outside[1:-1, 1:-1]
        outside = grown


def silhouette_mask(silhouette: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A soft garment mask and a shading map at `size` from a 28 x 28 silhouette.

    The silhouette is padded (so the garment fills ~82% of the side, on a
    white margin), thresholded, its holes filled (dark prints inside a
    T-shirt are still T-shirt), upscaled and blurred, and the edge is
    re-sharpened to about one pixel of anti-aliasing.

    Returns:
        alpha `(size, size)` in [0, 1] and shading `(size, size)` in
        :data:`SHADING_RANGE`.
    """
    silhouette = np.pad(silhouette, _PAD)
    scale = size / silhouette.shape[0]  # output pixels per silhouette pixel
    filled = np.where(fill_holes(silhouette > 12), 255, 0).astype(np.uint8)
    up = Image.fromarray(filled).resize((size, size), Image.Resampling.BILINEAR)
    up = up.filter(ImageFilter.GaussianBlur(radius=0.45 * scale))
    soft = np.asarray(up, dtype=np.float32) / 255.0
    # A ramp of ~1.5 px around the 0.5 level: smooth contours, crisp edge.
    alpha = np.clip((soft - 0.5) * scale / 1.5 * 2.0 + 0.5, 0.0, 1.0)
    intensity = Image.fromarray(silhouette).resize((size, size), Image.Resampling.BICUBIC)
    intensity = intensity.filter(ImageFilter.GaussianBlur(radius=0.6 * scale))
    intensity = np.asarray(intensity, dtype=np.float32) / 255.0
    inside = intensity[alpha > 0.5]
    top = float(np.percentile(inside, 95)) if inside.size else 1.0
    normalised = np.clip(intensity / max(top, 1e-3), 0.0, 1.0)
    low, high = SHADING_RANGE
    return alpha, low + (high - low) * normalised


def pattern_mask(pattern: str, size: int) -> np.ndarray:
    """Where a pattern is drawn, `(size, size)` bool, over the whole square.

    Periods scale with `size` (about 7 stripes, 5 checks, 8 dot rows across),
    never below 2 px.
    """
    y, x = np.mgrid[0:size, 0:size]
    if pattern == "plain":
        return np.zeros((size, size), dtype=bool)
    if pattern == "striped":
        period = max(2, round(size / 14))
        return (y // period) % 2 == 1
    if pattern == "checked":
        period = max(2, round(size / 10))
        return ((y // period) + (x // period)) % 2 == 1
    if pattern == "dotted":
        spacing = max(4, round(size / 8))
        row = y // spacing
        cy = row * spacing + spacing / 2
        cx = (np.floor((x - (row % 2) * spacing / 2) / spacing) + 0.5) * spacing + (row % 2) * spacing / 2
        return (x - cx) ** 2 + (y - cy) ** 2 <= (0.3 * spacing) ** 2
    raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")


def render_garment(silhouette: np.ndarray, colour: str, pattern: str, size: int) -> Image.Image:
    """An RGB `size` x `size` garment: silhouette in `colour` with `pattern`, on white."""
    alpha, shading = silhouette_mask(silhouette, size)
    base = np.asarray(COLOURS[colour], dtype=np.float32)
    accent = np.asarray(BLACK_PATTERN_RGB if colour in ACHROMATIC else base * PATTERN_SHADE, dtype=np.float32)
    fabric = np.where(pattern_mask(pattern, size)[..., None], accent, base) * shading[..., None]
    pixels = 255.0 * (1.0 - alpha[..., None]) + fabric * alpha[..., None]
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


# ------------------------------------------------------------------- measurement


def _garment_pixels(image: Image.Image | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rgb = (
        np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
        / 255.0
    )
    value = rgb.max(axis=-1)
    chroma = value - rgb.min(axis=-1)
    # Not background: visibly coloured or visibly darker than white.
    return rgb, (chroma > 0.12) | (value < 0.80)


def hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """HSV hue in degrees [0, 360) of RGB values in [0, 1], shape `(..., 3)` -> `(...)`."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    chroma = np.maximum(value - rgb.min(axis=-1), 1e-6)
    hue = np.where(
        value == r,
        ((g - b) / chroma) % 6.0,
        np.where(value == g, (b - r) / chroma + 2.0, (r - g) / chroma + 4.0),
    )
    return (hue * 60.0) % 360.0


def measure_colour(image: Image.Image | np.ndarray) -> str | None:
    """The named colour of the garment in an image on a light background.

    Garment pixels are those visibly coloured or darker than white. When
    fewer than 40% of them are saturated the garment is black; otherwise the
    chroma-weighted circular mean hue picks the nearest chromatic colour of
    :data:`COLOURS`.

    Returns:
        A key of :data:`COLOURS`, or None when the image shows no garment.
    """
    rgb, garment = _garment_pixels(image)
    pixels = rgb[garment]
    if pixels.shape[0] == 0:
        return None
    value = pixels.max(axis=-1)
    chroma = value - pixels.min(axis=-1)
    saturated = (chroma > 0.15) & (chroma / np.maximum(value, 1e-6) > 0.35)
    if saturated.mean() < 0.4:
        return "black"
    angles = np.radians(hue_degrees(pixels[saturated]))
    weights = chroma[saturated]
    mean_hue = (
        math.degrees(math.atan2(float(weights @ np.sin(angles)), float(weights @ np.cos(angles)))) % 360.0
    )

    def distance(name: str) -> float:
        gap = abs(float(hue_degrees(np.asarray(COLOURS[name]) / 255.0)) - mean_hue) % 360.0
        return min(gap, 360.0 - gap)

    return min((name for name in COLOURS if name not in ACHROMATIC), key=distance)


def measure_pattern(image: Image.Image | np.ndarray) -> str:
    """The pattern of the garment in an image rendered like this world's garments.

    Inside the garment (edges eroded, and pixels blended with the white
    background dropped: on a coloured garment those are less saturated than
    the fabric, on a black one they fall between its two greys), brightness
    is split at the midpoint of its 5th and 95th percentiles. Too little
    contrast (shading alone spans x0.80-1.00, the pattern is x0.45): plain.
    Otherwise the minority side is the pattern: stripes fill some rows
    entirely and leave others empty, checks cover about half the garment,
    dots about a quarter.

    Exact on this world's garments at 128 px; about 99% right at 32-64 px.

    Returns:
        One of :data:`PATTERNS`.
    """
    rgb, garment = _garment_pixels(image)
    inner = np.asarray(
        Image.fromarray(garment.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(5)), dtype=bool
    )
    if inner.sum() < 16:
        return "plain"
    value = rgb.max(axis=-1)
    saturation = (value - rgb.min(axis=-1)) / np.maximum(value, 1e-6)
    if measure_colour(rgb * 255.0) in ACHROMATIC:
        fabric = inner & ((value < 0.30) | ((value > 0.45) & (value < 0.72)))
    else:
        fabric = inner & (saturation >= 0.85 * float(np.median(saturation[inner])))
    if fabric.sum() < 16:
        return "plain"
    low, high = np.percentile(value[fabric], [5, 95])
    if low > 0.68 * high and high - low < 0.25:
        return "plain"
    marked = fabric & (value < (low + high) / 2)
    if marked.sum() > fabric.sum() / 2:
        marked = fabric & ~marked
    coverage = marked.sum() / fabric.sum()
    if coverage < 0.04:
        return "plain"
    rows = fabric.sum(axis=1) >= 4
    row_share = marked.sum(axis=1)[rows] / fabric.sum(axis=1)[rows]
    if rows.any():
        full, empty = float(np.mean(row_share >= 0.8)), float(np.mean(row_share <= 0.2))
        if full + empty > 0.65 and min(full, empty) > 0.15:
            return "striped"
    return "checked" if coverage > 0.38 else "dotted"


# ---------------------------------------------------------------------- catalogue


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _describe(
    category: Category, colour: str, pattern: str, material: str, season: str, style: str, pick: int
) -> tuple[str, str]:
    """The item's title ("red striped dress") and a one- or two-sentence description."""
    noun = category.noun
    title = f"plain {colour} {noun}" if pattern == "plain" else f"{colour} {pattern} {noun}"
    look = "with no pattern" if pattern == "plain" else f"with a {pattern} pattern"
    wear = "any season" if season == "all-season" else season
    plural = noun.endswith("s") and not noun.endswith("ss")  # trousers, sneakers, ankle boots; not dress
    article = "A pair of" if plural else _a(colour).capitalize()
    this, comes = ("These", "come") if plural else ("This", "comes")
    templates = (
        f"{article} {colour} {noun} in {material} {look}. {_a(style).capitalize()} {style} piece for {wear}.",
        f"{this} {style} {noun} {comes} in {colour} {material} {look}, made for {wear}.",
        f"{colour.capitalize()} {material} {noun} {look}, {style} cut, suited to {wear}.",
    )
    return title, templates[pick % len(templates)]


def _balanced(rng: np.random.Generator, n_values: int, n: int) -> np.ndarray:
    """`n` draws from `range(n_values)` with every value as often as possible, shuffled."""
    return rng.permutation(np.resize(np.arange(n_values), n))


def build_catalogue(
    silhouettes: np.ndarray,
    labels: np.ndarray,
    n_items: int,
    images_dir: Path,
    size: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Render `n_items` garments into `images_dir` and return the `Items` table.

    Colour x pattern combinations, and categories, are balanced (each as
    often as `n_items` allows) so every preference has matching items.
    """
    combos = [(c, p) for c in COLOURS for p in PATTERNS]
    combo_of = _balanced(rng, len(combos), n_items)
    category_of = _balanced(rng, len(CATEGORIES), n_items)
    pools = {cat.label: rng.permutation(np.flatnonzero(labels == cat.label)) for cat in CATEGORIES}
    used: Counter[int] = Counter()
    rows = []
    width = max(5, len(str(n_items)))
    for index in range(n_items):
        category = CATEGORIES[int(category_of[index])]
        colour, pattern = combos[int(combo_of[index])]
        pool = pools[category.label]
        silhouette = silhouettes[pool[used[category.label] % pool.size]]
        used[category.label] += 1
        material = str(rng.choice(category.materials))
        season = str(rng.choice(category.seasons))
        style = str(rng.choice(category.styles))
        title, text = _describe(category, colour, pattern, material, season, style, int(rng.integers(3)))
        item_id = f"g{index + 1:0{width}d}"
        save_png(render_garment(silhouette, colour, pattern, size), images_dir / f"{item_id}.png")
        attributes = {
            "category": category.name,
            "colour": colour,
            "material": material,
            "season": season,
            "style": style,
            "elements": pattern,
        }
        rows.append(
            {
                "item_id": item_id,
                "scenario": SCENARIO,
                "title": title,
                "text": text,
                "attributes": json.dumps(attributes),
                "image_path": relative_image_path(images_dir, f"{item_id}.png"),
            }
        )
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------- users


def simulate_clicks(
    items: pd.DataFrame, cfg: ClothingSource, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulated users' clicks over the catalogue, and their latent preferences.

    Returns:
        The `Interactions` table (timestamps strictly increasing per user,
        null ratings) and the `GroundTruth` table
        (`{"colour": ..., "pattern": ...}` per user).
    """
    attributes = [json.loads(a) for a in items["attributes"]]
    colour_of = np.asarray([a["colour"] for a in attributes])
    pattern_of = np.asarray([a["elements"] for a in attributes])
    item_ids = items["item_id"].to_numpy()
    n_items = len(item_ids)
    colours, patterns = list(COLOURS), list(PATTERNS)
    low, high = cfg.clicks_per_user
    width = max(4, len(str(cfg.n_users)))
    clicks, truth = [], []
    for user in range(cfg.n_users):
        user_id = f"c{user + 1:0{width}d}"
        colour = colours[int(rng.integers(len(colours)))]
        pattern = patterns[int(rng.integers(len(patterns)))]
        preferred = [
            np.flatnonzero((colour_of == colour) & (pattern_of == pattern)),
            np.flatnonzero(colour_of == colour),
            np.arange(n_items),
        ]
        n_clicks = min(int(rng.integers(low, high + 1)), n_items)
        clicked = np.zeros(n_items, dtype=bool)
        timestamp = _BASE_TIME + int(rng.integers(0, 30 * 86_400))
        for _ in range(n_clicks):
            follows = rng.random() < cfg.preference_strength
            candidates = np.flatnonzero(~clicked)
            if follows:
                for pool in preferred:
                    free = pool[~clicked[pool]]
                    if free.size:
                        candidates = free
                        break
            pick = int(candidates[rng.integers(candidates.size)])
            clicked[pick] = True
            timestamp += int(rng.integers(60, 86_400))
            clicks.append(
                {"user_id": user_id, "item_id": item_ids[pick], "timestamp": timestamp, "rating": None}
            )
        truth.append(
            {
                "user_id": user_id,
                "scenario": SCENARIO,
                "preferences": json.dumps({"colour": colour, "pattern": pattern}),
            }
        )
    interactions = pd.DataFrame(clicks, columns=["user_id", "item_id", "timestamp", "rating"])
    interactions["rating"] = interactions["rating"].astype(float)
    return interactions, pd.DataFrame(truth)


def build_clothing_world(
    cfg: ClothingSource, *, assets: Path, images_dir: Path, size: int, seed: int
) -> ScenarioData:
    """The default clothing scenario: a rendered catalogue and simulated clickers.

    Args:
        cfg: the `prepare.clothing` section (`pmg.scenarios.clothing.ClothingSource`) (`n_items`, `n_users`,
            `clicks_per_user`, `preference_strength`).
        assets: the assets folder; reads `fashion-mnist/t10k-*-ubyte.gz`.
        images_dir: where the garment PNGs go (`<scenario folder>/images`).
        size: image side in pixels.
        seed: seed of everything random here.

    Returns:
        Validated tables; no conversations; ground truth of every user.

    Raises:
        AssetError: Fashion-MNIST is missing or corrupt.
    """
    silhouettes, labels = load_fashion_mnist(Path(assets) / "fashion-mnist")
    rng = np.random.default_rng(seed)
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    items = schemas.Items.validate(build_catalogue(silhouettes, labels, cfg.n_items, images_dir, size, rng))
    interactions, ground_truth = simulate_clicks(items, cfg, rng)
    return ScenarioData(
        scenario=SCENARIO,
        items=items,
        interactions=schemas.Interactions.validate(interactions),
        conversations=schemas.Conversations.validate(empty_conversations()),
        ground_truth=schemas.GroundTruth.validate(ground_truth),
        skipped=Counter(),
    )
