"""Keyword parsing, preference/target keywords, fallbacks, truncation, batching, caching."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from method_helpers import ScriptedLLM, TokenizedScriptedLLM  # tests/method/ is on sys.path

from pmg.config import KeywordsConfig
from pmg.data.store import PreparedScenario
from pmg.io import validate
from pmg.method.describe import describe, select_users
from pmg.method.keywords import keywords, most_frequent
from pmg.method.llm_cache import CachedLLM, ContentCache
from pmg.method.parsing import ClozeStop, cloze_closed, extract_cloze, parse_keywords
from pmg.method.prompts import content_hash, load_prompt_set, template_file
from pmg.scenarios import names as scenario_names
from pmg.schemas import Keywords

# ------------------------------------------------------------------------- parser

PARSER_CASES = [
    ("1. red 2. blue 3. green", ["red", "blue", "green"]),
    ("1) red 2) blue", ["red", "blue"]),
    ("(1) wool (2) silk", ["wool", "silk"]),
    ("1. Red\n2. Navy Blue\n3. green.", ["red", "navy blue", "green"]),
    ("- red\n- blue\n* wool\n• silk", ["red", "blue", "wool", "silk"]),
    ("red, blue; green | black", ["red", "blue", "green", "black"]),
    ("Keywords: red, blue, green", ["red", "blue", "green"]),
    ("The keywords are: 1. Keyword 1. 2. Keyword 2. 3. Keyword 3.", []),  # placeholders only
    ("The shopper likes black, white, grey.", ["black", "white", "grey"]),
    ("The shopper likes: silk, wool, leather", ["silk", "wool", "leather"]),
    (
        "Based on the purchases, the shopper seems to like casual clothes. "
        "Keywords: casual, relaxed, comfortable. I hope this helps!",
        ["casual", "relaxed", "comfortable"],
    ),
    ('"red", "blue", \'green\', “teal”', ["red", "blue", "green", "teal"]),
    ("red, Red, RED , blue,   red", ["red", "blue"]),
    ("", []),
    ("   \n  ", []),
    ("I'm sorry, but I cannot determine the shopper's preferences from this information.", []),
    ("As an AI language model, I do not have personal preferences.", []),
    ("**Colours:**\n- red\n- blue\n\n**Materials:**\n- wool", ["red", "blue", "wool"]),
    ("### Colours\n1. red\n2. blue", ["red", "blue"]),
    ("café, naïve style, 😀 happy, 红色, ＲＥＤ", ["café", "naïve style", "happy", "红色", "red"]),
    ("a very long phrase that is definitely not a keyword at all, red", ["red"]),
    ("Sure! Here are 3 keywords: cosy, warm, soft", ["cosy", "warm", "soft"]),
    ("red, blue and green", ["red", "blue", "green"]),
    (
        "1990s, sci-fi, rock and roll, black and white",
        ["1990s", "sci-fi", "rock and roll", "black and white"],
    ),
    ("Movie: Toy Story (1995).\nKeywords: bright, toys, friendship\n\nM", ["bright", "toys", "friendship"]),
    ("Colour: red, blue\nMaterial: wool", ["red", "blue", "wool"]),
    ("none, n/a, unknown, ..., etc.", []),
    ("red etc.", ["red"]),
    ("the red, a blue, an olive", ["red", "blue", "olive"]),
    ("1. red\n\n\n2. red\n3. RED!", ["red"]),
]


@pytest.mark.parametrize(
    ("answer", "expected"), PARSER_CASES, ids=[f"case{i}" for i in range(len(PARSER_CASES))]
)
def test_parse_keywords_corpus(answer: str, expected: list[str]) -> None:
    assert parse_keywords(answer) == expected


CLOZE_CASES = [
    ("The shopper likes blue.", "The shopper likes ____ colours.", ["blue"]),
    (
        "This shopper likes black, teal, and pink.",
        "The shopper likes ____ colours.",
        ["black", "teal", "pink"],
    ),
    ("The shopper likes red colours!", "The shopper likes ____ colours.", ["red"]),
    (
        "The shopper likes clothes with a striped pattern.",
        "The shopper likes clothes with a ____ pattern.",
        ["striped"],
    ),
    (
        "The shopper likes clothes made of wool and cotton.",
        "The shopper likes clothes made of ____.",
        ["wool", "cotton"],
    ),
    (
        "A photo of this item shows a blue coat in tweed with a striped pattern.",
        "A photo of this item shows ____.",
        ["blue coat", "tweed", "striped pattern"],
    ),
    (
        "The person's favourite director is Agnès Varda.",
        "The person's favourite director is ____.",
        ["agnès varda"],
    ),
    # The answer does not restate the sentence: the whole answer is parsed instead.
    ("1. red 2. blue", "The shopper likes ____ colours.", None),
    ("The shopper likes ____ colours.", "The shopper likes ____ colours.", None),
]


@pytest.mark.parametrize(
    ("answer", "cloze", "expected"), CLOZE_CASES, ids=[f"cloze{i}" for i in range(len(CLOZE_CASES))]
)
def test_cloze_fill_is_read_from_the_answer(answer: str, cloze: str, expected: list[str] | None) -> None:
    fill = extract_cloze(answer, cloze)
    assert (None if fill is None else parse_keywords(fill, split_and=True)) == expected


CONTINUATIONS = ["", " And more.", "\nThe shopper likes red colours.", "s and wool", ", really", "!"]


@pytest.mark.parametrize(
    ("answer", "cloze", "expected"), CLOZE_CASES, ids=[f"cloze{i}" for i in range(len(CLOZE_CASES))]
)
def test_a_closed_cloze_reads_the_same_fill_whatever_follows(answer: str, cloze: str, expected) -> None:
    # Every prefix where generation would stop gives the fill of the whole answer, and so
    # does any continuation of that prefix: stopping there loses nothing that is read.
    stopped_at = [n for n in range(1, len(answer) + 1) if cloze_closed(answer[:n], cloze)]
    for n in stopped_at:
        for more in CONTINUATIONS:
            assert extract_cloze(answer[:n] + more, cloze) == extract_cloze(answer, cloze), (n, more)
    if expected is not None and answer.rstrip().endswith((".", "!")):
        # An answer that restates and closes the sentence stops there, before what a
        # small model writes after it.
        assert stopped_at and stopped_at[0] <= len(answer)
        assert cloze_closed(answer + " It also likes green.", cloze)


def test_cloze_stop_rule() -> None:
    rule = ClozeStop("The shopper likes ____ colours.")
    assert rule.key == "cloze-closed-v1:The shopper likes ____ colours."
    assert not rule("The shopper likes blue")  # the fill may go on
    assert not rule("The shopper likes blue and red colours")  # "colours" may be "colourslike"
    assert rule("The shopper likes blue and red colours.")
    assert rule("The shopper likes navy.")
    assert not rule("navy, beige.\n")  # no restated sentence: the whole answer is parsed


def test_parse_keywords_limits() -> None:
    assert parse_keywords("a1, b2, c3, d4", max_keywords=2) == ["a1", "b2"]
    assert parse_keywords("one two three, four five six seven eight", max_words=3) == ["one two three"]
    assert parse_keywords(None) == []  # type: ignore[arg-type]


def test_most_frequent_keeps_ties_in_first_seen_order() -> None:
    assert most_frequent([["blue"], ["red"], ["blue"], ["red"], ["green"]], 3) == ["blue", "red"]
    assert most_frequent([["a"], ["b"], ["c"], ["d"]], 3) == ["a", "b", "c"]
    assert most_frequent([], 3) == []


# ---------------------------------------------------------------------- templates


@pytest.mark.parametrize("scenario", scenario_names())
def test_templates_load_and_changed_content_has_a_new_version(scenario: str) -> None:
    prompts = load_prompt_set(scenario)
    digest = content_hash(template_file(scenario))
    recorded = prompts.versions.get(prompts.version)
    assert recorded is not None, (
        f"{template_file(scenario)}: version {prompts.version!r} is not in its `versions` block; "
        f"add `{prompts.version}: {digest}` there"
    )
    assert recorded == digest, (
        f"{template_file(scenario)} changed but its version {prompts.version!r} did not: bump `version` and "
        f"add `<new version>: {digest}` to its `versions` block"
    )
    # Every recorded version is a distinct content: a version is never reused for other text.
    assert len(set(prompts.versions.values())) == len(prompts.versions)


def test_a_changed_template_without_a_new_version_is_caught(tmp_path) -> None:
    """The history block is outside the hash; a content edit is not."""
    source = template_file("emoji").read_text(encoding="utf-8")
    edited = tmp_path / "emoji.yaml"
    edited.write_text(source.replace("caption_fields:", "# a harmless-looking edit\ncaption_fields:"), encoding="utf-8")
    assert content_hash(edited) != content_hash(template_file("emoji"))
    moved = tmp_path / "same.yaml"
    moved.write_text(source + "  emoji-9: " + "0" * 64 + "\n", encoding="utf-8")  # history only grows
    assert content_hash(moved) == content_hash(template_file("emoji"))


def test_attributes_are_the_authors() -> None:
    assert [a.name for a in load_prompt_set("clothing").attributes] == [
        "colour",
        "material",
        "season",
        "style",
        "elements",
    ]
    assert [a.name for a in load_prompt_set("movies").attributes] == [
        "country",
        "style",
        "genre",
        "age",
        "actor",
        "director",
    ]
    assert [a.name for a in load_prompt_set("emoji").attributes] == ["character", "emotion"]


# ----------------------------------------------------------------------- keywords


@pytest.fixture
def descriptions(prepared: PreparedScenario, describe_cfg) -> pd.DataFrame:
    return describe(prepared, select_users(prepared.splits, None), llm=None, captioner=None, cfg=describe_cfg)[0]


def _rows(frame: pd.DataFrame) -> dict[str, dict]:
    return {row["user_id"]: row for row in frame.to_dict("records")}


def test_one_prompt_per_attribute_plus_target_batched(descriptions, prepared, tmp_path, keywords_cfg) -> None:
    llm = ScriptedLLM()
    frame, report = keywords(
        descriptions,
        prepared.items,
        llm=CachedLLM(llm, "s", ContentCache(tmp_path / "c"), batch_size=4),
        cfg=keywords_cfg,
    )
    validate(frame, Keywords, "test")
    assert list(frame["user_id"]) == ["u1", "u2", "u3", "u10"]
    # 4 users x (5 attributes + 1 target) prompts, in batches of at most 4.
    assert len(llm.prompts) == 24 and all(len(call) <= 4 for call in llm.calls)
    assert len(llm.calls) == 5 + 1  # 20 preference prompts in 5 calls, 4 target prompts in 1
    # Misses go shortest first (the LLM's batch order), not in user order.
    colour = [p for p in llm.prompts if "with colour words" in p]
    assert len(colour) == 4 and all(p.endswith("The shopper likes ____ colours.") for p in colour)
    assert any(p.startswith("Bought:\n- A red coat") for p in colour)  # u1's history
    u1 = _rows(frame)["u1"]
    assert json.loads(u1["preference_keywords"])[0] == "red"
    assert u1["preference_source"] == "llm" and u1["target_source"] == "llm"
    assert u1["n_prompts"] == 6 and u1["truncated_history"] == 0
    assert "I need something warm" in next(
        p for p in llm.prompts if "Red is my favourite" in p
    )  # conversations
    per_attribute = json.loads(u1["per_attribute"])
    assert set(per_attribute) == {"colour", "material", "season", "style", "elements"}
    assert per_attribute["colour"]["source"] == "llm" and per_attribute["colour"]["answer"].startswith(
        "1. red"
    )
    assert json.loads(u1["target_keywords"])[:3] == ["green", "trousers", "in"] or "green" in json.loads(
        u1["target_keywords"]
    )


def test_garbage_answers_use_the_flagged_fallback(descriptions, prepared, keywords_cfg) -> None:
    garbage = [
        "",
        "I'm sorry, I cannot help with that.",
        "This is a nice question about the shopper and their clothes in general.",
    ]
    calls = iter(range(10_000))
    llm = ScriptedLLM(lambda prompt: garbage[next(calls) % len(garbage)])
    frame, report = keywords(descriptions, prepared.items, llm=llm, cfg=keywords_cfg)
    rows = _rows(frame)
    u1 = rows["u1"]  # history g1..g4: red x3, striped x2, casual x2, ...
    assert u1["preference_source"] == "fallback" and u1["target_source"] == "fallback"
    preference = json.loads(u1["preference_keywords"])
    assert preference[0] == "red" and "striped" in preference and "casual" in preference
    per_attribute = json.loads(u1["per_attribute"])
    assert per_attribute["colour"] == {
        "answer": per_attribute["colour"]["answer"],
        "keywords": ["red"],
        "echoed": [],
        "source": "fallback",
    }
    # The target fallback is the target item's own attributes (g5: green denim trousers).
    assert json.loads(u1["target_keywords"])[:3] == ["green", "denim", "plain"]
    assert report.attribute_sources == {"fallback": 20}


def test_example_echo_is_not_a_preference(descriptions, prepared, keywords_cfg) -> None:
    def rule(prompt: str) -> str:
        if "with colour words" in prompt:
            return "The shopper likes: navy, beige, olive"  # the hidden example words: an echo
        if "with material words" in prompt:
            return "The shopper likes clothes made of fleece and silk."  # 'fleece' is an example word
        if "with pattern words" in prompt:
            return "I think the answer is that The shopper likes clothes with a striped pattern."
        if "with style words" in prompt:
            return "The shopper likes a **style word** from the list above, separated by commas."
        if prompt.startswith("Item:"):  # a copy of the target line, not the cloze sentence
            return "A green trousers in denim with a plain pattern. This is a lovely idea for a nice day."
        return "1. casual"

    llm = ScriptedLLM(rule)
    u1 = _rows(keywords(descriptions, prepared.items, llm=llm, cfg=keywords_cfg)[0])["u1"]
    per_attribute = json.loads(u1["per_attribute"])
    assert per_attribute["colour"]["echoed"] == ["navy", "beige", "olive"]
    assert per_attribute["colour"]["source"] == "fallback" and per_attribute["colour"]["keywords"] == ["red"]
    # 'fleece' was not bought by u1 (an echo), 'silk' was (g4): kept.
    assert per_attribute["material"] == {
        "answer": "The shopper likes clothes made of fleece and silk.",
        "keywords": ["silk"],
        "echoed": ["fleece"],
        "source": "llm",
    }
    assert per_attribute["elements"]["keywords"] == ["striped"]  # the cloze fill
    # The instruction repeated back is an echo too.
    assert per_attribute["style"]["echoed"] == ["separated by commas"]
    assert per_attribute["style"]["source"] == "fallback" and per_attribute["style"]["keywords"] == ["casual"]
    assert u1["preference_source"] == "mixed"
    # Target: the copied description is chunked and kept (read from the item's
    # own line), the prose after it is not.
    assert json.loads(u1["target_keywords"]) == ["green trousers", "denim", "plain pattern"]
    assert u1["target_source"] == "llm"


def test_long_history_is_truncated_oldest_first(descriptions, prepared, keywords_cfg) -> None:
    # One token per character: a budget that fits about two history lines.
    llm = TokenizedScriptedLLM(context_length=460)
    frame, report = keywords(descriptions, prepared.items, llm=llm, cfg=keywords_cfg)
    u1 = _rows(frame)["u1"]
    assert u1["truncated_history"] > 0
    colour_prompts = [p for p in llm.prompts if "with colour words" in p and "Red is my favourite" in p]
    assert colour_prompts and all(len(p) <= 460 - keywords_cfg.max_new_tokens for p in llm.prompts)
    # The oldest item (g1, the red coat) went first; the newest one stayed.
    history = [line for line in descriptions.query("user_id == 'u1' and kind == 'history'")["line"]]
    assert history[0] not in colour_prompts[0] and history[-1] in colour_prompts[0]
    assert report.truncated_users >= 1


def test_max_prompt_tokens_also_truncates(descriptions, prepared, keywords_cfg) -> None:
    cfg = keywords_cfg.model_copy(update={"max_prompt_tokens": 400})
    llm = TokenizedScriptedLLM(context_length=None)
    frame, report = keywords(descriptions, prepared.items, llm=llm, cfg=cfg)
    assert _rows(frame)["u1"]["truncated_history"] > 0  # 4 items + 2 turns do not fit 400 characters
    assert all(len(p) <= 400 for p in llm.prompts if "Fill in" in p)


def test_user_without_history_is_skipped_and_reported(descriptions, prepared, keywords_cfg) -> None:
    # u2 has lost its history and conversation lines (e.g. items missing upstream).
    lines = descriptions[
        ~((descriptions["user_id"] == "u2") & (descriptions["kind"].isin(["history", "conversation"])))
    ]
    frame, report = keywords(lines, prepared.items, llm=ScriptedLLM(), cfg=keywords_cfg, users=["u1", "u2", "ghost"])
    assert list(frame["user_id"]) == ["u1"]
    assert report.skipped_users == {"no history": ["u2", "ghost"]} and report.skipped_count == 2


def test_rerun_is_free_and_a_new_user_costs_only_its_prompts(
    descriptions, prepared, tmp_path, keywords_cfg
) -> None:
    llm = ScriptedLLM()
    cache = ContentCache(tmp_path / "cache")
    some = descriptions[descriptions["user_id"].isin(["u1", "u2"])]
    first, _ = keywords(some, prepared.items, llm=CachedLLM(llm, "s", cache), cfg=keywords_cfg)
    assert len(llm.prompts) == 12
    again, _ = keywords(some, prepared.items, llm=CachedLLM(llm, "s", cache), cfg=keywords_cfg)
    assert len(llm.prompts) == 12  # zero new LLM calls
    pd.testing.assert_frame_equal(first, again)
    more = descriptions[descriptions["user_id"].isin(["u1", "u2", "u3"])]
    keywords(more, prepared.items, llm=CachedLLM(llm, "s", cache), cfg=keywords_cfg)
    new = llm.prompts[12:]
    assert len(new) == 6 and all("yellow pullover" in p or "Item: A blue shirt" in p for p in new)


def test_without_an_llm_everything_is_fallback(descriptions, prepared) -> None:
    frame, report = keywords(descriptions, prepared.items, llm=None, cfg=KeywordsConfig())
    assert set(frame["preference_source"]) == {"fallback"} and set(frame["target_source"]) == {"fallback"}
    assert (frame["n_prompts"] == 0).all()


# --------------------------------------------------------- the real LocalLLM path


@pytest.mark.slow
def test_local_llm_plugs_in_end_to_end(tmp_path: Path, prepared: PreparedScenario) -> None:
    """The describe and keywords stages' functions with a real (tiny, random) LocalLLM and
    clip-retrieval captioner loaded from disk.

    The tiny models answer noise, so this checks the plumbing — the chat
    template, real token counts against its 256-token context (history gets
    truncated), batching, the captioner's scenario vocabulary, the cache on
    disk and the model fingerprints — not the keywords' content.
    """
    from pmg.config import parse_params
    from pmg.models import tiny
    from pmg.models.captioner import load_captioner
    from pmg.models.llm import load_llm

    folder = tiny.save_tiny_llm(tmp_path / "llm", seed=0)
    spec = {"kind": "hf", "path": str(folder)}
    clip = tiny.save_tiny_open_clip(tmp_path / "clip", seed=0)
    captioner_spec = {"kind": "clip-retrieval", "name": "pmg-tiny-clip", "path": str(clip)}
    other = {"kind": "x", "path": "x"}
    params = parse_params(
        {
            "profiles": {
                "mini": {
                    "device": "cpu",
                    "llm": spec,
                    "captioner": captioner_spec,
                    "generator": other,
                    "scorer": other,
                    "lpips": other,
                }
            },
            "prepare": {"out": str(prepared.folder.parent)},
            "describe": {
                "max_users": 2,
                "max_text_chars": 120,
                "summary_max_new_tokens": 8,
                "llm_cache": str(tmp_path / "cache"),
            },
            "keywords": {
                "max_new_tokens": 6,
                "target_max_new_tokens": 6,
                "batch_size": 4,
                "llm_cache": str(tmp_path / "cache"),
            },
        }
    )
    from pmg.stages.describe import describe_users
    from pmg.stages.keywords import extract_keywords

    llm = load_llm(params.profile.llm, "cpu", batch_size=4)
    captioner = load_captioner(params.profile.captioner, "cpu", vocabulary=["anything"])
    users = select_users(prepared.splits, params.describe.max_users)
    descriptions, report = describe_users(params, prepared, users, llm=llm, captioner=captioner)
    assert set(descriptions["user_id"]) == {"u1", "u2"}
    assert report.llm_cache["misses"] == 1  # g4's long text was summarised
    assert report.caption_cache == {"hits": 0, "misses": 7, "calls": 1}  # 7 distinct items
    # Captions are chosen from the scenario's attribute values (caption_fields).
    vocabulary = {
        str(value)
        for text in prepared.items["attributes"]
        for name, value in json.loads(text).items()
        if name in {"colour", "material", "elements", "category"}
    }
    items = descriptions[descriptions["kind"] != "conversation"]
    for line in items["line"]:
        caption = line.rsplit("Image: ", 1)[1].rstrip(".").split(", ")
        assert len(caption) == 3 and set(caption) <= vocabulary
    _, again = describe_users(params, prepared, users, llm=llm, captioner=captioner)
    assert again.caption_cache["calls"] == 0 and again.llm_cache["calls"] == 0
    frame, report = extract_keywords(params, "clothing", descriptions, prepared.items, llm=llm)
    validate(frame, Keywords, "test")
    assert (frame["truncated_history"] > 0).any()  # a byte-level tokenizer and a 256-token context
    assert report.llm_cache["calls"] >= 1
    assert frame["model_id"].iloc[0].startswith("hf@")
    again_frame, again_report = extract_keywords(params, "clothing", descriptions, prepared.items, llm=llm)
    assert again_report.llm_cache == {"hits": report.prompts, "misses": 0, "calls": 0}
    pd.testing.assert_frame_equal(frame, again_frame)
