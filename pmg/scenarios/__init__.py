"""The scenarios, each declared in one module, and the registry every layer reads.

A scenario (clothing, movies, emoji) is one :class:`~pmg.scenarios.base.Scenario`
declared in its own module (`pmg/scenarios/<name>.py`): its `prepare.<name>`
section, loader, prompt file, noun, zoo caption, ground-truth check and
report note. The config, the CLI, the stages, the soft model's prompt, the
zoo's captions, the evaluation and the report all ask this registry, so
adding a fourth scenario touches four files: its module, its prompt file
(`pmg/method/prompts/<name>.yaml`), `params.yaml` (`base.scenarios` and its
`prepare.<name>` section) and one line below.

`register` adds a scenario at run time (tests build a tiny one this way).
"""

from __future__ import annotations

from pmg.errors import ConfigError
from pmg.scenarios import clothing, emoji, movies
from pmg.scenarios.base import LoadContext, Scenario, ScenarioSection

_REGISTRY: dict[str, Scenario] = {}


def register(scenario: Scenario, *, replace: bool = False) -> Scenario:
    """Add `scenario` to the registry (in registration order); return it.

    Raises:
        ConfigError: a scenario of that name is registered and `replace` is false.
    """
    if scenario.name in _REGISTRY and not replace:
        raise ConfigError(f"scenario {scenario.name!r} is already registered")
    _REGISTRY[scenario.name] = scenario
    return scenario


def unregister(name: str) -> None:
    """Remove a scenario registered at run time (unknown names are ignored)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Scenario:
    """The registered scenario `name`.

    Raises:
        ConfigError: no such scenario (the message lists the registered ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown scenario {name!r}; registered scenarios: {', '.join(_REGISTRY)}") from None


def names() -> tuple[str, ...]:
    """Every registered scenario's name, in registration order."""
    return tuple(_REGISTRY)


def all_scenarios() -> tuple[Scenario, ...]:
    """Every registered scenario, in registration order."""
    return tuple(_REGISTRY.values())


for _module in (clothing, movies, emoji):  # the built-in scenarios, in this order
    register(_module.SCENARIO)

__all__ = ["LoadContext", "Scenario", "ScenarioSection", "all_scenarios", "get", "names", "register", "unregister"]
