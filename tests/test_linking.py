"""linking: reflink / hardlink / copy materialization, fallbacks and errors.

Errors the real filesystems here cannot produce on demand (EMLINK, EIO, a
refused clone) are injected through the module's two seams, ``link_file`` and
``clone_file``; everything else runs against real files on real filesystems.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import pytest

from hybridstore.errors import InvalidInputError, LinkError, NotFoundError, StorageError
from hybridstore.store import linking
from hybridstore.store.linking import ENV_LINK_MODE, TEMP_PREFIX, Linker, LinkMode, materialize


def _blob(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    p = directory / name
    p.write_bytes(data)
    p.chmod(0o444)
    return p


def _no_temps(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX)]


@pytest.fixture
def src_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "blobs" / "sha256"


@pytest.fixture
def dst_dir(tmp_path: Path) -> Path:
    d = tmp_path / "layout" / "blobs" / "sha256"
    d.mkdir(parents=True)
    return d


# --- FICLONE ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", 0x40049409),
        ("aarch64", 0x40049409),
        ("armv7l", 0x40049409),
        ("riscv64", 0x40049409),
        ("s390x", 0x40049409),
        ("ppc64le", 0x80049409),
        ("mips64", 0x80049409),
        ("sparc64", 0x80049409),
        ("alpha", 0x80049409),
        ("parisc64", 0x80049409),
        ("vax", None),
    ],
)
def test_ficlone_request_per_architecture(machine: str, expected: int | None) -> None:
    assert linking.ficlone_request(machine, "linux") == expected


def test_ficlone_is_absent_off_linux_and_matches_this_machine() -> None:
    assert linking.ficlone_request("x86_64", "darwin") is None
    assert linking.FICLONE == linking.ficlone_request(os.uname().machine, "linux")


# --- modes -----------------------------------------------------------------------------------


def test_link_mode_parse_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_LINK_MODE, raising=False)
    assert LinkMode.parse(None) is LinkMode.AUTO
    assert LinkMode.parse("HardLink") is LinkMode.HARDLINK
    monkeypatch.setenv(ENV_LINK_MODE, "copy")
    assert LinkMode.parse(None) is LinkMode.COPY
    assert Linker().requested is LinkMode.COPY
    monkeypatch.setenv(ENV_LINK_MODE, "symlink")
    with pytest.raises(InvalidInputError, match=ENV_LINK_MODE):
        LinkMode.parse(None)
    with pytest.raises(InvalidInputError, match="auto, reflink, hardlink, copy"):
        LinkMode.parse("fast")


def test_a_copy_is_fsynced_as_a_file_before_it_gets_its_name(
    src_dir: Path, dst_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache defers its directory fsyncs because a layout's copy (or clone) is durable
    as a file of its own before ``index.json`` names it (see "Durability" in cache.py)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    src = _blob(src_dir, "a", b"copied" * 1000)
    assert Linker("copy", sync_dirs=False).materialize(src, dst_dir / "a") is LinkMode.COPY
    assert [Path(p).parent for p in synced] == [dst_dir]  # the file; its directory is the layout's
    assert Path(synced[0]).name.startswith(TEMP_PREFIX)  # ...before the rename to its name


def test_copy_is_a_read_only_independent_file(src_dir: Path, dst_dir: Path) -> None:
    src = _blob(src_dir, "a", b"x" * 300_000)
    dst = dst_dir / "a"
    assert materialize(src, dst, "copy") is LinkMode.COPY
    st_src, st_dst = os.stat(src), os.stat(dst)
    assert dst.read_bytes() == src.read_bytes()
    assert st_dst.st_ino != st_src.st_ino
    assert stat.S_IMODE(st_dst.st_mode) == 0o444
    assert _no_temps(dst_dir)


def test_copy_falls_back_to_read_write_without_copy_file_range(
    src_dir: Path, dst_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    src = _blob(src_dir, "a", os.urandom(70_000))
    assert materialize(src, dst_dir / "a", LinkMode.COPY) is LinkMode.COPY
    assert (dst_dir / "a").read_bytes() == src.read_bytes()


def test_hardlink_shares_the_inode(src_dir: Path, dst_dir: Path) -> None:
    src = _blob(src_dir, "a", b"shared")
    assert materialize(src, dst_dir / "a", LinkMode.HARDLINK) is LinkMode.HARDLINK
    assert os.stat(dst_dir / "a").st_ino == os.stat(src).st_ino
    assert os.stat(src).st_nlink == 2


@pytest.mark.parametrize("mode", [LinkMode.HARDLINK, LinkMode.COPY])
def test_an_existing_file_is_left_alone(src_dir: Path, dst_dir: Path, mode: LinkMode) -> None:
    src = _blob(src_dir, "a", b"content")
    existing = _blob(dst_dir, "a", b"content")
    ino = os.stat(existing).st_ino
    assert materialize(src, existing, mode) is None
    assert os.stat(existing).st_ino == ino


@pytest.mark.parametrize("mode", [LinkMode.HARDLINK, LinkMode.COPY])
def test_a_planted_symlink_is_replaced_not_followed(
    src_dir: Path, dst_dir: Path, tmp_path: Path, mode: LinkMode
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch")
    src = _blob(src_dir, "a", b"blob bytes")
    (dst_dir / "a").symlink_to(victim)
    assert materialize(src, dst_dir / "a", mode) is mode
    assert not (dst_dir / "a").is_symlink()
    assert (dst_dir / "a").read_bytes() == b"blob bytes"
    assert victim.read_bytes() == b"do not touch"
    assert _no_temps(dst_dir)


def test_missing_source_is_not_found(src_dir: Path, dst_dir: Path) -> None:
    src_dir.mkdir(parents=True)
    for mode in (LinkMode.HARDLINK, LinkMode.COPY, LinkMode.AUTO):
        with pytest.raises(NotFoundError, match="gone"):
            materialize(src_dir / "nope", dst_dir / "nope", mode)
    assert _no_temps(dst_dir)


def test_auto_on_one_filesystem_shares_storage_without_warning(
    src_dir: Path, dst_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    linker = Linker(LinkMode.AUTO)
    with caplog.at_level(logging.WARNING, logger="hybridstore.store.linking"):
        for i in range(3):
            src = _blob(src_dir, f"b{i}", f"blob {i}".encode())
            used = linker.materialize(src, dst_dir / f"b{i}")
            assert used in (LinkMode.REFLINK, LinkMode.HARDLINK)
            assert used is linker.decided
    assert not caplog.records
    assert linker.fallback_reason is None


# --- injected errors through the seams -------------------------------------------------------


def test_emlink_copies_only_that_blob(
    src_dir: Path, dst_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = _blob(src_dir, "tiny", b"{}")
    big = _blob(src_dir, "big", b"layer" * 1000)
    real_link = linking.link_file

    def link(src: Path, dst: Path) -> None:
        if src.name == "tiny":
            raise OSError(errno.EMLINK, "Too many links", str(src))
        real_link(src, dst)

    monkeypatch.setattr(linking, "link_file", link)
    for mode in (LinkMode.HARDLINK, LinkMode.AUTO):
        out = dst_dir / mode.value
        out.mkdir()
        linker = Linker(mode)
        assert linker.materialize(tiny, out / "tiny") is LinkMode.COPY
        assert linker.materialize(big, out / "big") in (LinkMode.HARDLINK, LinkMode.REFLINK)
        assert linker.decided in (LinkMode.HARDLINK, LinkMode.REFLINK)
        assert (out / "tiny").read_bytes() == b"{}"
        assert os.stat(out / "tiny").st_ino != os.stat(tiny).st_ino
        assert stat.S_IMODE(os.stat(out / "tiny").st_mode) == 0o444
    # hardlink mode: the big blob really is the cache's inode
    assert os.stat(dst_dir / "hardlink" / "big").st_ino == os.stat(big).st_ino


def test_auto_falls_back_to_copy_once_with_one_warning(
    src_dir: Path, dst_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_clone(src_fd: int, dst_fd: int) -> None:
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")

    def no_link(src: Path, dst: Path) -> None:
        raise OSError(errno.EPERM, "Operation not permitted", str(src))

    monkeypatch.setattr(linking, "clone_file", no_clone)
    monkeypatch.setattr(linking, "link_file", no_link)
    linker = Linker("auto")
    with caplog.at_level(logging.WARNING, logger="hybridstore.store.linking"):
        for i in range(4):
            src = _blob(src_dir, f"b{i}", os.urandom(1000))
            assert linker.materialize(src, dst_dir / f"b{i}") is LinkMode.COPY
            assert (dst_dir / f"b{i}").read_bytes() == src.read_bytes()
    assert linker.decided is LinkMode.COPY
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert ENV_LINK_MODE in warnings[0].getMessage()
    assert "EPERM" in warnings[0].getMessage() and "ENOTTY" in warnings[0].getMessage()


def test_a_real_error_is_not_a_fallback(
    src_dir: Path, dst_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(src: Path, dst: Path) -> None:
        raise OSError(errno.EIO, "Input/output error", str(src))

    def no_clone(src_fd: int, dst_fd: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(linking, "clone_file", no_clone)
    monkeypatch.setattr(linking, "link_file", broken)
    src = _blob(src_dir, "a", b"data")
    linker = Linker("auto")
    with pytest.raises(StorageError, match="Input/output error"):
        linker.materialize(src, dst_dir / "a")
    assert linker.decided is None
    assert not (dst_dir / "a").exists()
    assert _no_temps(dst_dir)


def test_explicit_reflink_that_cannot_work_raises_link_error(
    src_dir: Path, dst_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_clone(src_fd: int, dst_fd: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(linking, "clone_file", no_clone)
    src = _blob(src_dir, "a", b"data")
    with pytest.raises(LinkError, match="--link-mode reflink") as info:
        materialize(src, dst_dir / "a", "reflink")
    assert "auto or copy" in str(info.value)
    assert not (dst_dir / "a").exists()
    assert _no_temps(dst_dir)


def test_reflink_without_a_known_ioctl_number_is_refused(
    src_dir: Path, dst_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linking, "FICLONE", None)
    src = _blob(src_dir, "a", b"data")
    with pytest.raises(LinkError, match="reflink"):
        materialize(src, dst_dir / "a", LinkMode.REFLINK)
    # auto moves on to the next mode instead
    assert materialize(src, dst_dir / "a", LinkMode.AUTO) in (LinkMode.HARDLINK, LinkMode.COPY)


def test_reflink_on_a_filesystem_without_it_is_refused_for_real(
    src_dir: Path, dst_dir: Path
) -> None:
    src = _blob(src_dir, "a", b"data")
    try:
        used = materialize(src, dst_dir / "a", LinkMode.REFLINK)
    except LinkError as e:
        assert "does not support reflinks" in str(e)
        assert not (dst_dir / "a").exists()
    else:  # the temp dir is on XFS/btrfs: then it must really be a clone
        assert used is LinkMode.REFLINK
        assert os.stat(dst_dir / "a").st_ino != os.stat(src).st_ino
    assert _no_temps(dst_dir)


# --- real cross-filesystem -------------------------------------------------------------------


def test_cross_filesystem_auto_copies_with_one_warning(
    src_dir: Path, other_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    linker = Linker(LinkMode.AUTO)
    with caplog.at_level(logging.WARNING, logger="hybridstore.store.linking"):
        for i in range(3):
            src = _blob(src_dir, f"b{i}", os.urandom(5000))
            assert linker.materialize(src, other_fs / f"b{i}") is LinkMode.COPY
            assert (other_fs / f"b{i}").read_bytes() == src.read_bytes()
            assert stat.S_IMODE(os.stat(other_fs / f"b{i}").st_mode) == 0o444
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "EXDEV" in warnings[0].getMessage()


def test_cross_filesystem_hardlink_is_a_clear_error(src_dir: Path, other_fs: Path) -> None:
    src = _blob(src_dir, "a", b"data")
    with pytest.raises(LinkError, match="different filesystems"):
        materialize(src, other_fs / "a", LinkMode.HARDLINK)
    assert not (other_fs / "a").exists()


def test_one_linker_shared_by_threads_decides_and_warns_once(
    src_dir: Path, dst_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def no_clone(src_fd: int, dst_fd: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    def no_link(src: Path, dst: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(linking, "clone_file", no_clone)
    monkeypatch.setattr(linking, "link_file", no_link)
    sources = [_blob(src_dir, f"b{i}", os.urandom(2000)) for i in range(16)]
    linker = Linker("auto")
    with caplog.at_level(logging.WARNING, logger="hybridstore.store.linking"):
        with ThreadPoolExecutor(8) as pool:
            used = list(pool.map(lambda s: linker.materialize(s, dst_dir / s.name), sources))
    assert used == [LinkMode.COPY] * len(sources)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert all((dst_dir / s.name).read_bytes() == s.read_bytes() for s in sources)
    assert _no_temps(dst_dir)
