"""Profile single ``hybridstore pull`` runs: where the time goes, by function and by import.

For each case (``WORKLOAD:cold`` or ``WORKLOAD:warm``) against the same
workloads as ``run.py`` (own registry, same seeded content):

- pyinstrument (flat, self time): sees only the main thread, so it shows
  start-up, the manifest walk and the waiting, but not the transfer threads;
- py-spy (``record --threads``, raw stacks, idle samples dropped): every
  thread, aggregated here into self and inclusive time per function;
- ``python -X importtime`` of one warm pull of the last case: the imports
  that make up the start-up, grouped by top-level package, and the places
  where hybridstore modules pull in third-party ones.

Needs ``pip install pyinstrument py-spy`` in the venv (not project dependencies).

    .venv/bin/python benchmarks/profile_pull.py [--cases big:cold,tiny:cold,chart:warm]
                                                [--scale 1.0] [--top 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Reuse the tests' registry runner and content builder (tests/support), as run.py does.
sys.path.insert(0, str(REPO / "tests"))

from measure import child_env, machine_info, precompile  # noqa: E402
from support.registry import Registry, RegistryConfig  # noqa: E402
from workloads import BLOB_WORKLOADS, Workload, WorkloadSet  # noqa: E402

_PYSPY_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def pull_argv(cache: Path, layout: Path, ref: str) -> list[str]:
    return ["-m", "hybridstore", "-q", "--cache", str(cache), "pull", "--plain-http",
            "--layout", str(layout), ref]  # fmt: skip


def _short(path: str) -> str:
    for marker in ("site-packages/", "/hybridstore/", "python3.11/", "lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return ("hybridstore/" + tail) if marker == "/hybridstore/" else tail
    return path


def pyspy_top(raw: Path, top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top self, top inclusive) from py-spy's raw collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = []
        for part in stack.split(";")[1:]:  # [0] is the thread
            m = _PYSPY_FRAME.match(part.strip())
            if m is not None:
                frames.append(f"{m['func']} ({_short(m['file'])})")
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return total, own.most_common(top), inclusive.most_common(top * 2)


def importtime_summary(stderr: str, top: int) -> list[str]:
    """Start-up imports: total, per top-level package, and where third-party enters."""
    entries: list[tuple[int, str, int, int]] = []  # depth, module, self us, cumulative us
    for line in stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m is not None:
            entries.append((len(m[3]) // 2, m[4], int(m[1]), int(m[2])))
    parent: dict[int, int] = {}
    orphans: defaultdict[int, list[int]] = defaultdict(list)
    for i, (depth, _, _, _) in enumerate(entries):
        for child in orphans.pop(depth + 1, []):
            parent[child] = i
        orphans[depth].append(i)
    total = sum(e[2] for e in entries)
    by_root: Counter[str] = Counter()
    for _, name, own, _ in entries:
        by_root[name.split(".")[0]] += own
    out = [f"Total import time {total / 1000:.1f} ms over {len(entries)} modules.", ""]
    out += ["| top-level package | self ms (all its modules) |", "| --- | --- |"]
    out += [f"| {name} | {us / 1000:.1f} |" for name, us in by_root.most_common(top + 5)]
    entry_points = []
    for i, (_, name, _, cum) in enumerate(entries):
        par = entries[parent[i]][1] if i in parent else "(main)"
        if not name.startswith("hybridstore") and (
            par.startswith("hybridstore") or par == "(main)"
        ):
            entry_points.append((cum, name, par))
    entry_points.sort(reverse=True)
    out += ["", "| imported by | module | cumulative ms |", "| --- | --- | --- |"]
    out += [f"| {par} | {name} | {cum / 1000:.1f} |" for cum, name, par in entry_points[: top + 5]]
    return out


def run_case(
    wl: Workload, mode: str, host_port: str, work: Path, top: int, env: dict[str, str]
) -> list[str]:
    py = sys.executable
    cache = work / f"cache-{wl.name}-{mode}"
    shutil.rmtree(cache, ignore_errors=True)
    refs = [t.ref(host_port) for t in wl.targets]

    def pull_all(tag: str, prefix: list[str]) -> float:
        start = time.perf_counter()
        for i, ref in enumerate(refs):
            layout = work / f"layout-{wl.name}-{mode}-{tag}-{i}"
            argv = [*prefix, *pull_argv(cache, layout, ref)]
            subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
            shutil.rmtree(layout, ignore_errors=True)
        return time.perf_counter() - start

    def reset() -> None:
        if mode == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        subprocess.run(["sync"], check=True)

    if mode == "warm":
        pull_all("plain", [py])
    reset()
    plain = pull_all("plain", [py])
    reset()
    session = work / f"{wl.name}-{mode}.pyisession"
    pyi = pull_all("pyi", [py, "-m", "pyinstrument", "-r", "session", "-o", str(session)])
    flat = subprocess.run(
        [py, "-m", "pyinstrument", f"--load={session}", "-r", "text", "-p", "flat",
         "-p", "flat_time=self", "--no-color", "--show-all"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip
    reset()
    raw = work / f"{wl.name}-{mode}.pyspy"
    pyspy_bin = str(Path(py).parent / "py-spy")
    spy = pull_all(
        "spy", [pyspy_bin, "record", "-r", "500", "--threads", "--format", "raw", "-o", str(raw),
                "--", py]
    )  # fmt: skip
    samples, own, inclusive = pyspy_top(raw, top)
    lines = [f"### {wl.name}, {mode}", ""]
    lines.append(
        f"Wall: {plain:.3f} s plain, {pyi:.3f} s under pyinstrument, {spy:.3f} s under py-spy "
        f"(500 Hz, {samples} non-idle samples over all threads, 2 ms each)."
    )
    lines += ["", f"pyinstrument, main thread, top {top} by self time:", "", "```"]
    body = [ln for ln in flat.splitlines() if re.match(r"^\d+\.\d+ ", ln)]
    lines += [*body[:top], "```", ""]
    lines += [f"py-spy, all threads, top {top} by self time:", ""]
    lines += ["| function | self ms | share |", "| --- | --- | --- |"]
    lines += [f"| {f} | {n * 2} | {n / samples:.0%} |" for f, n in own]
    lines += ["", f"py-spy, all threads, top {top * 2} by inclusive time:", ""]
    lines += ["| function | inclusive ms | share |", "| --- | --- | --- |"]
    lines += [f"| {f} | {n * 2} | {n / samples:.0%} |" for f, n in inclusive]
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="big:cold,tiny:cold,chart:warm")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--out", type=Path, default=HERE / "results" / "profile.md")
    args = p.parse_args(argv)
    cases = [tuple(c.split(":")) for c in args.cases.split(",")]
    for case in cases:
        if len(case) != 2 or case[0] not in BLOB_WORKLOADS or case[1] not in ("cold", "warm"):
            p.error(f"bad case {':'.join(case)!r}: WORKLOAD:cold or WORKLOAD:warm")
    env = child_env()
    precompile([REPO / "hybridstore", HERE], env)
    work = Path(tempfile.mkdtemp(prefix="hybridstore-profile-"))
    try:
        registry = Registry(work / "registry", RegistryConfig(log_level="warn")).start()
        try:
            content = WorkloadSet(registry, work, args.scale)
            info = machine_info(work, REPO)
            out = [
                "# hybridstore pull profiles",
                "",
                f"- {info['date']}; {info['cpus']} CPUs; python {info['python']}; "
                f"hybridstore {info['hybridstore']}; scale {args.scale:g}.",
                "",
            ]
            for name, mode in cases:
                print(f"profiling {name} {mode}", file=sys.stderr, flush=True)
                out += run_case(content.get(name), mode, registry.host_port, work, args.top, env)
            name, _ = cases[-1]
            wl = content.get(name)
            cache = work / "cache-importtime"
            layout = work / "layout-importtime"
            ref = wl.targets[0].ref(registry.host_port)
            argv = [sys.executable, *pull_argv(cache, layout, ref)]
            subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
            shutil.rmtree(layout)
            proc = subprocess.run(
                [sys.executable, "-X", "importtime", *argv[1:]],
                capture_output=True, text=True, check=True, env=env,
            )  # fmt: skip
            out += [f"## Start-up imports of a warm `hybridstore pull` ({name})", ""]
            out += importtime_summary(proc.stderr, args.top)
        finally:
            registry.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(out) + "\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
