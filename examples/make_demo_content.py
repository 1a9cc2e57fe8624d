"""Write the demo's small OCI layout: an image-like artifact and a Helm chart.

Usage: python examples/make_demo_content.py OUTDIR

Everything is built here from the text in this file, with fixed metadata
(tar mtime 0, uid/gid 0, sorted members; gzip mtime 0, no file name), so the
same zlib gives the same digests every time and nothing in the demo comes
from an unknown binary. The layout is a few KiB:

    demo.hybridstore.example/hello:1.0                 an OCI image (one layer of text files)
    demo.hybridstore.example/charts/hello-chart:0.1.0  a Helm chart as `helm push` stores it

It deliberately does not use hybridstore, so the demo's input does not depend
on the code it demonstrates.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

REGISTRY = "demo.hybridstore.example"
IMAGE_REF = f"{REGISTRY}/hello:1.0"
CHART_REF = f"{REGISTRY}/charts/hello-chart:0.1.0"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

IMAGE_FILES = {
    "hello/README.txt": "This image-like artifact was written by examples/make_demo_content.py.\n",
    "hello/greeting.txt": "Hello from the hybridstore demo!\n",
    "hello/bin/hello.sh": '#!/bin/sh\necho "$(cat /hello/greeting.txt)"\n',
}
CHART_FILES = {
    "hello-chart/Chart.yaml": (
        "apiVersion: v2\nname: hello-chart\ndescription: The hybridstore demo chart\n"
        'type: application\nversion: 0.1.0\nappVersion: "1.0"\n'
    ),
    "hello-chart/values.yaml": "greeting: Hello from the hybridstore demo!\n",
    "hello-chart/templates/configmap.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-hello\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
}


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, str]) -> bytes:
    """An uncompressed tar with its directories and fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parents = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        dirs = sorted(parents)
        for name in dirs + sorted(files):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if name in files:
                data = files[name].encode()
                info.size = len(data)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


class Layout:
    """Just enough of an OCI layout writer for a fresh directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: list[dict[str, Any]] = []
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    def blob(self, media_type: str, data: bytes) -> dict[str, Any]:
        digest = sha256(data)
        (self.root / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def tag(self, desc: dict[str, Any], name: str) -> None:
        self.entries.append({**desc, "annotations": {REF_NAME: name}})

    def finish(self) -> None:
        (self.root / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.entries}
        (self.root / "index.json").write_bytes(canonical(index))


def build(root: Path) -> dict[str, str]:
    """Write the layout at ``root`` (a new or empty directory); return ref name -> digest."""
    layout = Layout(root)

    rootfs = tar_of(IMAGE_FILES)
    layer = layout.blob(OCI_LAYER, gz(rootfs))
    config = layout.blob(
        OCI_CONFIG,
        canonical(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["/hello/bin/hello.sh"]},
                "rootfs": {"type": "layers", "diff_ids": [sha256(rootfs)]},
                "history": [{"created_by": "examples/make_demo_content.py"}],
            }
        ),
    )
    image = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}
    image["annotations"] = {"org.opencontainers.image.title": "hello"}
    layout.tag(layout.blob(OCI_MANIFEST, canonical(image)), IMAGE_REF)

    chart_layer = layout.blob(HELM_CHART, gz(tar_of(CHART_FILES)))
    chart_config = layout.blob(
        HELM_CONFIG,
        canonical(
            {
                "name": "hello-chart",
                "version": "0.1.0",
                "description": "The hybridstore demo chart",
                "apiVersion": "v2",
                "appVersion": "1.0",
                "type": "application",
            }
        ),
    )
    chart = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": chart_config,
        "layers": [chart_layer],
        "annotations": {
            "org.opencontainers.image.title": "hello-chart",
            "org.opencontainers.image.version": "0.1.0",
        },
    }
    layout.tag(layout.blob(OCI_MANIFEST, canonical(chart)), CHART_REF)
    layout.finish()
    return {e["annotations"][REF_NAME]: e["digest"] for e in layout.entries}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for name, digest in build(Path(argv[0])).items():
        print(f"{name}  {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
