"""The catalogue of published artifacts: `pretrained/manifest.json` in the repository.

    {"format": 1,
     "artifacts": {"cifar_convnet/paper": {"family": "cifar_convnet",
                                          "versions": {"1": {<Release fields>}}}}}

A name is `<family>/<variant>` (usually the preset); a reference is `NAME` (the newest
version) or `NAME@VERSION`. Each version records its archive file (relative to the
manifest's folder, and to every mirror's base URL), sha256, size, headline metric, dataset,
licence and restricted flag, and its card. The folder is the repository's `pretrained/`
unless $TFZOO_PRETRAINED names another. Standard library only: `zoo list` reads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalogue.errors import PullError
from serving.layout import write_json_atomic

REPO_PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
MANIFEST = "manifest.json"
FORMAT = 1
_NAME = re.compile(r"^[a-z0-9_]+/[A-Za-z0-9_.-]+$")


def pretrained_dir() -> Path:
    """The folder of the manifest and the published files: $TFZOO_PRETRAINED or the repo's."""
    return Path(os.environ.get("TFZOO_PRETRAINED") or REPO_PRETRAINED)


def check_name(name: str) -> str:
    """`name` when it is a valid artifact name (`family/variant`), else ValueError."""
    if not _NAME.match(name):
        raise ValueError(
            f"artifact names look like family/variant (e.g. cifar_convnet/paper), not {name!r}"
        )
    return name


def parse_reference(reference: str) -> tuple[str, int | None]:
    """`NAME[@VERSION]` -> (name, version or None)."""
    name, sep, version = reference.partition("@")
    if sep and not version.isdigit():
        raise PullError(f"bad version in {reference!r}: expected NAME@<integer>")
    return name, int(version) if sep else None


@dataclass(frozen=True)
class Release:
    """One published version of one artifact."""

    name: str
    version: int
    file: str
    sha256: str
    size: int
    metric: dict[str, Any]
    dataset: str
    licence: str
    restricted: bool
    card: str
    parameters: int
    weights_dtype: str = "float32"

    @property
    def family(self) -> str:
        """The model family (the name's first part)."""
        return self.name.split("/", 1)[0]

    @property
    def reference(self) -> str:
        """`name@version`."""
        return f"{self.name}@{self.version}"

    def record(self) -> dict[str, Any]:
        """The manifest's JSON record (name and version are its keys)."""
        fields = dataclasses.asdict(self)
        del fields["name"], fields["version"]
        return fields


def serving_names(names: list[str], as_family: dict[str, str] | None = None) -> dict[str, str]:
    """Artifact name -> the model name `make serve` serves it under: the family (`gpt`,
    `tagger`, ...) when the catalogue has one variant of it, or for the variant `as_family`
    (family -> artifact, the manifest's `"served"`) names; any other variant as
    `<family>-<variant>`."""
    family_of = {name: name.split("/", 1)[0] for name in names}
    variants = Counter(family_of.values())
    chosen = {f: n for n, f in family_of.items() if variants[f] == 1} | (as_family or {})
    return {n: f if chosen.get(f) == n else n.replace("/", "-") for n, f in family_of.items()}


class Manifest:
    """`manifest.json` of one folder: read, resolve, add a release, write atomically."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else pretrained_dir()
        self.path = self.directory / MANIFEST
        self.data: dict[str, Any] = {"format": FORMAT, "artifacts": {}}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise PullError(f"{self.path} is not valid JSON: {err}") from None

    def names(self) -> list[str]:
        """Sorted artifact names."""
        return sorted(self.data["artifacts"])

    def releases(self, name: str) -> list[Release]:
        """Every version of `name`, oldest first (none when unknown)."""
        versions = self.data["artifacts"].get(name, {}).get("versions", {})
        return [
            Release(name=name, version=int(v), **record)
            for v, record in sorted(versions.items(), key=lambda item: int(item[0]))
        ]

    def latest(self, name: str) -> Release | None:
        """The newest version of `name`, or None."""
        releases = self.releases(name)
        return releases[-1] if releases else None

    def resolve(self, reference: str) -> Release:
        """The release `NAME[@VERSION]` names; PullError listing the known names otherwise."""
        name, version = parse_reference(reference)
        releases = self.releases(name)
        if not releases:
            known = ", ".join(self.names()) or "none yet"
            raise PullError(
                f"no published artifact named {name!r} in {self.path} (published: {known})"
            )
        if version is None:
            return releases[-1]
        for release in releases:
            if release.version == version:
                return release
        have = ", ".join(str(r.version) for r in releases)
        raise PullError(f"{name} has no version {version} (versions: {have})")

    def served_as_family(self) -> dict[str, str]:
        """Family -> the artifact `make serve` serves under the family's name, where the
        publisher chose one (`zoo publish --as-family`)."""
        served = self.data.get("served", {})
        if not isinstance(served, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in served.items()
        ):
            raise PullError(f'{self.path}: "served" must map family names to artifact names')
        return dict(served)

    def serve_as_family(self, name: str) -> None:
        """Serve artifact `name` under its family's name (call `save()` to write)."""
        if name not in self.data["artifacts"]:
            raise PullError(f"no published artifact named {name!r} in {self.path}")
        self.data.setdefault("served", {})[name.split("/", 1)[0]] = name

    def serving_names(self) -> dict[str, str]:
        """Artifact name -> the model name `make serve` serves it under."""
        return serving_names(self.names(), self.served_as_family())

    def add(self, release: Release) -> None:
        """Record `release` (call `save()` to write)."""
        entry = self.data["artifacts"].setdefault(
            release.name, {"family": release.family, "versions": {}}
        )
        entry["versions"][str(release.version)] = release.record()

    def save(self) -> None:
        """Write the manifest atomically."""
        write_json_atomic(self.path, self.data)
