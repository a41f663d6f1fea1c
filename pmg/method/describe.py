"""Behaviour to text (PMG §3.2.1): one short line per item and per conversation turn.

For every selected user, each history item becomes a line `x_i`, each
conversation turn a line `y_i`, and the target and supervision items get a
line too (the target's line feeds the target keywords `k_t`; the supervision
line documents what the soft-embedding training is supervised with).

An item's line is built from

* its text — kept as it is when at most `describe.max_text_chars` long, else
  summarised by the LLM (`LLM_g(t)`, the scenario's `summary` template);
* its image — captioned by the captioner (`LLM_g(v)`; BLIP-2 in the paper, a
  clip-retrieval captioner in the `mini` profile), appended as
  "Image: <caption>.".

`source` records which of these made the line: `text`, `summary`, `caption`
(an item with no text), `text+caption` or `summary+caption`. A summary the
LLM answers with nothing usable is replaced by the text cut at a word
boundary, and the line's source stays `text`. Each distinct item is described
once per call, however many users share it; with the cached wrappers of
`pmg.method.llm_cache` (the stages wrap the models they load, see
`pmg.stages.loaders`) a re-run costs no model call at all.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from PIL import Image

from pmg.config import DescribeConfig
from pmg.data.store import PreparedScenario
from pmg.io import validate
from pmg.method.llm_cache import CachedCaptioner, CachedLLM, ask_llm, count_tokens
from pmg.method.prompts import PromptSet, load_prompt_set
from pmg.schemas import Descriptions
from pmg.text import natural_key

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "scenario", "kind", "ref", "position", "line", "source"]
_SUMMARY_PREFIX = re.compile(r"^\s*(?:sentence|summary|description|answer)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class DescribeReport:
    """What one `describe` call did and skipped (JSON-able; the stage's metrics).

    Attributes:
        scenario: the scenario described.
        template_version: its prompt templates' version.
        users_requested: users asked for.
        users_described: users with a split (the others are in `skipped_users`).
        skipped_users: reason -> user ids.
        skipped_items: reason -> number of history items left out.
        lines: rows of the `Descriptions` table.
        line_sources: `source` -> rows.
        llm_cache: the cached LLM's hits / misses / calls (None without a cache).
        caption_cache: the same for the captioner.
        seconds: wall time.
    """

    scenario: str
    template_version: str
    users_requested: int
    users_described: int
    skipped_users: dict[str, list[str]]
    skipped_items: dict[str, int]
    lines: int
    line_sources: dict[str, int]
    llm_cache: dict | None
    caption_cache: dict | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_users(splits: pd.DataFrame, max_users: int | None) -> list[str]:
    """The users a run describes: the first `max_users` by user id (natural order); all when None."""
    users = sorted(splits["user_id"].astype(str), key=natural_key)
    return users if max_users is None else users[:max_users]


def cut(text: str, limit: int) -> str:
    """`text` on one line, cut at a word boundary to at most `limit` characters."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    head = text[: limit + 1].rsplit(" ", 1)[0] if " " in text[: limit + 1] else text[:limit]
    return head.rstrip(" ,;:-") + "…"


def clean_summary(answer: str, limit: int) -> str:
    """The first non-empty line of a summary answer, without labels and quotes; "" if none."""
    for line in answer.splitlines():
        line = _SUMMARY_PREFIX.sub("", line).strip().strip("\"'“”‘’`*").strip()
        if sum(ch.isalpha() for ch in line) >= 3:
            return cut(line, limit)
    return ""


def _fit_summary_prompt(text: str, noun: str, *, llm: Any, cfg: DescribeConfig, prompts: PromptSet) -> str:
    """The summary prompt of `text`, the text cut (20% at a time) until it fits the LLM's context."""
    prompt = prompts.summary.format(text=text, noun=noun)
    context = getattr(llm, "context_length", None)
    if not context:
        return prompt
    budget = int(context) - cfg.summary_max_new_tokens
    while count_tokens(llm, prompt) > budget and len(text) > 16:
        text = cut(text, int(len(text) * 0.8))
        prompt = prompts.summary.format(text=text, noun=noun)
    return prompt


def _summarise(
    texts: list[str], noun: str, *, llm: Any, cfg: DescribeConfig, prompts: PromptSet
) -> list[tuple[str, str]]:
    """(line, source) per text: short texts as they are, long ones summarised."""
    out: list[tuple[str, str] | None] = [None] * len(texts)
    long_at = []
    for i, text in enumerate(texts):
        if len(text) <= cfg.max_text_chars:
            out[i] = (cut(text, cfg.max_line_chars), "text")
        elif llm is None:
            out[i] = (cut(text, cfg.max_text_chars), "text")
        else:
            long_at.append(i)
    rendered = [_fit_summary_prompt(texts[i], noun, llm=llm, cfg=cfg, prompts=prompts) for i in long_at]
    answers = ask_llm(
        llm, rendered, max_new_tokens=cfg.summary_max_new_tokens, template_version=prompts.version
    )
    for i, answer in zip(long_at, answers):
        summary = clean_summary(answer, cfg.max_line_chars)
        out[i] = (summary, "summary") if summary else (cut(texts[i], cfg.max_text_chars), "text")
    return out  # type: ignore[return-value]


def _join(text: str, caption: str) -> str:
    if not text:
        return f"Image: {caption}."
    end = "" if text.endswith((".", "!", "?", "…")) else "."
    return f"{text}{end} Image: {caption}."


def describe_items(
    prepared: PreparedScenario,
    item_ids: Sequence[str],
    *,
    llm: Any,
    captioner: Any,
    cfg: DescribeConfig,
    prompts: PromptSet,
) -> dict[str, tuple[str, str]]:
    """(line, source) of each distinct item.

    Args:
        prepared: the scenario (items and images).
        item_ids: items to describe (repeats are described once).
        llm: summariser for long texts (None: long texts are cut instead).
        captioner: image-to-text (None: no captions).
        cfg: the `describe` section.
        prompts: the scenario's templates.
    """
    ids = list(dict.fromkeys(item_ids))
    items = prepared.items.set_index("item_id")
    texts = [str(items.at[i, "text"]).strip() or str(items.at[i, "title"]).strip() for i in ids]
    lines = _summarise(texts, prompts.item_noun, llm=llm, cfg=cfg, prompts=prompts)
    captions: dict[str, str] = {}
    if captioner is not None and cfg.captions:
        with_image = [i for i in ids if prepared.image_file(i) is not None]
        for start in range(0, len(with_image), cfg.batch_size):
            chunk = with_image[start : start + cfg.batch_size]
            images = []
            for item_id in chunk:
                with Image.open(prepared.image_file(item_id)) as image:
                    images.append(image.convert("RGB"))
            for item_id, caption in zip(chunk, captioner.caption(images)):
                caption = " ".join(str(caption).split()).strip(" .")
                if caption:
                    captions[item_id] = caption
    out: dict[str, tuple[str, str]] = {}
    for item_id, (line, source) in zip(ids, lines):
        caption = captions.get(item_id)
        if caption:
            line = cut(_join(line, caption), cfg.max_line_chars)
            source = f"{source}+caption" if line and not line.startswith("Image:") else "caption"
        out[item_id] = (line, source)
    return out


def describe(
    prepared: PreparedScenario,
    users: Sequence[str],
    *,
    llm: Any,
    captioner: Any,
    cfg: DescribeConfig,
) -> tuple[pd.DataFrame, DescribeReport]:
    """The `Descriptions` table of `users`.

    Args:
        prepared: the prepared scenario.
        users: user ids to describe (unknown ids are skipped and reported).
        llm: an LLM (ideally a `CachedLLM`) for long texts, or None.
        captioner: a captioner (ideally a `CachedCaptioner`), or None.
        cfg: the `describe` section.

    Returns:
        A validated `Descriptions` frame, rows per user in the order history
        (oldest first), conversation (by turn), target, supervision; and
        what was done and skipped.
    """
    started = time.perf_counter()
    prompts = load_prompt_set(prepared.scenario)
    splits = prepared.splits.set_index("user_id")
    known_items = set(prepared.items["item_id"])
    skipped: dict[str, list[str]] = {}
    dropped_items: Counter[str] = Counter()
    plan: list[tuple[str, list[str], str, str]] = []
    for user in users:
        if user not in splits.index:
            skipped.setdefault("unknown user", []).append(str(user))
            continue
        row = splits.loc[user]
        history = [i for i in json.loads(row["history_items"]) if i in known_items]
        dropped_items["history item not in catalogue"] += len(json.loads(row["history_items"])) - len(history)
        plan.append((str(user), history, str(row["target_item"]), str(row["supervision_item"])))

    all_items = [i for _, history, target, supervision in plan for i in (*history, target, supervision)]
    item_lines = describe_items(prepared, all_items, llm=llm, captioner=captioner, cfg=cfg, prompts=prompts)

    conversations = prepared.conversations[prepared.conversations["user_id"].isin([u for u, *_ in plan])]
    conversations = conversations.sort_values(["user_id", "turn"], kind="stable")
    turn_lines = _summarise(
        [str(t).strip() for t in conversations["text"]], "message", llm=llm, cfg=cfg, prompts=prompts
    )
    turns_of: dict[str, list[tuple[int, tuple[str, str]]]] = {}
    for (user, turn), line in zip(zip(conversations["user_id"], conversations["turn"]), turn_lines):
        turns_of.setdefault(str(user), []).append((int(turn), line))

    rows: list[dict[str, Any]] = []
    for user, history, target, supervision in plan:
        # (kind, ref, position, (line, source)) in table order.
        entries = [
            ("history", item_id, position, item_lines[item_id]) for position, item_id in enumerate(history)
        ]
        entries += [
            ("conversation", str(turn), position, line)
            for position, (turn, line) in enumerate(turns_of.get(user, []))
        ]
        entries += [
            ("target", target, 0, item_lines[target]),
            ("supervision", supervision, 0, item_lines[supervision]),
        ]
        rows.extend(
            {
                "user_id": user,
                "scenario": prepared.scenario,
                "kind": kind,
                "ref": ref,
                "position": position,
                "line": line,
                "source": source,
            }
            for kind, ref, position, (line, source) in entries
            if line
        )

    frame = validate(pd.DataFrame(rows, columns=COLUMNS), Descriptions, f"describe[{prepared.scenario}]")
    sources = Counter(frame["source"])
    report = DescribeReport(
        scenario=prepared.scenario,
        template_version=prompts.version,
        users_requested=len(users),
        users_described=len(plan),
        skipped_users={reason: ids for reason, ids in skipped.items()},
        skipped_items={reason: n for reason, n in dropped_items.items() if n},
        lines=len(frame),
        line_sources=dict(sources),
        llm_cache=llm.stats.as_dict() if isinstance(llm, CachedLLM) else None,
        caption_cache=captioner.stats.as_dict() if isinstance(captioner, CachedCaptioner) else None,
        seconds=round(time.perf_counter() - started, 3),
    )
    return frame, report


# ------------------------------------------------------------------ captioner


def caption_vocabulary(prepared: PreparedScenario, prompts: PromptSet) -> list[str]:
    """Phrases a clip-retrieval captioner picks from: values of the scenario's
    `caption_fields` over the catalogue, in first-seen order."""
    phrases: list[str] = []
    for text in prepared.items["attributes"]:
        attributes = json.loads(text)
        for name in prompts.caption_fields:
            value = attributes.get(name)
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and v.strip() and v.strip().lower() not in phrases:
                    phrases.append(v.strip().lower())
    return phrases


def with_vocabulary(captioner: Any, prepared: PreparedScenario, cfg: DescribeConfig) -> Any:
    """`captioner` choosing from the scenario's vocabulary when it is a clip-retrieval one.

    Other captioners, a cached one (whose vocabulary is part of its cache
    identity, so it must be set before wrapping) or None come back as they are.
    """
    if captioner is None or not cfg.captions or isinstance(captioner, CachedCaptioner):
        return captioner
    if hasattr(captioner, "with_vocabulary"):
        vocabulary = caption_vocabulary(prepared, load_prompt_set(prepared.scenario))
        if vocabulary:
            return captioner.with_vocabulary(vocabulary, top_k=cfg.caption_top_k)
    return captioner
