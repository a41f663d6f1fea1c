"""Helpers the default-world tests share (fixtures live in `conftest.py`)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pmg import schemas


def fake_silhouette(label: int, variant: int) -> np.ndarray:
    """A 28 x 28 uint8 garment-like blob per class: a body, sleeves or legs, a hole."""
    image = np.zeros((28, 28), dtype=np.uint8)
    y, x = np.mgrid[0:28, 0:28]
    shift = variant % 3
    body = (abs(x - 14) <= 6 + shift) & (y >= 3) & (y <= 25)
    if label in (0, 2, 4, 6):  # tops: sleeves
        body |= (y >= 3) & (y <= 10 + label) & (abs(x - 14) <= 12)
    if label == 1:  # trousers: two legs
        body &= ~((abs(x - 14) <= 1) & (y >= 12))
    if label in (5, 7, 9):  # shoes: low and wide
        body = (y >= 14) & (y <= 24) & (x >= 2) & (x <= 25 - shift)
    image[body] = 180 + (x[body] * 2) % 60
    image[13:15, 13:15] = 0  # a dark print: a hole the mask must fill
    return image


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0))


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def movie(
    item_id: str, title: str, genres: list[str], year: str | None = "1995", image_path: str | None = None
) -> dict:
    attributes: dict[str, object] = {"genres": genres, "tags": []}
    if year:
        attributes["year"] = year
    return {
        "item_id": item_id,
        "scenario": "movies",
        "title": title,
        "text": title,
        "attributes": json.dumps(attributes),
        "image_path": image_path,
    }


def movies(*rows: dict) -> pd.DataFrame:
    return schemas.Items.validate(pd.DataFrame(list(rows)))


def ml100k_movies(path: Path, limit: int | None = None) -> pd.DataFrame:
    """Movies from a RecBole `ml-100k.item` file, as the movie loader gives them (tests only)."""
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, nrows=limit)
    raw.columns = ["item_id", "title", "year", "genres"]  # item_id:token, movie_title:token_seq, ...
    rows = [
        movie(r.item_id, r.title, [g for g in r.genres.split() if g != "unknown"], r.year or None)
        for r in raw.itertuples()
    ]
    return movies(*rows)
