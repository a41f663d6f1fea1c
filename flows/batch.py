"""Batch personalisation: (scenario, user, target) pairs with each scenario's `production` adapter.

Adapters are per scenario, and so is the registry. `batch_flow` resolves the
alias (default `production`) once per scenario of the pairs that has adapters
(`train_soft.scenarios`), pulls that version into
`<adapter_cache>/<scenario>/v<N>` (verified, and only if not pulled before),
and runs the per-pair chain — `pmg.stages.personalize.personalize`, the same
function `pmg personalize` calls — once per pair with its scenario's adapter,
concurrently, each pair a `gpu`-tagged task cached on its inputs and the
adapter version. Scenarios without adapters (the paper trains none for
emoji) run on keywords only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import flow, get_run_logger

from flows.pipeline import choose_scenarios, wait_all
from flows.tasks import personalize_function, personalize_pair, pull_adapter, retry_options
from pmg.config import load_params
from pmg.errors import ConfigError


def normalise_pairs(pairs: Sequence[Any]) -> list[tuple[str, str, str]]:
    """`[{"scenario", "user", "target"}, ...]` or `[[scenario, user, target], ...]` as tuples."""
    out = []
    for index, pair in enumerate(pairs):
        if isinstance(pair, Mapping):
            missing = {"scenario", "user", "target"} - set(pair)
            if missing:
                raise ConfigError(f"pairs[{index}] lacks {sorted(missing)}: {dict(pair)}")
            values = (pair["scenario"], pair["user"], pair["target"])
        elif isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 3:
            values = tuple(pair)
        else:
            raise ConfigError(
                f"pairs[{index}] must be {{scenario, user, target}} or a 3-item list, got {pair!r}"
            )
        out.append(tuple(str(v) for v in values))
    if not out:
        raise ConfigError("pairs is empty")
    return out


@flow(name="pmg-batch")
def batch_flow(
    pairs: list[Any],
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    ref: str = "production",
    adapter_cache: str = "data/adapters",
) -> list[dict[str, Any]]:
    """Personalise each (scenario, user, target) pair with its scenario's adapter `ref` points at.

    Args:
        pairs: `[{"scenario": "clothing", "user": "u1", "target": "i9"}, ...]`.
        params_path, overrides: as `pipeline_flow`.
        ref: registry version (`3`, `v3`) or alias (`production`, `staging`),
            resolved in each scenario's own versions and aliases.
        adapter_cache: pulled versions live in `<adapter_cache>/<scenario>/v<N>`.

    Returns:
        One record per pair: the pair, its scenario's adapter version (None
        for a scenario without adapters), and what `personalize` returned.

    Raises:
        RegistryError: a scenario with adapters has no version at `ref`.
    """
    params = load_params(params_path, overrides)
    chain = personalize_function()  # fails here, before any pull, if it is missing
    todo = normalise_pairs(pairs)
    scenarios = choose_scenarios(params, sorted({scenario for scenario, _, _ in todo}))
    # One pull per scenario, all before any pair runs: a missing adapter fails the batch up front.
    adapters: dict[str, dict[str, Any]] = {
        s: pull_adapter(params.registry, s, ref, adapter_cache)
        if s in params.train_soft.scenarios
        else {"scenario": s, "version": None, "adapter_dir": None}
        for s in scenarios
    }
    log = get_run_logger()
    for s, adapter in adapters.items():
        used = f"{ref} = version {adapter['version']}" if adapter["version"] else "no adapter (keywords only)"
        log.info("%s: %d pairs with %s (%s)", s, sum(p[0] == s for p in todo), used, chain.__module__)
    futures = {
        index: personalize_pair.with_options(task_run_name=f"{s}/{u}->{t}", **retry_options()).submit(
            params, s, u, t, adapters[s]["adapter_dir"]
        )
        for index, (s, u, t) in enumerate(todo)
    }
    done = wait_all(futures)
    return [
        {
            "scenario": s,
            "user": u,
            "target": t,
            "adapter_version": adapters[s]["version"],
            "result": done[index],
        }
        for index, (s, u, t) in enumerate(todo)
    ]
