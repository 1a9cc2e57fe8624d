"""Tar streams for layout archives: a deterministic writer and a defensive reader.

Both work front to back on streams (pipes, stdin, stdout) with memory that does
not grow with the archive. ``archive`` gives the members their OCI meaning.

Writer: POSIX pax format (``tarfile.PAX_FORMAT``). A member that fits plain
ustar gets a plain ustar header; a pax extended header is added only for what
ustar cannot hold (sha512 names are 141 characters, members of 8 GiB or more).
GNU tar, bsdtar, Go's ``archive/tar`` (skopeo, containerd) and Python all read
it; plain ustar could not hold those members and the GNU format is not a
standard. Every header carries fixed metadata (mtime 0, uid/gid 0, empty owner
names, mode 0644/0755); gzip is written with mtime 0 and no file name, zstd
single-threaded, so equal input gives equal bytes.

Reader: hand-written on purpose. ``tarfile`` reads pax and GNU long-name
records whole into memory whatever size they declare, and its extraction
filters have had bypasses (CVE-2007-4559, the 2024-2026 series), so this walks
the headers itself (``tarfile.TarInfo.frombuf`` still parses and checksums each
512-byte block), caps every extended record, counts entries and bytes, accepts
only regular files and directories with plain relative names, and never
creates anything on disk. Compression (gzip, zstd) is detected from the magic
number.
"""

from __future__ import annotations

import contextlib
import gzip
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final, Literal, Protocol, cast

from hybridstore.errors import CorruptionError, InvalidArchiveError, InvalidInputError

__all__ = [
    "COMPRESSIONS",
    "CHUNK",
    "Compression",
    "CountingWriter",
    "Member",
    "RATIO_SLACK",
    "Readable",
    "TarReader",
    "TarSource",
    "TarWriter",
    "Writable",
    "compression_for",
    "compressor",
    "quoted",
]

Compression = Literal["none", "gzip", "zstd"]
COMPRESSIONS: Final[tuple[Compression, ...]] = ("none", "gzip", "zstd")

CHUNK: Final = 1 << 20
_BLOCK: Final = 512
_RECORD: Final = 20 * _BLOCK  # GNU tar pads the archive to whole 10 KiB records; so do we
_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_GZIP_LEVEL: Final = 6  # gzip(1)'s default: most of level 9's ratio at a fraction of the time
_ZSTD_LEVEL: Final = 3  # zstd(1)'s default
_MAX_PAX_RECORDS: Final = 64 << 10
_MAX_LONG_NAME: Final = 4096


def compression_for(path: str) -> Compression:
    """The compression a file name asks for: ``.gz``/``.tgz`` gzip, ``.zst``/``.tzst`` zstd."""
    lower = path.lower()
    if lower.endswith((".gz", ".tgz")):
        return "gzip"
    if lower.endswith((".zst", ".zstd", ".tzst")):
        return "zstd"
    return "none"


# --- writing ---------------------------------------------------------------------------------


class Writable(Protocol):
    def write(self, data: bytes, /) -> int | None: ...


class CountingWriter:
    """Counts what reaches the real output (the archive's size after compression)."""

    def __init__(self, out: Writable) -> None:
        self.out = out
        self.count = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.count += len(data)
        return len(data)


@contextlib.contextmanager
def compressor(out: CountingWriter, compression: Compression) -> Iterator[Writable]:
    """A writer that compresses into ``out``; the trailer is written only on success."""
    if compression == "none":
        yield out
    elif compression == "gzip":
        # filename="" and mtime=0: nothing about this run ends up in the header.
        gz = gzip.GzipFile(
            filename="", mode="wb", fileobj=cast(IO[bytes], out), compresslevel=_GZIP_LEVEL,
            mtime=0,
        )  # fmt: skip
        yield gz
        gz.close()  # writes the trailer; never closes ``out``
    elif compression == "zstd":
        zstd = _zstandard()
        writer = zstd.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True).stream_writer(
            cast(IO[bytes], out), closefd=False
        )
        yield writer
        writer.close()
    else:
        raise InvalidInputError(
            f"unknown compression {compression!r} (use {', '.join(COMPRESSIONS)})"
        )


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a declared dependency
        raise InvalidInputError(
            "zstd archives need the 'zstandard' package: pip install zstandard"
        ) from None
    return zstandard


def _header(name: str, size: int, kind: bytes) -> bytes:
    """One member's header with the fixed metadata that makes archives reproducible."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


class TarWriter:
    """Writes tar members straight to a stream (``tarfile`` in stream mode copies in 16 KiB
    pieces through two buffers; here blob chunks go out as they are read)."""

    def __init__(self, out: Writable) -> None:
        self.out = out
        self.size = 0

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.size += len(data)

    def directory(self, name: str) -> None:
        self._write(_header(name, 0, tarfile.DIRTYPE))

    def file(self, name: str, size: int, chunks: Iterable[bytes]) -> None:
        self._write(_header(name, size, tarfile.REGTYPE))
        written = 0
        for chunk in chunks:
            written += len(chunk)
            if written > size:
                raise CorruptionError(f"{name} grew while it was being exported")
            self._write(chunk)
        if written != size:
            raise CorruptionError(f"{name} shrank while it was being exported")
        self._write(b"\0" * (-size % _BLOCK))

    def close(self) -> None:
        end = self.size + 2 * _BLOCK
        self._write(b"\0" * (2 * _BLOCK + (-end % _RECORD)))


# --- reading ---------------------------------------------------------------------------------


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


# Uncompressed bytes any compressed archive may expand to beyond its ratio cap.
RATIO_SLACK: Final = 64 << 20


class _Prefixed:
    """A stream with bytes already read from it (the magic number) put back in front;
    counts the bytes that came from the underlying stream (compressed, if it is)."""

    def __init__(self, prefix: bytes, rest: Readable) -> None:
        self.prefix = prefix
        self.rest = rest
        self.count = len(prefix)

    def read(self, size: int = -1) -> bytes:
        if self.prefix:
            if size < 0:
                rest = self.rest.read()
                self.count += len(rest)
                data, self.prefix = self.prefix + rest, b""
                return data
            data, self.prefix = self.prefix[:size], self.prefix[size:]
            return data
        data = self.rest.read(size)
        self.count += len(data)
        return data


def _read_upto(stream: Readable, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class TarSource:
    """The uncompressed tar stream: counts bytes against ``max_size``, names decode errors.

    A compressed archive may also expand to at most ``max_ratio`` times the compressed
    bytes read so far, plus ``RATIO_SLACK`` (small archives of tiny files are mostly
    padding and compress far better): a cap proportionate to the archive, where a fixed
    ``max_size`` alone would let a few megabytes of zeros fill the disk first.
    """

    def __init__(self, raw: Readable, max_size: int, max_ratio: int | None = None) -> None:
        magic = _read_upto(raw, 4)
        self.raw = _Prefixed(magic, raw)
        stream: Readable = self.raw
        self.errors: tuple[type[BaseException], ...] = ()
        self.compression: Compression = "none"
        if magic.startswith(_GZIP_MAGIC):
            self.compression = "gzip"
            stream = gzip.GzipFile(fileobj=cast(IO[bytes], stream), mode="rb")
            self.errors = (gzip.BadGzipFile, EOFError, zlib.error)
        elif magic == _ZSTD_MAGIC:
            zstd = _zstandard()
            self.compression = "zstd"
            # The default decompressor refuses windows over 128 MiB: bounded memory.
            stream = zstd.ZstdDecompressor().stream_reader(
                cast(IO[bytes], stream), read_across_frames=True
            )
            self.errors = (zstd.ZstdError, EOFError)
        self.stream = stream
        self.max_size = max_size
        self.max_ratio = max_ratio if self.compression != "none" else None
        self.count = 0

    def read(self, n: int) -> bytes:
        try:
            data = self.stream.read(n)
        except self.errors as e:
            raise InvalidArchiveError(
                f"the archive's {self.compression} stream is damaged or truncated ({e})"
            ) from None
        self.count += len(data)
        if self.count > self.max_size:
            raise InvalidArchiveError(
                f"the archive holds more than {self.max_size} bytes (uncompressed), the import "
                "limit; raise it with --max-size if the archive is genuine"
            )
        ratio = self.max_ratio
        if ratio is not None and self.count > ratio * self.raw.count + RATIO_SLACK:
            raise InvalidArchiveError(
                f"the archive expands more than {self.max_ratio} times ({self.count} bytes from "
                f"{self.raw.count} {self.compression} bytes), the import limit for compressed "
                "archives; raise it with --max-ratio if the archive is genuine"
            )
        return data

    def read_exact(self, n: int) -> bytes:
        """``n`` bytes, or fewer only at the end of the stream."""
        data = self.read(n)
        if len(data) == n or not data:
            return data
        parts = [data]
        got = len(data)
        while got < n:
            chunk = self.read(min(n - got, CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)


@dataclass(frozen=True)
class Member:
    name: str  # normalised: no "./" prefix, no trailing "/"; "" is the archive root
    is_dir: bool
    size: int


_REFUSED_TYPES: Final = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
    tarfile.GNUTYPE_LONGLINK: "a long link name",
    tarfile.XGLTYPE: "a pax global header",
}


def quoted(name: str) -> str:
    return repr(name if len(name) <= 120 else name[:120] + "...")


def _raw_name(block: bytes) -> str:
    """The name as written in a header: ustar ``prefix/name``, undecorated by ``tarfile``."""
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0":  # POSIX; the old GNU magic has no prefix field
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _normalise(raw: str, is_dir: bool) -> str:
    """Check a member name is a plain relative path inside the archive; strip ``./``."""
    if raw == "":
        raise InvalidArchiveError("the archive has an entry with an empty name; refusing it")
    if raw.startswith("/"):
        raise InvalidArchiveError(f"archive entry {quoted(raw)} has an absolute name; refusing it")
    parts = raw.split("/")
    if parts[0] == ".":
        parts = parts[1:]
    if parts and parts[-1] == "" and is_dir:
        parts = parts[:-1]
    if ".." in parts:
        raise InvalidArchiveError(f"archive entry {quoted(raw)} climbs out with '..'; refusing it")
    if any(p in ("", ".") or "\\" in p for p in parts):
        raise InvalidArchiveError(
            f"archive entry {quoted(raw)} has an empty, '.' or backslash path component; "
            "refusing it"
        )
    if not parts and not is_dir:
        raise InvalidArchiveError(f"archive entry {quoted(raw)} names the archive root as a file")
    return "/".join(parts)


def _parse_pax(data: bytes) -> dict[str, str]:
    """pax extended header records (``"%d %s=%s\\n"``), strictly."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if not data[pos:].strip(b"\0"):
            break
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise InvalidArchiveError("the archive has a malformed pax header; refusing it")
        end = pos + int(digits)
        if end > len(data) or end <= space + 1 or data[end - 1 : end] != b"\n":
            raise InvalidArchiveError("the archive has a malformed pax record; refusing it")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise InvalidArchiveError("the archive has a pax record without '='; refusing it")
        k = key.decode("utf-8", "surrogateescape")
        if value:
            out[k] = value.decode("utf-8", "surrogateescape")
        else:
            out.pop(k, None)  # an empty value removes the keyword
        pos = end
    return out


class TarReader:
    """Iterates the members of a tar stream; call ``chunks()`` to read the current one.

    The data of a member not (fully) read is skipped before the next header.
    Counts every header (pax records too) against ``max_entries``; refuses a
    duplicate name and
    every entry type but regular files and directories.
    """

    def __init__(self, source: TarSource, max_entries: int) -> None:
        self.source = source
        self.max_entries = max_entries
        self.entries = 0
        self._remaining = 0
        self._padding = 0
        self._names: set[str] = set()

    def __iter__(self) -> Iterator[Member]:
        while True:
            self._skip_rest()
            member = self._next()
            if member is None:
                return
            yield member

    def chunks(self) -> Iterator[bytes]:
        """The current member's data, in pieces; raises if the archive ends early."""
        while self._remaining:
            chunk = self.source.read(min(self._remaining, CHUNK))
            if not chunk:
                raise InvalidArchiveError(
                    "the archive ends in the middle of a member (truncated download?)"
                )
            self._remaining -= len(chunk)
            yield chunk

    def read_member(self) -> bytes:
        return b"".join(self.chunks())

    def _skip_rest(self) -> None:
        for _ in self.chunks():
            pass
        if self._padding:
            pad, self._padding = self._padding, 0
            if len(self.source.read_exact(pad)) != pad:
                raise InvalidArchiveError("the archive ends in the middle of a member")

    def _meta(self, size: int, cap: int, what: str) -> bytes:
        if size > cap:
            raise InvalidArchiveError(
                f"the archive has a {size}-byte {what}, over the {cap}-byte limit; refusing it"
            )
        data = self.source.read_exact(size)
        if len(data) != size:
            raise InvalidArchiveError(f"the archive ends inside a {what}")
        pad = -size % _BLOCK
        if len(self.source.read_exact(pad)) != pad:
            raise InvalidArchiveError(f"the archive ends inside a {what}")
        return data

    def _next(self) -> Member | None:
        pax: dict[str, str] = {}
        long_name: str | None = None
        while True:
            block = self.source.read_exact(_BLOCK)
            if not block or block == b"\0" * _BLOCK:
                if pax or long_name is not None:
                    raise InvalidArchiveError("the archive ends after an extended header")
                return None  # end-of-archive marker (or a stream cut at a member boundary)
            if len(block) != _BLOCK:
                raise InvalidArchiveError("the archive ends in the middle of a tar header")
            self.entries += 1
            if self.entries > self.max_entries:
                raise InvalidArchiveError(
                    f"the archive has more than {self.max_entries} entries, the import "
                    "limit; raise it with --max-entries if the archive is genuine"
                )
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as e:
                raise InvalidArchiveError(
                    f"not a tar archive, or damaged at entry {self.entries} ({e})"
                ) from None
            kind = block[156:157]
            if kind == tarfile.XHDTYPE:
                pax.update(_parse_pax(self._meta(info.size, _MAX_PAX_RECORDS, "pax header")))
                continue
            if kind == tarfile.GNUTYPE_LONGNAME:
                data = self._meta(info.size, _MAX_LONG_NAME, "GNU long name")
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                continue
            raw = pax.get("path", long_name if long_name is not None else _raw_name(block))
            return self._member(raw, kind, info, pax)

    def _member(self, raw: str, kind: bytes, info: tarfile.TarInfo, pax: dict[str, str]) -> Member:
        if kind in _REFUSED_TYPES or any(k.startswith("GNU.sparse") for k in pax):
            what = _REFUSED_TYPES.get(kind, "a sparse file")
            target = f" to {quoted(info.linkname)}" if kind in (b"1", b"2") else ""
            raise InvalidArchiveError(
                f"archive entry {quoted(raw)} is {what}{target}; layout archives hold only "
                "regular files and directories, refusing it"
            )
        if kind in (tarfile.REGTYPE, tarfile.AREGTYPE):
            is_dir = kind == tarfile.AREGTYPE and raw.endswith("/")  # pre-POSIX directories
        elif kind == tarfile.DIRTYPE:
            is_dir = True
        else:
            raise InvalidArchiveError(
                f"archive entry {quoted(raw)} has the unsupported tar type {kind!r}; refusing it"
            )
        size = info.size
        if "size" in pax:
            if not pax["size"].isdigit():
                raise InvalidArchiveError(f"archive entry {quoted(raw)} has a malformed pax size")
            size = int(pax["size"])
        if size < 0 or (is_dir and size):
            raise InvalidArchiveError(f"archive entry {quoted(raw)} has an impossible size {size}")
        name = _normalise(raw, is_dir)
        key = name + "/" if is_dir else name
        if key in self._names:
            raise InvalidArchiveError(f"archive entry {quoted(raw)} appears twice; refusing it")
        self._names.add(key)
        if self.source.count + size > self.source.max_size:
            raise InvalidArchiveError(
                f"archive entry {quoted(raw)} declares {size} bytes, beyond the import limit of "
                f"{self.source.max_size} bytes; raise it with --max-size if the archive is genuine"
            )
        self._remaining, self._padding = size, -size % _BLOCK
        return Member(name, is_dir, size)
