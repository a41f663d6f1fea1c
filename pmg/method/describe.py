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
`pmg.method.llm_cache` a re-run costs no model call at all.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from pmg.config import DescribeConfig, Params
from pmg.data.store import PreparedScenario, read_scenario
from pmg.io import validate
from pmg.method.llm_cache import (
    CachedCaptioner,
    CachedLLM,
    ContentCache,
    captioner_id_of,
    count_tokens,
    model_id_of,
)
from pmg.method.prompts import PromptSet, load_prompt_set
from pmg.schemas import Descriptions

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "scenario", "kind", "ref", "position", "line", "source"]
_SUMMARY_PREFIX = re.compile(r"^\s*(?:sentence|summary|description|answer)\s*:\s*", re.IGNORECASE)


def natural_key(value: str) -> tuple:
    """Sort key that orders "2" before "10" and "c0002" before "c0010"."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", str(value))
        if part
    )


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


def generate(
    llm: Any, prompts: list[str], *, max_new_tokens: int, template_version: str, stop: Any = None
) -> list[str]:
    """Call `llm.generate`, passing the template version to a cached LLM (and stop rules, when given)."""
    if not prompts:
        return []
    extra = {} if stop is None else {"stop": stop}
    if isinstance(llm, CachedLLM):
        return llm.generate(prompts, max_new_tokens=max_new_tokens, template_version=template_version, **extra)
    return llm.generate(prompts, max_new_tokens=max_new_tokens, **extra)


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
    answers = generate(
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
) -> pd.DataFrame:
    """The `Descriptions` table of `users`.

    Args:
        prepared: the prepared scenario.
        users: user ids to describe (unknown ids are skipped and reported).
        llm: an LLM (ideally a `CachedLLM`) for long texts, or None.
        captioner: a captioner (ideally a `CachedCaptioner`), or None.
        cfg: the `describe` section.

    Returns:
        A validated `Descriptions` frame, rows per user in the order history
        (oldest first), conversation (by turn), target, supervision.
        `frame.attrs["report"]` holds what was done and skipped (JSON-able).
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
    frame.attrs["report"] = {
        "scenario": prepared.scenario,
        "template_version": prompts.version,
        "users_requested": len(users),
        "users_described": len(plan),
        "skipped_users": {reason: ids for reason, ids in skipped.items()},
        "skipped_items": {reason: n for reason, n in dropped_items.items() if n},
        "lines": len(frame),
        "line_sources": dict(sources),
        "llm_cache": llm.stats.as_dict() if isinstance(llm, CachedLLM) else None,
        "caption_cache": captioner.stats.as_dict() if isinstance(captioner, CachedCaptioner) else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return frame


# ------------------------------------------------------------------------ stage


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


def cached_llm(params: Params, llm: Any, cache_dir: str | Path, batch_size: int) -> CachedLLM | None:
    """Wrap `llm` in a `CachedLLM` on `cache_dir` (already wrapped or None: as is)."""
    if llm is None or isinstance(llm, CachedLLM):
        return llm
    return CachedLLM(
        llm, model_id_of(params.profile.llm, llm), ContentCache(cache_dir), batch_size=batch_size
    )


def run_describe(
    params: Params,
    scenario: str,
    *,
    llm: Any,
    captioner: Any,
    prepared: PreparedScenario | None = None,
    users: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The `describe` stage for one scenario, without file writes.

    Reads `<prepare.out>/<scenario>`, selects `describe.max_users` users (the
    first by id), wraps the models in the on-disk cache `describe.llm_cache`,
    gives a clip-retrieval captioner the scenario's vocabulary, and returns
    the `Descriptions` table (write it with `pmg.io.write_table`).

    Args:
        params: all parameters (the `describe` section and the profile's
            model specs, for the cache identities, are used).
        scenario: clothing, movies or emoji.
        llm: the loaded LLM (or None: long texts are cut, not summarised).
        captioner: the loaded captioner (or None: lines from text only).
        prepared: the prepared scenario (default: read from `prepare.out`;
            `pmg personalize` passes one whose split names another target).
        users: the users to describe (default: `describe.max_users` first).
    """
    cfg = params.describe
    prepared = prepared if prepared is not None else read_scenario(Path(params.prepare.out) / scenario)
    prompts = load_prompt_set(scenario)
    users = list(users) if users is not None else select_users(prepared.splits, cfg.max_users)
    cache = ContentCache(cfg.llm_cache)
    if captioner is not None and cfg.captions and not isinstance(captioner, CachedCaptioner):
        if hasattr(captioner, "with_vocabulary"):
            vocabulary = caption_vocabulary(prepared, prompts)
            if vocabulary:
                captioner = captioner.with_vocabulary(vocabulary, top_k=cfg.caption_top_k)
        captioner = CachedCaptioner(captioner, captioner_id_of(params.profile.captioner, captioner), cache)
    return describe(
        prepared,
        users,
        llm=cached_llm(params, llm, cfg.llm_cache, cfg.batch_size),
        captioner=captioner,
        cfg=cfg,
    )
