"""Write the content the sync example publishes: three charts and two images, as an OCI layout.

Usage: python examples/make_project_content.py OUTDIR

Built like make_demo_content.py (whose tar, gzip and layout helpers it reuses):
fixed metadata, so the digests are the same on every run, and no hybridstore code.
Ref names are ``REPOSITORY:TAG`` for the script to push under its registry:

    charts/hello-chart:0.1.0          the demo chart
    charts/redis-lite:1.0.0           a dependency of the project's own chart
    charts/web:2.1.0_build.7          chart version 2.1.0+build.7 (Helm's '+' -> '_' tag rule)
    images/hello:1.0, images/hello:2.0  two images sharing their base layer
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_demo_content as demo  # noqa: E402


def chart(layout: demo.Layout, name: str, version: str, tag: str) -> None:
    files = {
        f"{name}/Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: {version}\n",
        f"{name}/values.yaml": "replicas: 1\n",
        f"{name}/templates/configmap.yaml": (
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
        ),
    }
    layer = layout.blob(demo.HELM_CHART, demo.gz(demo.tar_of(files)))
    config = layout.blob(
        demo.HELM_CONFIG, demo.canonical({"name": name, "version": version, "apiVersion": "v2"})
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": demo.OCI_MANIFEST,
        "config": config,
        "layers": [layer],
    }
    layout.tag(layout.blob(demo.OCI_MANIFEST, demo.canonical(manifest)), f"charts/{name}:{tag}")


def image(layout: demo.Layout, base: dict[str, object], base_id: str, version: str) -> None:
    rootfs = demo.tar_of({"hello/version.txt": f"{version}\n"})
    layer = layout.blob(demo.OCI_LAYER, demo.gz(rootfs))
    diff_ids = [base_id, demo.sha256(rootfs)]
    config = layout.blob(
        demo.OCI_CONFIG,
        demo.canonical(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
        ),
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": demo.OCI_MANIFEST,
        "config": config,
        "layers": [base, layer],
    }
    layout.tag(layout.blob(demo.OCI_MANIFEST, demo.canonical(manifest)), f"images/hello:{version}")


def build(root: Path) -> None:
    layout = demo.Layout(root)
    chart(layout, "hello-chart", "0.1.0", "0.1.0")
    chart(layout, "redis-lite", "1.0.0", "1.0.0")
    chart(layout, "web", "2.1.0+build.7", "2.1.0_build.7")
    base_fs = demo.tar_of(demo.IMAGE_FILES)
    base = layout.blob(demo.OCI_LAYER, demo.gz(base_fs))
    image(layout, base, demo.sha256(base_fs), "1.0")
    image(layout, base, demo.sha256(base_fs), "2.0")
    layout.finish()
    for entry in layout.entries:
        print(entry["annotations"][demo.REF_NAME])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    build(Path(sys.argv[1]))
