"""Turning an LLM's free-text answer into a clean list of keywords.

Small instruct models rarely follow the requested format exactly: they number
("1. red 2. blue"), bullet, comma-separate, wrap the list in prose ("The
shopper likes red, blue."), add headers ("**Colours:**"), quote, repeat, or
refuse. `parse_keywords` accepts all of these and returns normalised keywords
(lower case, trimmed, single spaces, NFKC unicode, no symbols or emoji), in
the order given, without duplicates. It never raises; an answer with nothing
usable gives `[]`, which the caller treats as "use the fallback".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Sentences that carry no keywords: refusals and meta talk.
_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i can not|i'?m unable|i am unable|unable to|"
    r"as an ai|as a language model|i do not have|i don'?t have|not enough information|cannot determine|"
    r"no information|hope this helps|let me know|feel free)\b",
    re.IGNORECASE,
)
# Labels before the list, e.g. "Keywords:", "The keywords are:", "Here are 3 keywords:".
_PREFIX = re.compile(
    r"^\s*(?:(?:sure|okay|ok|certainly|of course)[,!.]?\s*)?"
    r"(?:here\s+(?:are|is)\s+(?:the\s+|some\s+)?(?:\d+\s+|\w+\s+)?(?:english\s+)?(?:distinctive\s+)?"
    r"(?:keywords?|words?|answers?|tags?)[^:]*:|"
    r"(?:the\s+)?(?:english\s+)?(?:keywords?|answers?|tags?|output|result)(?:\s+(?:are|is))?\s*[:=-]|"
    r"(?:the\s+)?(?:english\s+)?keywords?\s+are\b)\s*",
    re.IGNORECASE,
)
# "<subject> likes X" / "prefers X" / "is interested in X": keep what follows the verb.
_LIKES = re.compile(
    r"\b(?:likes?|loves?|prefers?|enjoys?|favou?rs?|is\s+(?:interested\s+in|into|fond\s+of|drawn\s+to)|"
    r"are\s+(?:interested\s+in|into))\b\s*:?\s*(?:the\s+)?(?:colou?rs?|materials?|styles?|genres?)?\s*:?\s*(.+)$",
    re.IGNORECASE,
)
# Inline list markers: "1.", "2)", "(3)", "#4", at the start or after whitespace.
_NUMBERED = re.compile(r"(?:^|(?<=\s))(?:\(?\d{1,2}[.):]|#\d{1,2}[.):]?)(?=\s|$)")
_BULLET = re.compile(r"^\s*(?:[-*•·–—+>]|\d{1,2}[.)]|\(\d{1,2}\))\s+")
_LABEL = re.compile(r"^\s*([\w\s/'-]{1,30}?)\s*:\s*(.*)$")
_SPLIT = re.compile(r"\s*(?:[,;|/\n\t]|\s-\s|\s–\s|\.\s+|:\s+)\s*")
# Keyword labels inside prose: "... seems casual. Keywords: casual, relaxed".
_MARKER = re.compile(r"\b(?:keywords?|tags)(?:\s+(?:are|is))?\s*:", re.IGNORECASE)
# Phrases whose "and" is part of the phrase, not a list separator.
_AND_PHRASES = frozenset(
    {
        "black and white",
        "rock and roll",
        "rhythm and blues",
        "drum and bass",
        "sword and sorcery",
        "salt and pepper",
    }
)
# "X is Y": the last copula of a clause and what follows it.
_COPULA = re.compile(r"^.*\b(?:is|are|was|were|would be)\s+(.+)$", re.IGNORECASE)
_GENERIC_NOUN = re.compile(
    r"patterns?|colou?rs?|materials?|fabrics?|styles?|genres?|movies?|films?|clothes|clothing|emojis?|ones?|items?"
)
_QUOTES = "\"'`“”‘’«»„‟‹›"
_PLACEHOLDER = re.compile(
    r"^(?:keyword|word|tag|item|answer|example)s?\s*\d*$|^\.{2,}$|^etc\.?$|^…$", re.IGNORECASE
)
# Single words that are never a preference on their own.
EMPTY_WORDS = frozenset(
    "a an the and or of with in on for to is are none n/a na nil unknown nothing various other others "
    "etc keyword keywords answer yes no not specified unspecified any all some more "
    # Generic nouns and fillers: never a preference on their own.
    "made suited piece pieces item items clothes clothing style styles fashion pattern patterns "
    "colour colours color colors material materials fabric season seasons genre genres "
    "movie movies film films emoji word words list".split()
)


def normalise_keyword(text: str) -> str:
    """Lower-case, NFKC, symbols and emoji removed, quotes and edge punctuation stripped, single spaces."""
    text = unicodedata.normalize("NFKC", text)
    # Drop symbols (emoji, arrows, ...) and markdown emphasis; keep letters, digits, marks, - ' &.
    text = "".join(" " if unicodedata.category(ch).startswith("S") or ch in "*_~`" else ch for ch in text)
    text = " ".join(text.split()).lower()
    strip = _QUOTES + " .,;:!?()[]{}<>-–—…"
    previous = None
    while previous != text:
        previous = text
        text = text.strip(strip)
        text = re.sub(r"^(?:and|or|also|&|a|an|the)\s+", "", text)
        text = re.sub(r"\s+(?:etc|and so on|and more)$", "", text)
    return text


def _segments(answer: str, split_and: bool = False) -> list[str]:
    """Split an answer into candidate keyword strings (not yet normalised)."""
    answer = unicodedata.normalize("NFKC", answer).replace("\r", "\n")
    # Markdown headers ("### Colours") are labels, emphasis marks carry nothing.
    answer = re.sub(r"^\s*#+\s+.*$", "", answer, flags=re.MULTILINE)
    answer = re.sub(r"\*\*|__", "", answer)
    # A "Keywords:" label after some prose: the list is what follows it.
    marker = _MARKER.search(answer)
    if marker and answer[: marker.start()].strip():
        answer = answer[marker.end() :]
    # Drop "Keywords:"-style labels, once per line.
    lines = [_PREFIX.sub("", line, count=1) for line in answer.split("\n")]
    out: list[str] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        # Sentences that refuse or talk about the task carry nothing.
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", line) if s and not _REFUSAL.search(s)]
        line = " ".join(sentences).strip()
        if not line:
            continue
        line = _BULLET.sub("", line)
        # "Colour: red, blue" -> "red, blue"; a bare header "Colours:" -> nothing.
        label = _LABEL.match(line)
        if label and len(label.group(1).split()) <= 3:
            line = label.group(2)
            if not line.strip():
                continue
        likes = _LIKES.search(line)
        if likes:
            line = likes.group(1)
        # Inline numbering "1) red 2) blue" -> separate segments.
        for piece in _NUMBERED.split(line):
            parts = [_salvage(p) for p in _SPLIT.split(piece) if p and p.strip()]
            # "red, blue and green": split the last element on " and ".
            last = normalise_keyword(parts[-1]) if parts else ""
            if split_and:
                parts = [q for p in parts for q in _split_and(p)]
            elif len(parts) >= 2 and " and " in last and last not in _AND_PHRASES:
                parts = parts[:-1] + parts[-1].split(" and ")
            out.extend(parts)
    return out


def _split_and(part: str) -> list[str]:
    """Chunks of a cloze fill: "wool and cotton" -> ["wool", "cotton"], "a blue coat in tweed
    with a striped pattern" -> ["a blue coat", "tweed", "a striped pattern"]; "black and
    white" stays whole."""
    if normalise_keyword(part) in _AND_PHRASES:
        return [part]
    return re.split(r"\s+(?:and|with|in|made of|for)\s+", part)


def _salvage(part: str) -> str:
    """The answer inside a prose clause: "the colour that appears most is blue" -> "blue".

    Keeps what follows the last copula, without a leading article or a
    trailing generic noun ("the striped pattern" -> "striped"). A part
    without a copula is returned as it is.
    """
    copula = _COPULA.search(part)
    if copula is None:
        return part
    rest = re.sub(r"^(?:the|a|an)\s+", "", copula.group(1).strip(), flags=re.IGNORECASE)
    rest = re.sub(r"^ones?\s+(?:with|in|of)\s+(?:(?:the|a|an)\s+)?", "", rest, flags=re.IGNORECASE)
    words = rest.split()
    if len(words) >= 2 and _GENERIC_NOUN.fullmatch(words[-1].strip(".!?").lower()):
        rest = " ".join(words[:-1])
    return rest


def parse_keywords(
    answer: str | None,
    *,
    max_keywords: int | None = None,
    max_words: int = 4,
    max_chars: int = 40,
    split_and: bool = False,
) -> list[str]:
    """Keywords from an LLM answer, normalised, de-duplicated, in order.

    Args:
        answer: the raw answer (None and "" give []).
        max_keywords: keep at most this many (None keeps all).
        max_words: longer candidates are prose, not keywords, and are dropped.
        max_chars: likewise for very long single tokens.
        split_and: split every "x and y", "x with y", "x in y", "x for y",
            "x made of y" (a cloze fill is a list or a descriptive phrase);
            by default only the last element of a comma list is split on "and".

    Returns:
        The keywords; [] when the answer holds nothing usable (empty, only
        prose, a refusal, only placeholders).
    """
    if not answer or not answer.strip():
        return []
    keywords: list[str] = []
    for segment in _segments(answer, split_and):
        keyword = normalise_keyword(segment)
        if len(keyword) < 2 or not any(ch.isalpha() for ch in keyword):
            continue
        if _PLACEHOLDER.match(keyword) or keyword in EMPTY_WORDS:
            continue
        if len(keyword.split()) > max_words or len(keyword) > max_chars:
            continue
        if keyword not in keywords:
            keywords.append(keyword)
        if max_keywords is not None and len(keywords) >= max_keywords:
            break
    return keywords


def dedupe(keywords: list[str]) -> list[str]:
    """Order-preserving de-duplication (after normalisation)."""
    out: list[str] = []
    for keyword in keywords:
        keyword = normalise_keyword(keyword)
        if keyword and keyword not in out:
            out.append(keyword)
    return out


def extract_cloze(answer: str | None, cloze: str) -> str | None:
    """What an answer put in the blank of a cloze sentence, or None.

    The anchor is the last (up to two) words before the blank: "The shopper
    likes ____ colours." matches "This shopper likes blue and red." and gives
    "blue and red". The fill ends at the words after the blank (when the
    answer repeats them) or at the end of the sentence.

    Args:
        answer: the raw answer.
        cloze: the sentence with one `____` blank.
    """
    match = _cloze_match(answer, cloze, closed=False)
    if not match:
        return None
    fill = match.group(1).strip()
    return fill if fill and "____" not in fill else None


def _cloze_match(answer: str | None, cloze: str, *, closed: bool) -> re.Match | None:
    """The match `extract_cloze` reads; `closed` leaves out the end of the text as a terminator."""
    if not answer or "____" not in cloze:
        return None
    before, after = cloze.split("____", 1)
    anchor = before.split()[-2:]
    if not anchor:
        return None
    after_words = [w for w in re.findall(r"[^\W_]+", after)][:2]
    end = "" if closed else "|$"
    pattern = r"\b" + r"\s+".join(re.escape(w) for w in anchor) + r"\s*:?\s*(.+?)"
    if after_words:
        pattern += r"(?:\s+" + r"\s+".join(re.escape(w) for w in after_words) + rf"\b|(?=[.!?\n]){end})"
    else:
        pattern += rf"(?=[.!?\n]{end})"
    return re.search(pattern, unicodedata.normalize("NFKC", answer), flags=re.IGNORECASE)


def cloze_closed(answer: str, cloze: str) -> bool:
    """Whether more text can no longer change what `extract_cloze` reads from `answer`.

    True when the first filled blank is followed by its closing words or by
    a sentence end (not merely by the end of the text so far), and at least
    one character follows the match (so a word boundary after the closing
    words is settled): any continuation of `answer` then yields the same
    fill — the blank's anchor, the fill's lazy end and the terminator all
    lie in the text already written.
    """
    closed = _cloze_match(answer, cloze, closed=True)
    if closed is None or closed.end() >= len(unicodedata.normalize("NFKC", answer)):
        return False
    # The open pattern (what extract_cloze runs) must read the same fill from the same anchor.
    match = _cloze_match(answer, cloze, closed=False)
    return match is not None and match.span(1) == closed.span(1)


@dataclass(frozen=True)
class ClozeStop:
    """Stop generating once an answer has filled and closed a cloze sentence's blank.

    A small instruct model, asked to fill "The shopper likes ____ colours.",
    often goes on after the sentence (another sentence, a list, a second
    try); `extract_cloze` reads only the first filled blank, so those tokens
    change nothing that is kept (see `cloze_closed`). Used as a
    `pmg.models.llm.StopRule`.

    Attributes:
        cloze: the sentence with one `____` blank.
    """

    cloze: str

    @property
    def key(self) -> str:
        """The rule's name in answer-cache keys (bump the version when `cloze_closed` changes)."""
        return f"cloze-closed-v1:{self.cloze}"

    def __call__(self, answer: str) -> bool:
        return cloze_closed(answer, self.cloze)
