"""The import graph: what a piece of code runs, and whether the layers hold (no cycles, no upward imports)."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

from pmg.stages.deps import (
    ALL,
    LEVEL,
    closure,
    dependency_paths,
    import_cycles,
    import_graph,
    layer_of,
    layer_report,
    upward_imports,
)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text), encoding="utf-8")
    return root


def test_closure_follows_what_is_used(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "pmg/__init__.py": "",
            "pmg/models/__init__.py": "",
            "pmg/models/big.py": "import torch\n",
            "pmg/models/small.py": "",
            "pmg/models/other.py": "",
            "pmg/loaders.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pmg.models import other  # a type only: no code runs
                def big():
                    from pmg.models.big import load
                    return load
                def small():
                    from pmg.models import small
                    return helper(small)
                def helper(x):
                    from pmg import util
                    return x
            """,
            "pmg/util.py": "",
            "pmg/stage_a.py": """
                from pmg import loaders
                def run():
                    return loaders.small()
            """,
            "pmg/stage_b.py": """
                from pmg.loaders import big
                def run():
                    return big()
            """,
            "pmg/stage_c.py": """
                import pmg.loaders as everything
                def run():
                    return everything
            """,
            "pmg/registry.py": """
                from pmg import stage_a
                TABLE = {"a": stage_a.run}  # a function stored at module level runs later
            """,
        },
    )
    graph = import_graph(root)
    a = closure([("pmg.stage_a", "run")], graph)
    assert {"pmg.models.small", "pmg.util", "pmg.loaders", "pmg", "pmg.models"} <= a
    assert "pmg.models.big" not in a and "pmg.models.other" not in a
    b = closure([("pmg.stage_b", "run")], graph)
    assert "pmg.models.big" in b and "pmg.models.small" not in b and "pmg.util" not in b
    c = closure([("pmg.stage_c", ALL)], graph)  # a module used bare: all of it
    assert {"pmg.models.big", "pmg.models.small", "pmg.util"} <= c and "pmg.models.other" not in c
    assert "pmg.models.small" in closure([("pmg.registry", LEVEL)], graph)
    # Skipped modules are not entered.
    assert "pmg.models.small" not in closure([("pmg.registry", LEVEL)], graph, skip=frozenset({"pmg.stage_a"}))


def test_dependency_paths_use_folders_for_whole_packages_and_data(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "pmg/__init__.py": "",
            "pmg/data/__init__.py": "",
            "pmg/data/a.py": "",
            "pmg/data/b.py": "",
            "pmg/prompts/__init__.py": "",
            "pmg/prompts/one.yaml": "x: 1\n",
            "pmg/models/__init__.py": "",
            "pmg/models/one.py": "",
            "pmg/models/two.py": "",
        },
    )
    modules = ["pmg", "pmg.data", "pmg.data.a", "pmg.data.b", "pmg.prompts", "pmg.models", "pmg.models.one"]
    assert dependency_paths(modules, root) == [
        "pmg/__init__.py",
        "pmg/data",
        "pmg/models/__init__.py",
        "pmg/models/one.py",
        "pmg/prompts",  # its templates are data the code reads
    ]


def test_cycles_and_upward_imports_are_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "pmg/__init__.py": "",
            "pmg/method/__init__.py": "",
            "pmg/method/one.py": "def f():\n    from pmg.stages import two\n",
            "pmg/stages/__init__.py": "",
            "pmg/stages/two.py": "from pmg.method import one\n",
        },
    )
    assert import_cycles(root) == [["pmg.method.one", "pmg.stages.two"]]
    assert upward_imports(root) == [("pmg.method.one", "pmg.stages.two")]  # lazy imports count too


def test_the_layers_hold() -> None:
    """No import cycle, and no module imports a layer above its own (`pmg.stages.deps.LAYERS`)."""
    report = layer_report()
    assert report == {"cycles": [], "upward": []}, report
    assert all(layer_of(name) is not None for name in import_graph()), "every module belongs to a layer"


def test_concurrent_first_calls_parse_once(tmp_path: Path, monkeypatch) -> None:
    """Prefect tasks compute their cache keys in threads: one parse, the others wait (CPython's ast is not
    safe to run concurrently: a test run failed with 'AST constructor recursion depth mismatch')."""
    import threading
    import time

    import pmg.stages.deps as deps

    root = _tree(tmp_path, {"pmg/__init__.py": "", "pmg/a.py": "import pmg\n"})
    inside, most, guard = [0], [0], threading.Lock()
    real = deps._module_names

    def slow_module_names(where: Path):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.2)
        with guard:
            inside[0] -= 1
        return real(where)

    monkeypatch.setattr(deps, "_module_names", slow_module_names)
    graphs: list = []
    threads = [threading.Thread(target=lambda: graphs.append(import_graph(root))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1 and len(graphs) == 4 and all(g is graphs[0] for g in graphs)
    assert set(graphs[0]) == {"pmg", "pmg.a"}
