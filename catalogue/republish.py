"""`python -m catalogue.republish [--catalogue DIR]`: give the published artifacts
of a catalogue their prebuilt SavedModel (`prebuilt`), so that `zoo pull` and `make serve`
install them by extraction instead of exporting them with TensorFlow.

For the latest version of every artifact whose archive lacks one, the archive is unpacked,
its run exported (`prebuilt.prebuild`), packed again and installed once from the new archive
as a check (the weights written back must give the export's sha256). Every file the archive
held stays byte for byte (the checkpoint, run.json, metrics.json, the card inside), so the
version keeps its weights and its number; its manifest record gets the new archive's
sha256 and size, and its card beside the archive the new archive rows. A mirror that keeps
the old file no longer matches the manifest for that version, and `zoo pull` tries the next
source.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from catalogue.archive import RUN, archive_kind, pack, sha256_of, unpack
from catalogue.errors import PullError
from catalogue.prebuilt import archive_carries_export, install_export, prebuild
from serving.layout import replace_file, write_text_atomic


def _card_with_archive(card: str, file: str, size: int, sha256: str) -> str:
    """The published card with its archive rows (size, sha256) replaced."""
    from catalogue.progress import format_size

    lines = []
    for line in card.splitlines():
        if line.startswith("| archive |"):
            line = f"| archive | {file}, {format_size(size)} |"
        elif line.startswith("| sha256 of the archive |"):
            line = f"| sha256 of the archive | `{sha256}` |"
        lines.append(line)
    return "\n".join(lines) + ("\n" if card.endswith("\n") else "")


def add_exports(catalogue: Path, log=print) -> list[str]:
    """Give the latest version of every artifact in `catalogue` (a folder with
    manifest.json) a prebuilt SavedModel when its archive lacks one; returns the references
    republished. The run files and weights stay as they are; the archive, its manifest
    record (sha256, size) and its card's archive rows are replaced."""
    from catalogue.manifest import Manifest

    manifest = Manifest(catalogue)
    done = []
    for name, served_as in manifest.serving_names().items():
        release = manifest.latest(name)
        archive = catalogue / release.file
        if not archive.is_file() or archive_carries_export(archive):
            continue
        if sha256_of(archive) != release.sha256 or archive_kind(archive) != RUN:
            raise PullError(f"{archive} is not the run artifact the manifest lists")
        with tempfile.TemporaryDirectory(prefix=".prebuild-", dir=catalogue) as tmp:
            stage = unpack(archive, Path(tmp) / "artifact")
            before = {p.relative_to(stage): sha256_of(p) for p in stage.rglob("*") if p.is_file()}
            prebuild(stage, served_as)
            after = {p.relative_to(stage): sha256_of(p) for p in stage.rglob("*") if p.is_file()}
            if any(after.get(p) != digest for p, digest in before.items()):
                raise PullError(f"exporting {release.reference} changed its run files")
            packed = Path(tmp) / "artifact.tar.gz"
            sha256 = pack(stage, packed)
            size = packed.stat().st_size
            check = unpack(packed, Path(tmp) / "check")  # installs as published, verified
            install_export(check, Path(tmp) / "installed" / "1")
            replace_file(packed, archive)
        manifest.add(dataclasses.replace(release, sha256=sha256, size=size))
        manifest.save()
        card = catalogue / release.card
        if card.is_file():
            text = _card_with_archive(card.read_text(encoding="utf-8"), release.file, size, sha256)
            write_text_atomic(card, text)
        log(f"{release.reference}: prebuilt SavedModel added, {size:,} bytes, sha256 {sha256}")
        done.append(release.reference)
    return done


def main(argv: list[str] | None = None) -> int:
    """`python -m catalogue.republish [--catalogue DIR]`."""
    from catalogue.manifest import pretrained_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=None, help="default: pretrained/")
    args = parser.parse_args(argv)
    done = add_exports(args.catalogue or pretrained_dir())
    print(f"{len(done)} artifact(s) republished", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
