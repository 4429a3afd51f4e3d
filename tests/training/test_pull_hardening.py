"""`zoo pull` against hostile artifacts and mirrors: unpacking checks every member itself
(links, `..`, absolute and duplicate names, the CVE-2025-4517 symlink chain), the unpacked
size is capped (gzip bombs), a download stops at the manifest's size and at its deadline,
and a sha256 is 64 hex digits before it names a cache path.

The mirrors are real HTTP servers on loopback that misbehave on purpose; the archives are
built here with tarfile. The property tests (hypothesis) throw random archives at the
extraction and check that nothing ever lands outside the destination or past the cap.
"""

from __future__ import annotations

import gzip
import http.server
import io
import os
import socket
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import catalogue
from catalogue import Cache, Manifest, PullError, Release, Source
from catalogue.archive import (
    MAX_UNPACKED_BYTES,
    archive_kind,
    extract_into,
    member_parts,
    unpack,
)
from catalogue.download import download
from fuzz.fuzz_extract import check_tree  # one check of an extracted tree, shared
from tests.helpers import zoo
from tests.training.test_pretrained import _fake_saved_model
from tfzoo.cli import build_parser

# ------------------------------------------------------------------ archives made here


def tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], fmt=None) -> Path:
    """Write `members` (a TarInfo and the bytes of a file member) as a .tar.gz at `path`."""
    with tarfile.open(path, "w:gz", format=fmt or tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, link: str = ""):
    """One (TarInfo, data) pair for `tar_gz`."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, (data if data is not None else (b"x" if kind == tarfile.REGTYPE else None))


def raw_header_gz(path: Path, name: str, size: int, kind: bytes = tarfile.REGTYPE) -> Path:
    """A .tar.gz of one header declaring `size` bytes, without the bytes (a lying header)."""
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    path.write_bytes(gzip.compress(info.tobuf(tarfile.GNU_FORMAT)))
    return path


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (links not followed) with a file's bytes, None for others."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            found[str(path.relative_to(root))] = (
                path.read_bytes() if path.is_file() and not path.is_symlink() else None
            )
    return found


@pytest.fixture
def artifact(tmp_path) -> tuple[Path, str, Path]:
    """A packed fake SavedModel: (archive, sha256, source directory)."""
    source = _fake_saved_model(tmp_path / "src" / "1")
    archive = tmp_path / "model.tar.gz"
    return archive, catalogue.pack(source, archive), source


# ------------------------------------------------------------------ unpacking


def cve_2025_4517_archive(path: Path, destination: Path) -> Path:
    """The symlink chain of CVE-2025-4517 (CPython's own regression test, aimed at
    `destination`): symlinks to long directory names whose expansion overflows PATH_MAX, so
    `os.path.realpath` stops resolving and tarfile's `data` filter lets a link out of the
    tree; a hard link and files are then written through it into `destination`'s parent."""
    steps = "abcdefghijklmnop"
    path_max = os.pathconf(destination.parent, "PC_PATH_MAX")
    component = "d" * ((path_max - len(str(destination)) - 1) // (len(steps) + 1))
    members, parent = [], ""
    for step in steps:
        members.append(member(os.path.join(parent, component), tarfile.DIRTYPE))
        members.append(member(os.path.join(parent, step), tarfile.SYMTYPE, link=component))
        parent = os.path.join(parent, component)
    link_path = os.path.join(*steps, "l" * 254)
    members.append(member(link_path, tarfile.SYMTYPE, link=os.path.join(*[".."] * len(steps))))
    members.append(member("escape", tarfile.SYMTYPE, link=os.path.join(link_path, "..")))
    members.append(member("flaglink", tarfile.LNKTYPE, link="escape/flag"))
    members.append(member("flaglink", data=b"overwritten"))
    members.append(member("escape/newfile", data=b"new"))
    members.append(member("saved_model.pb", data=b"pb"))
    return tar_gz(path, members)


def test_cve_2025_4517_symlink_chain_is_refused_and_nothing_escapes(tmp_path):
    base = tmp_path / "models" / "m"
    base.mkdir(parents=True)
    (base / "flag").write_bytes(b"the file the archive wants to overwrite")
    archive = cve_2025_4517_archive(tmp_path / "chain.tar.gz", base / "1")
    before = snapshot(tmp_path)
    with pytest.raises(PullError, match="'a' is a symbolic link"):
        unpack(archive, base / "1")
    with pytest.raises(PullError, match="symbolic link"):
        archive_kind(archive)
    assert snapshot(tmp_path) == before  # no file outside, and no staging left behind
    assert not (base / "1").exists() and not (base / "newfile").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PullError, match="symbolic link"):
        extract_into(archive, empty)
    [(first, kind)] = snapshot(empty).items()  # only the first member, a directory, is there
    assert set(first) == {"d"} and kind is None
    assert (base / "flag").read_bytes() == b"the file the archive wants to overwrite"


@pytest.mark.parametrize(
    ("kind", "link", "word"),
    [
        (tarfile.LNKTYPE, "saved_model.pb", "hard link"),  # even to a file inside the tree
        (tarfile.SYMTYPE, "saved_model.pb", "symbolic link"),
        (tarfile.SYMTYPE, "/etc", "symbolic link"),
        (tarfile.FIFOTYPE, "", "fifo"),
        (tarfile.CHRTYPE, "", "character device"),
        (tarfile.BLKTYPE, "", "block device"),
    ],
)
def test_links_and_special_members_are_refused(tmp_path, kind, link, word):
    members = [member("saved_model.pb", data=b"pb"), member("other", kind, link=link)]
    archive = tar_gz(tmp_path / "a.tar.gz", members)
    with pytest.raises(PullError, match=f"'other' is a {word}: an artifact holds regular"):
        unpack(archive, tmp_path / "out" / "1")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("/tmp/escaped", "absolute name"),
        ("/saved_model.pb", "absolute name"),
        ("..", "'..' component"),
        ("../escaped", "'..' component"),
        ("variables/../../escaped", "'..' component"),
        ("./saved_model.pb", "not normalised"),
        ("variables//x", "not normalised"),
        ("variables/./x", "not normalised"),
        ("saved_model.pb", "appears twice"),
    ],
)
def test_unsafe_names_are_refused(tmp_path, name, reason):
    members = [member("saved_model.pb", data=b"pb"), member(name, data=b"evil")]
    archive = tar_gz(tmp_path / "a.tar.gz", members)
    before = snapshot(tmp_path)
    with pytest.raises(PullError, match=reason):
        unpack(archive, tmp_path / "out" / "1")
    with pytest.raises(PullError, match=reason):
        archive_kind(archive)
    assert snapshot(tmp_path) == {**before, "out": None}  # only the (empty) parent was made
    assert not Path("/tmp/escaped").exists() or Path("/tmp/escaped").read_bytes() != b"evil"


def test_member_names_parse_only_when_safe():
    assert member_parts("variables/variables.index") == ("variables", "variables.index")
    assert member_parts("saved_model.pb") == ("saved_model.pb",)
    for bad in ("", ".", "a/", "a\x00b", "/a", "a/..", "a//b"):
        with pytest.raises(PullError):
            member_parts(bad)


def test_pack_refuses_links_and_round_trips_within_exact_caps(artifact, tmp_path):
    archive, digest, source = artifact
    total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    empty = tmp_path / "exact"
    empty.mkdir()
    assert extract_into(archive, empty, max_bytes=total, max_members=3) == total
    assert snapshot(empty) == snapshot(source)
    with pytest.raises(PullError, match=f"more than {total - 1:,} bytes"):
        unpack(archive, tmp_path / "short" / "1", max_bytes=total - 1)
    with pytest.raises(PullError, match="more than 2 members"):
        unpack(archive, tmp_path / "short" / "1", max_members=2)
    assert not (tmp_path / "short" / "1").exists()

    (source / "variables" / "link").symlink_to("variables.index")
    with pytest.raises(PullError, match="is a symbolic link"):
        catalogue.pack(source, tmp_path / "linked.tar.gz")
    assert not (tmp_path / "linked.tar.gz").exists()
    (source / "variables" / "link").unlink()
    assert catalogue.pack(source, tmp_path / "again.tar.gz") == digest


def test_gzip_bombs_are_refused_with_bounded_writes(tmp_path):
    cap = 1 << 20
    # one member of 256 MiB of zeros (about 250 kB compressed): refused from its header
    with tarfile.open(tmp_path / "bomb.tar.gz", "w:gz") as tar, open("/dev/zero", "rb") as zero:
        info = tarfile.TarInfo("saved_model.pb")
        info.size = 256 << 20
        tar.addfile(info, zero)
    assert (tmp_path / "bomb.tar.gz").stat().st_size < 2 << 20
    with pytest.raises(PullError, match=f"unpacks to more than {cap:,} bytes"):
        unpack(tmp_path / "bomb.tar.gz", tmp_path / "out" / "1", max_bytes=cap)
    # refused before decompressing it: the same header with its data cut off after 64 KiB
    # gets the same answer, where reading the data would end the stream early
    info = tarfile.TarInfo("saved_model.pb")
    info.size = 256 << 20
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + bytes(64 << 10)))
    with pytest.raises(PullError, match=f"unpacks to more than {cap:,} bytes"):
        unpack(cut, tmp_path / "out" / "1", max_bytes=cap)
    with pytest.raises(PullError, match="unexpected end of data"):  # a cap it fits under
        unpack(cut, tmp_path / "out" / "1", max_bytes=1 << 30)
    # many members of 64 KiB each: refused once the sum passes the cap, after 16 files
    members = [member(f"f{i:03d}", data=bytes(64 << 10)) for i in range(64)]
    many = tar_gz(tmp_path / "many.tar.gz", members)
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(PullError, match=f"more than {cap:,} bytes"):
        extract_into(many, into, max_bytes=cap)
    assert check_tree(into, cap) == cap and len(os.listdir(into)) == 16
    # headers that lie: the default cap from a header alone, an oversized pax header
    huge = raw_header_gz(tmp_path / "huge.tar.gz", "saved_model.pb", 5 << 30)
    with pytest.raises(PullError, match=f"more than {MAX_UNPACKED_BYTES:,} bytes"):
        unpack(huge, tmp_path / "out" / "2")
    pax = raw_header_gz(tmp_path / "pax.tar.gz", "././@PaxHeader", 1 << 30, tarfile.XHDTYPE)
    with pytest.raises(PullError, match="extended tar header of 1,073,741,824 bytes"):
        unpack(pax, tmp_path / "out" / "3")
    # a stream of empty members: the member cap
    members = [member(f"e{i}", data=b"") for i in range(50)]
    with pytest.raises(PullError, match="more than 20 members"):
        unpack(tar_gz(tmp_path / "count.tar.gz", members), tmp_path / "out" / "4", max_members=20)
    assert sorted(os.listdir(tmp_path / "out")) == []


# ------------------------------------------------------------------ a misbehaving mirror


class Misbehaving:
    """An HTTP server on loopback whose answer depends on the path's first part:

    `/flood/F` sends `payload` then zeros without end (no Content-Length); `/liar/F`
    declares `declared` bytes in Content-Length and sends zeros; `/trickle/F` declares the
    payload's length and sends one byte every `trickle_every` seconds. Every byte the
    server managed to send is counted in `sent`, and `done` is set when a handler returns.
    """

    def __init__(self, payload: bytes, declared: int = 300_000_000, trickle_every: float = 0.2):
        self.payload, self.declared, self.trickle_every = payload, declared, trickle_every
        self.sent = 0
        self.done = threading.Event()
        self.flood_limit = 512 << 20  # a safety stop should the client never hang up
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                try:
                    mirror.serve(self)
                except OSError:
                    pass  # the client hung up: that is the point
                finally:
                    mirror.done.set()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, mode: str) -> str:
        """The base URL of one behaviour."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/{mode}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _send(self, handler, data: bytes) -> None:
        handler.wfile.write(data)
        handler.wfile.flush()
        self.sent += len(data)

    def serve(self, handler) -> None:
        mode = handler.path.split("/")[1]
        # a small send buffer, so `sent` is close to what the client actually read
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
        handler.send_response(200)
        if mode == "trickle":
            handler.send_header("Content-Length", str(len(self.payload)))
        elif mode == "liar":
            handler.send_header("Content-Length", str(self.declared))
        handler.send_header("Connection", "close")
        handler.end_headers()
        if mode == "trickle":
            for i in range(len(self.payload)):
                self._send(handler, self.payload[i : i + 1])
                time.sleep(self.trickle_every)
            return
        if mode == "flood":
            self._send(handler, self.payload)
        while self.sent < self.flood_limit:
            self._send(handler, bytes(64 << 10))


@pytest.fixture
def catalog(artifact, tmp_path, monkeypatch) -> Release:
    """A catalogue publishing the artifact as `tagger/x` without its file (mirrors only)."""
    archive, digest, _ = artifact
    folder = tmp_path / "catalog"
    folder.mkdir()
    manifest = Manifest(folder)
    release = Release(
        name="tagger/x", version=1, file=archive.name, sha256=digest,
        size=archive.stat().st_size, metric={"name": "accuracy", "value": 0.5},
        dataset="cifar10", licence="none", restricted=False, card="x.md", parameters=1,
    )  # fmt: skip
    manifest.add(release)
    manifest.save()
    monkeypatch.setenv("TFZOO_PRETRAINED", str(folder))
    monkeypatch.delenv("TFZOO_MIRROR", raising=False)
    monkeypatch.delenv("TFZOO_OFFLINE", raising=False)
    monkeypatch.delenv("TFZOO_PULL_TIMEOUT", raising=False)
    return release


def test_a_flooding_mirror_is_cut_just_past_the_manifest_size(artifact, catalog, tmp_path):
    archive, _, _ = artifact
    server = Misbehaving(archive.read_bytes())
    cache, base = tmp_path / "cache", tmp_path / "models" / "m"
    try:
        start = time.perf_counter()
        with pytest.raises(PullError, match=f"more than the manifest's {catalog.size:,} bytes"):
            catalogue.pull("tagger/x", base, cache=cache, mirrors=[server.url("flood")],
                            log=print)  # fmt: skip
        assert server.done.wait(10)
    finally:
        server.stop()
    print(f"flood: refused after {time.perf_counter() - start:.2f} s, {server.sent:,} bytes sent")
    assert server.sent < 4 << 20  # of the 512 MiB it would have sent
    artifacts = cache / "artifacts"
    assert not [p.name for p in artifacts.iterdir() if p.suffix in (".part", ".gz")]
    assert not base.exists()


def test_a_declared_oversize_is_refused_before_reading(artifact, catalog, tmp_path):
    server = Misbehaving(b"", declared=300_000_000)
    part = tmp_path / "x.part"
    try:
        url = f"{server.url('liar')}/{catalog.file}"
        with pytest.raises(PullError, match="declares 300,000,000 bytes, more than the manif"):
            download(url, part, size=catalog.size)
        assert server.done.wait(10)
    finally:
        server.stop()
    assert not part.exists() and server.sent < 4 << 20


@pytest.mark.timeout(120)  # without a deadline the trickle would last for hours
def test_a_trickling_mirror_hits_the_deadline_and_leaves_only_a_part(artifact, catalog, tmp_path):
    archive, digest, _ = artifact
    server = Misbehaving(archive.read_bytes(), trickle_every=0.2)
    cache, base = tmp_path / "cache", tmp_path / "models" / "m"
    try:
        start = time.perf_counter()
        with pytest.raises(PullError, match=r"exceeded its deadline of 1.5 s after \d+ bytes"):
            catalogue.pull("tagger/x", base, cache=cache, mirrors=[server.url("trickle")],
                            log=print, deadline=1.5)  # fmt: skip
        elapsed = time.perf_counter() - start
        # the client hung up (the mirror's handler saw it), not the trickle's hours ending
        hung_up = server.done.wait(30)
        # the command line: --timeout, one line on stderr, nothing installed
        url = f"{server.url('trickle')}/{archive.name}"
        proc = zoo("pull", url, "--sha256", digest, "--to", str(base), "--cache",
                   str(tmp_path / "cli-cache"), "--timeout", "1", check=False)  # fmt: skip
    finally:
        server.stop()
    assert elapsed >= 1.5 and hung_up  # not before its deadline, and then it let go
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "exceeded its deadline of 1 s" in proc.stderr and "run the same command" in proc.stderr
    for root in (cache, tmp_path / "cli-cache"):  # a resumable .part, never an archive
        assert sorted(p.suffix for p in (root / "artifacts").iterdir()) == [".lock", ".part"]
        assert 0 < (root / "artifacts" / f"{digest}.part").stat().st_size < 20
    assert not base.exists()


def test_bad_sha256_is_refused_before_any_path_is_made(artifact, tmp_path):
    archive, digest, _ = artifact
    bad = ["../../etc/passwd", "g" * 64, digest[:63], digest + "0", f"{digest[:32]}/{digest[:31]}",
           digest + "\n", ""]  # fmt: skip
    parser = build_parser()
    for value in bad:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["pull", str(archive), "--to", "m", "--sha256", value])
        assert exit_.value.code == 2
        with pytest.raises(PullError, match="exactly 64 hex digits"):
            catalogue.pull(str(archive), tmp_path / "m", value or "x", tmp_path / "c", log=print)
        with pytest.raises(PullError, match="exactly 64 hex digits"):
            Cache(tmp_path / "c").part(value)
    upper = parser.parse_args(["pull", str(archive), "--to", "m", "--sha256", digest.upper()])
    assert upper.sha256 == digest
    proc = zoo("pull", str(archive), "--sha256", "../" * 21 + "x", "--to", str(tmp_path / "m"),
               "--cache", str(tmp_path / "c"), check=False)  # fmt: skip
    assert proc.returncode == 2 and "--sha256: a sha256 is exactly 64 hex digits" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["model.tar.gz", "src"]  # no cache, no model dir
    # a valid upper-case hash installs: it is lowercased
    path = catalogue.pull(str(archive), tmp_path / "m", digest.upper(), tmp_path / "c", log=print)
    assert (path / "saved_model.pb").is_file()
    assert (tmp_path / "c" / "artifacts" / f"{digest}.tar.gz").is_file()


def test_a_local_source_longer_than_the_manifest_is_not_copied(artifact, tmp_path):
    archive, digest, _ = artifact
    with pytest.raises(PullError, match="more than the manifest's 100"):
        catalogue.fetch([Source(str(archive), "local")], digest, Cache(tmp_path / "c"),
                         size=100, log=print)  # fmt: skip
    assert sorted(p.suffix for p in (tmp_path / "c" / "artifacts").iterdir()) == [".lock"]


# ------------------------------------------------------------------ random archives


def _name_pieces() -> st.SearchStrategy[str]:
    return st.sampled_from(
        ["a", "b", "variables", "saved_model.pb", "..", ".", "", "l" * 254, "d" * 200, "@OUT"]
    )


NAMES = st.one_of(
    st.sampled_from(
        [
            "saved_model.pb",
            "variables",
            "variables/variables.index",
            "a/b/c",
            "/abs",
            "../up",
            "./a",
            "a//b",
            "x" * 300,
            "d/" * 40 + "f",
        ]
    ),  # fmt: skip
    st.lists(_name_pieces(), min_size=1, max_size=5).map("/".join),
)
KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
}
MEMBERS = st.lists(
    st.tuples(
        st.sampled_from(sorted(KINDS)), NAMES, st.integers(0, 48_000), NAMES, st.booleans()
    ),  # fmt: skip
    max_size=14,
)
CAP, MAX_MEMBERS = 120_000, 10


def build_random(path: Path, members, fmt, outside: str) -> Path:
    """A .tar.gz of the drawn members; `@OUT` in a name or link stands for `outside`."""
    pairs = []
    for kind, name, size, link, executable in members:
        info, _ = member(name.replace("@OUT", outside), KINDS[kind],
                         link=link.replace("@OUT", outside))  # fmt: skip
        info.mode = 0o755 if executable else 0o644
        data = bytes([size % 251]) * size if kind == "file" else None
        pairs.append((info, data))
    return tar_gz(path, pairs, fmt)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(members=MEMBERS, fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))
def test_random_archives_unpack_inside_or_fail_cleanly(members, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outside = root / "outside"
        outside.mkdir()
        (outside / "f").write_bytes(b"keep")
        archive = build_random(root / "r.tar.gz", members, fmt, str(outside))
        base = root / "base"
        base.mkdir()
        into = base / "into"
        into.mkdir()
        try:
            written = extract_into(archive, into, max_bytes=CAP, max_members=MAX_MEMBERS)
        except PullError:
            written = None
        total = check_tree(into, CAP)
        assert written is None or written == total
        try:
            final = unpack(archive, base / "final", max_bytes=CAP, max_members=MAX_MEMBERS)
        except PullError:
            final = None
        if final is not None:
            assert written is not None and check_tree(final, CAP) == total
            assert (final / "saved_model.pb").is_file()
        assert sorted(os.listdir(root)) == ["base", "outside", "r.tar.gz"]
        assert snapshot(outside) == {"f": b"keep"}
        assert sorted(os.listdir(base)) == (["final", "into"] if final else ["into"])


@settings(max_examples=200, deadline=None, database=None)
@given(name=st.text(st.sampled_from("ab./\\\x00"), max_size=12))
def test_member_parts_accepts_only_relative_normalised_names(name):
    try:
        parts = member_parts(name)
    except PullError:
        return
    assert "/".join(parts) == name and not name.startswith("/")
    assert all(part not in ("", ".", "..") and "\x00" not in part for part in parts)
