"""Export an OCI image layout (or chosen refs) as one tar: carrying content across an air gap.

**Export** writes one OCI layout tar: ``oci-layout``, ``index.json`` (only the
chosen refs, sorted by name), ``blobs/``, ``blobs/<alg>/`` and every blob
reachable from those refs exactly once, each after the document that lists it
(the walk's order, refs by name), so an importer knows every blob's declared
size before its bytes arrive. It streams (memory does
not grow with the archive) and re-hashes every blob on the way out, so a damaged
layout is caught on this side of the gap, not the other. The same content always
gives byte-identical archives (``archive.tar`` fixes the metadata and the
format: pax). ``index.json`` is written before the blobs so a streaming reader
knows what to expect (skopeo writes it last; import takes both, and checks sizes
against descriptors only when it comes first).

skopeo reads the result as ``oci-archive:FILE:NAME`` where NAME is exactly the
``org.opencontainers.image.ref.name`` hybridstore records, i.e. the full
reference (``oci-archive:app.tar:registry.example.com/charts/app:1.2.3``;
skopeo splits at the first ``:``, so FILE must not contain one). With a single
ref NAME may be omitted. A bare tag does not match a full name.

Importing is ``archive.importer``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from hybridstore.archive.tar import (
    CHUNK,
    COMPRESSIONS,
    Compression,
    CountingWriter,
    TarWriter,
    Writable,
    compression_for,
    compressor,
)
from hybridstore.errors import (
    CorruptionError,
    HybridstoreError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
)
from hybridstore.fs.files import fsync_dir, storage_error
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import DigestVerifier
from hybridstore.oci.graph import complete_graph
from hybridstore.oci.model import Descriptor
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_files import LAYOUT_VERSION
from hybridstore.store.layout_refs import names_of

__all__ = [
    "COMPRESSIONS",
    "Compression",
    "ExportResult",
    "compression_for",
    "export_layout",
    "export_to_path",
]

log = logging.getLogger(__name__)

_LAYOUT_HEADER: Final = json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()


@dataclass
class ExportResult:
    refs: list[tuple[str, Descriptor]]
    blobs: int
    blob_bytes: int
    compression: Compression
    archive_bytes: int  # bytes written, after compression

    def to_json(self) -> dict[str, Any]:
        return {
            "refs": [{"name": n, "digest": str(d.digest)} for n, d in self.refs],
            "blobs": self.blobs,
            "blobBytes": self.blob_bytes,
            "compression": self.compression,
            "archiveBytes": self.archive_bytes,
        }


# --- export --------------------------------------------------------------------------------


def _select_refs(layout: OCILayout, names: Sequence[str]) -> list[tuple[str, Descriptor]]:
    """(name, index.json descriptor) for each ref to export, sorted by name."""
    chosen: dict[str, Descriptor] = {}
    if not names:
        for desc in layout.entries():
            found = names_of(desc)
            if found:
                chosen[found[0]] = desc
            else:
                log.warning("not exporting the unnamed index.json entry %s", desc.digest)
        if not chosen:
            raise NotFoundError(f"layout {layout.root} has no named refs to export")
    for name in names:
        desc = layout.resolve(name)
        found = names_of(desc)
        if not found:
            raise InvalidInputError(
                f"{name!r} is not a named ref in layout {layout.root}; name it first with "
                "`hybridstore tag`"
            )
        chosen[found[0]] = desc
    return sorted(chosen.items(), key=lambda item: item[0])


def export_layout(
    layout: OCILayout | str | os.PathLike[str],
    out: Writable,
    names: Sequence[str] = (),
    *,
    compression: Compression = "none",
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Write ``names`` (all named refs if empty) of ``layout`` to ``out`` as an OCI layout tar.

    ``out`` is only written to, front to back (a pipe works). Raises
    ``NotFoundError`` for an unknown ref or a blob the layout lacks, and
    ``CorruptionError`` for a blob that does not match its digest. ``progress`` is
    called with (blob bytes written so far, blob bytes in all) as the blobs stream.
    """
    source = layout if isinstance(layout, OCILayout) else OCILayout.open(layout)
    roots = _select_refs(source, names)

    def missing(ref: str, desc: Descriptor) -> HybridstoreError:
        return NotFoundError(
            f"cannot export {ref}: {desc.digest} ({desc.media_type}, {desc.size} bytes) is not "
            f"in layout {source.root}; pull the ref again (hybridstore layout verify shows more)"
        )

    blobs = complete_graph(roots, source.exists, source.read_blob, missing)
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    index["manifests"] = [desc.to_json() for _, desc in roots]
    index_bytes = json.dumps(index, separators=(",", ":"), ensure_ascii=False).encode()

    algorithms = sorted({desc.digest.path_components()[0] for desc in blobs})
    counted = CountingWriter(out)
    total = sum(d.size for d in blobs)
    done = 0

    def advance(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        if progress is not None:
            progress(done, total)

    with compressor(counted, compression) as sink:
        tar = TarWriter(sink)
        tar.file("oci-layout", len(_LAYOUT_HEADER), [_LAYOUT_HEADER])
        tar.file("index.json", len(index_bytes), [index_bytes])
        tar.directory("blobs/")
        for alg in algorithms:
            tar.directory(f"blobs/{alg}/")
        for desc in blobs:  # each after the document that lists it: import checks its size
            _export_blob(source, desc, tar, advance)
        tar.close()
    return ExportResult(
        refs=roots,
        blobs=len(blobs),
        blob_bytes=total,
        compression=compression,
        archive_bytes=counted.count,
    )


def _export_blob(
    layout: OCILayout, desc: Descriptor, tar: TarWriter, advance: Callable[[int], None]
) -> None:
    alg, enc = desc.digest.path_components()
    verifier = DigestVerifier(desc.digest, desc.size)

    def chunks(f: IO[bytes]) -> Iterator[bytes]:
        while chunk := f.read(CHUNK):
            verifier.update(chunk)
            advance(len(chunk))
            yield chunk

    try:
        with layout.fetch(desc) as f:
            tar.file(f"blobs/{alg}/{enc}", desc.size, chunks(f))
        verifier.verify()
    except IntegrityError as e:
        raise CorruptionError(
            f"blob {desc.digest} in layout {layout.root} is damaged ({e}); nothing usable was "
            "exported: run `hybridstore layout verify` and pull it again"
        ) from None


def export_to_path(
    layout: OCILayout | str | os.PathLike[str],
    path: str | os.PathLike[str],
    names: Sequence[str] = (),
    *,
    compression: Compression | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """``export_layout`` into a file that appears complete or not at all.

    ``compression`` defaults to what the file name says (``compression_for``).
    """
    target = Path(path)
    chosen = compression or compression_for(target.name)
    directory = target.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise storage_error(e, "create a file in", directory) from e
    try:
        with open(fd, "wb", buffering=CHUNK) as f:
            result = export_layout(layout, f, names, compression=chosen, progress=progress)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(directory)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, HybridstoreError):
            raise
        raise storage_error(e, "write", target) from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return result
