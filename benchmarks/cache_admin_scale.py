"""Cache administration at scale: peak RSS and wall time of ``cache info``, ``verify``,
``prune``, ``where`` and ``layouts`` on a generated cache with many blobs and many
known layouts.

The cache is generated directly on disk, the way a long-lived CI cache looks:
``--blobs`` small blobs (``--blob-size`` bytes, incompressible, named by their
sha256, read-only, sealed as verified) and ``--layouts`` layouts, each holding
one image (manifest, config, one layer) hard-linked from the cache and
recorded in the layout registry; the rest of the blobs are unreferenced.
Each command then runs in its own process under GNU ``time`` (peak RSS is its
``%M``), with ``--json`` output sent to ``/dev/null`` (so streamed output is
measured too). Results go to ``benchmarks/results/cache_admin_scale.md``.

    .venv/bin/python benchmarks/cache_admin_scale.py [--blobs 1000000] [--layouts 10000]
        [--blob-size 256] [--dir DIR] [--keep | --reuse ROOT]

Generating a million files takes minutes (use a tmpfs: ``--dir /dev/shm``);
``--keep`` leaves the tree for ``--reuse`` runs, which only measure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hybridstore.fs.seal import seal
from hybridstore.store.layout_registry import LayoutRegistry

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "cache_admin_scale.md"
CLI = [sys.executable, "-m", "hybridstore.cli"]


def _blob(root: Path, data: bytes) -> str:
    """Publish ``data`` as a cache blob (no fsync: a generated fixture); its hex digest."""
    hexd = hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / hexd
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        os.write(fd, data)
        seal(fd, os.fstat(fd))
    finally:
        os.close(fd)
    return hexd


def generate(root: Path, blobs: int, layouts: int, size: int) -> tuple[Path, str]:
    """The cache at ``root/cache``; the layouts under ``root/layouts``; a layer digest one
    layout holds (for ``where``)."""
    cache = root / "cache"
    (cache / "blobs" / "sha256").mkdir(parents=True)
    for name in ("ingest", "locks"):
        (cache / name).mkdir()
    (cache / "hybridstore-layout").write_text('{"cacheLayoutVersion": 1}\n')
    seed = os.urandom(16)
    for i in range(blobs - 3 * layouts):
        _blob(cache, seed + i.to_bytes(8, "big") + os.urandom(max(0, size - 24)))
    registry = LayoutRegistry(cache)
    probe = ""
    for i in range(layouts):
        layer = _blob(cache, b"layer" + i.to_bytes(8, "big") + os.urandom(max(0, size - 13)))
        config = json.dumps({"layout": i}).encode()
        chex = _blob(cache, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": f"sha256:{chex}",
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": f"sha256:{layer}",
                        "size": os.path.getsize(cache / "blobs" / "sha256" / layer),
                    }
                ],
            }
        ).encode()
        mhex = _blob(cache, manifest)
        lay = root / "layouts" / f"l{i}"
        (lay / "blobs" / "sha256").mkdir(parents=True)
        (lay / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        for hexd in (layer, chex, mhex):
            os.link(cache / "blobs" / "sha256" / hexd, lay / "blobs" / "sha256" / hexd)
        ref = f"registry.example.com/bench/app{i}:1"
        entry = {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{mhex}",
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": ref},
        }
        (lay / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "manifests": [entry]})
        )
        registry.record(lay)
        probe = f"sha256:{layer}"
    (root / "probe").write_text(probe)
    return cache, probe


def measure(cache: Path, args: list[str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS KiB, exit code) of one CLI run."""
    cmd = ["/usr/bin/time", "-f", "%e %M", *CLI, "--cache", str(cache), *args]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall, rss = done.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss), done.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blobs", type=int, default=1_000_000)
    ap.add_argument("--layouts", type=int, default=10_000)
    ap.add_argument("--blob-size", type=int, default=256)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="Keep the generated cache.")
    ap.add_argument("--reuse", type=Path, default=None, help="Measure a kept tree again.")
    ap.add_argument("--out", type=Path, default=RESULTS)
    opts = ap.parse_args()
    root = opts.reuse or Path(tempfile.mkdtemp(prefix="hs-admin-scale-", dir=opts.dir))
    try:
        started = time.monotonic()
        if opts.reuse:
            cache, probe = root / "cache", (root / "probe").read_text()
        else:
            cache, probe = generate(root, opts.blobs, opts.layouts, opts.blob_size)
        made = time.monotonic() - started
        rows = [
            ("cache info --json", ["cache", "info", "--json"]),
            ("cache du --json", ["cache", "du", "--json"]),
            ("cache layouts --json", ["cache", "layouts", "--json"]),
            ("cache where DIGEST --json", ["cache", "where", probe, "--json"]),
            ("cache verify --json", ["cache", "verify", "--json"]),
            (
                "cache prune --dry-run --unreferenced --grace 0 --json",
                ["cache", "prune", "--dry-run", "--unreferenced", "--grace", "0", "--json"],
            ),
            (
                "cache prune --dry-run --max-size 1M --grace 0 --json",
                ["cache", "prune", "--dry-run", "--max-size", "1M", "--grace", "0", "--json"],
            ),
        ]
        lines = [
            "# Cache administration at scale",
            "",
            f"`{' '.join(['benchmarks/cache_admin_scale.py', *sys.argv[1:]])}` on "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {opts.blobs} blobs of "
            f"{opts.blob_size} bytes, {opts.layouts} known layouts (one image each, hard "
            f"links), {'reused' if opts.reuse else f'generated in {made:.0f} s'}. "
            "One process per command, `--json` to "
            "/dev/null; peak RSS is GNU time's `%M`.",
            "",
            "| command | wall | peak RSS | exit |",
            "| --- | ---: | ---: | ---: |",
        ]
        for label, args in rows:
            wall, rss, code = measure(cache, args)
            lines.append(f"| `{label}` | {wall:.1f} s | {rss / 1024:.0f} MiB | {code} |")
            print(lines[-1], flush=True)
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {opts.out}")
    finally:
        if opts.keep or opts.reuse:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
