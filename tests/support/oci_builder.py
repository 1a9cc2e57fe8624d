"""Build OCI content deterministically and write it as an OCI image layout.

Everything a test needs to assert on comes back as value objects
(``Blob``, ``BuiltImage``, ``BuiltIndex``, ``BuiltArtifact``): digests, sizes,
bytes, media types, ref names.

Determinism: every build draws its bytes from a ``random.Random`` seeded with
``"{builder seed}/{kind}/{key}"`` (``key`` = the ``seed`` argument, else the
ref name), tar members carry fixed metadata (mtime 0, uid/gid 0, fixed modes),
gzip streams carry mtime 0 and no file name, and JSON is serialised compactly
in a fixed key order. The same call with the same seed gives byte-identical
blobs in any layout, in any order, on any run.

This is hand-written on purpose: the tests must not build their fixtures with
the code under test (``hybridstore``), and no OCI library is a dependency.
Media types are spelled out here for the same reason.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urljoin

import requests

__all__ = [
    "Blob",
    "BuiltArtifact",
    "BuiltImage",
    "BuiltIndex",
    "LayoutBuilder",
    "Platform",
    "PushTarget",
    "Pushed",
    "RawPusher",
    "SampleContent",
    "canonical_json",
    "deterministic_targz",
    "layout_descriptor",
    "push_built",
    "push_layout",
    "seed_sample_content",
    "skopeo_can_push",
]

# Media types, spelled out (see module docstring).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
RAW_LAYER = "application/vnd.hybridstore.test.raw"
DEFAULT_ARTIFACT_TYPE = "application/vnd.hybridstore.test.artifact"
DEFAULT_REFERRER_TYPE = "application/vnd.hybridstore.test.sbom"

REF_NAME = "org.opencontainers.image.ref.name"
TITLE = "org.opencontainers.image.title"

Flavor = Literal["oci", "docker"]


def canonical_json(obj: Any) -> bytes:
    """Compact JSON in insertion order: what every document here is serialised with."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, e.g. ``linux/arm64/v8``."""
        parts = text.split("/")
        if len(parts) not in (2, 3):
            raise ValueError(f"platform {text!r} is not os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Blob:
    """Bytes plus the media type they are referenced with; digest and size derived."""

    media_type: str
    data: bytes = field(repr=False)
    digest: str = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", "sha256:" + hashlib.sha256(self.data).hexdigest())
        object.__setattr__(self, "size", len(self.data))

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """An OCI descriptor for this blob; ``extra`` adds fields such as ``annotations``."""
        desc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        desc.update({k: v for k, v in extra.items() if v is not None})
        return desc

    def json(self) -> Any:
        return json.loads(self.data)


EMPTY_CONFIG = Blob(OCI_EMPTY, b"{}")


@dataclass(frozen=True)
class BuiltImage:
    """An image manifest with its config and layers.

    ``files`` maps each regular file path in the layers to its bytes (the
    filesystem an unpacker such as umoci must produce); empty for raw layers.
    """

    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]
    diff_ids: tuple[str, ...]
    platform: Platform
    files: Mapping[str, bytes] = field(repr=False)
    ref_name: str | None = None

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def blobs(self) -> dict[str, Blob]:
        """Every blob of this image by digest, manifest included."""
        return {b.digest: b for b in (self.manifest, self.config, *self.layers)}

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return self.manifest.descriptor(**extra)


@dataclass(frozen=True)
class BuiltIndex:
    """An image index (or Docker manifest list); ``manifest`` is the index document."""

    manifest: Blob
    children: tuple[BuiltImage | BuiltArtifact, ...]
    ref_name: str | None = None

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def images(self) -> tuple[BuiltImage, ...]:
        return tuple(c for c in self.children if isinstance(c, BuiltImage))

    @property
    def blobs(self) -> dict[str, Blob]:
        out = {self.manifest.digest: self.manifest}
        for child in self.children:
            out.update(child.blobs)
        return out

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return self.manifest.descriptor(**extra)

    def child(self, platform: str) -> BuiltImage:
        """The image for ``os/arch[/variant]``."""
        want = Platform.parse(platform)
        for image in self.images:
            if image.platform == want:
                return image
        raise KeyError(platform)


@dataclass(frozen=True)
class BuiltArtifact:
    """A non-image manifest: Helm chart, ORAS artifact, referrer (``subject`` set)."""

    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]
    artifact_type: str | None
    subject: Mapping[str, Any] | None = None
    ref_name: str | None = None

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def blobs(self) -> dict[str, Blob]:
        return {b.digest: b for b in (self.manifest, self.config, *self.layers)}

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        if self.artifact_type is not None:
            extra.setdefault("artifactType", self.artifact_type)
        return self.manifest.descriptor(**extra)


Built = BuiltImage | BuiltIndex | BuiltArtifact


# -- deterministic archives ------------------------------------------------------------


def deterministic_tar(files: Mapping[str, bytes]) -> bytes:
    """An uncompressed tar of ``files`` (plus parent directories) with fixed metadata."""
    buf = io.BytesIO()
    dirs: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(files):
            parts = path.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    tar.addfile(_tarinfo(d + "/", tarfile.DIRTYPE, 0o755, 0))
            data = files[path]
            tar.addfile(_tarinfo(path, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return buf.getvalue()


def _tarinfo(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def deterministic_gzip(data: bytes) -> bytes:
    """gzip with mtime 0 and no file name, so equal input gives equal output."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def deterministic_targz(files: Mapping[str, bytes]) -> tuple[bytes, bytes]:
    """Return ``(tar, tar.gz)`` of ``files``; the tar's digest is the layer's diff_id."""
    tar = deterministic_tar(files)
    return tar, deterministic_gzip(tar)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the builder -----------------------------------------------------------------------


class LayoutBuilder:
    """Write OCI content into the image layout at ``path`` (created if missing).

    Each build method writes its blobs, and if ``ref_name`` is given (they
    default to one) adds a descriptor with ``org.opencontainers.image.ref.name``
    to ``index.json``. Building with ``ref_name=None`` writes blobs only, which
    is how index children and subjects stay untagged.
    """

    def __init__(self, path: Path, seed: int | str = 0) -> None:
        self.path = path
        self.seed = seed
        self.refs: dict[str, Built] = {}
        self._entries: list[dict[str, Any]] = []
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        self._write_index()

    # -- low-level ---------------------------------------------------------------------
    def rng(self, kind: str, key: str) -> random.Random:
        return random.Random(f"{self.seed}/{kind}/{key}")

    def write_blob(self, blob: Blob) -> Path:
        """Store ``blob`` under ``blobs/sha256/`` (idempotent)."""
        target = self.path / "blobs" / "sha256" / blob.hex
        if not target.exists():
            tmp = target.with_name(f".{blob.hex}.tmp")
            tmp.write_bytes(blob.data)
            tmp.replace(target)
        return target

    def blob_path(self, digest: str) -> Path:
        alg, hexpart = digest.split(":", 1)
        return self.path / "blobs" / alg / hexpart

    def tag(self, built: Built, ref_name: str, **annotations: str) -> None:
        """Point ``ref_name`` at ``built`` in ``index.json`` (replacing an older entry)."""
        annos = {REF_NAME: ref_name, **annotations}
        desc = built.descriptor(annotations=annos)
        if isinstance(built, BuiltImage):
            desc["platform"] = built.platform.to_json()
        self._entries = [
            e for e in self._entries if e.get("annotations", {}).get(REF_NAME) != ref_name
        ]
        self._entries.append(desc)
        self.refs[ref_name] = built
        self._write_index()

    def _write_index(self) -> None:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self._entries}
        (self.path / "index.json").write_bytes(canonical_json(doc))

    def _finish(self, built: Built, ref_name: str | None) -> None:
        for blob in built.blobs.values():
            self.write_blob(blob)
        if ref_name is not None:
            self.tag(built, ref_name)

    # -- images ------------------------------------------------------------------------
    def image(
        self,
        ref_name: str | None = "latest",
        *,
        layers: int = 2,
        files_per_layer: int = 2,
        file_size: int = 4096,
        raw_layer_size: int | None = None,
        raw_media_type: str = RAW_LAYER,
        base_layers: Sequence[Blob] = (),
        platform: Platform | str = "linux/amd64",
        flavor: Flavor = "oci",
        annotations: Mapping[str, str] | None = None,
        seed: str | None = None,
    ) -> BuiltImage:
        """An image of ``layers`` new layers on top of ``base_layers``.

        By default each layer is a real ``tar+gzip`` of ``files_per_layer``
        files of ``file_size`` seeded random bytes (incompressible, so the blob
        is a little larger than the data). With ``raw_layer_size`` each layer is
        instead exactly that many random bytes with ``raw_media_type``: exact
        sizes for transfer tests, not unpackable. ``base_layers`` (e.g. another
        image's ``layers``) are shared verbatim, for dedup tests.
        """
        plat = Platform.parse(platform) if isinstance(platform, str) else platform
        key = seed or f"{ref_name}/{plat}"
        rng = self.rng("image", key)
        new_layers: list[Blob] = []
        diff_ids: list[str] = []
        files: dict[str, bytes] = {}
        layer_type = DOCKER_LAYER_GZIP if flavor == "docker" else OCI_LAYER_TAR_GZIP
        for i in range(layers):
            if raw_layer_size is not None:
                data = rng.randbytes(raw_layer_size)
                new_layers.append(Blob(raw_media_type, data))
                diff_ids.append(_sha256(data))
                continue
            layer_files = {
                f"layer{i}/file{j}.bin": rng.randbytes(file_size) for j in range(files_per_layer)
            }
            tar, targz = deterministic_targz(layer_files)
            files.update(layer_files)
            new_layers.append(Blob(layer_type, targz))
            diff_ids.append(_sha256(tar))
        all_layers = (*base_layers, *new_layers)
        base_diff_ids = [self._diff_id(b) for b in base_layers]
        config = self._image_config(plat, [*base_diff_ids, *diff_ids], flavor, key)
        manifest = self._manifest(
            DOCKER_MANIFEST if flavor == "docker" else OCI_MANIFEST,
            config,
            all_layers,
            annotations=annotations,
        )
        built = BuiltImage(
            manifest, config, all_layers, (*base_diff_ids, *diff_ids), plat, files, ref_name
        )
        self._finish(built, ref_name)
        return built

    def _diff_id(self, blob: Blob) -> str:
        if blob.media_type in (OCI_LAYER_TAR_GZIP, DOCKER_LAYER_GZIP):
            return _sha256(gzip.decompress(blob.data))
        return blob.digest

    def _image_config(
        self, platform: Platform, diff_ids: Sequence[str], flavor: Flavor, key: str
    ) -> Blob:
        doc: dict[str, Any] = {
            "architecture": platform.architecture,
            "os": platform.os,
        }
        if platform.variant:
            doc["variant"] = platform.variant
        doc["config"] = {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": {"org.hybridstore.test.key": key},
        }
        doc["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
        doc["history"] = [
            {"created_by": f"hybridstore test layer {i}"} for i in range(len(diff_ids))
        ]
        return Blob(DOCKER_CONFIG if flavor == "docker" else OCI_CONFIG, canonical_json(doc))

    @staticmethod
    def _manifest(
        media_type: str,
        config: Blob,
        layers: Iterable[Blob],
        *,
        layer_annotations: Sequence[Mapping[str, str] | None] | None = None,
        artifact_type: str | None = None,
        subject: Mapping[str, Any] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> Blob:
        layer_list = list(layers)
        annos = list(layer_annotations) if layer_annotations else [None] * len(layer_list)
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
        if artifact_type is not None:
            doc["artifactType"] = artifact_type
        doc["config"] = config.descriptor()
        doc["layers"] = [
            b.descriptor(annotations=dict(a) if a else None)
            for b, a in zip(layer_list, annos, strict=True)
        ]
        if subject is not None:
            doc["subject"] = dict(subject)
        if annotations:
            doc["annotations"] = dict(annotations)
        return Blob(media_type, canonical_json(doc))

    def index(
        self,
        ref_name: str | None = "multi",
        *,
        platforms: Sequence[Platform | str] = ("linux/amd64", "linux/arm64/v8"),
        flavor: Flavor = "oci",
        annotations: Mapping[str, str] | None = None,
        extra_children: Sequence[BuiltImage | BuiltArtifact] = (),
        seed: str | None = None,
        **image_options: Any,
    ) -> BuiltIndex:
        """A multi-platform index: one image per platform (children are not tagged).

        ``image_options`` go to ``image()`` for every child; ``extra_children``
        are appended as-is (e.g. an attestation manifest).
        """
        key = seed or str(ref_name)
        children: list[BuiltImage | BuiltArtifact] = []
        for plat in platforms:
            p = Platform.parse(plat) if isinstance(plat, str) else plat
            children.append(
                self.image(None, platform=p, flavor=flavor, seed=f"{key}/{p}", **image_options)
            )
        children.extend(extra_children)
        media_type = DOCKER_MANIFEST_LIST if flavor == "docker" else OCI_INDEX
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": []}
        for child in children:
            desc = child.descriptor()
            if isinstance(child, BuiltImage):
                desc["platform"] = child.platform.to_json()
            doc["manifests"].append(desc)
        if annotations:
            doc["annotations"] = dict(annotations)
        built = BuiltIndex(Blob(media_type, canonical_json(doc)), tuple(children), ref_name)
        self._finish(built, ref_name)
        return built

    # -- artifacts ---------------------------------------------------------------------
    def helm_chart(
        self,
        ref_name: str | None = None,
        *,
        name: str = "demo-chart",
        version: str = "0.1.0",
        app_version: str = "1.0.0",
        payload_size: int = 0,
        seed: str | None = None,
    ) -> BuiltArtifact:
        """A chart as ``helm push`` stores it; ``ref_name`` defaults to ``version``.

        The layer is a real chart archive (``<name>/Chart.yaml``, ``values.yaml``,
        ``templates/configmap.yaml``), so it can be extracted and read;
        ``payload_size`` adds a ``files/payload.bin`` of random bytes.
        """
        ref = version if ref_name is None else ref_name
        rng = self.rng("helm", seed or f"{name}/{version}")
        description = f"A Helm chart built by the hybridstore tests ({name})"
        chart_yaml = (
            "apiVersion: v2\n"
            f"name: {name}\n"
            f"description: {description}\n"
            "type: application\n"
            f"version: {version}\n"
            f'appVersion: "{app_version}"\n'
        )
        files = {
            f"{name}/Chart.yaml": chart_yaml.encode(),
            f"{name}/values.yaml": b"replicaCount: 1\nmessage: hello\n",
            f"{name}/templates/configmap.yaml": (
                b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                b"  name: {{ .Release.Name }}-config\ndata:\n"
                b"  message: {{ .Values.message | quote }}\n"
            ),
        }
        if payload_size:
            files[f"{name}/files/payload.bin"] = rng.randbytes(payload_size)
        _tar, chart = deterministic_targz(files)
        layer = Blob(HELM_CHART, chart)
        config = Blob(
            HELM_CONFIG,
            canonical_json(
                {
                    "name": name,
                    "version": version,
                    "description": description,
                    "apiVersion": "v2",
                    "appVersion": app_version,
                    "type": "application",
                }
            ),
        )
        annotations = {
            "org.opencontainers.image.description": description,
            TITLE: name,
            "org.opencontainers.image.version": version,
        }
        manifest = self._manifest(OCI_MANIFEST, config, [layer], annotations=annotations)
        built = BuiltArtifact(manifest, config, (layer,), None, None, ref)
        self._finish(built, ref)
        return built

    def artifact(
        self,
        ref_name: str | None = "artifact",
        *,
        artifact_type: str = DEFAULT_ARTIFACT_TYPE,
        files: Mapping[str, bytes] | None = None,
        file_count: int = 2,
        file_size: int = 1024,
        layer_media_type: str = OCI_LAYER_TAR,
        subject: Built | None = None,
        annotations: Mapping[str, str] | None = None,
        seed: str | None = None,
    ) -> BuiltArtifact:
        """An ORAS-style artifact: empty ``{}`` config, ``artifactType``, titled layers.

        ``files`` (name -> bytes) become one layer each, titled with the name;
        without ``files``, ``file_count`` random files of ``file_size`` are made.
        With no files at all the single layer is the empty descriptor, as the
        image spec recommends. ``subject`` makes it a referrer of that manifest.
        """
        key = seed or str(ref_name) + (f"@{subject.digest}" if subject else "")
        rng = self.rng("artifact", key)
        if files is None:
            files = {f"file{i}.bin": rng.randbytes(file_size) for i in range(file_count)}
        if files:
            layers = [Blob(layer_media_type, data) for data in files.values()]
            layer_annos: list[Mapping[str, str] | None] = [{TITLE: n} for n in files]
        else:
            layers, layer_annos = [EMPTY_CONFIG], [None]
        subject_desc = None
        if subject is not None:
            subject_desc = subject.manifest.descriptor()
        manifest = self._manifest(
            OCI_MANIFEST,
            EMPTY_CONFIG,
            layers,
            layer_annotations=layer_annos,
            artifact_type=artifact_type,
            subject=subject_desc,
            annotations=annotations,
        )
        built = BuiltArtifact(
            manifest, EMPTY_CONFIG, tuple(layers), artifact_type, subject_desc, ref_name
        )
        self._finish(built, ref_name)
        return built

    def referrer(
        self,
        subject: Built,
        ref_name: str | None = None,
        *,
        artifact_type: str = DEFAULT_REFERRER_TYPE,
        **artifact_options: Any,
    ) -> BuiltArtifact:
        """An artifact whose ``subject`` is ``subject`` (e.g. an SBOM of an image)."""
        return self.artifact(
            ref_name, artifact_type=artifact_type, subject=subject, **artifact_options
        )

    def referrers_index(
        self, subject: Built, referrers: Sequence[BuiltArtifact], *, tag: bool = True
    ) -> BuiltIndex:
        """The referrers tag-schema fallback index, tagged ``sha256-<hex of subject>``."""
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                r.manifest.descriptor(
                    artifactType=r.artifact_type,
                    annotations=r.manifest.json().get("annotations"),
                )
                for r in referrers
            ],
        }
        ref = subject.digest.replace(":", "-")
        built = BuiltIndex(Blob(OCI_INDEX, canonical_json(doc)), tuple(referrers), ref)
        self._finish(built, ref if tag else None)
        return built

    # -- reading back ------------------------------------------------------------------
    def index_json(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.path / "index.json").read_bytes())
        return result


# -- pushing into a registry -----------------------------------------------------------


class PushTarget(Protocol):
    """What the pushers need from a registry (``registry.Registry`` fits)."""

    @property
    def host_port(self) -> str: ...

    @property
    def url(self) -> str: ...

    credentials: tuple[str, str] | None

    def session(self) -> requests.Session: ...


_INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)


def layout_descriptor(layout_dir: Path, ref_name: str) -> dict[str, Any]:
    """The ``index.json`` descriptor annotated with ``ref_name``."""
    index = json.loads((layout_dir / "index.json").read_bytes())
    for desc in index.get("manifests", []):
        if desc.get("annotations", {}).get(REF_NAME) == ref_name:
            result: dict[str, Any] = desc
            return result
    raise KeyError(f"{ref_name!r} is not a ref in {layout_dir}/index.json")


def skopeo_can_push(layout_dir: Path, ref_name: str) -> bool:
    """Whether ``skopeo copy --preserve-digests`` handles this ref (measured, skopeo 1.9).

    skopeo's ``oci:`` source only sees index.json entries typed as OCI
    manifest or index, so Docker-typed content is out; and with
    ``--preserve-digests`` it refuses an index whose entries are not platform
    images (e.g. a referrers index), claiming it would need converting.
    Artifact manifests (Helm, ORAS, subject) copy fine.
    """
    desc = layout_descriptor(layout_dir, ref_name)
    if desc["mediaType"] == OCI_MANIFEST:
        return True
    if desc["mediaType"] != OCI_INDEX:
        return False
    doc = json.loads(_read_layout_blob(layout_dir, desc["digest"]))
    return all(
        m.get("mediaType") == OCI_MANIFEST and "platform" in m for m in doc.get("manifests", [])
    )


def push_layout(
    layout_dir: Path,
    ref_name: str,
    registry: PushTarget,
    dest_ref: str,
    *,
    method: Literal["auto", "skopeo", "http"] = "auto",
) -> str:
    """Push the layout's ``ref_name`` to ``registry`` as ``dest_ref`` (``repo:tag``).

    ``skopeo`` runs ``skopeo copy --all --preserve-digests`` so the registry
    holds exactly the layout's bytes; ``http`` uses the raw pusher below;
    ``auto`` picks skopeo where ``skopeo_can_push`` says it works. Returns the
    pushed root digest.
    """
    desc = layout_descriptor(layout_dir, ref_name)
    if method == "auto":
        use_skopeo = shutil.which("skopeo") is not None and skopeo_can_push(layout_dir, ref_name)
        method = "skopeo" if use_skopeo else "http"
    if method == "skopeo":
        _skopeo_push(layout_dir, ref_name, registry, dest_ref)
    else:
        repo, reference = _split_ref(dest_ref)
        pusher = RawPusher(registry, repo, lambda d: _read_layout_blob(layout_dir, d))
        pusher.push_tree(desc, reference)
    return str(desc["digest"])


def push_built(built: Built, registry: PushTarget, dest_ref: str) -> str:
    """Push in-memory ``built`` content with the raw pusher (no layout, no skopeo)."""
    blobs = built.blobs
    repo, reference = _split_ref(dest_ref)
    pusher = RawPusher(registry, repo, lambda d: blobs[d].data)
    pusher.push_tree(built.manifest.descriptor(), reference)
    return built.digest


def _skopeo_push(layout_dir: Path, ref_name: str, registry: PushTarget, dest_ref: str) -> None:
    cmd = [
        "skopeo",
        "--insecure-policy",  # independent of the host's /etc/containers/policy.json
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--retry-times=0",
        "--dest-tls-verify=false",  # plain HTTP, or TLS with the tests' own CA
    ]
    if registry.credentials is not None:
        cmd.append("--dest-creds={}:{}".format(*registry.credentials))
    cmd += [f"oci:{layout_dir}:{ref_name}", f"docker://{registry.host_port}/{dest_ref}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo push of {ref_name} failed: {proc.stderr.strip()}")


def _split_ref(dest_ref: str) -> tuple[str, str]:
    if "@" in dest_ref:
        repo, digest = dest_ref.split("@", 1)
        return repo, digest
    repo, sep, tag = dest_ref.rpartition(":")
    if not sep or "/" in tag:
        return dest_ref, "latest"
    return repo, tag


def _read_layout_blob(layout_dir: Path, digest: str) -> bytes:
    alg, hexpart = digest.split(":", 1)
    return (layout_dir / "blobs" / alg / hexpart).read_bytes()


class RawPusher:
    """A minimal OCI distribution pusher over ``requests``, for seeding registries.

    Why it exists: skopeo cannot push everything tests need (see
    ``skopeo_can_push``), and pushing in-process is faster than a subprocess.
    It walks the graph children-first: blobs via ``HEAD`` (skip if present),
    then ``POST /blobs/uploads/`` + monolithic ``PUT ?digest=``
    (distribution 2.8 ignores a body on the POST); manifests via ``PUT`` with
    their exact bytes and media type. Subjects are not pushed (the referrer
    names them; registries before OCI 1.1 do not check).
    """

    def __init__(self, registry: PushTarget, repo: str, read: Callable[[str], bytes]) -> None:
        self.base = f"{registry.url}/v2/{repo}"
        self.read = read
        self.session = registry.session()

    def push_tree(self, desc: Mapping[str, Any], reference: str) -> None:
        data = self.read(desc["digest"])
        doc = json.loads(data)
        media_type = desc.get("mediaType") or doc.get("mediaType")
        if media_type in _INDEX_TYPES:
            for child in doc.get("manifests", []):
                self.push_tree(child, child["digest"])
        elif media_type in _MANIFEST_TYPES:
            for blob in [doc["config"], *doc.get("layers", [])]:
                self.push_blob(blob["digest"])
        resp = self.session.put(
            f"{self.base}/manifests/{reference}",
            data=data,
            headers={"Content-Type": media_type},
            timeout=60,
        )
        _expect(resp, 201, f"PUT manifest {reference}")

    def push_blob(self, digest: str) -> None:
        head = self.session.head(f"{self.base}/blobs/{digest}", timeout=60)
        if head.status_code == 200:
            return
        start = self.session.post(f"{self.base}/blobs/uploads/", timeout=60)
        _expect(start, 202, "POST blob upload")
        location = urljoin(self.base, start.headers["Location"])
        sep = "&" if "?" in location else "?"
        done = self.session.put(
            f"{location}{sep}digest={digest}",
            data=self.read(digest),
            headers={"Content-Type": "application/octet-stream"},
            timeout=120,
        )
        _expect(done, 201, f"PUT blob {digest}")


def _expect(resp: requests.Response, status: int, what: str) -> None:
    if resp.status_code != status:
        raise RuntimeError(f"{what}: HTTP {resp.status_code} {resp.text[:300]}")


# -- the session's sample content ------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    """Built content and where it was pushed."""

    built: Built
    host_port: str
    repo: str
    tag: str

    @property
    def digest(self) -> str:
        return self.built.digest

    @property
    def ref(self) -> str:
        """``HOST:PORT/repo:tag``."""
        return f"{self.host_port}/{self.repo}:{self.tag}"

    @property
    def digest_ref(self) -> str:
        """``HOST:PORT/repo@sha256:...``."""
        return f"{self.host_port}/{self.repo}@{self.digest}"


@dataclass(frozen=True)
class SampleContent:
    """One of each kind of content, pushed into a registry and kept in ``layout``."""

    layout: Path
    image: Pushed
    index: Pushed
    chart: Pushed
    artifact: Pushed
    referrer: Pushed
    referrers_index: Pushed

    def all(self) -> tuple[Pushed, ...]:
        return (
            self.image,
            self.index,
            self.chart,
            self.artifact,
            self.referrer,
            self.referrers_index,
        )


def seed_sample_content(layout_dir: Path, registry: PushTarget) -> SampleContent:
    """Build the sample set (seed ``"sample"``) and push it under ``sample/...``.

    The referrer and the referrers tag-schema index live in the image's
    repository, as a client pushing a referrer to a pre-1.1 registry puts them.
    """
    b = LayoutBuilder(layout_dir, seed="sample")
    image = b.image("image")
    index = b.index("multi")
    chart = b.helm_chart("chart")
    artifact = b.artifact("artifact")
    referrer = b.referrer(image, "sbom")
    referrers_index = b.referrers_index(image, [referrer])

    def push(ref_name: str, built: Built, repo: str, tag: str) -> Pushed:
        push_layout(layout_dir, ref_name, registry, f"{repo}:{tag}")
        return Pushed(built, registry.host_port, repo, tag)

    fallback_tag = str(referrers_index.ref_name)
    return SampleContent(
        layout=layout_dir,
        image=push("image", image, "sample/image", "v1"),
        index=push("multi", index, "sample/multi", "v1"),
        chart=push("chart", chart, "sample/charts/demo-chart", "0.1.0"),
        artifact=push("artifact", artifact, "sample/artifact", "v1"),
        referrer=push("sbom", referrer, "sample/image", "sbom"),
        referrers_index=push(fallback_tag, referrers_index, "sample/image", fallback_tag),
    )
