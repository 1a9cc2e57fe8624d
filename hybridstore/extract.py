"""``hybridstore.extract``: an artifact's files out of a layout or a registry.

Example::

    from hybridstore.extract import extract
    extract("app:1.2.3", layout="./charts", output="./vendor")          # app-1.2.3.tgz
    extract("registry.example.com/tools/cfg:1", output="./cfg")          # titled files

ORAS pull semantics: every layer with an ``org.opencontainers.image.title``
becomes a file of that name (``io.deis.oras.content.unpack`` layers are
unpacked as the directory they were packed from); layers without a title are
skipped. A Helm chart becomes ``<name>-<version>.tgz`` (plus ``.prov``) as
``helm pull`` writes it, or with ``untar`` the unpacked chart directory.

Every name is checked before anything is written (``safepath``), and a
hostile one refuses the whole extraction: nothing is written at all. Blobs are
digest-verified as they are written; from a registry they come through the
shared cache. Unpacking happens in a staging directory inside the output and
is moved into place only when complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from hybridstore.archive.untar import UntarLimits, untar
from hybridstore.errors import InvalidDocumentError, NotFoundError, UnsafePathError
from hybridstore.fs.safepath import ConfinedDir, check_relative_path
from hybridstore.oci.digest import DigestVerifier
from hybridstore.oci.helm import ChartInfo, chart_info, chart_layers, is_chart
from hybridstore.oci.limits import MAX_CHART_CONFIG_BYTES, MAX_DOCUMENT_BYTES
from hybridstore.oci.model import (
    ANNOTATION_TITLE,
    Descriptor,
    Index,
    Manifest,
    Platform,
    parse_document,
)
from hybridstore.oci.platforms import select_platforms
from hybridstore.remote.credentials import Credential
from hybridstore.remote.transport import TransportOptions
from hybridstore.store.cache import CHUNK_SIZE, BlobCache
from hybridstore.transfer.endpoint import Progress, Source
from hybridstore.transfer.open import open_source

__all__ = ["ExtractResult", "ExtractedFile", "extract"]

ORAS_UNPACK = "io.deis.oras.content.unpack"


@dataclass(frozen=True)
class ExtractedFile:
    path: str
    """Relative to the output directory (a directory for unpacked layers)."""
    digest: str
    size: int
    media_type: str


@dataclass
class ExtractResult:
    reference: str
    digest: str
    output: str
    chart: ChartInfo | None = None
    files: list[ExtractedFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Digests of layers without a title (not extracted)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "output": self.output,
            "chart": self.chart.to_json() if self.chart else None,
            "files": [f.__dict__ for f in self.files],
            "skipped": list(self.skipped),
        }


@dataclass(frozen=True)
class _Job:
    desc: Descriptor
    name: str
    unpack: bool
    chart: bool = False


def extract(
    ref: str | None,
    *,
    output: str | os.PathLike[str],
    layout: str | os.PathLike[str] | None = None,
    untar_chart: bool = False,
    platform: str | Platform | None = None,
    cache: str | os.PathLike[str] | BlobCache | None = None,
    transport: TransportOptions | None = None,
    credential: Credential | None = None,
    manifest_limit: int = MAX_DOCUMENT_BYTES,
    limits: UntarLimits | None = None,
) -> ExtractResult:
    """Extract ``ref`` (from a registry, or the layout ref ``ref`` of ``layout``) into
    ``output``; see the module docstring."""
    blob_cache = cache if isinstance(cache, BlobCache) else BlobCache(cache)
    with open_source(
        ref,
        layout=layout,
        cache=blob_cache if layout is None else None,
        transport=transport,
        credential=credential,
        manifest_limit=manifest_limit,
    ) as opened:
        src = opened.source
        desc, doc = _manifest(src, src.resolve(opened.ref), platform)
        result = ExtractResult(opened.display, str(desc.digest), str(output))
        if is_chart(doc):
            result.chart = chart_info(src.read_blob(doc.config, MAX_CHART_CONFIG_BYTES))
            jobs = _chart_jobs(doc, result.chart, untar_chart)
        else:
            jobs = _file_jobs(doc, result)
        if not jobs:
            raise NotFoundError(
                f"{opened.display} has no layer with an {ANNOTATION_TITLE} annotation; "
                "nothing to extract"
            )
        with ConfinedDir(output) as out:
            for job in jobs:  # every name is checked before anything is written
                out.check(check_relative_path(job.name, "layer title"), "layer title")
            for job in jobs:
                _run(src, blob_cache, job, out, limits)
                result.files.append(
                    ExtractedFile(
                        job.name, str(job.desc.digest), job.desc.size, job.desc.media_type
                    )
                )
        return result


def _manifest(
    src: Source, desc: Descriptor, platform: str | Platform | None
) -> tuple[Descriptor, Manifest]:
    """The manifest to extract: ``desc`` itself, or one child of an index."""
    doc = parse_document(src.document(desc), desc.media_type)
    if isinstance(doc, Index):
        wanted = [Platform.parse(platform) if isinstance(platform, str) else platform]
        chosen = select_platforms(doc, [w for w in wanted if w], all_platforms=False)
        if len(chosen) != 1:
            raise InvalidDocumentError(
                f"{desc.digest} is an index of {len(chosen)} manifests; choose one with "
                "--platform (or extract it by digest)"
            )
        desc = chosen[0]
        doc = parse_document(src.document(desc), desc.media_type)
    if not isinstance(doc, Manifest):
        raise InvalidDocumentError(f"{desc.digest} is a nested index; extract a manifest")
    return desc, doc


def _chart_jobs(doc: Manifest, chart: ChartInfo, unpack: bool) -> list[_Job]:
    layer, prov = chart_layers(doc)
    if unpack:
        return [_Job(layer, chart.name, True, chart=True)]
    jobs = [_Job(layer, chart.filename, False)]
    if prov is not None:
        jobs.append(_Job(prov, chart.filename + ".prov", False))
    return jobs


def _file_jobs(doc: Manifest, result: ExtractResult) -> list[_Job]:
    jobs: list[_Job] = []
    names: set[str] = set()
    for layer in doc.layers:
        title = layer.annotations.get(ANNOTATION_TITLE)
        if title is None:
            result.skipped.append(str(layer.digest))
            continue
        check_relative_path(title, "layer title")
        if title in names:
            raise UnsafePathError(f"refusing layer title {title!r}: two layers have it")
        names.add(title)
        unpack = layer.annotations.get(ORAS_UNPACK) == "true"
        jobs.append(_Job(layer, title, unpack))
    return jobs


def _run(
    src: Source, cache: BlobCache, job: _Job, out: ConfinedDir, limits: UntarLimits | None
) -> None:
    parts = check_relative_path(job.name, "layer title")
    with _open_blob(src, cache, job.desc) as f:
        if not job.unpack:
            out.write(parts, _verified(f, job.desc), "layer title")
            return
        _verify_file(f, job.desc)
        _unpack(f, job, out, limits)


def _unpack(f: IO[bytes], job: _Job, out: ConfinedDir, limits: UntarLimits | None) -> None:
    """Unpack into a staging directory inside ``out``, then move the result into place."""
    staging_name = f".hybridstore-extract-{secrets.token_hex(6)}"
    staging_path = out.root / staging_name
    out.mkdir((staging_name,), "staging directory")
    try:
        with ConfinedDir(staging_path) as staging:
            untar(f, staging, f"layer {job.desc.digest.short} ({job.name})", limits)
            entries = sorted(os.listdir(staging.fd))
            if job.chart and len(entries) != 1:
                raise InvalidDocumentError(
                    f"chart archive {job.desc.digest.short} has {len(entries)} top-level "
                    "entries; a packaged chart has exactly one directory"
                )
            if not job.chart and entries != [job.name]:
                raise InvalidDocumentError(
                    f"directory layer {job.name!r} unpacks to {entries[:5]}; it must unpack "
                    f"to one directory named {job.name!r}"
                )
            for name in entries:
                out.check((name,), "archive entry")
                if out.exists(name):
                    raise UnsafePathError(
                        f"{out.root / name} already exists; remove it or extract elsewhere"
                    )
            for name in entries:
                staging.rename_into(name, out)
    finally:
        shutil.rmtree(staging_path, ignore_errors=True)


@contextlib.contextmanager
def _open_blob(src: Source, cache: BlobCache, desc: Descriptor) -> Iterator[IO[bytes]]:
    """The blob as a local file: the source's own (a layout) or the cache's (a registry)."""
    opener = src.opener(desc)
    if opener is None:
        cache.ingest(desc.digest, desc.size, src.blob_source(desc, Progress()))
        with cache.open(desc.digest) as f:
            yield f
        return
    with opener() as f:
        yield f


def _verified(f: IO[bytes], desc: Descriptor) -> Iterator[bytes]:
    """The file's bytes, failing at the end unless they are exactly ``desc``."""
    verifier = DigestVerifier(desc.digest, desc.size)
    while chunk := f.read(CHUNK_SIZE):
        verifier.update(chunk)
        yield chunk
    verifier.verify()


def _verify_file(f: IO[bytes], desc: Descriptor) -> None:
    for _ in _verified(f, desc):
        pass
    f.seek(0)
