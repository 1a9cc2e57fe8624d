"""``hybridstore import`` against hostile archives, generated here, each next to valid content.

Every case prepends (or splices) the hostile entries onto an otherwise valid
layout archive, so the import would succeed without them. Each must fail with
one clear error, write nothing outside the cache and layout, tag nothing, and
leave the cache holding only verified blobs. Huge inputs are real sparse files
or lazily generated streams, so the suite stays fast and small.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.oci_builder import LayoutBuilder

from hybridstore.archive.importer import ImportLimits, import_archive
from hybridstore.errors import DigestMismatchError, HybridstoreError, InvalidArchiveError

HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]
GiB = 1 << 30


def entry(
    name: str,
    data: bytes = b"",
    *,
    kind: bytes = tarfile.REGTYPE,
    linkname: str = "",
    size: int | None = None,
) -> bytes:
    """One raw tar member (header, data, padding); ``size`` may lie about ``data``."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if size is None else size
    info.linkname = linkname
    info.mode = 0o644
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    head = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return head + data + b"\0" * (-len(data) % 512)


def raw_header(name: bytes, kind: bytes = tarfile.REGTYPE, size: int = 0) -> bytes:
    """A ustar header written byte by byte (``tarfile`` rewrites names like ``/`` and ``""``)."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = f"{size:011o}\0".encode()
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


END = b"\0" * 1024


@dataclass
class Valid:
    """The members of a valid layout archive, by name, in export order."""

    members: dict[str, bytes]
    builder: LayoutBuilder

    def chunks(self, *, skip: str = "", replace: dict[str, bytes] | None = None) -> list[bytes]:
        out = []
        for name, data in self.members.items():
            if name == skip:
                continue
            out.append(entry(name, (replace or {}).get(name, data)))
        return out


@pytest.fixture
def valid(oci_builder: Callable[..., LayoutBuilder]) -> Valid:
    b = oci_builder("source")
    b.image("registry.example.com/team/app:1.0", layers=1, files_per_layer=1, file_size=256)
    members = {
        "oci-layout": (b.path / "oci-layout").read_bytes(),
        "index.json": (b.path / "index.json").read_bytes(),
    }
    for p in sorted((b.path / "blobs/sha256").iterdir()):
        members[f"blobs/sha256/{p.name}"] = p.read_bytes()
    return Valid(members, b)


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """Where a breakout would land: an ``outside`` directory that must stay empty."""
    (tmp_path / "outside").mkdir()
    return tmp_path


def snapshot(root: Path, skip: tuple[str, ...]) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.split(os.sep)[0] in skip:
            continue
        names = [os.path.normpath(os.path.join(rel, n)) for n in dirnames + filenames]
        out.update(n for n in names if n.split(os.sep)[0] not in skip)
    return out


def assert_clean(tmp_path: Path, before: set[str], cache: Path, dest: Path) -> None:
    after = snapshot(tmp_path, (cache.name, dest.name))
    assert after == before, f"files appeared outside the cache and layout: {after - before}"
    assert list((tmp_path / "outside").iterdir()) == []
    if (dest / "index.json").exists():
        assert b'"manifests":[]' in (dest / "index.json").read_bytes()  # nothing tagged
        assert not (dest / "blobs/sha256").exists() or not any((dest / "blobs/sha256").iterdir())
    for p in (cache / "blobs").rglob("*") if (cache / "blobs").exists() else []:
        if p.is_file():
            assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name, f"unverified blob {p}"
    ingest = cache / "ingest"
    assert not ingest.exists() or list(ingest.iterdir()) == []


# --- the matrix -----------------------------------------------------------------------------


def _cases(valid: Valid, sandbox: Path) -> dict[str, tuple[list[bytes], type[Exception], str]]:
    outside = str(sandbox / "outside")
    blob = next(n for n in valid.members if n.startswith("blobs/"))
    tampered = bytearray(valid.members[blob])
    tampered[len(tampered) // 2] ^= 0x01
    body = valid.chunks()
    return {
        "dotdot": ([entry("../evil", b"x"), *body], InvalidArchiveError, r"climbs out with '\.\.'"),
        "dotdot-inside": (
            [entry("blobs/../../outside/evil", b"x"), *body],
            InvalidArchiveError,
            r"'\.\.'",
        ),
        "absolute": ([entry(f"{outside}/evil", b"x"), *body], InvalidArchiveError, "absolute"),
        "symlink-then-write-through": (
            [entry("a", kind=tarfile.SYMTYPE, linkname=outside), entry("a/x", b"x"), *body],
            InvalidArchiveError,
            "symbolic link",
        ),
        "symlink-dir-then-blob": (
            [entry("blobs", kind=tarfile.SYMTYPE, linkname=outside), *body],
            InvalidArchiveError,
            "symbolic link",
        ),
        "hardlink-out": (
            [entry(blob, kind=tarfile.LNKTYPE, linkname="/etc/passwd"), *valid.chunks(skip=blob)],
            InvalidArchiveError,
            "hard link",
        ),
        "symlink-named-dot": (
            [entry(".", kind=tarfile.SYMTYPE, linkname=outside), *body],
            InvalidArchiveError,
            "symbolic link",
        ),
        "hardlink-named-dot-slash": (
            [raw_header(b"./", tarfile.LNKTYPE), *body],
            InvalidArchiveError,
            "hard link",
        ),
        "file-named-dot": ([raw_header(b".", size=0), *body], InvalidArchiveError, "root"),
        "dir-named-slash": (
            [raw_header(b"/", tarfile.DIRTYPE), *body],
            InvalidArchiveError,
            "absolute",
        ),
        "empty-name": ([raw_header(b""), *body], InvalidArchiveError, "empty name"),
        "char-device": (
            [entry("blobs/sha256/dev", kind=tarfile.CHRTYPE), *body],
            InvalidArchiveError,
            "character device",
        ),
        "block-device": (
            [entry("index.json", kind=tarfile.BLKTYPE), *valid.chunks(skip="index.json")],
            InvalidArchiveError,
            "block device",
        ),
        "fifo": ([entry("oci-layout", kind=tarfile.FIFOTYPE), *body], InvalidArchiveError, "FIFO"),
        "duplicate-index": (
            [entry("index.json", b'{"schemaVersion":2,"manifests":[]}'), *body],
            InvalidArchiveError,
            "appears twice",
        ),
        "duplicate-blob": ([*body, entry(blob, valid.members[blob])], InvalidArchiveError, "twice"),
        "not-allow-listed": ([entry("etc/passwd", b"x"), *body], InvalidArchiveError, "not part"),
        "blob-not-a-digest": (
            [entry("blobs/sha256/../../x", b"x"), *body],
            InvalidArchiveError,
            r"'\.\.'",
        ),
        "tampered-blob": (
            valid.chunks(replace={blob: bytes(tampered)}),
            DigestMismatchError,
            "tampered",
        ),
        "missing-blob": (valid.chunks(skip=blob), InvalidArchiveError, "incomplete"),
        "gnu-sparse": (
            [entry("oci-layout", kind=tarfile.GNUTYPE_SPARSE), *body],
            InvalidArchiveError,
            "sparse",
        ),
        "huge-pax-header": (
            [raw_header(b"././@PaxHeader", tarfile.XHDTYPE, size=1 << 30), *body],
            InvalidArchiveError,
            "pax header, over",
        ),
    }


CASES = [
    "dotdot", "dotdot-inside", "absolute", "symlink-then-write-through", "symlink-dir-then-blob",
    "hardlink-out", "symlink-named-dot", "hardlink-named-dot-slash", "file-named-dot",
    "dir-named-slash", "empty-name", "char-device", "block-device", "fifo", "duplicate-index",
    "duplicate-blob", "not-allow-listed", "blob-not-a-digest", "tampered-blob", "missing-blob",
    "gnu-sparse", "huge-pax-header",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_hostile_archive_is_refused(valid: Valid, sandbox: Path, case: str) -> None:
    chunks, error, message = _cases(valid, sandbox)[case]
    archive = sandbox / "hostile.tar"
    archive.write_bytes(b"".join(chunks) + END)
    before = snapshot(sandbox, ("cache", "dest"))
    with pytest.raises(error, match=message) as info:
        import_archive(archive, sandbox / "dest", cache=sandbox / "cache")
    assert "\n" not in str(info.value)
    assert_clean(sandbox, before, sandbox / "cache", sandbox / "dest")


def test_the_valid_base_archive_imports(valid: Valid, sandbox: Path) -> None:
    """The control: without the hostile entries the same archive is fine."""
    archive = sandbox / "ok.tar"
    archive.write_bytes(b"".join(valid.chunks()) + END)
    result = import_archive(archive, sandbox / "dest", cache=sandbox / "cache")
    assert [name for name, _ in result.refs] == ["registry.example.com/team/app:1.0"]


def test_dot_slash_names_from_gnu_tar_are_accepted(valid: Valid, sandbox: Path) -> None:
    """``tar -C layout -cf x.tar .`` writes ``./`` and ``./name``: harmless, accepted."""
    chunks = [raw_header(b"./", tarfile.DIRTYPE)]
    chunks += [entry(f"./{name}", data) for name, data in valid.members.items()]
    archive = sandbox / "dots.tar"
    archive.write_bytes(b"".join(chunks) + END)
    result = import_archive(archive, sandbox / "dest", cache=sandbox / "cache")
    assert len(result.refs) == 1


def test_cli_reports_one_line_and_exit_code(valid: Valid, sandbox: Path) -> None:
    archive = sandbox / "hostile.tar"
    archive.write_bytes(entry("../evil", b"x") + b"".join(valid.chunks()) + END)
    proc = subprocess.run(
        [*HYBRIDSTORE, "--cache", str(sandbox / "cache"), "import", str(archive),
         "--layout", str(sandbox / "dest")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 10
    assert proc.stderr.count("\n") == 1 and "climbs out" in proc.stderr


# --- huge inputs: sparse files, bombs, floods -----------------------------------------------


RSS_SCRIPT = """
import resource, sys
from hybridstore.archive.importer import ImportLimits, import_archive
limits = ImportLimits(**eval(sys.argv[3]))
try:
    import_archive(sys.argv[1], sys.argv[2], cache=sys.argv[2] + "-cache", limits=limits)
except Exception as e:
    print(type(e).__name__, e)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def import_measuring_rss(archive: Path, dest: Path, **limits: int) -> tuple[str, int]:
    """Import in a fresh interpreter; return its error line and peak RSS in KiB."""
    proc = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(archive), str(dest), repr(limits)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    error, rss = proc.stdout.strip().rsplit("\n", 1)
    return error, int(rss)


def test_huge_sparse_index_json(valid: Valid, sandbox: Path) -> None:
    archive = sandbox / "sparse.tar"
    size = 2 * GiB
    with open(archive, "wb") as f:
        f.write(entry("oci-layout", valid.members["oci-layout"]))
        f.write(entry("index.json", size=size))  # header only; the data is a hole
        f.truncate(f.tell() + size + len(END))
    assert archive.stat().st_size > size and archive.stat().st_blocks * 512 < 1 << 20
    before = snapshot(sandbox, ("dest-cache", "dest"))
    error, rss_kib = import_measuring_rss(archive, sandbox / "dest")
    assert error.startswith("InvalidArchiveError") and "index.json is 2147483648 bytes" in error
    assert rss_kib < 200 * 1024
    assert_clean(sandbox, before, sandbox / "dest-cache", sandbox / "dest")


def test_gzip_bomb(valid: Valid, sandbox: Path) -> None:
    """8 GiB of zeros in ~8 MiB of multi-member gzip, declared as one blob: refused at its
    header against the configured size cap, without inflating the rest."""
    zeros = gzip.compress(bytes(64 << 20), compresslevel=9, mtime=0)
    head = entry("oci-layout", valid.members["oci-layout"])
    head += entry("blobs/sha256/" + "a" * 64, size=8 * GiB)
    archive = sandbox / "bomb.tar.gz"
    with open(archive, "wb") as f:
        f.write(gzip.compress(head, mtime=0))
        for _ in range(128):
            f.write(zeros)
    assert archive.stat().st_size < 16 << 20
    before = snapshot(sandbox, ("dest-cache", "dest"))
    error, rss_kib = import_measuring_rss(archive, sandbox / "dest", max_size=GiB)
    assert error.startswith("InvalidArchiveError") and "beyond the import limit" in error
    assert rss_kib < 200 * 1024
    assert_clean(sandbox, before, sandbox / "dest-cache", sandbox / "dest")


def test_running_total_is_capped_whatever_headers_claim(valid: Valid, sandbox: Path) -> None:
    big = valid.builder.image(
        "registry.example.com/team/big:1", layers=1, raw_layer_size=3 << 20, seed="big"
    )
    chunks = [entry("oci-layout", valid.members["oci-layout"])]
    chunks += [entry(f"blobs/sha256/{b.hex}", b.data) for b in big.blobs.values()]
    archive = sandbox / "total.tar.gz"
    archive.write_bytes(gzip.compress(b"".join(chunks) + END, mtime=0))
    before = snapshot(sandbox, ("cache", "dest"))
    with pytest.raises(InvalidArchiveError, match="import limit"):
        import_archive(
            archive,
            sandbox / "dest",
            cache=sandbox / "cache",
            limits=ImportLimits(max_size=2 << 20),
        )
    assert_clean(sandbox, before, sandbox / "cache", sandbox / "dest")


class PaxFlood:
    """A lazily generated tar stream of ``count`` pax headers (each a valid, empty entry)."""

    def __init__(self, count: int) -> None:
        record = b"19 comment=padding\n"
        one = raw_header(b"././@PaxHeader", tarfile.XHDTYPE, len(record))
        one += record + b"\0" * (512 - len(record))
        self.unit = one * 256
        self.left = count // 256
        self.chunks = self._chunks()
        self.buf = memoryview(b"")

    def _chunks(self) -> Iterator[bytes]:
        while self.left:
            self.left -= 1
            yield self.unit

    def read(self, n: int = -1) -> bytes:
        if not self.buf:
            self.buf = memoryview(next(self.chunks, b""))
        out, self.buf = self.buf[:n], self.buf[n:]
        return bytes(out)


def test_a_million_empty_entries_stop_at_the_entry_cap(sandbox: Path) -> None:
    flood = PaxFlood(10**6)
    before = snapshot(sandbox, ("cache", "dest"))
    with pytest.raises(InvalidArchiveError, match="more than 100000 entries"):
        import_archive(flood, sandbox / "dest", cache=sandbox / "cache")
    assert flood.left > 10**6 // 256 - 500  # stopped near the cap, not at the end
    assert_clean(sandbox, before, sandbox / "cache", sandbox / "dest")


def test_a_million_regular_entries_fail_at_the_first(sandbox: Path) -> None:
    """10^6 empty files named like blobs: the first one's name/content mismatch ends it."""

    class Files:
        def __init__(self) -> None:
            self.i = 0

        def read(self, n: int = -1) -> bytes:
            self.i += 1
            if self.i > 10**6:
                return b""
            return entry(f"blobs/sha256/{self.i:064x}")

    files = Files()
    with pytest.raises(HybridstoreError, match="digest mismatch"):
        import_archive(files, sandbox / "dest", cache=sandbox / "cache")
    assert files.i < 10


# --- import writes no more than the archive declares ----------------------------------------


def ordered(valid: Valid) -> list[str]:
    """Blob names parents first (as ``hybridstore export`` writes them), after index.json."""
    image = next(iter(valid.builder.refs.values()))
    return [f"blobs/sha256/{b.hex}" for b in (image.manifest, image.config, *image.layers)]


def test_a_blob_larger_than_its_descriptor_is_refused_before_a_byte_is_written(
    valid: Valid, sandbox: Path
) -> None:
    """A 2 GiB entry (a hole in a sparse file) under a layer's name: its descriptor says
    otherwise, so import stops at the header instead of streaming 2 GiB to ingest/."""
    names = ordered(valid)
    archive = sandbox / "lying.tar"
    with open(archive, "wb") as f:
        for name in ("oci-layout", "index.json", names[0], names[1]):
            f.write(entry(name, valid.members[name]))
        f.write(entry(names[2], size=2 * GiB))
        f.truncate(f.tell() + 2 * GiB + len(END))
    before = snapshot(sandbox, ("cache", "dest"))
    with pytest.raises(InvalidArchiveError, match="is 2147483648 bytes, but its descriptor"):
        import_archive(archive, sandbox / "dest", cache=sandbox / "cache")
    assert_clean(sandbox, before, sandbox / "cache", sandbox / "dest")


def test_blobs_no_descriptor_lists_are_skipped_unwritten(valid: Valid, sandbox: Path) -> None:
    names = ordered(valid)
    stray = b"listed by nothing\n"
    stray_name = "blobs/sha256/" + hashlib.sha256(stray).hexdigest()
    chunks = [entry(n, valid.members[n]) for n in ("oci-layout", "index.json", *names)]
    archive = sandbox / "stray.tar"
    archive.write_bytes(b"".join(chunks) + entry(stray_name, stray) + END)
    result = import_archive(archive, sandbox / "dest", cache=sandbox / "cache")
    assert result.blobs_unlisted == 1 and result.blobs_ingested == len(names)
    assert not (sandbox / "cache" / stray_name).exists()


def test_blobs_before_their_manifest_need_a_file_not_a_stream(
    valid: Valid, sandbox: Path
) -> None:
    """Children first (a layout tarred in directory order): a file is read again for them,
    each checked against its now-known size; a stream cannot be, and says so."""
    names = ordered(valid)
    chunks = [entry(n, valid.members[n]) for n in ("oci-layout", "index.json", *reversed(names))]
    data = b"".join(chunks) + END
    archive = sandbox / "children-first.tar"
    archive.write_bytes(data)
    result = import_archive(archive, sandbox / "dest", cache=sandbox / "file-cache")
    assert len(result.refs) == 1 and result.blobs_unlisted == 0
    with pytest.raises(InvalidArchiveError, match="import it from a file instead"):
        import_archive(io.BytesIO(data), sandbox / "dest2", cache=sandbox / "cache")
    assert not (sandbox / "dest2").exists()


def test_a_compressed_archive_expands_proportionately_at_most(
    valid: Valid, sandbox: Path
) -> None:
    """The default cap without --max-size: 1 GiB of zeros declared as one blob (index.json
    last, as skopeo writes it, so no descriptor is known) stops at 100x its gzip bytes."""
    zeros = gzip.compress(bytes(64 << 20), compresslevel=1, mtime=0)
    archive = sandbox / "ratio.tar.gz"
    with open(archive, "wb") as f:
        head = entry("oci-layout", valid.members["oci-layout"])
        head += entry("blobs/sha256/" + "b" * 64, size=GiB)  # the header; zeros follow
        f.write(gzip.compress(head, mtime=0))
        for _ in range(16):
            f.write(zeros)
    before = snapshot(sandbox, ("dest-cache", "dest"))
    error, rss_kib = import_measuring_rss(archive, sandbox / "dest")
    assert error.startswith("InvalidArchiveError") and "expands more than 100 times" in error
    assert rss_kib < 200 * 1024
    assert_clean(sandbox, before, sandbox / "dest-cache", sandbox / "dest")
