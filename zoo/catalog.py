"""The model families read statically: names, tasks, descriptions and preset names.

`zoo list` must answer in well under a second, and importing a family package imports
Keras (its builder), which imports TensorFlow: seconds. This module reads the same facts
from the source instead: each family package's `SPEC = registry.ModelSpec(...)` call and
its `PRESETS` dict, with `ast`, importing nothing. The registry (`zoo.registry`) stays the
authority: a test checks that both agree for every family.

Values that are not literals in the source (a computed description) come back as "" and
presets built by code come back empty; the registry has them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class FamilyInfo:
    """What `zoo list` shows of one model family."""

    name: str
    task: str
    description: str
    presets: tuple[str, ...]
    default_preset: str


def _literal(node: ast.expr | None) -> object:
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


def _assignments(tree: ast.Module) -> list[tuple[set[str], ast.expr | None]]:
    """(assigned names, value) of every module-level assignment, annotated ones included."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            found.append(({t.id for t in node.targets if isinstance(t, ast.Name)}, node.value))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found.append(({node.target.id}, node.value))
    return found


def _spec_call(tree: ast.Module) -> ast.Call | None:
    """The `ModelSpec(...)` call assigned to `SPEC` at module level."""
    for names, value in _assignments(tree):
        if "SPEC" in names and isinstance(value, ast.Call):
            func = value.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called == "ModelSpec":
                return value
    return None


def _string_keys(node: ast.Dict) -> tuple[str, ...]:
    return tuple(
        k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
    )


def _dict_keys(tree: ast.Module, variable: str) -> tuple[str, ...]:
    """The string keys of the dict literal assigned to `variable` at module level."""
    for names, value in _assignments(tree):
        if variable in names and isinstance(value, ast.Dict):
            return _string_keys(value)
    return ()


def _presets_source(package: Path, tree: ast.Module, variable: str) -> ast.Module:
    """The module that defines `variable`: the package itself, or the sibling module it is
    imported from (`from zoo.<family>.presets import PRESETS`)."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if any((alias.asname or alias.name) == variable for alias in node.names):
                module = package / (node.module.rsplit(".", 1)[-1] + ".py")
                if module.is_file():
                    return ast.parse(module.read_text(encoding="utf-8"))
    return tree


def read_family(package: Path) -> FamilyInfo | None:
    """The family defined by the package directory `package`, or None when it has no SPEC."""
    init = package / "__init__.py"
    if not init.is_file():
        return None
    tree = ast.parse(init.read_text(encoding="utf-8"))
    call = _spec_call(tree)
    if call is None:
        return None
    kwargs = {kw.arg: kw.value for kw in call.keywords if kw.arg}
    presets: tuple[str, ...] = ()
    node = kwargs.get("presets")
    if isinstance(node, ast.Name):
        presets = _dict_keys(_presets_source(package, tree, node.id), node.id)
    elif isinstance(node, ast.Dict):
        presets = _string_keys(node)
    return FamilyInfo(
        name=str(_literal(kwargs.get("name")) or package.name),
        task=str(_literal(kwargs.get("task")) or ""),
        description=str(_literal(kwargs.get("description")) or ""),
        presets=presets,
        default_preset=str(_literal(kwargs.get("default_preset")) or ""),
    )


def families(zoo_dir: Path = ZOO_DIR) -> list[FamilyInfo]:
    """Every model family under `zoo_dir`, sorted by name (nothing is imported)."""
    found = []
    for package in sorted(p for p in zoo_dir.iterdir() if p.is_dir()):
        if package.name.startswith(("_", ".")):
            continue
        info = read_family(package)
        if info is not None:
            found.append(info)
    return found


def family(name: str, zoo_dir: Path = ZOO_DIR) -> FamilyInfo | None:
    """The family called `name`, or None."""
    return next((f for f in families(zoo_dir) if f.name == name), None)
