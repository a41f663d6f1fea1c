"""Batch personalisation: (scenario, user, target) pairs with the `production` adapter.

`batch_flow` resolves the registry alias once (default `production`), pulls
that version into `<adapter_cache>/v<N>` (verified, and only if not pulled
before), and runs the per-pair chain — `pmg.method.personalize.personalize`,
the same function `pmg personalize` calls — once per pair, concurrently, each
pair a `gpu`-tagged task cached on its inputs and the adapter version.
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
    """Personalise each (scenario, user, target) pair with the adapter `ref` points at.

    Args:
        pairs: `[{"scenario": "clothing", "user": "u1", "target": "i9"}, ...]`.
        params_path, overrides: as `pipeline_flow`.
        ref: registry version (`3`, `v3`) or alias (`production`, `staging`).
        adapter_cache: pulled versions live in `<adapter_cache>/v<N>`.

    Returns:
        One record per pair: the pair, the adapter version, and what
        `personalize` returned.
    """
    params = load_params(params_path, overrides)
    chain = personalize_function()  # fails here, before any pull, if it is missing
    todo = normalise_pairs(pairs)
    choose_scenarios(params, sorted({scenario for scenario, _, _ in todo}))
    adapter = pull_adapter(params.registry, ref, adapter_cache)
    get_run_logger().info(
        "%d pairs with %s = version %s (%s)", len(todo), ref, adapter["version"], chain.__module__
    )
    futures = {
        index: personalize_pair.with_options(task_run_name=f"{s}/{u}->{t}", **retry_options()).submit(
            params, s, u, t, adapter["adapter_dir"]
        )
        for index, (s, u, t) in enumerate(todo)
    }
    done = wait_all(futures)
    return [
        {"scenario": s, "user": u, "target": t, "adapter_version": adapter["version"], "result": done[index]}
        for index, (s, u, t) in enumerate(todo)
    ]
