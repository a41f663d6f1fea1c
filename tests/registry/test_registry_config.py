"""The `registry` section of the real params.yaml, and what it rejects."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmg.config import load_params
from pmg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_registry_section_parses() -> None:
    registry = load_params(ROOT / "params.yaml").registry
    assert registry.prefix == "pmg/registry" and registry.endpoint_url is None
    assert {gate.metric: gate.direction for gate in registry.gates} == {
        "lpips_history": "lower",
        "lpips_target": "lower",
    }
    assert registry.gated_aliases == ("production",)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"registry.acces_key": "x"}, "unknown key 'registry.acces_key'"),
        ({"registry.prefix": "/pmg/"}, "prefix must have no leading"),
        (
            {
                "registry.gates": [
                    {"metric": "a", "direction": "lower"},
                    {"metric": "a", "direction": "higher"},
                ]
            },
            "more than once",
        ),
        ({"registry.gates": [{"metric": "a", "direction": "down"}]}, "registry.gates.0.direction"),
        (
            {"registry.gates": [{"metric": "a", "direction": "lower", "tolerance": -1}]},
            "registry.gates.0.tolerance",
        ),
        ({"registry.gated_aliases": ["prod"]}, "registry.gated_aliases.0"),
    ],
)
def test_bad_registry_keys_are_named(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_params(ROOT / "params.yaml", override)
