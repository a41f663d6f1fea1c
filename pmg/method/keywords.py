"""Explicit keywords (PMG §3.2.2): preference keywords `k_p` and target keywords `k_t`.

Preference keywords. For each attribute `a_i` of the scenario (the authors'
code: clothing = colour, material, season, style, elements; movies = country,
style, genre, age, actor, director; emoji = character, emotion) one zero-shot
prompt — instruction `p` + attribute `a_i` + format example `e` + history
lines `x` + conversation lines `y` — asks the frozen LLM for a few keywords:
`k_i^p = LLM_g(p, a_i, e, x, y)`. The mini templates give `e` as a cloze
sentence ("The shopper likes ____ colours."), whose fill is read first
(`extract_cloze`); otherwise the whole answer is parsed (`parse_keywords`).
Echoes — the attribute's example keywords, or words of the instruction
("separated by commas"), that the user's lines do not contain — are dropped
(and kept in `per_attribute[...]["echoed"]`). The attributes' keywords are
merged in attribute order without duplicates: `k_p`.

Target keywords. One prompt over the target item's line alone, all
attributes at once: `k_t = LLM_g(p, e, x_t)`.

Fallback (documented, and recorded per row). When an attribute's answer holds
nothing usable — empty, only prose, a refusal, only echoes — that
attribute's keywords are the most frequent values of its
`fallback_fields` among the history items (all values tied for the top count,
in first-seen order, at most `keywords_per_attribute`). When no attribute
yields anything at all, the most frequent title words of the history items
stand in. A target answer with nothing usable is replaced by the target
item's own attribute values (`target_fallback_fields`) and title words. The
`*_source` columns say which path was taken (`llm`, `fallback`, or `mixed`
when the attributes of one user went both ways), `per_attribute` keeps every
raw answer.

Context. A prompt longer than the LLM's context (minus the answer budget), or
than `keywords.max_prompt_tokens`, loses history lines oldest-first (then
conversation turns) until it fits; `truncated_history` counts them. Users with
neither history nor conversation lines, or without a target line, are skipped
and reported in the returned `KeywordsReport`, never an error.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from pmg.config import KeywordsConfig
from pmg.io import validate
from pmg.method.describe import cut
from pmg.method.llm_cache import CachedLLM, ask_llm, count_tokens
from pmg.method.parsing import (
    EMPTY_WORDS,
    ClozeStop,
    dedupe,
    extract_cloze,
    normalise_keyword,
    parse_keywords,
)
from pmg.method.prompts import AttributePrompt, PromptSet, load_prompt_set
from pmg.schemas import Descriptions, Keywords
from pmg.text import natural_key

log = logging.getLogger(__name__)

COLUMNS = [
    "user_id",
    "scenario",
    "target_item",
    "preference_keywords",
    "target_keywords",
    "preference_source",
    "target_source",
    "truncated_history",
    "n_prompts",
    "preference_grounding",
    "per_attribute",
    "target_answer",
    "template_version",
    "model_id",
]
_TOKEN = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
# Title words that say nothing about a preference.
_TITLE_STOP = EMPTY_WORDS | frozenset(
    "from by at as it its his her their this that be was were about into over under after before up down out "
    "off than then there here who what when where why how you your my our we they them he she me us".split()
)


def tokens(text: str) -> set[str]:
    """Lower-case word tokens of `text`, plus their parts ("person's" -> "person",
    "sci-fi" -> "sci", "fi") and each token without a trailing "s"."""
    words = {w.lower() for w in _TOKEN.findall(text)}
    words |= {part for w in words for part in re.split(r"['-]", w) if part}
    return words | {w[:-1] for w in words if len(w) > 3 and w.endswith("s")}


def grounded(keyword: str, vocabulary: set[str]) -> bool:
    """Whether every word of `keyword` occurs in `vocabulary` (see `tokens`)."""
    words = _TOKEN.findall(keyword.lower())
    return bool(words) and all(w in vocabulary or (w.endswith("s") and w[:-1] in vocabulary) for w in words)


@dataclass(frozen=True)
class KeywordsReport:
    """What one `keywords` call did (JSON-able; the stage's metrics).

    Attributes:
        scenario: the scenario.
        template_version: its prompt templates' version.
        users_requested: users asked for.
        users_with_keywords: rows of the `Keywords` table.
        skipped_users: reason -> user ids; `skipped_count` their number.
        prompts: prompts rendered for the LLM (cached or not).
        attribute_sources: `llm` / `fallback` / `none` -> (user, attribute) count.
        preference_sources, target_sources: the rows' `*_source` counts.
        truncated_users: users whose behaviour lines were cut to fit the context.
        mean_preference_grounding: mean share of preference keywords found
            in the user's own lines (None without rows).
        llm_cache: the cached LLM's hits / misses / calls (None without a cache).
        seconds: wall time.
    """

    scenario: str
    template_version: str
    users_requested: int
    users_with_keywords: int
    skipped_users: dict[str, list[str]]
    skipped_count: int
    prompts: int
    attribute_sources: dict[str, int]
    preference_sources: dict[str, int]
    target_sources: dict[str, int]
    truncated_users: int
    mean_preference_grounding: float | None
    llm_cache: dict | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class UserBehaviour:
    """What the prompts of one user are built from."""

    user_id: str
    history: list[tuple[str, str]]  # (item id, line), oldest first
    conversations: list[str]
    target_item: str
    target_line: str
    dropped: int = 0  # history/turn lines dropped to fit the context
    prompts: dict[str, str] = field(default_factory=dict)  # attribute -> rendered prompt


def render_preference(
    prompts: PromptSet,
    attribute: AttributePrompt,
    history: Sequence[str],
    conversations: Sequence[str],
    n: int,
) -> str:
    """The per-attribute prompt (instruction + attribute + example + history + conversations)."""
    history_text = "\n".join(
        prompts.history_line.format(line=line, n=i + 1) for i, line in enumerate(history)
    )
    turns = "\n".join(
        prompts.conversation_line.format(line=line, n=i + 1) for i, line in enumerate(conversations)
    )
    block = prompts.conversations_block.format(conversations=turns) if conversations else ""
    text = prompts.preference.format(
        history=history_text,
        conversations=block,
        attribute=attribute.phrase,
        n=n,
        example=", ".join(attribute.example),
        cloze=attribute.cloze,
    )
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def render_target(prompts: PromptSet, line: str, title: str, n: int) -> str:
    """The target-item prompt."""
    return prompts.target.format(
        line=line, title=title, n=n, example=", ".join(prompts.target_example), cloze=prompts.target_cloze
    ).strip()


def _budget(llm: Any, cfg: KeywordsConfig, max_new_tokens: int) -> int | None:
    limits = []
    context = getattr(llm, "context_length", None)
    if context:
        limits.append(int(context) - max_new_tokens)
    if cfg.max_prompt_tokens:
        limits.append(cfg.max_prompt_tokens)
    return min(limits) if limits else None


def fit_to_context(behaviour: UserBehaviour, prompts: PromptSet, *, llm: Any, cfg: KeywordsConfig) -> bool:
    """Render the user's attribute prompts, dropping oldest lines until all fit.

    The same lines are dropped for every attribute (the longest prompt sets
    the count), so all attributes see the same behaviour.

    Returns:
        False when even with no behaviour lines left a prompt does not fit.
    """
    budget = _budget(llm, cfg, cfg.max_new_tokens)
    history = [line for _, line in behaviour.history]
    conversations = list(behaviour.conversations)
    dropped = 0
    while True:
        rendered = {
            a.name: render_preference(prompts, a, history, conversations, cfg.keywords_per_attribute)
            for a in prompts.attributes
        }
        if budget is None or max(count_tokens(llm, p) for p in rendered.values()) <= budget:
            behaviour.prompts, behaviour.dropped = rendered, dropped
            return True
        if history:
            history.pop(0)
        elif conversations:
            conversations.pop(0)
        else:
            behaviour.prompts, behaviour.dropped = {}, dropped
            return False
        dropped += 1


# ---------------------------------------------------------------------- fallbacks


def _values(attributes: dict[str, Any], fields: Sequence[str], fmt: str) -> list[str]:
    out = []
    for name in fields:
        value = attributes.get(name)
        for v in value if isinstance(value, list) else [value]:
            if v is None or not str(v).strip():
                continue
            text = str(v).strip()
            if "{decade}" in fmt:
                if not text[:4].isdigit():
                    continue
                out.append(fmt.format(value=text, decade=f"{int(text[:4]) // 10 * 10}s"))
            else:
                out.append(fmt.format(value=text))
    return [k for k in dedupe(out) if k]


def most_frequent(values_per_item: Sequence[Sequence[str]], n: int) -> list[str]:
    """Values tied for the highest count over the items, first-seen order, at most `n`."""
    counts = Counter(v for values in values_per_item for v in dict.fromkeys(values))
    if not counts:
        return []
    top = max(counts.values())
    order = list(dict.fromkeys(v for values in values_per_item for v in values))
    return [v for v in order if counts[v] == top][:n]


def title_words(titles: Sequence[str], n: int) -> list[str]:
    """Most frequent content words of titles (ties in first-seen order)."""
    words = [
        [
            w
            for w in (normalise_keyword(t) for t in _TOKEN.findall(title))
            if len(w) > 2 and w not in _TITLE_STOP
        ]
        for title in titles
    ]
    counts = Counter(w for ws in words for w in ws)
    order = list(dict.fromkeys(w for ws in words for w in ws))
    return sorted(order, key=lambda w: -counts[w])[:n]


# --------------------------------------------------------------------------- main


def _answer_keywords(
    answer: str,
    example: Sequence[str],
    vocabulary: set[str],
    *,
    n: int,
    cfg: KeywordsConfig,
    cloze: str = "",
    instruction: set[str] | None = None,
    descriptive: bool = False,
) -> tuple[list[str], list[str]]:
    """(kept, echoed): the answer's keywords without echoes, at most `n`.

    With a cloze sentence, the fill of its blank is read first; when the
    answer does not restate the sentence, the whole answer is parsed.

    Args:
        answer: the raw answer.
        example: the attribute's format-example keywords.
        vocabulary: words of the user's lines (`tokens`); a keyword made of
            them is never an echo.
        n: keywords kept.
        cfg: the `keywords` section.
        cloze: the cloze sentence, if the template uses one.
        instruction: words of the prompt without the user's lines; a keyword
            made only of them is the instruction repeated back.
        descriptive: the answer describes one item (target keywords): also
            split phrases on "with", "in", "for", "and", "made of", keeping
            the chunks found in `vocabulary`.
    """
    fill = extract_cloze(answer, cloze) if cloze else None
    if fill:
        parsed = parse_keywords(fill, max_words=cfg.max_words, split_and=True)
    else:
        parsed = parse_keywords(answer, max_words=cfg.max_words)
        if descriptive:
            # A description ("a blue coat in tweed with a striped pattern") is
            # chunked, but only chunks read from the item's own line are kept:
            # chunks of free prose are mostly noise.
            chunks = parse_keywords(answer, max_words=cfg.max_words, split_and=True)
            parsed = [k for k in chunks if k in parsed or grounded(k, vocabulary)]
    instruction = instruction or set()
    examples = {normalise_keyword(e) for e in example}
    kept, echoed = [], []
    for keyword in parsed:
        # Echoes: the hidden format example, or words of the instruction
        # itself ("separated by commas"), that the user's lines do not hold.
        echo = keyword in examples or (bool(instruction) and grounded(keyword, instruction))
        if echo and not grounded(keyword, vocabulary):
            echoed.append(keyword)
        else:
            kept.append(keyword)
    return kept[:n], echoed


def keywords(
    descriptions: pd.DataFrame,
    items: pd.DataFrame,
    *,
    llm: Any,
    cfg: KeywordsConfig,
    scenario: str | None = None,
    users: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, KeywordsReport]:
    """The `Keywords` table from a `Descriptions` table.

    Args:
        descriptions: lines of one scenario (`schemas.Descriptions`).
        items: that scenario's catalogue (`schemas.Items`), for fallbacks and titles.
        llm: the LLM (ideally a `CachedLLM`); None uses the fallbacks only.
        cfg: the `keywords` section.
        scenario: the scenario (default: the one in `descriptions`).
        users: users to run (default: every user in `descriptions`); a user
            with no lines at all is skipped and reported.

    Returns:
        A validated `Keywords` frame, one row per user (natural id order),
        and its report: counts of prompts, cache hits/calls, LLM-vs-fallback
        use, truncation and skipped users.
    """
    started = time.perf_counter()
    descriptions = validate(descriptions, Descriptions, "keywords input (descriptions)")
    if scenario is None:
        found = set(descriptions["scenario"])
        if len(found) != 1:
            raise ValueError(f"descriptions hold scenarios {sorted(found)}; pass scenario=")
        scenario = found.pop()
    prompts = load_prompt_set(scenario)
    descriptions = descriptions[descriptions["scenario"] == scenario]
    attributes_of = {i: json.loads(a) for i, a in zip(items["item_id"], items["attributes"])}
    title_of = dict(zip(items["item_id"], items["title"]))

    if users is None:
        users = sorted(set(descriptions["user_id"]), key=natural_key)
    grouped = {u: g.sort_values("position", kind="stable") for u, g in descriptions.groupby("user_id")}
    skipped: dict[str, list[str]] = {}
    behaviours: list[UserBehaviour] = []
    for user in users:
        lines = grouped.get(user)
        if lines is None or not len(lines):
            skipped.setdefault("no history", []).append(str(user))
            continue
        history = [(r.ref, r.line) for r in lines.itertuples() if r.kind == "history"]
        conversations = [r.line for r in lines.itertuples() if r.kind == "conversation"]
        target = [(r.ref, r.line) for r in lines.itertuples() if r.kind == "target"]
        if not history and not conversations:
            skipped.setdefault("no history", []).append(str(user))
            continue
        if not target:
            skipped.setdefault("no target description", []).append(str(user))
            continue
        behaviours.append(UserBehaviour(str(user), history, conversations, target[0][0], target[0][1]))

    # Render, truncating where needed.
    for behaviour in behaviours:
        if llm is not None and not fit_to_context(behaviour, prompts, llm=llm, cfg=cfg):
            log.warning(
                "user %s: even without behaviour lines the prompt exceeds the context", behaviour.user_id
            )
        elif llm is None:
            behaviour.prompts = {}
    target_budget = _budget(llm, cfg, cfg.target_max_new_tokens) if llm is not None else None
    target_prompts: dict[str, str] = {}
    for behaviour in behaviours:
        title = str(title_of.get(behaviour.target_item, ""))
        line = behaviour.target_line
        prompt = render_target(prompts, line, title, cfg.target_keywords)
        # A target line too long for the context is cut, 20% at a time.
        while (
            llm is not None
            and target_budget is not None
            and count_tokens(llm, prompt) > target_budget
            and len(line) > 8
        ):
            line = cut(line, int(len(line) * 0.8))
            prompt = render_target(prompts, line, title, cfg.target_keywords)
        if llm is not None and (target_budget is None or count_tokens(llm, prompt) <= target_budget):
            target_prompts[behaviour.user_id] = prompt

    # Two batched calls (per-attribute prompts, target prompts); the cached
    # LLM sends only the misses, in chunks of its batch size, ordered so that
    # one user's attribute prompts (which share the whole history) run
    # together and share its computation. An answer stops once its cloze
    # sentence is filled and closed (`ClozeStop`): what follows is never read.
    flat = [(b.user_id, name, p) for b in behaviours for name, p in b.prompts.items()]
    stop_of = {a.name: ClozeStop(a.cloze) if a.cloze else None for a in prompts.attributes}
    answers = (
        ask_llm(
            llm,
            [p for *_, p in flat],
            max_new_tokens=cfg.max_new_tokens,
            template_version=prompts.version,
            stop=[stop_of[name] for _, name, _ in flat] if cfg.stop_at_answer else None,
        )
        if flat
        else []
    )
    answer_of = {(u, name): a for (u, name, _), a in zip(flat, answers)}
    target_users = list(target_prompts)
    target_stop = ClozeStop(prompts.target_cloze) if prompts.target_cloze and cfg.stop_at_answer else None
    target_answers = dict(
        zip(
            target_users,
            ask_llm(
                llm,
                [target_prompts[u] for u in target_users],
                max_new_tokens=cfg.target_max_new_tokens,
                template_version=prompts.version,
                stop=target_stop,
            )
            if target_users
            else [],
        )
    )

    instruction_words = {
        a.name: tokens(render_preference(prompts, a, [], [], cfg.keywords_per_attribute))
        for a in prompts.attributes
    }
    rows = []
    attribute_sources: Counter[str] = Counter()
    for b in behaviours:
        vocabulary = tokens(" ".join([line for _, line in b.history] + b.conversations))
        history_attributes = [attributes_of.get(i, {}) for i, _ in b.history]
        per_attribute: dict[str, dict[str, Any]] = {}
        merged: list[str] = []
        for attribute in prompts.attributes:
            answer = answer_of.get((b.user_id, attribute.name))
            kept, echoed = ([], [])
            if answer is not None:
                kept, echoed = _answer_keywords(
                    answer,
                    attribute.example,
                    vocabulary,
                    n=cfg.keywords_per_attribute,
                    cfg=cfg,
                    cloze=attribute.cloze,
                    instruction=instruction_words[attribute.name],
                )
            source = "llm"
            if not kept:
                values = [
                    _values(a, attribute.fallback_fields, attribute.fallback_format)
                    for a in history_attributes
                ]
                kept = most_frequent(values, cfg.keywords_per_attribute)
                source = "fallback" if kept else "none"
            attribute_sources[source] += 1
            per_attribute[attribute.name] = {
                "answer": answer,
                "keywords": kept,
                "echoed": echoed,
                "source": source,
            }
            merged.extend(kept)
        preference = dedupe(merged)
        used = {v["source"] for v in per_attribute.values()} - {"none"}
        if not preference:
            preference = title_words(
                [str(title_of.get(i, "")) for i, _ in b.history], cfg.keywords_per_attribute * 2
            )
            used = {"fallback"}
        preference_source = "llm" if used == {"llm"} else "fallback" if "llm" not in used else "mixed"

        target_answer = target_answers.get(b.user_id)
        target_kw: list[str] = []
        if target_answer is not None:
            target_kw, _ = _answer_keywords(
                target_answer,
                prompts.target_example,
                tokens(b.target_line),
                n=cfg.target_keywords,
                cfg=cfg,
                cloze=prompts.target_cloze,
                instruction=tokens(render_target(prompts, "", "", cfg.target_keywords)),
                descriptive=True,
            )
        target_source = "llm"
        if not target_kw:
            target_source = "fallback"
            own = _values(attributes_of.get(b.target_item, {}), prompts.target_fallback_fields, "{value}")
            title = str(title_of.get(b.target_item, ""))
            target_kw = dedupe(own + title_words([title], cfg.target_keywords))[: cfg.target_keywords]
            if not target_kw:
                target_kw = [normalise_keyword(title) or b.target_item]
        grounding = sum(grounded(k, vocabulary) for k in preference) / len(preference) if preference else None
        rows.append(
            {
                "user_id": b.user_id,
                "scenario": scenario,
                "target_item": b.target_item,
                "preference_keywords": json.dumps(preference, ensure_ascii=False),
                "target_keywords": json.dumps(target_kw, ensure_ascii=False),
                "preference_source": preference_source,
                "target_source": target_source,
                "truncated_history": b.dropped,
                "n_prompts": len(b.prompts) + int(b.user_id in target_prompts),
                "preference_grounding": grounding,
                "per_attribute": json.dumps(per_attribute, ensure_ascii=False),
                "target_answer": target_answer or "",
                "template_version": prompts.version,
                "model_id": str(getattr(llm, "model_id", "")) if llm is not None else "",
            }
        )

    frame = validate(pd.DataFrame(rows, columns=COLUMNS), Keywords, f"keywords[{scenario}]")
    report = KeywordsReport(
        scenario=scenario,
        template_version=prompts.version,
        users_requested=len(users),
        users_with_keywords=len(frame),
        skipped_users=skipped,
        skipped_count=sum(len(v) for v in skipped.values()),
        prompts=len(flat) + len(target_users),
        attribute_sources=dict(attribute_sources),
        preference_sources=dict(Counter(frame["preference_source"])),
        target_sources=dict(Counter(frame["target_source"])),
        truncated_users=int((frame["truncated_history"] > 0).sum()),
        mean_preference_grounding=float(frame["preference_grounding"].mean()) if len(frame) else None,
        llm_cache=llm.stats.as_dict() if isinstance(llm, CachedLLM) else None,
        seconds=round(time.perf_counter() - started, 3),
    )
    return frame, report


def run_keywords(
    cfg: KeywordsConfig, scenario: str, descriptions: pd.DataFrame, items: pd.DataFrame, *, llm: Any
) -> tuple[pd.DataFrame, KeywordsReport]:
    """The keywords of every user in `descriptions`, as the `keywords` stage makes them.

    With `keywords.use_llm: false` the LLM is not called and every keyword
    comes from the fallback (the no-LLM baseline). `llm` is what the stage
    loaded, normally wrapped in the shared answer cache.
    """
    return keywords(descriptions, items, llm=llm if cfg.use_llm else None, cfg=cfg, scenario=scenario)
