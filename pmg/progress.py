"""Progress of long loops: a counter with a rate and an ETA, on stderr, off under CI.

Every long loop of the project (keyword prompts, candidate generation,
adapter training steps, ablation runs, the zoo's trainings) wraps its
iterable in `progress(...)`, one line per loop::

    for batch in progress(batches, total=len(batches), desc="keywords clothing"):
        ...

It is `tqdm` (counts, rate, elapsed and remaining time) when a person
watches: stderr is a terminal and the `CI` environment variable is not set.
Otherwise (CI, `dvc repro > log`, a Prefect worker) it yields the items
unchanged and prints nothing, so logs stay free of carriage-return noise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    """Whether bars are shown: stderr is a terminal and `CI` is unset (or empty)."""
    if os.environ.get("CI"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """Yield the items of `iterable`, showing a progress bar when a person watches.

    Args:
        iterable: what the loop walks over.
        total: the number of items, when `len(iterable)` does not tell (a
            generator); None leaves the bar without a total or an ETA.
        desc: what is being counted, e.g. `"train_soft clothing steps"`.

    Yields:
        The items of `iterable`, unchanged and in order.
    """
    if not progress_enabled():
        yield from iterable
        return
    from tqdm import tqdm

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    # The finished bar stays: one line per loop says what ran, how many, how long.
    with tqdm(iterable, total=total, desc=desc or None, file=sys.stderr, dynamic_ncols=True) as bar:
        yield from bar
