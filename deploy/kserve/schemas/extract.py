"""Write the JSON schemas vendored here from KServe's CRDs (config/crd/full/ in kserve/kserve).

    python deploy/kserve/schemas/extract.py --commit SHA CRD.yaml [CRD.yaml ...]

For each served version of each CRD: its `openAPIV3Schema` without `status` (set by
KServe's controller, never written in a manifest), with every subschema that occurs more than
once and is at least 256 characters long moved to `$defs` (named after the path where it is
first met) and referenced with `$ref`. Nothing else changes: the script expands the `$ref`s
again and checks that the result equals the CRD's schema before writing
`<plural>.<version>.json` beside itself. Standard library and PyYAML only.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import yaml

MIN_SHARED = 256  # characters of canonical JSON: smaller repeats stay inline


def canon(node) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"))


def _children(node: dict, path: str):
    """(key, child, child path) of a schema node; `properties` holds names, not keywords."""
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            for name, sub in value.items():
                yield ("properties", name), sub, f"{path}.{name}" if path else name
        elif key == "items":
            yield (key,), value, f"{path}[]"
        else:
            yield (key,), value, f"{path}<{key}>"


def dedupe(schema: dict) -> dict:
    """`schema` with its repeated large subschemas in `$defs`."""
    counts: collections.Counter = collections.Counter()

    def count(node) -> None:
        if isinstance(node, dict):
            counts[canon(node)] += 1
            for value in node.values():
                count(value)
        elif isinstance(node, list):
            for value in node:
                count(value)

    count(schema)
    shared = {k for k, n in counts.items() if n > 1 and len(k) >= MIN_SHARED}
    names: dict[str, str] = {}  # canonical text -> def name
    defs: dict[str, object] = {}

    def sub(node, path: str):
        if isinstance(node, list):
            return [sub(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        key = canon(node)
        if key in shared and path:
            if key not in names:
                names[key] = path
                defs[path] = None  # reserve the name, keep first-met order
                defs[path] = inner(node, path)
            return {"$ref": f"#/$defs/{names[key]}"}
        return inner(node, path)

    def inner(node: dict, path: str) -> dict:
        out: dict = {}
        for key, child, child_path in _children(node, path):
            if key[0] == "properties":
                out.setdefault("properties", {})[key[1]] = sub(child, child_path)
            else:
                out[key[0]] = sub(child, child_path)
        return out

    body = inner(schema, "")
    # a def referenced once (its parent was shared too) goes back inline
    while True:
        refs: collections.Counter = collections.Counter()
        _count_refs(body, refs)
        _count_refs(defs, refs)
        once = {r.removeprefix("#/$defs/") for r, n in refs.items() if n == 1}
        if not once:
            break
        body = _inline(body, defs, once)
        defs = {name: _inline(d, defs, once) for name, d in defs.items() if name not in once}
    if defs:
        body["$defs"] = defs
    return body


def _count_refs(node, refs: collections.Counter) -> None:
    if isinstance(node, dict):
        if "$ref" in node:
            refs[node["$ref"]] += 1
        for value in node.values():
            _count_refs(value, refs)
    elif isinstance(node, list):
        for value in node:
            _count_refs(value, refs)


def _inline(node, defs: dict, names: set[str]):
    """`node` with the references to `names` replaced by their definitions."""
    if isinstance(node, dict):
        name = node["$ref"].removeprefix("#/$defs/") if set(node) == {"$ref"} else None
        if name in names:
            return _inline(defs[name], defs, names)
        return {k: _inline(v, defs, names) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs, names) for v in node]
    return node


def expand(node, defs: dict):
    """`node` with every `$ref` replaced by its definition (the inverse of `dedupe`)."""
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            return expand(defs[node["$ref"].removeprefix("#/$defs/")], defs)
        return {k: expand(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [expand(v, defs) for v in node]
    return node


def write(schema: dict, path: Path) -> None:
    """One line per top-level keyword and per definition: small, and diffs stay readable."""
    lines = []
    for key in sorted(k for k in schema if k != "$defs"):
        lines.append(f"{json.dumps(key)}:{canon(schema[key])}")
    if "$defs" in schema:
        entries = ",\n".join(f"{json.dumps(k)}:{canon(v)}" for k, v in schema["$defs"].items())
        lines.append(f'"$defs":{{\n{entries}\n}}')
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commit", required=True, help="the kserve/kserve commit read")
    parser.add_argument("crds", nargs="+", type=Path)
    args = parser.parse_args(argv)
    out_dir = Path(__file__).resolve().parent
    for crd_path in args.crds:
        crd = yaml.safe_load(crd_path.read_text())
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            original = dict(version["schema"]["openAPIV3Schema"])
            original["properties"] = {
                k: v for k, v in original["properties"].items() if k != "status"
            }
            schema = dedupe(original)
            if canon(expand(schema, schema.get("$defs", {}))) != canon(original):
                print(f"{crd_path}: round trip failed", file=sys.stderr)
                return 1
            schema["$comment"] = (
                f"{group} {crd['spec']['names']['kind']} {version['name']}: the openAPIV3Schema "
                f"of kserve/kserve config/crd/full/{crd_path.name} at {args.commit}, without "
                "status; repeated subschemas moved to $defs (deploy/kserve/schemas/extract.py)"
            )
            target = out_dir / f"{plural}.{version['name']}.json"
            write(schema, target)
            print(f"{target}: {target.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
