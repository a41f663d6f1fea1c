"""The scenario registry: one declaration per scenario, read by every layer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pmg import scenarios
from pmg.config import load_params
from pmg.errors import ConfigError
from pmg.method.prompts import template_file
from pmg.method.soft import behaviour_prompt

ROOT = Path(__file__).resolve().parents[2]


def test_the_built_in_scenarios_in_order() -> None:
    assert scenarios.names() == ("clothing", "movies", "emoji")
    assert [s.seed_index for s in scenarios.all_scenarios()] == [0, 1, 2]  # the worlds' seeds never move
    params = load_params(ROOT / "params.yaml")
    assert params.train_soft.scenarios == tuple(s.name for s in scenarios.all_scenarios() if s.soft_adapter)
    for scenario in scenarios.all_scenarios():
        assert template_file(scenario.name).is_file()
        assert isinstance(params.prepare.section(scenario.name), scenario.section)


def test_unknown_and_repeated_names_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown scenario 'books'; registered scenarios: clothing, movies, emoji"):
        scenarios.get("books")
    with pytest.raises(ConfigError, match="'emoji' is already registered"):
        scenarios.register(scenarios.get("emoji"))


def test_a_scenarios_noun_names_its_items_in_the_soft_prompt() -> None:
    assert behaviour_prompt("clothing", ["a red coat"], []).startswith("The user liked these clothing items:")
    assert behaviour_prompt("books", ["a novel"], []).startswith("The user liked these books:")  # unregistered
    renamed = dataclasses.replace(scenarios.get("emoji"), name="stickers", noun="stickers")
    scenarios.register(renamed)
    try:
        assert behaviour_prompt("stickers", ["a star"], []).startswith("The user liked these stickers:")
    finally:
        scenarios.unregister("stickers")
    assert "stickers" not in scenarios.names()
