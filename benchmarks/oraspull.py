"""Pull one ref into an OCI layout with oras-py (the ``oras-py`` row).

oras-py 0.2.x offers two ways down: ``OrasClient.pull(target=..., outdir=...)``
writes only layers, as files named by their title annotation (image layers
have none, and there is no config and no manifest), so it cannot serve the
image workloads. ``oras.layout.NewLayoutFromRegistry`` writes a whole OCI
layout (manifest, config, layers, ``index.json``); that is what is timed.
It downloads sequentially in 8 KiB chunks and does not check digests.

    python oraspull.py LAYOUT_DIR HOST:PORT/REPO:TAG      (plain HTTP)
"""

from __future__ import annotations

import sys

import oras.layout
import oras.provider


def main(argv: list[str]) -> int:
    layout_dir, ref = argv
    tag = ref.rsplit(":", 1)[1]
    registry = oras.provider.Registry(insecure=True)
    oras.layout.NewLayoutFromRegistry(layout_dir, registry, ref, tag=tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
