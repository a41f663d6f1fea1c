"""The import graph of `pmg`: what code each stage runs, and whether the layers hold.

Two uses:

* **`dvc.yaml` code dependencies.** `stage_dependencies(name)` lists the
  `pmg` files (and data folders, e.g. the prompt templates) a stage runs:
  the full import closure of its stage function, plus the CLI entry and the
  stage table that dispatch to it (their module-level imports only, without
  the other stages they list). It starts at the stage function itself, so
  `zoo_llm` does not depend on the code of `zoo_sd` beside it. A test compares it with every stage's `deps`
  in `dvc.yaml`, and the Prefect tasks cache on the same files
  (`flows.tasks.stage_fingerprint`), so both doors agree on what is stale.
* **Layers.** `layer_report()` counts import cycles and imports that go up
  the layers of `LAYERS` (a test holds both at zero);
  `python -m pmg.stages.deps --layers [--root DIR]` prints them for any tree.

How imports are read (with `ast`, nothing is imported): every `import` and
`from ... import` counts, at module level and inside functions, except under
`if TYPE_CHECKING:` (type names only: no code runs). The closure is narrowed
where the source says which part of a module is used, so that a stage
depends on the model code it loads and not on every loader:

* `from pkg.mod import f` where `f` is a function or class of `mod`:
  `mod`'s module-level imports plus what `f` (and the functions of `mod` it
  refers to) imports;
* `import pkg.mod as m` / `from pkg import mod` used as `m.f`: the same for
  each `f` used; a bare use of `m` takes the whole module;
* importing `a.b.c` also runs `a/__init__.py` and `a/b/__init__.py` (their
  module-level imports).

A function named at module level (e.g. stored in a registry such as a
scenario's `load`) counts as run by whoever imports the module. A package
folder that holds data files besides its modules (the prompt templates) is a
dependency as a whole; a package all of whose modules are needed is listed
as its folder.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "pmg"
ALL = "*"  # a whole module: module level and every function
LEVEL = "."  # a module's module-level code only

#: The layers, lowest first: a module may import its own layer and those
#: below, never one above. Prefixes are matched longest first.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("pmg", "pmg.errors", "pmg.io", "pmg.text", "pmg.frozen", "pmg.schemas", "pmg.progress")),
    ("data", ("pmg.data",)),
    ("scenarios", ("pmg.scenarios",)),
    ("config", ("pmg.config",)),
    ("assets, models", ("pmg.assets", "pmg.models")),
    ("zoo, method, recommend", ("pmg.zoo", "pmg.method", "pmg.recommend")),
    ("evaluate", ("pmg.evaluate",)),
    ("registry", ("pmg.registry",)),
    ("stages", ("pmg.stages",)),
    ("cli", ("pmg.cli", "pmg.gpu_check")),
)


@dataclass
class Module:
    """One parsed module: its scopes' import edges.

    Attributes:
        name: dotted name (`pmg.stages.describe`).
        path: its file.
        defs: names of its top-level functions and classes.
        edges: scope (`LEVEL` or a def's name) -> (module, selector) edges,
            the selector `ALL`, `LEVEL` or a name in that module.
    """

    name: str
    path: Path
    defs: set[str] = field(default_factory=set)
    edges: dict[str, set[tuple[str, str]]] = field(default_factory=dict)


# ------------------------------------------------------------------- parsing


def _module_names(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk(nodes: Iterable[ast.AST]) -> Iterable[ast.AST]:
    """Every node under `nodes`, skipping `if TYPE_CHECKING:` blocks."""
    stack = list(nodes)[::-1]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(reversed(node.orelse))
            continue
        yield node
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


class _Parser:
    def __init__(self, modules: dict[str, Path]) -> None:
        self.modules = modules

    def _resolve(self, current: str, is_package: bool, level: int, target: str | None) -> str:
        if not level:
            return target or ""
        base = current.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (level - 1)] if level > 1 else base
        return ".".join([*base, *([target] if target else [])])

    def parse(self, name: str, path: Path) -> Module:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        module = Module(name, path)
        top_defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
        module.defs = {n.name for n in top_defs}
        level_nodes = [n for n in tree.body if n not in top_defs]
        global_aliases = self._aliases(name, is_package, level_nodes)
        module.edges[LEVEL] = self._edges(name, is_package, level_nodes, global_aliases, module.defs, at_level=True)
        # Decorators and default values run at import time too.
        for node in top_defs:
            extras = [*node.decorator_list]
            if isinstance(node, ast.ClassDef):
                extras += node.bases
            module.edges[LEVEL] |= self._edges(name, is_package, extras, global_aliases, module.defs, at_level=True)
        for node in top_defs:
            aliases = {**global_aliases, **self._aliases(name, is_package, [node])}
            module.edges[node.name] = self._edges(name, is_package, [node], aliases, module.defs, at_level=False)
        return module

    def _imports(self, current: str, is_package: bool, nodes: Iterable[ast.AST]):
        """(bound name, module, imported name or None) for every import statement."""
        for node in _walk(nodes):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield (alias.asname or alias.name.split(".")[0]), alias.name, None, alias.asname is not None
            elif isinstance(node, ast.ImportFrom):
                base = self._resolve(current, is_package, node.level, node.module)
                for alias in node.names:
                    yield (alias.asname or alias.name), base, alias.name, True

    def _aliases(self, current: str, is_package: bool, nodes: Iterable[ast.AST]) -> dict[str, str]:
        """Bound name -> pmg module, for imports that bind a module (`import a.b as m`, `from a import b`)."""
        aliases = {}
        for bound, base, imported, explicit in self._imports(current, is_package, nodes):
            target = f"{base}.{imported}" if imported else base
            if target in self.modules and (imported or explicit):
                aliases[bound] = target
        return aliases

    def _edges(
        self,
        current: str,
        is_package: bool,
        nodes: list[ast.AST],
        aliases: dict[str, str],
        defs: set[str],
        *,
        at_level: bool,
    ) -> set[tuple[str, str]]:
        edges: set[tuple[str, str]] = set()
        for bound, base, imported, _ in self._imports(current, is_package, nodes):
            if imported is None:
                if base in self.modules:
                    edges.add((base, ALL if bound not in aliases else LEVEL))
            elif f"{base}.{imported}" in self.modules:
                edges.add((f"{base}.{imported}", LEVEL))
            elif base in self.modules:
                edges.add((base, imported))
        attribute_values = set()
        for node in _walk(nodes):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                edges.add((aliases[node.value.id], node.attr))
                attribute_values.add(id(node.value))
        for node in _walk(nodes):
            if not isinstance(node, ast.Name) or not isinstance(node.ctx, ast.Load):
                continue
            if node.id in aliases and id(node) not in attribute_values:
                edges.add((aliases[node.id], ALL))  # a module used as a whole
            elif node.id in defs:
                edges.add((current, node.id))  # a function of this module, run here or handed on
        return edges


_GRAPH_LOCK = threading.Lock()


def import_graph(root: Path = PROJECT_ROOT) -> dict[str, Module]:
    """Every module of `pmg` under `root`, parsed (once per process and root).

    Thread-safe: Prefect runs a flow's tasks in threads, and each computes its
    cache key from this graph (`flows.tasks.stage_fingerprint`). Without the
    lock, concurrent first calls all parsed at once, and CPython 3.11's
    `ast.parse` is not safe for that ("SystemError: AST constructor recursion
    depth mismatch", seen in a test run): one thread parses, the others wait
    for its result.
    """
    with _GRAPH_LOCK:
        return _parse_all(root)


@functools.cache
def _parse_all(root: Path) -> dict[str, Module]:
    modules = _module_names(root)
    parser = _Parser(modules)
    return {name: parser.parse(name, path) for name, path in modules.items()}


# ------------------------------------------------------------------- closure


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(
    roots: Iterable[tuple[str, str]],
    graph: dict[str, Module],
    *,
    skip: frozenset[str] = frozenset(),
    imports_only: frozenset[str] = frozenset(),
) -> set[str]:
    """The modules code starting at `roots` ((module, selector) pairs) can run.

    `skip` modules are not entered; in `imports_only` modules, references to
    their own functions are not followed (only what they import).
    """
    seen: set[tuple[str, str]] = set()
    stack = list(roots)
    modules: set[str] = set()
    while stack:
        name, selector = stack.pop()
        if (name, selector) in seen or name not in graph or name in skip:
            continue
        seen.add((name, selector))
        module = graph[name]
        modules.add(name)
        stack += [(parent, LEVEL) for parent in _ancestors(name)]
        scopes = {LEVEL}
        if selector == ALL:
            scopes |= set(module.edges)
        elif selector in module.defs:
            scopes.add(selector)
        for scope in scopes:
            stack += [
                (target, sel)
                for target, sel in module.edges.get(scope, ())
                if not (name in imports_only and target == name)
            ]
    return modules


def stage_modules(name: str, root: Path = PROJECT_ROOT) -> set[str]:
    """The `pmg` modules stage `name` runs (see the module docstring)."""
    from pmg.stages.table import STAGES, stage

    graph = import_graph(root)
    run = stage(name).run
    own = run.__module__
    stage_modules_ = frozenset(s.run.__module__ for s in STAGES)
    # `pmg <stage>`: the CLI's module-level imports (not its other commands'
    # handlers), the stage table (not the other stages it lists) and the
    # table's `run_stage`; then the stage function (and what it refers to).
    dispatch = closure(
        [("pmg.cli", LEVEL), ("pmg.stages.table", "run_stage")],
        graph,
        skip=stage_modules_,
        imports_only=frozenset({"pmg.cli"}),
    )
    return closure([(own, run.__name__)], graph) | dispatch


def _package_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


def _has_data_files(folder: Path) -> bool:
    return any(
        p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts for p in folder.iterdir()
    )


def dependency_paths(modules: Iterable[str], root: Path = PROJECT_ROOT) -> list[str]:
    """`modules` as `dvc.yaml` deps: files, or a package's folder when all its modules (or data files) are needed.

    Returns:
        Sorted POSIX paths relative to `root`.
    """
    graph = import_graph(root)
    files = {graph[m].path for m in modules}
    folders: set[Path] = set()
    for m in modules:
        path = graph[m].path
        if path.name == "__init__.py" and _has_data_files(path.parent):
            folders.add(path.parent)
    for folder in sorted({p.parent for p in files}, key=lambda p: len(p.parts)):
        if folder == root / PACKAGE:
            continue
        if folder.name != PACKAGE and _package_files(folder) <= files:
            folders.add(folder)
    # Keep the outermost folders; drop everything inside them.
    outer = {f for f in folders if not any(f != g and g in f.parents for g in folders)}
    kept = {f for f in files if not any(o in f.parents for o in outer)}
    return sorted(p.relative_to(root).as_posix() for p in outer | kept)


def stage_dependencies(name: str, root: Path = PROJECT_ROOT) -> list[str]:
    """The `pmg` code deps of stage `name` as `dvc.yaml` lists them."""
    return dependency_paths(stage_modules(name, root), root)


def stage_source_files(name: str, root: Path = PROJECT_ROOT) -> list[Path]:
    """Every file behind `stage_dependencies(name)` (folders expanded), for content hashes."""
    files: list[Path] = []
    for entry in stage_dependencies(name, root):
        path = root / entry
        files += sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) if path.is_dir() else [path]
    return files


# -------------------------------------------------------------------- layers


def layer_of(module: str) -> int | None:
    """The index in `LAYERS` of a module (None when no layer names it)."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return None if best is None else best[0]


def module_imports(root: Path = PROJECT_ROOT) -> dict[str, set[str]]:
    """module -> the pmg modules it imports anywhere (`TYPE_CHECKING` blocks aside), packages' inits included."""
    graph = import_graph(root)
    out: dict[str, set[str]] = {}
    for name, module in graph.items():
        targets = {target for edges in module.edges.values() for target, _ in edges if target != name}
        out[name] = {t for t in targets if not name.startswith(t + ".")}  # a package's own inits run anyway
    return out


def import_cycles(root: Path = PROJECT_ROOT) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    edges = module_imports(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def upward_imports(root: Path = PROJECT_ROOT) -> list[tuple[str, str]]:
    """(importer, imported) pairs where the imported module sits in a higher layer."""
    out = []
    for name, targets in module_imports(root).items():
        own = layer_of(name)
        for target in sorted(targets):
            other = layer_of(target)
            if own is not None and other is not None and other > own:
                out.append((name, target))
    return sorted(out)


def layer_report(root: Path = PROJECT_ROOT) -> dict:
    """Cycles and upward imports of the tree at `root`."""
    return {"cycles": import_cycles(root), "upward": upward_imports(root)}


# --------------------------------------------------------------- dvc.yaml


def fix_dvc_yaml(text: str, deps: dict[str, list[str]]) -> str:
    """`dvc.yaml` text with each named stage's `pmg/...` deps replaced by `deps[stage]` (first in its list)."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        match = re.match(r"^  ([A-Za-z_][\w-]*):\s*$", line)
        if match:
            stage = match.group(1)
        out.append(line)
        i += 1
        if stage in deps and re.match(r"^\s+deps:\s*$", line):
            items = []
            while i < len(lines) and re.match(r"^\s+- ", lines[i]):
                items.append(lines[i])
                i += 1
            first = items[0] if items else line + "  "
            indent = first[: len(first) - len(first.lstrip())]
            out += [f"{indent}- {entry}\n" for entry in deps[stage]]
            out += [item for item in items if not item.strip().startswith("- pmg/")]
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    """`python -m pmg.stages.deps [--layers] [--root DIR] [--fix]`: print (or write) what the tests check."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pmg.stages.deps", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="a project tree (default: this one)")
    parser.add_argument("--layers", action="store_true", help="print import cycles and upward imports")
    parser.add_argument("--fix", action="store_true", help="rewrite the pmg/ deps of dvc.yaml")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.layers:
        report = layer_report(root)
        print(f"modules: {len(import_graph(root))}")
        print(f"import cycles: {len(report['cycles'])}")
        for group in report["cycles"]:
            print("  " + " <-> ".join(group))
        print(f"upward imports: {len(report['upward'])}")
        for importer, imported in report["upward"]:
            print(f"  {importer} -> {imported}")
        return 0
    from pmg.stages.table import STAGES

    deps = {spec.name: stage_dependencies(spec.name, root) for spec in STAGES}
    if args.fix:
        path = root / "dvc.yaml"
        path.write_text(fix_dvc_yaml(path.read_text(encoding="utf-8"), deps), encoding="utf-8")
        print(f"rewrote the pmg/ deps of {len(deps)} stages in {path}")
        return 0
    for name, entries in deps.items():
        print(f"{name}:")
        for entry in entries:
            print(f"  - {entry}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
