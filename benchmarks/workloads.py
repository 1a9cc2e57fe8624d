"""The benchmark workloads of issue 8, generated deterministically and pushed once.

Content comes from the tests' own builder and raw pusher
(``tests/support/oci_builder.py``), so the benchmark and the tests agree on
what an image is; ``run.py`` puts ``tests/`` on ``sys.path`` for that.

Bytes are incompressible and seeded: ``shake_256(key)`` stretched to the
size (about 3x faster than ``random.randbytes``, which also cannot produce
512 MiB in one call). Image layers are real ``tar`` archives wrapped in
*stored* (level 0) gzip: the media type is the usual ``tar+gzip`` and skopeo
sees a compressed stream, so it copies the layer as it is instead of
recompressing it (with a plain ``tar`` layer, ``skopeo copy ... oci:`` gzips
it and changes every digest, which would time gzip, not pulling).

``--scale`` multiplies sizes, never counts: ``tiny`` keeps its 500 blobs.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from support.oci_builder import (  # tests/ is on sys.path (see run.py)
    OCI_LAYER_TAR_GZIP,
    Blob,
    Built,
    LayoutBuilder,
    deterministic_tar,
    push_built,
)
from support.registry import Registry

__all__ = ["BLOB_WORKLOADS", "SYNC_WORKLOADS", "BlobRef", "Target", "Workload", "WorkloadSet"]

KIB = 1024
MIB = 1024 * KIB

#: Workloads with content of their own, in report order.
BLOB_WORKLOADS = ("big", "many", "tiny", "chart", "shared")
#: ``hybridstore sync`` workloads (issue 18), on the content of ``shared`` and ``many``.
SYNC_WORKLOADS = ("sync", "sync-concurrent")


@dataclass(frozen=True)
class BlobRef:
    digest: str
    size: int

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclass(frozen=True)
class Target:
    """One pushed ref: its manifest and the blobs (config, layers) it points at."""

    repo: str
    tag: str
    media_type: str
    manifest: BlobRef
    blobs: tuple[BlobRef, ...]

    def ref(self, host_port: str) -> str:
        return f"{host_port}/{self.repo}:{self.tag}"

    @property
    def all_blobs(self) -> tuple[BlobRef, ...]:
        return (self.manifest, *self.blobs)


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    targets: tuple[Target, ...]

    @property
    def blob_count(self) -> int:
        """Blobs per pull of every target, manifests and configs included."""
        return sum(len(t.all_blobs) for t in self.targets)

    @property
    def logical_bytes(self) -> int:
        return sum(b.size for t in self.targets for b in t.all_blobs)

    @property
    def unique_bytes(self) -> int:
        return sum({b.digest: b.size for t in self.targets for b in t.all_blobs}.values())

    @property
    def unique_blob_endpoints(self) -> int:
        """Distinct digests fetched through ``/blobs/`` (configs, layers): one GET each at best."""
        return len({b.digest for t in self.targets for b in t.blobs})


def _noise(key: str, size: int) -> bytes:
    return hashlib.shake_256(f"hybridstore-bench/{key}".encode()).digest(size)


def _layer(key: str, size: int) -> Blob:
    """A tar holding one random file, in stored gzip (see the module docstring)."""
    tar = deterministic_tar({"data.bin": _noise(key, size)})
    return Blob(OCI_LAYER_TAR_GZIP, gzip.compress(tar, compresslevel=0, mtime=0))


def _size(nbytes: int, scale: float) -> int:
    return max(1, round(nbytes * scale))


def _target(built: Built, repo: str, tag: str) -> Target:
    blobs = built.blobs
    manifest = BlobRef(built.digest, built.manifest.size)
    children = tuple(BlobRef(d, b.size) for d, b in blobs.items() if d != built.digest)
    return Target(repo, tag, built.manifest.media_type, manifest, children)


Build = Callable[[LayoutBuilder, float], list[tuple[Built, str, str]]]


def _big(b: LayoutBuilder, scale: float) -> list[tuple[Built, str, str]]:
    layer = _layer("big/0", _size(512 * MIB, scale))
    return [(b.image("big", layers=0, base_layers=[layer], seed="big"), "bench/big", "v1")]


def _many(b: LayoutBuilder, scale: float) -> list[tuple[Built, str, str]]:
    layers = [_layer(f"many/{i}", _size(16 * MIB, scale)) for i in range(32)]
    return [(b.image("many", layers=0, base_layers=layers, seed="many"), "bench/many", "v1")]


def _tiny(b: LayoutBuilder, scale: float) -> list[tuple[Built, str, str]]:
    files = {f"blob{i:03d}.bin": _noise(f"tiny/{i}", _size(KIB, scale)) for i in range(500)}
    return [(b.artifact("tiny", files=files), "bench/tiny", "v1")]


def _chart(b: LayoutBuilder, scale: float) -> list[tuple[Built, str, str]]:
    # ~1 KiB of chart files plus the random payload: a ~20 KiB .tgz at scale 1.
    chart = b.helm_chart(
        "1.0.0", name="bench-chart", version="1.0.0", payload_size=_size(19 * KIB, scale)
    )
    return [(chart, "bench/charts/bench-chart", "1.0.0")]


def _shared(b: LayoutBuilder, scale: float) -> list[tuple[Built, str, str]]:
    base = [_layer(f"shared/base/{i}", _size(8 * MIB, scale)) for i in range(9)]
    out: list[tuple[Built, str, str]] = []
    for i in range(1, 11):
        own = _layer(f"shared/app{i}", _size(MIB, scale))
        image = b.image(f"app{i}", layers=0, base_layers=[*base, own], seed=f"shared/app{i}")
        out.append((image, f"bench/shared/app{i}", "v1"))
    return out


_SPECS: dict[str, tuple[str, Build]] = {
    "big": ("1 image, 1 layer x 512 MiB", _big),
    "many": ("1 image, 32 layers x 16 MiB", _many),
    "tiny": ("1 ORAS artifact, 500 layers x 1 KiB (+ empty config)", _tiny),
    "chart": ("Helm chart, 1 layer ~20 KiB", _chart),
    "shared": (
        "10 images into 10 layouts: 9 shared 8 MiB layers + 1 own 1 MiB layer each",
        _shared,
    ),
}


class WorkloadSet:
    """Builds and pushes each workload once per harness run, on first use."""

    def __init__(self, registry: Registry, scratch: Path, scale: float) -> None:
        self.registry = registry
        self.scratch = scratch
        self.scale = scale
        self._done: dict[str, Workload] = {}

    def get(self, name: str) -> Workload:
        if name not in self._done:
            self._done[name] = self._make(name)
        return self._done[name]

    def _make(self, name: str) -> Workload:
        if name == "concurrent":
            many = self.get("many")
            return Workload(
                "concurrent", f"8 pulls at once of many ({many.description})", many.targets
            )
        if name == "sync":
            shared = self.get("shared")
            what = "one project of the 10 images of shared, into one layout (9 shared 8 MiB layers"
            return Workload("sync", f"{what} + 1 own 1 MiB layer each)", shared.targets)
        if name == "sync-concurrent":
            many = self.get("many")
            return Workload(
                "sync-concurrent", f"8 projects of many at once ({many.description})", many.targets
            )
        description, build = _SPECS[name]
        where = self.scratch / f"build-{name}"
        builder = LayoutBuilder(where, seed="hybridstore-bench")
        try:
            targets = []
            for built, repo, tag in build(builder, self.scale):
                push_built(built, self.registry, f"{repo}:{tag}")
                targets.append(_target(built, repo, tag))
        finally:
            shutil.rmtree(where, ignore_errors=True)  # the registry holds the content now
        return Workload(name, description, tuple(targets))

    def all(self) -> Iterable[Workload]:
        return self._done.values()
