"""The fleet numbers of issue 19: hybridstore behind a pull-through mirror.

Starts an upstream distribution registry and a second one in ``proxy`` mode in
front of it (loopback, plain HTTP), pushes the ``many`` workload (32 layers x
16 MiB at scale 1) upstream, and measures:

1. a cold pull (empty cache) through a *warm* mirror against a cold pull direct
   from the upstream, interleaved, ``--runs`` each (goal: at most 1.1x);
2. 4 caches pulling ``many`` at once through a *cold* mirror: the upstream's blob
   GETs against the number of blobs (goal: equal), and the same with one machine
   first and then the other 3 at once.

Usage: ``.venv/bin/python benchmarks/mirror.py [--runs N] [--scale F] [--out FILE]``.
The report (markdown) goes to stdout and ``--out``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from measure import Sample, child_env, cpu_count, precompile, run_timed  # noqa: E402
from support.registry import Registry, RegistryConfig  # noqa: E402
from workloads import Target, WorkloadSet  # noqa: E402

HYBRIDSTORE = [sys.executable, "-m", "hybridstore"]


def pull_argv(ref: str, machine: Path, *extra: str) -> list[str]:
    return [
        *HYBRIDSTORE, "--cache", str(machine / "cache"), "-q", "pull", "--plain-http",
        "--layout", str(machine / "layout"), *extra, ref,
    ]  # fmt: skip


def upstream_blob_gets(upstream: Registry, target: Target, since: int) -> int:
    digests = {b.digest for b in target.blobs}
    return sum(
        1
        for e in upstream.access_log_requests(since)
        if e.method == "GET" and e.path.rsplit("/", 1)[-1] in digests and "/blobs/" in e.path
    )


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def timed_pulls(
    upstream: Registry, mirror: Registry, target: Target, work: Path, runs: int, env: dict[str, str]
) -> tuple[list[Sample], list[Sample]]:
    """Interleaved cold pulls: direct from upstream, and through the (warm) mirror."""
    ref = target.ref(upstream.host_port)
    direct: list[Sample] = []
    mirrored: list[Sample] = []
    for i in range(runs):
        order = [("direct", ()), ("mirror", ("--mirror", mirror.host_port))]
        for name, extra in order if i % 2 == 0 else reversed(order):
            machine = fresh(work / name)
            subprocess.run(["sync"], check=True)
            sample = run_timed(pull_argv(ref, machine, *extra), work / f"{name}.log", env)
            (direct if name == "direct" else mirrored).append(sample)
    return direct, mirrored


def fleet_at_once(
    upstream: Registry, mirror: Registry, target: Target, work: Path, env: dict[str, str],
    machines: int, first_alone: bool,
) -> int:  # fmt: skip
    """Upstream blob GETs for ``machines`` caches pulling through a cold mirror."""
    ref = target.ref(upstream.host_port)
    since = upstream.access_log_mark()
    argvs = [
        pull_argv(ref, fresh(work / f"fleet-{i}"), "--mirror", mirror.host_port)
        for i in range(machines)
    ]
    if first_alone:
        subprocess.run(argvs.pop(0), env=env, check=True)
        mirror.wait_blobs_stored([b.digest for b in target.blobs])
    procs = [subprocess.Popen(a, env=env) for a in argvs]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"a fleet pull failed: {p.args}")
    return upstream_blob_gets(upstream, target, since)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hs-mirror-bench-"))
    registries: list[Registry] = []
    try:
        upstream = Registry(work / "upstream").start()
        registries.append(upstream)

        def proxy(name: str) -> Registry:
            reg = Registry(work / name, RegistryConfig(proxy_remote_url=upstream.url)).start()
            registries.append(reg)
            return reg

        target = WorkloadSet(upstream, work, args.scale).get("many").targets[0]
        blobs = len(target.blobs)
        env = child_env({"HYBRIDSTORE_REGISTRIES_CONF": str(work / "empty.conf")})
        (work / "empty.conf").write_text("")
        precompile([REPO / "hybridstore"], env)

        warm = proxy("mirror-warm")
        subprocess.run(
            pull_argv(target.ref(upstream.host_port), fresh(work / "warmup"), "--mirror",
                      warm.host_port),
            env=env, check=True,
        )  # fmt: skip
        warm.wait_blobs_stored([b.digest for b in target.blobs])
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        direct, mirrored = timed_pulls(upstream, warm, target, work, args.runs, env)
        at_once = fleet_at_once(upstream, proxy("mirror-cold-1"), target, work, env, 4, False)
        one_first = fleet_at_once(upstream, proxy("mirror-cold-2"), target, work, env, 4, True)
        d, m = (statistics.median(x.wall for x in xs) for xs in (direct, mirrored))
        dc, mc = (statistics.median(x.cpu for x in xs) for xs in (direct, mirrored))
        load = Path("/proc/loadavg").read_text().split()[:3]
        report = "\n".join(
            [
                f"# Mirror benchmark ({started}, {cpu_count()} cores, load average at the end "
                f"{' '.join(load)}; many at scale {args.scale}: {blobs} blobs, median of "
                f"{args.runs}, min-max in brackets)",
                "",
                "| measurement | result | goal |",
                "| --- | --- | --- |",
                f"| cold pull direct from upstream | {d:.2f} s wall "
                f"({min(x.wall for x in direct):.2f}-{max(x.wall for x in direct):.2f}), "
                f"{dc:.2f} s CPU | |",
                f"| cold pull through a warm mirror | {m:.2f} s wall "
                f"({min(x.wall for x in mirrored):.2f}-{max(x.wall for x in mirrored):.2f}), "
                f"{mc:.2f} s CPU | |",
                f"| ratio mirror / direct | {m / d:.2f}x wall, {mc / dc:.2f}x CPU | <= 1.1x |",
                f"| 4 caches at once, cold mirror: upstream blob GETs | {at_once} "
                f"(blobs: {blobs}) | = {blobs} |",
                f"| 1 cache, then 3 at once, cold mirror: upstream blob GETs | {one_first} "
                f"(blobs: {blobs}) | = {blobs} |",
                "",
            ]
        )
        print(report)
        if args.out:
            args.out.write_text(report)
        return 0
    finally:
        for reg in reversed(registries):
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
