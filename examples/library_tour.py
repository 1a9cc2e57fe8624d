"""The library API end to end: pull, inspect, extract, export, import, push, copy.

Usage: python examples/library_tour.py IMAGE_REF CHART_REF TARGET_REGISTRY WORKDIR [--plain-http]

IMAGE_REF and CHART_REF name an image and a Helm chart in a registry; the tour pushes
the image into TARGET_REGISTRY (host:port) and copies the chart there too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hybridstore import (
    OCILayout,
    Reference,
    TransportOptions,
    copy,
    export,
    extract,
    import_layout,
    inspect,
    pull_many,
    push_all,
)


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    image, chart, target, work = argv[0], argv[1], argv[2], Path(argv[3])
    transport = TransportOptions(plain_http="--plain-http" in argv)
    cache = work / "cache"

    pulled = pull_many([image, chart], layout=work / "project", cache=cache, transport=transport)
    for result in pulled:
        print(f"pulled {result.ref_name}: fetched {result.fetched}, reused {result.reused}")

    about = inspect(chart, transport=transport)
    if about.chart is not None:
        print(f"chart {about.chart.name} {about.chart.version}")
    tgz = extract(chart, output=work / "vendor", layout=work / "project")
    print("extracted " + ", ".join(f.path for f in tgz.files))

    archive = export(work / "project", work / "site.tar.zst")
    print(f"exported {archive.blobs} blobs in {archive.archive_bytes} bytes")
    restored = import_layout(work / "site.tar.zst", work / "restored", cache=cache)
    print(f"imported {len(restored.refs)} refs")

    image_ref = Reference.parse(image)
    pushed = push_all(work / "restored", registry=target, cache=cache, transport=transport)
    print(f"pushed {len(pushed)} refs to {target}")
    copied = copy(chart, f"{target}/copied/{image_ref.repository}-chart:1", transport=transport)
    print(f"copied {copied.reference} -> {copied.ref_name}")
    print(f"layout refs: {', '.join(sorted(OCILayout.open(work / 'restored').refs()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
