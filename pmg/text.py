"""Small text helpers every layer shares: natural sort keys, Markdown escaping, lexicon matching.

They live here, below everything else, so that no layer has to import a
sibling's internals for a one-line helper (the data, method, evaluation and
stage layers all sort user ids the same way).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_DIGITS = re.compile(r"(\d+)")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def natural_key(value: str) -> tuple:
    """Sort key that orders "2" before "10" and "c0002" before "c0010"."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS.split(str(value)) if part
    )


def md_escape(text: object) -> str:
    """`text` as one Markdown table cell: pipes escaped, newlines as spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def normalise(text: str) -> str:
    """Lower case, every run of non-alphanumerics one space, padded: `"Children's"` -> `" children s "`."""
    return " " + _NON_WORD.sub(" ", text.lower()).strip() + " "


def named(keywords: Iterable[str], lexicon: Mapping[str, Iterable[str]]) -> set[str]:
    """The lexicon entries whose name or words occur (as whole words) in any keyword."""
    text = " | ".join(normalise(k) for k in keywords)
    return {name for name, words in lexicon.items() if any(f" {w} " in text for w in (name, *words))}
