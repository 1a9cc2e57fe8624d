"""Safe extraction of a (gzipped) tar into a ``ConfinedDir``: charts and ORAS directories.

Never ``extractall``: the ``tarfile`` data filter has had bypasses through
2026 (python/cpython#135034 and later). Members are iterated one by one as a
stream; only regular files and directories are accepted, their names must pass
``check_relative_path``, and every write goes through ``ConfinedDir`` (no
symlink below the root is followed). Symlinks, hard links, devices and FIFOs
are refused, not skipped: a chart or artifact that needs them is not one we
should unpack. Decompression bombs are stopped by caps on the expanded bytes
(counted as they are produced, not as the headers claim) and on the number of
entries (CVE-2025-32386).
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Final, cast

from hybridstore.errors import HybridstoreError, InvalidDocumentError, UnsafePathError
from hybridstore.fs.safepath import ConfinedDir, check_relative_path

__all__ = ["UntarLimits", "untar"]

_CHUNK: Final = 1 << 20
_GZIP_MAGIC: Final = b"\x1f\x8b"


@dataclass(frozen=True)
class UntarLimits:
    """Caps on what one archive may expand to (Helm caps charts at 100 MiB)."""

    max_bytes: int = 100 << 20
    max_entries: int = 10_000


class _Capped:
    """A read-only stream that fails once more than ``limit`` bytes came out of it."""

    def __init__(self, raw: IO[bytes], limit: int, what: str) -> None:
        self.raw = raw
        self.limit = limit
        self.what = what
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        want = self.limit + 1 - self.count if size is None or size < 0 else size
        data = self.raw.read(max(0, min(want, self.limit + 1 - self.count)))
        self.count += len(data)
        if self.count > self.limit:
            raise InvalidDocumentError(
                f"{self.what} expands to more than {self.limit} bytes; refusing it "
                "(a decompression bomb, or raise the limit)"
            )
        return data


def untar(
    stream: IO[bytes], dest: ConfinedDir, what: str, limits: UntarLimits | None = None
) -> list[str]:
    """Extract ``stream`` (tar or tar+gzip, detected) into ``dest``; returns the files."""
    limits = limits or UntarLimits()
    head = stream.read(2)
    stream.seek(0)
    raw: IO[bytes] = (
        cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb")) if head == _GZIP_MAGIC else stream
    )
    # Headers and padding count too, so allow a little over the file-data cap.
    capped = _Capped(raw, limits.max_bytes + 512 * (limits.max_entries + 2) + 10240, what)
    written: list[str] = []
    entries = 0
    data_bytes = 0
    try:
        with tarfile.open(fileobj=cast(IO[bytes], capped), mode="r|") as tar:
            for member in tar:
                entries += 1
                if entries > limits.max_entries:
                    raise InvalidDocumentError(
                        f"{what} has more than {limits.max_entries} entries; refusing it"
                    )
                name = member.name.removeprefix("./").rstrip("/")
                if member.isdir():
                    if name:
                        dest.mkdir(check_relative_path(name, f"entry of {what}"), what)
                    continue
                if not member.isreg():
                    kind = "link" if member.issym() or member.islnk() else "special file"
                    raise UnsafePathError(
                        f"refusing {what}: entry {member.name[:100]!r} is a {kind}; only "
                        "regular files and directories are extracted"
                    )
                parts = check_relative_path(name, f"entry of {what}")
                source = tar.extractfile(member)
                assert source is not None  # a regular member always has data
                mode = 0o755 if member.mode & 0o111 else 0o644
                budget = limits.max_bytes - data_bytes
                too_big = (
                    f"{what} expands to more than {limits.max_bytes} bytes; refusing it (a "
                    "decompression bomb, or raise --max-expanded-size)"
                )
                data_bytes += dest.write(
                    parts, _chunks(source, budget, too_big), f"entry of {what}", mode
                )
                written.append("/".join(parts))
    except HybridstoreError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InvalidDocumentError(f"{what} is not a valid tar archive: {e}") from None
    return written


def _chunks(f: IO[bytes], budget: int, too_big: str) -> Iterator[bytes]:
    """The member's bytes, stopping (before writing them) once ``budget`` is exceeded."""
    while chunk := f.read(_CHUNK):
        budget -= len(chunk)
        if budget < 0:
            raise InvalidDocumentError(too_big)
        yield chunk
