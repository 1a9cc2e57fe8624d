"""BlobCache basics: location, layout files, the path function, publishing and reading."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from test_cache_support import RecordingSource, blob_files, ingest_files

from hybridstore.errors import (
    CorruptionError,
    InvalidDigestError,
    InvalidInputError,
    NotFoundError,
    StorageError,
    UnsupportedAlgorithmError,
)
from hybridstore.oci.digest import Digest
from hybridstore.store.cache import LAYOUT_FILE, BlobCache, IngestResult
from hybridstore.store.cache_admin import cache_info

HEX = "a" * 64

# Strings that must never become a path: (text, why).
INVALID_DIGESTS = [
    ("sha256:../../x", "path traversal"),
    ("sha256:../../../../etc/passwd", "path traversal"),
    (f"sha256:{HEX.upper()}", "uppercase hex"),
    (f"sha256:{HEX[:63]}", "too short"),
    (f"sha256:{HEX}0", "too long"),
    (f"sha512:{HEX}", "sha512 with 64 characters"),
    (f"sha256:{HEX[:32]}\x00{HEX[:31]}", "NUL byte"),
    (f"sha256:{HEX[:60]}%2f..", "percent-encoded slash"),
    (f"sha256:{HEX[:62]}/x", "slash in the encoded part"),
    (f"sha256:{HEX}\n", "trailing newline"),
    (f" sha256:{HEX}", "leading space"),
    (f"SHA256:{HEX}", "uppercase algorithm"),
    (f"../sha256:{HEX}", "traversal in the algorithm"),
    (f"sha256/../x:{HEX}", "slash in the algorithm"),
    (f"sha256::{HEX}", "double colon"),
    (HEX, "no algorithm"),
    ("", "empty"),
]


@pytest.mark.parametrize(("text", "why"), INVALID_DIGESTS, ids=[w for _, w in INVALID_DIGESTS])
def test_invalid_digest_never_produces_a_path(tmp_path: Path, text: str, why: str) -> None:
    cache = BlobCache(tmp_path)
    with pytest.raises(InvalidDigestError):
        Digest.parse(text)
    # A Digest built by hand (bypassing parse) is re-validated by the path function.
    alg, _, enc = text.partition(":")
    with pytest.raises((InvalidDigestError, UnsupportedAlgorithmError)):
        cache.path(Digest(alg, enc))
    for method in (cache.exists, cache.open, cache.stat, cache.touch):
        with pytest.raises((InvalidDigestError, UnsupportedAlgorithmError)):
            method(Digest(alg, enc))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_unverifiable_algorithm_has_no_path_and_is_refused(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    blake3 = Digest.parse("blake3:" + HEX)  # grammatical and registered, but not computable here
    with pytest.raises(UnsupportedAlgorithmError):
        cache.path(blake3)
    with pytest.raises(UnsupportedAlgorithmError):
        cache.ingest_bytes(blake3, b"data")
    assert not (tmp_path / "c").exists()


def test_path_is_blobs_alg_encoded(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    d = Digest.parse("sha512:" + "b" * 128)
    assert cache.path(d) == tmp_path / "blobs" / "sha512" / ("b" * 128)


def test_default_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HYBRIDSTORE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert BlobCache.default_root() == tmp_path / "home" / ".cache" / "hybridstore"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert BlobCache.default_root() == tmp_path / "home" / ".cache" / "hybridstore"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert BlobCache.default_root() == tmp_path / "xdg" / "hybridstore"
    monkeypatch.setenv("HYBRIDSTORE_CACHE_DIR", str(tmp_path / "explicit"))
    assert BlobCache.default_root() == tmp_path / "explicit"
    assert BlobCache().root == tmp_path / "explicit"
    assert BlobCache(tmp_path / "arg").root == tmp_path / "arg"


def test_first_use_writes_layout_files(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = BlobCache(root)
    assert not root.exists()  # constructing touches nothing
    assert not cache.exists(Digest.of_bytes(b"x"))  # neither does reading
    assert not root.exists()
    cache.ingest_bytes(Digest.of_bytes(b"x"), b"x")
    assert json.loads((root / LAYOUT_FILE).read_text()) == {"cacheLayoutVersion": 1}
    assert (
        (root / "CACHEDIR.TAG")
        .read_bytes()
        .startswith(b"Signature: 8a477f597d28d172789f06886806bc55")
    )
    assert (root / ".gitignore").read_text().strip() == "*"
    assert (root / "ingest").is_dir()
    assert cache.check_layout() == 1


def test_existing_gitignore_is_kept(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("custom\n")
    BlobCache(tmp_path).ingest_bytes(Digest.of_bytes(b"x"), b"x")
    assert (tmp_path / ".gitignore").read_text() == "custom\n"


def test_newer_layout_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / LAYOUT_FILE).write_text('{"cacheLayoutVersion": 2}')
    cache = BlobCache(tmp_path)
    with pytest.raises(StorageError, match="layout version 2, newer") as e:
        cache.ingest_bytes(Digest.of_bytes(b"x"), b"x")
    assert "\n" not in str(e.value)
    with pytest.raises(StorageError, match="newer"):
        cache.exists(Digest.of_bytes(b"x"))
    with pytest.raises(StorageError, match="newer"):
        cache_info(cache)
    assert not (tmp_path / "blobs").exists()


def test_garbage_layout_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / LAYOUT_FILE).write_text("not json")
    with pytest.raises(CorruptionError, match="delete it"):
        BlobCache(tmp_path).ingest_bytes(Digest.of_bytes(b"x"), b"x")


def test_existing_oras_style_directory_is_a_cache(tmp_path: Path) -> None:
    data = b"written by another tool"
    d = Digest.of_bytes(data)
    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    (tmp_path / "blobs" / "sha256" / d.encoded).write_bytes(data)
    (tmp_path / "ingest").mkdir()
    cache = BlobCache(tmp_path)
    assert cache.exists(d, len(data))
    with cache.open(d) as f:
        assert f.read() == data
    assert [x for x, _ in cache.blobs()] == [d]
    source = RecordingSource(data)
    assert cache.ingest(d, len(data), source).fetched is False
    assert source.calls == []  # present: the source is never called
    other = b"new content"
    cache.ingest_bytes(Digest.of_bytes(other), other)
    assert (tmp_path / LAYOUT_FILE).exists()


def test_ingest_publishes_read_only_verified_blob(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = os.urandom(3 << 20) + b"tail"
    d = Digest.of_bytes(data)
    source = RecordingSource(data, chunk=100_000)
    r = cache.ingest(d, len(data), source)
    assert (r.fetched, r.size, r.bytes_transferred, r.resumed_from) == (
        True,
        len(data),
        len(data),
        0,
    )
    assert r.path == cache.path(d) and r.path.read_bytes() == data
    st = r.path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o444 and st.st_nlink == 1
    assert source.calls == [0]
    assert ingest_files(tmp_path) == []
    assert os.listdir(tmp_path / "locks") == []  # lock files go away with their holder
    again = cache.ingest(d, len(data), source)
    assert (again.fetched, again.bytes_transferred) == (False, 0)
    assert source.calls == [0]


def test_ingest_with_unknown_size(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = b"size not known in advance"
    r = cache.ingest(Digest.of_bytes(data), None, RecordingSource(data))
    assert r.size == len(data) and r.path.read_bytes() == data


def test_ingest_empty_blob_and_negative_size(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    empty = Digest.of_bytes(b"")
    assert cache.ingest_bytes(empty, b"").path.read_bytes() == b""
    with pytest.raises(InvalidInputError):
        cache.ingest(Digest.of_bytes(b"x"), -1, RecordingSource(b"x"))


def test_ingest_stream_seekable_resumes_from_partial(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = os.urandom(2 << 20)
    d = Digest.of_bytes(data)
    cache._prepare()
    cache.partial_path(d).write_bytes(data[:12345])
    src = tmp_path / "src"
    src.write_bytes(b"junk" + data)
    with open(src, "rb") as f:
        f.seek(4)
        r = cache.ingest_stream(d, len(data), f)
    assert (r.resumed_from, r.bytes_transferred) == (12345, len(data) - 12345)
    assert r.path.read_bytes() == data


def test_a_complete_partial_left_long_ago_is_published_as_used_now(tmp_path: Path) -> None:
    """Nothing is written to it, so only an explicit utime keeps prune from taking it as unused."""
    cache = BlobCache(tmp_path)
    data = b"finished by a writer killed before it published"
    d = Digest.of_bytes(data)
    cache._prepare()
    partial = cache.partial_path(d)
    partial.write_bytes(data)
    os.utime(partial, (1_000_000, 1_000_000))
    source = RecordingSource(data)
    r = cache.ingest(d, len(data), source)
    assert source.calls == [] and r.bytes_transferred == 0 and r.resumed_from == len(data)
    assert r.path.read_bytes() == data
    assert r.path.stat().st_mtime > 1_000_000


def test_exists_checks_size_and_sets_corrupt_files_aside(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = b"good content"
    d = Digest.of_bytes(data)
    path = cache.ingest_bytes(d, data).path
    link = tmp_path / "layout-link"
    os.link(path, link)
    # The caller's size is wrong: answer no, leave the good blob alone.
    assert not cache.exists(d, len(data) + 1)
    assert path.read_bytes() == data
    # The file is wrong (tampered, different length): answer no and move it aside.
    path.chmod(0o644)
    path.write_bytes(b"tampered, longer content")
    assert not cache.exists(d, len(data))
    assert not path.exists()
    quarantined = list((tmp_path / "quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].read_bytes() == b"tampered, longer content"
    # The next ingest fetches it again; the layout's link still has the (bad) old inode.
    assert cache.ingest_bytes(d, data).fetched
    assert path.read_bytes() == data
    assert not os.path.samefile(path, link)


def test_symlink_in_blobs_is_not_a_blob(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = b"target"
    d = Digest.of_bytes(data)
    (tmp_path / "elsewhere").write_bytes(data)
    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere", cache.path(d))
    assert not cache.exists(d)
    assert cache.ingest_bytes(d, data).fetched
    assert not cache.path(d).is_symlink()


def test_open_stat_touch_absent(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    d = Digest.of_bytes(b"absent")
    for method in (cache.open, cache.stat, cache.touch):
        with pytest.raises(NotFoundError, match="not in the cache"):
            method(d)


def test_touch_records_a_use(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = b"used"
    d = Digest.of_bytes(data)
    path = cache.ingest_bytes(d, data).path
    os.utime(path, (1_000_000, 1_000_000))
    cache.touch(d)
    assert path.stat().st_mtime > 1_000_000
    os.utime(path, (1_000_000, 1_000_000))
    cache.ingest_bytes(d, data)  # a cache hit is a use
    assert path.stat().st_mtime > 1_000_000


def test_losing_the_publish_race_records_a_use(tmp_path: Path) -> None:
    """A writer that finds the blob published meanwhile (EEXIST) hands out that inode: touch it.

    Otherwise a blob published long ago, then used, would look unused to prune.
    """
    cache = BlobCache(tmp_path)
    data = b"published by someone else first"
    d = Digest.of_bytes(data)
    other = tmp_path / "other-writer"

    def source(offset: int) -> tuple[int, list[bytes]]:
        other.write_bytes(data)  # another writer publishes the same blob meanwhile...
        cache.path(d).parent.mkdir(parents=True, exist_ok=True)
        os.link(other, cache.path(d))
        os.utime(other, (1_000_000, 1_000_000))  # ...and by its mtime nobody used it since
        return offset, [data[offset:]]

    r = cache.ingest(d, len(data), source)
    assert r.fetched and os.path.samefile(r.path, other)  # linked first wins, never replaced
    assert r.path.stat().st_mtime > 1_000_000
    assert ingest_files(tmp_path) == []


def test_blobs_lists_only_valid_regular_files(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    ds = [cache.ingest_bytes(Digest.of_bytes(b), b).digest for b in (b"a", b"b")]
    (tmp_path / "blobs" / "sha256" / "not-a-digest").write_bytes(b"?")
    (tmp_path / "blobs" / "blake3").mkdir()
    assert sorted(d for d, _ in cache.blobs()) == sorted(ds)
    assert len(blob_files(tmp_path)) == 3


def test_hit_records_a_use_and_answers_as_ingest_would(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = b"a cache hit"
    d = Digest.of_bytes(data)
    assert cache.hit(d, len(data)) is None
    path = cache.ingest_bytes(d, data).path
    os.utime(path, (1_000_000, 1_000_000))
    assert cache.hit(d, len(data)) == IngestResult(d, len(data), path, False, 0, 0)
    assert path.stat().st_mtime > 1_000_000  # a hit is a use
    assert cache.hit(d) is not None  # size unknown: any size
    assert cache.hit(d, len(data) + 1) is None  # the descriptor is wrong: not a hit
    assert path.exists()  # ...and the (good) blob stays
