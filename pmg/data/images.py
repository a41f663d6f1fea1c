"""Item images: finding them in a folder, and normalising them to square PNGs.

Real sources come with images in any format and shape (posters, product
photos), and some are missing or broken. Everything downstream (captioner,
scorer, diffusion supervision) wants one size of RGB image, so `prepare`
rewrites each item's image once into `<scenario>/images/<name>.png`:

* converted to RGB: transparency (RGBA, LA, palette with a transparent
  colour) is composited on white, as a product photo on a page would be;
  CMYK and greyscale are converted; 16-bit and 32-bit greyscale are scaled
  down to 8 bits rather than clipped (clipping would turn most of a 16-bit
  image white); the EXIF orientation is applied; only the first frame of an
  animation is kept;
* fitted into a `size` x `size` square keeping its aspect ratio, the rest
  filled with white (letterboxing), because cropping could cut off the very
  garment or title the image is about.

A missing or unreadable image never stops the stage: the item keeps its row
with a null `image_path`, and the reason is counted (`missing_image`,
`corrupt_image`), so the split can leave it out and the report shows how many.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from pmg import schemas
from pmg.errors import DataError
from pmg.io import atomic_path, validate

#: File name endings recognised as images, in order of preference when one
#: item has several (e.g. `12.jpg` and `12.png`).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

#: Item ids used as file names unchanged: lower-case letters, digits and `_`.
#: Lower case only, so two ids never collide on a case-insensitive file system.
_PLAIN_ID = re.compile(r"[a-z0-9_]{1,100}")
_UNSAFE_RUN = re.compile(r"[^a-z0-9_]+")


def index_images(folder: str | Path, *, what: str = "image folder") -> dict[str, Path]:
    """Map item id -> absolute path of its image in `folder` (`<item_id>.<ext>`).

    The folder is listed once instead of probing every extension of every
    item, which matters for catalogues of millions of items. Extensions match
    case-insensitively (`12.JPG`); the id (file name without its last
    extension) is kept as written. Where one id has several images, the first
    extension of `IMAGE_EXTENSIONS` wins, so the choice does not depend on the
    order the file system lists files in.

    Args:
        folder: the folder of images (not searched recursively).
        what: how to name the folder in the error message.

    Returns:
        Item id -> absolute path.

    Raises:
        DataError: the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, f"{what} does not exist or is not a folder")
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    best: dict[str, tuple[int, Path]] = {}
    for entry in folder.iterdir():
        ext = entry.suffix.lower()
        if ext not in rank or not entry.is_file():
            continue
        item_id = entry.name[: -len(entry.suffix)]
        if not item_id:
            continue
        if item_id not in best or rank[ext] < best[item_id][0]:
            best[item_id] = (rank[ext], entry)
    return {item_id: path.resolve() for item_id, (_, path) in best.items()}


def safe_file_stem(item_id: str) -> str:
    """A file name stem for `item_id` that is safe on any file system and unique.

    Ids made only of lower-case letters, digits and `_` are used as they are,
    so the common case (`1.png`, `542318.png`) stays readable. Any other id
    becomes a readable slug plus 16 hex digits of its SHA-256, e.g.
    `a/b:C` -> `a_b_c-<hash>`: the slug alone could collide (`a/b` and `a:b`,
    or `A` and `a` on a case-insensitive file system), the hash makes the name
    unique, and because hashed names always contain `-` they can never equal a
    plain one.
    """
    if _PLAIN_ID.fullmatch(item_id):
        return item_id
    slug = _UNSAFE_RUN.sub("_", item_id.lower()).strip("_")[:40] or "item"
    digest = hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:16]
    return f"{slug}-{digest}"


def _to_8bit(array: np.ndarray) -> np.ndarray:
    """Scale a high-bit-depth greyscale array to uint8 by its value range.

    8-bit data in a wide mode is kept as is; 16-bit data is divided by 257
    (65535 -> 255); floats in [0, 1] are multiplied by 255; anything wider is
    scaled by its maximum.
    """
    is_float = array.dtype.kind == "f"
    array = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    array = np.clip(array, 0, None)
    peak = float(array.max()) if array.size else 0.0
    if is_float and peak <= 1.0:
        array = array * 255.0
    elif peak <= 255:
        pass
    elif peak <= 65535:
        array = array / 257.0
    else:
        array = array * (255.0 / peak)
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow image to RGB, compositing transparency on white.

    Args:
        image: an opened (and loaded) image of any mode.

    Returns:
        An RGB image of the same size.
    """
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return Image.fromarray(_to_8bit(np.asarray(image))).convert("RGB")  # uint8 2-D: mode L
    if image.mode == "P":
        # A palette image may mark one colour transparent; RGBA makes it explicit.
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    elif image.mode in ("PA", "LA", "La", "RGBa") or (image.mode == "L" and "transparency" in image.info):
        image = image.convert("RGBA")
    elif image.mode == "RGB" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if image.mode == "RGB":
        return image
    # CMYK, YCbCr, L, 1, ... have direct conversions.
    return image.convert("RGB")


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Fit an RGB image into a `size` x `size` white square, keeping its aspect."""
    return ImageOps.pad(image, (size, size), method=Image.Resampling.LANCZOS, color=(255, 255, 255))


def _load_image(path: Path) -> Image.Image:
    """Open and fully decode `path` (decoding is lazy; truncation shows here)."""
    with warnings.catch_warnings():
        # Pillow warns (not raises) for some damaged files; treat them as errors.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as opened:
            opened.seek(0)
            opened.load()
            image = ImageOps.exif_transpose(opened)
            image.load()
            return image if image is not opened else opened.copy()


def read_prepared_image(path: str | Path) -> Image.Image:
    """An item image that `prepare` wrote, decoded, as RGB.

    Every stage that reads prepared images (captioning in `describe`, the
    soft model's supervision, the zoo's training, evaluation references)
    opens them here, so a damaged file is one clear error naming it instead
    of a Pillow traceback deep inside a stage.

    Raises:
        DataError: the file is missing or does not decode; the prepared
            folder is damaged, and `pmg prepare` rebuilds it.
    """
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")  # decodes the whole image: truncation shows here
    except FileNotFoundError:
        raise DataError(path, "image file does not exist; run `pmg prepare` for this scenario again") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(
            path, f"not a readable image ({err}); run `pmg prepare` for this scenario again"
        ) from None


def materialise_images(
    items: pd.DataFrame, out_dir: str | Path, size: int, *, base_dir: str | Path | None = None
) -> tuple[pd.DataFrame, Counter[str]]:
    """Rewrite every item image as a `size` x `size` RGB PNG under `out_dir/images`.

    Args:
        items: a `schemas.Items` table whose `image_path` is an absolute path,
            a path relative to `base_dir`, or null.
        out_dir: the scenario folder; images go to `out_dir/images/`.
        size: side of the square images, in pixels.
        base_dir: folder that relative `image_path`s are relative to (default:
            the current working directory).

    Returns:
        The items with `image_path` rewritten to `images/<stem>.png` (POSIX,
        relative to `out_dir`), or null where the image was missing or
        unreadable; and reason -> count of such items (`missing_image`,
        `corrupt_image`).
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    skipped: Counter[str] = Counter()
    new_paths: list[str | None] = []
    for item_id, image_path in zip(items["item_id"], items["image_path"], strict=True):
        if image_path is None or pd.isna(image_path):
            new_paths.append(None)
            continue
        source = Path(image_path)
        if not source.is_absolute():
            source = base / source
        if not source.is_file():
            skipped["missing_image"] += 1
            new_paths.append(None)
            continue
        try:
            image = fit_square(to_rgb(_load_image(source)), size)
        except Exception:  # noqa: BLE001
            # Zero bytes, not an image, truncated, a decompression bomb, or a
            # mode Pillow cannot convert. Pillow's format plugins raise many
            # exception types (OSError, SyntaxError, struct.error, ...) for
            # damaged files, so any failure here means "unreadable image".
            skipped["corrupt_image"] += 1
            new_paths.append(None)
            continue
        name = f"{safe_file_stem(str(item_id))}.png"
        with atomic_path(images_dir / name) as tmp:
            image.save(tmp, format="PNG")
        new_paths.append(f"images/{name}")
    result = items.copy()
    result["image_path"] = pd.Series(new_paths, index=items.index, dtype=object)
    result = validate(result, schemas.Items, images_dir)
    return result, +skipped
