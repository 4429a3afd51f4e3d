"""The import graph of the project's own modules, read from the source (`ast`, nothing run).

Every import statement counts, wherever it stands (module level, inside a function, under
`if TYPE_CHECKING`): a lazy import is still a dependency. `from pkg import name` is the
module `pkg/name.py` (or `pkg/name/__init__.py`) when there is one, else `pkg` itself;
relative imports resolve against the importing module's package.

The rules: no circle among the modules of `training/` (nor of `catalogue/`); `training`
imports neither `catalogue` nor `tfzoo` (the catalogue publishes and loads runs, so it sits
above training; a recipe gets trained weights from a `load_source` its caller resolves);
`catalogue` imports no `tfzoo`; `serving` imports none of training, catalogue, tfzoo, zoo.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

#: the checkout (not `tests.helpers.REPO_ROOT`: that module imports TensorFlow)
REPO_ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    """The dotted name of a source file under `root` (a package's `__init__.py` is the
    package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, root: Path) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_names(path: Path, root: Path = REPO_ROOT) -> set[str]:
    """Every module name that `path` imports, anywhere in the file, relative imports
    resolved; `from a import b` names `a.b` when that is a module of `root`, else `a`."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                module = ".".join(p for p in (base, node.module) if p)
            else:
                module = node.module or ""
            for alias in node.names:
                child = f"{module}.{alias.name}" if module else alias.name
                found.add(child if _is_module(child, root) else module)
    found.discard("")
    return found


def module_graph(package: str, root: Path = REPO_ROOT) -> dict[str, set[str]]:
    """Module -> the modules of the same top-level `package` it imports (each import
    resolved to the longest prefix that is a module of the tree)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        edges = set()
        for name in imported_names(path, root):
            if name.split(".")[0] != package:
                continue
            while name and not _is_module(name, root):
                name = name.rpartition(".")[0]
            if name:
                edges.add(name)
        me = module_name(path, root)
        graph[me] = edges - {me}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of `graph` as [a, b, ..., a], or None (depth-first, in sorted order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def top_level_imports(package: str) -> dict[str, set[str]]:
    """Source file of `package` -> the top-level packages it imports."""
    return {
        str(path.relative_to(REPO_ROOT)): {n.split(".")[0] for n in imported_names(path)}
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
    }


def test_find_cycle_finds_a_hand_made_circle_and_nothing_else():
    circle = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(circle) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_the_resolver_reads_lazy_relative_and_from_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__", "a", "b", "sub/__init__", "sub/c"):
        (pkg / f"{name}.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from .sub import c\nfrom pkg.sub.c import thing\n")
    (pkg / "sub" / "c.py").write_text("from .. import a, missing\n")
    graph = module_graph("pkg", tmp_path)
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg", "pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]


@pytest.mark.parametrize("package", ["training", "catalogue"])
def test_no_circle_among_the_modules_of(package):
    graph = module_graph(package)
    assert len(graph) > 5, f"{package}/ was not read"
    cycle = find_cycle(graph)
    assert cycle is None, f"an import circle in {package}/: {' -> '.join(cycle or [])}"


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("training", {"tfzoo", "catalogue"}),
        ("catalogue", {"tfzoo"}),
        ("serving", {"training", "catalogue", "tfzoo", "zoo"}),
    ],
)
def test_imports_point_one_way(package, forbidden):
    offenders = {
        path: sorted(names & forbidden)
        for path, names in top_level_imports(package).items()
        if names & forbidden
    }
    assert not offenders, f"{package}/ imports what sits above it: {offenders}"
