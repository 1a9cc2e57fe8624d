"""A plain reference puller: requests + hashlib + threads into an OCI layout.

The "what straightforward Python gets" row: manifest GET, then config and
layers on ``--jobs`` threads (a session per thread), 1 MiB chunks, every
blob hashed and checked, written to a temp file and renamed into
``blobs/sha256/``. No fsync, no cache, no retries, one manifest (no index):
it is a limit to compare with, not a product.

    python refpull.py [--jobs N] LAYOUT_DIR HOST:PORT/REPO:TAG      (plain HTTP)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

CHUNK = 1 << 20
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)

_local = threading.local()


def _session() -> requests.Session:
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
        s.trust_env = False
    return s


def _fetch(base: str, desc: dict[str, Any], blobs: Path) -> None:
    digest = str(desc["digest"])
    hexpart = digest.split(":", 1)[1]
    tmp = blobs / f".{hexpart}.{threading.get_ident()}.tmp"
    h = hashlib.sha256()
    with _session().get(f"{base}/blobs/{digest}", stream=True, timeout=60) as resp:
        resp.raise_for_status()
        with open(tmp, "wb") as f:
            for chunk in resp.iter_content(CHUNK):
                h.update(chunk)
                f.write(chunk)
    if h.hexdigest() != hexpart:
        tmp.unlink()
        raise ValueError(f"digest mismatch for {digest}")
    os.replace(tmp, blobs / hexpart)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("layout")
    parser.add_argument("ref")
    args = parser.parse_args()
    name, tag = args.ref.rsplit(":", 1)
    host, repo = name.split("/", 1)
    base = f"http://{host}/v2/{repo}"
    layout = Path(args.layout)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    resp = _session().get(f"{base}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=60)
    resp.raise_for_status()
    data = resp.content
    digest = hashlib.sha256(data).hexdigest()
    manifest = json.loads(data)
    children = [manifest["config"], *manifest.get("layers", [])]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda d: _fetch(base, d, blobs), children))
    (blobs / digest).write_bytes(data)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entry = {
        "mediaType": manifest.get("mediaType", resp.headers.get("Content-Type")),
        "digest": f"sha256:{digest}",
        "size": len(data),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    index = {"schemaVersion": 2, "manifests": [entry]}
    (layout / "index.json").write_text(json.dumps(index))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
