"""Test helpers: a scripted LLM and a tiny prepared scenario, built in code.

A tiny random LLM answers noise, which says nothing about parsing, caching,
fallbacks or batching; the scripted LLM answers by rule and records every
call, so tests can assert exactly what reached the model.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from PIL import Image

from pmg.data.store import PreparedScenario, read_scenario, report_frame, write_scenario
from pmg.io import output_folder


class ScriptedLLM:
    """Implements the `LLM` protocol; `rule(prompt) -> answer`; records calls.

    Attributes:
        calls: one list of prompts per `generate` call.
        context_length: as a real LLM's (tokens = characters here).
    """

    def __init__(
        self, rule: Callable[[str], str] | None = None, *, context_length: int | None = None
    ) -> None:
        self.rule = rule or default_rule
        self.calls: list[list[str]] = []
        self.model_id = "scripted"
        self.context_length = context_length

    def generate(self, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        self.calls.append(list(prompts))
        return [self.rule(p) for p in prompts]

    @property
    def prompts(self) -> list[str]:
        return [p for call in self.calls for p in call]


class CharTokenizer:
    """One token per character: makes context arithmetic in tests exact."""

    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": list(range(len(text)))}


class TokenizedScriptedLLM(ScriptedLLM):
    """A scripted LLM with a tokenizer (so truncation counts real tokens)."""

    def __init__(self, rule=None, *, context_length: int | None = None) -> None:
        super().__init__(rule, context_length=context_length)
        self.tokenizer = CharTokenizer()

    def format_prompt(self, prompt: str) -> str:
        return prompt


COLOURS = ("red", "blue", "green", "black", "pink", "yellow")


def default_rule(prompt: str) -> str:
    """A well-behaved LLM: the most frequent colour words of the history as a numbered list."""
    if "Describe this" in prompt and "Sentence:" in prompt:
        return "Sentence: A short summary."
    if prompt.startswith("Item:"):
        first = prompt.splitlines()[0]
        words = [w for w in re.findall(r"[a-z]+", first.lower().split(":", 1)[1]) if len(w) > 2]
        return ", ".join(words[:5])
    counts = Counter(w for w in re.findall(r"[a-z]+", prompt.lower()) if w in COLOURS)
    return (
        " ".join(f"{i}. {w}" for i, (w, _) in enumerate(counts.most_common(3), 1))
        or "I'm sorry, I cannot tell."
    )


ITEMS = [
    # item_id, colour, material, elements, season, style, category
    ("g1", "red", "wool", "striped", "winter", "casual", "coat"),
    ("g2", "red", "cotton", "striped", "summer", "casual", "shirt"),
    ("g3", "blue", "linen", "plain", "summer", "formal", "shirt"),
    ("g4", "red", "silk", "dotted", "spring", "elegant", "dress"),
    ("g5", "green", "denim", "plain", "autumn", "street", "trousers"),
    ("g6", "black", "leather", "plain", "winter", "street", "boots"),
    ("g7", "pink", "cotton", "checked", "summer", "casual", "t-shirt"),
    ("g8", "yellow", "wool", "striped", "winter", "casual", "pullover"),
]


def build_prepared(folder: Path, *, long_text_item: str | None = "g4") -> PreparedScenario:
    """A 4-user clothing scenario with images, written through the real store."""
    final = folder / "clothing"
    with output_folder(final) as staging:
        (staging / "images").mkdir()
        rows = []
        for i, (item_id, colour, material, elements, season, style, category) in enumerate(ITEMS):
            text = f"A {colour} {category} in {material} with a {elements} pattern, {style}, for {season}."
            if item_id == long_text_item:
                text = text + " " + "It is a very long description of the garment, with many details. " * 4
            Image.new("RGB", (16, 16), (20 * i, 255 - 20 * i, 100)).save(staging / "images" / f"{item_id}.png")
            rows.append(
                {
                    "item_id": item_id,
                    "scenario": "clothing",
                    "title": f"{elements} {colour} {category}",
                    "text": text,
                    "attributes": json.dumps(
                        {
                            "category": category,
                            "colour": colour,
                            "material": material,
                            "season": season,
                            "style": style,
                            "elements": elements,
                        }
                    ),
                    "image_path": f"images/{item_id}.png",
                }
            )
        items = pd.DataFrame(rows)
        splits = pd.DataFrame(
            [
                {
                    "user_id": "u1",
                    "scenario": "clothing",
                    "history_items": json.dumps(["g1", "g2", "g3", "g4"]),
                    "target_item": "g5",
                    "supervision_item": "g6",
                },
                {
                    "user_id": "u2",
                    "scenario": "clothing",
                    "history_items": json.dumps(["g5", "g6", "g1"]),
                    "target_item": "g2",
                    "supervision_item": "g7",
                },
                {
                    "user_id": "u10",
                    "scenario": "clothing",
                    "history_items": json.dumps(["g7", "g8"]),
                    "target_item": "g1",
                    "supervision_item": "g2",
                },
                {
                    "user_id": "u3",
                    "scenario": "clothing",
                    "history_items": json.dumps(["g8", "g2", "g1"]),
                    "target_item": "g3",
                    "supervision_item": "g4",
                },
            ]
        )
        interactions = pd.DataFrame(
            [
                {"user_id": u, "item_id": i, "timestamp": t, "rating": None}
                for u, hist in [("u1", ["g1", "g2", "g3", "g4"]), ("u2", ["g5", "g6", "g1"])]
                for t, i in enumerate(hist)
            ]
        )
        conversations = pd.DataFrame(
            [
                {"user_id": "u1", "turn": 0, "text": "I need something warm for the winter."},
                {"user_id": "u1", "turn": 1, "text": "Red is my favourite colour."},
            ]
        )
        from collections import Counter as C

        write_scenario(
            staging,
            items=items,
            interactions=interactions,
            conversations=conversations,
            splits=splits,
            report=report_frame("clothing", C({"users": 4}), C()),
            ground_truth=None,
        )
    return read_scenario(final)
