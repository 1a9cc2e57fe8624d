"""The README demo: one shared cache, two project layouts, nothing downloaded twice.

Run ``make demo`` (or ``.venv/bin/python examples/demo.py [--keep]``). It needs
no internet and no registry package:

1. writes a small OCI layout (an image-like artifact and a Helm chart) with
   ``examples/make_demo_content.py`` into a temporary directory;
2. starts ``hybridstore serve`` over it on a free loopback port;
3. pulls both refs into ``project-a`` and then ``project-b`` through one
   fresh cache, with the ``hybridstore`` CLI;
4. shows what to notice: the second pull transferred 0 bytes, both layouts
   share the cache's blobs (same inodes when hard-linked), and ``cache info``;
5. stops the server and removes the temporary directory (``--keep`` keeps it).

The content is generated at demo time rather than committed: the generator is
the single source (no checked-in binary blobs to drift from it), and it takes
milliseconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_demo_content  # noqa: E402 - a sibling script, not a package

HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"== {text}")


def run(*args: str, cache: Path) -> str:
    cmd = [*HYBRIDSTORE, "--cache", str(cache), *args]
    shown = " ".join(["hybridstore", "--cache", str(cache), *args])
    say("$ " + shown.replace(str(cache.parent), "$DEMO"))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"demo: command failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def start_server(content: Path) -> tuple[subprocess.Popen[str], str]:
    """``hybridstore serve`` on a free loopback port; returns the process and host:port."""
    proc = subprocess.Popen(
        [*HYBRIDSTORE, "serve", str(content), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    m = re.fullmatch(r"listening on http://(\S+)\n", first)
    if m is None:
        proc.kill()
        raise SystemExit(f"demo: hybridstore serve did not start: {first!r}")
    for line in iter(proc.stdout.readline, ""):
        if line.startswith("read-only"):
            break
        say("   serving " + line.strip())
    return proc, m.group(1)


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pull(project: Path, refs: list[str], cache: Path) -> list[dict[str, Any]]:
    out = run("pull", "--plain-http", "--json", "--layout", str(project), *refs, cache=cache)
    results: list[dict[str, Any]] = json.loads(out)
    for r in results:
        say(
            f"   {r['ref_name']}: {r['blobs_fetched']} blob(s) fetched, "
            f"{r['blobs_reused']} reused, {r['bytes_transferred']} bytes transferred"
        )
    return results


def inode_table(cache: Path, projects: list[Path]) -> bool:
    """Print each blob's inode in the cache and the layouts; True if all are shared."""
    shared = True
    for blob in sorted((cache / "blobs" / "sha256").iterdir()):
        st = blob.stat()
        inodes = [(p / "blobs" / "sha256" / blob.name).stat().st_ino for p in projects]
        same = all(i == st.st_ino for i in inodes)
        shared &= same
        where = " = ".join(str(i) for i in [st.st_ino, *inodes])
        say(
            f"   sha256:{blob.name[:12]}  {st.st_size:>6} B  inode {where}  "
            f"({st.st_nlink} links){'' if same else '  (separate inodes: reflink or copy)'}"
        )
    return shared


def main(argv: list[str]) -> int:
    keep = "--keep" in argv
    work = Path(tempfile.mkdtemp(prefix="hybridstore-demo-"))
    cache, content = work / "cache", work / "demo-content"
    server: subprocess.Popen[str] | None = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        heading("1. Demo content (examples/make_demo_content.py)")
        for name, digest in make_demo_content.build(content).items():
            say(f"   {name}  {digest}")

        heading("2. Serve it read-only: hybridstore serve $DEMO/demo-content --listen 127.0.0.1:0")
        server, host = start_server(content)
        say(f"   listening on http://{host}")
        refs = [f"{host}/hello:1.0", f"oci://{host}/charts/hello-chart:0.1.0"]

        heading("3. Pull both refs into project-a (cold cache)")
        first = pull(work / "project-a", refs, cache)
        heading("4. Pull the same refs into project-b (same cache)")
        second = pull(work / "project-b", refs, cache)

        heading("5. Blobs: cache and both projects")
        shared = inode_table(cache, [work / "project-a", work / "project-b"])
        heading("6. The shared cache")
        for line in run("cache", "info", cache=cache).splitlines():
            say("   " + line)

        cold = sum(r["bytes_transferred"] for r in first)
        warm = sum(r["bytes_transferred"] for r in second)
        heading("What to notice")
        say(f" - the first pull transferred {cold} bytes; the second transferred {warm} bytes:")
        say("   every blob was already in the cache; project-b cost one manifest request per ref.")
        if shared:
            say(" - each blob has one inode shared by the cache and both projects (hard links):")
            say("   two projects, one copy on disk; each project is still a complete OCI layout.")
        else:
            say(" - the projects hold reflinks or copies of the cache blobs (see the inodes).")
        say(" - `cache info` counts those blobs as shared with layouts (link count > 1).")
        say(f" - with --keep, try: skopeo inspect oci:{work}/project-a:{refs[0]}")
        if warm != 0:
            say("demo: unexpected: the second pull transferred bytes")
            return 1
        return 0
    finally:
        if server is not None:
            stop_server(server)
        if keep:
            say(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.pop("HYBRIDSTORE_CACHE_DIR", None)
    raise SystemExit(main(sys.argv[1:]))
