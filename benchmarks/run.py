"""Benchmark ``hybridstore pull`` against skopeo, oras-py and the raw limits (issue 8).

One command (``make bench``) starts its own CNCF distribution registry on a
free loopback port, pushes the workloads once (seeded, incompressible), and
times every row side by side in the same run. Rows of a workload are
interleaved: every round runs each row once, odd rounds in reverse order,
after ``--warmup`` uncounted rounds, so a machine that drifts hits all rows
alike. Before each run an untimed prepare deletes the destination (and a cold
row's cache) and calls ``sync``, so neither deleting nor the previous run's
write-back is timed. The Markdown table goes to ``--out`` and stdout, the raw
numbers next to it as JSON.

    .venv/bin/python benchmarks/run.py [--workloads big,many,...] [--runs 3]
                                       [--scale 1.0] [--quick] [--out FILE]

Timing never decides a test: ``tests/test_benchmarks.py`` only runs a tiny
``--scale`` to prove the harness works.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Reuse the tests' registry runner and content builder (tests/support) instead of
# keeping twins of them here.
sys.path.insert(0, str(REPO / "tests"))

from measure import (  # noqa: E402
    EXT4_WITHOUT_JOURNAL,
    TIME,
    RunFailed,
    child_env,
    disk_usage,
    machine_info,
    precompile,
    run_timed,
    timed_with_contention,
)
from report import render  # noqa: E402
from results import RequestCounts, RowResult  # noqa: E402
from support.registry import Registry, RegistryConfig  # noqa: E402
from tools import (  # noqa: E402
    Context,
    Tool,
    concurrency_tools,
    pull_tools,
    sync_concurrency_tools,
    sync_tools,
)
from vmmemory import freed_memory_kept  # noqa: E402
from workloads import BLOB_WORKLOADS, SYNC_WORKLOADS, Workload, WorkloadSet  # noqa: E402

ALL_WORKLOADS = (*BLOB_WORKLOADS, "concurrent", *SYNC_WORKLOADS, "startup")
#: A run of at least CONTENDED_MIN_WALL seconds during which other work kept more than
#: CONTENDED_SHARE of the CPUs busy is repeated, up to --max-repeats times.
CONTENDED_SHARE = 0.25
CONTENDED_MIN_WALL = 0.1
REQUIRED_BINARIES = ("docker-registry", "skopeo", "curl", "sh", "sync", TIME)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--workloads",
        default=",".join(ALL_WORKLOADS),
        help=f"comma-separated subset of {','.join(ALL_WORKLOADS)} (default: all)",
    )
    p.add_argument("--runs", type=int, help="timed runs per row (default 3; --quick: 1)")
    p.add_argument("--warmup", type=int, help="uncounted rounds first (default 1; --quick: 0)")
    p.add_argument(
        "--scale", type=float, help="multiply every blob size (default 1.0; --quick: 0.1)"
    )
    p.add_argument(
        "--max-repeats",
        type=int,
        default=2,
        help="repeat a run while other work used over 25%% of the CPUs (default 2)",
    )
    p.add_argument(
        "--tools",
        help="comma-separated subset of the rows (e.g. hybridstore-cold,skopeo; default: all)",
    )
    p.add_argument("--quick", action="store_true", help="1 run, no warm-up, scale 0.1")
    p.add_argument("--out", type=Path, default=HERE / "results" / "latest.md")
    p.add_argument("--workdir", type=Path, help="parent of the temporary work directory")
    p.add_argument("--keep", action="store_true", help="keep the work directory (debugging)")
    p.add_argument(
        "--allow-page-reporting",
        action="store_true",
        help="leave a VM's free page reporting as it is (see vmmemory.py)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.runs = args.runs if args.runs is not None else (1 if quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0 if quick else 1)
    args.scale = args.scale if args.scale is not None else (0.1 if quick else 1.0)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(names) - set(ALL_WORKLOADS))
    if unknown or not names:
        p.error(f"unknown workload(s) {unknown}; choose from {','.join(ALL_WORKLOADS)}")
    if args.runs < 1 or args.warmup < 0 or args.scale <= 0 or args.max_repeats < 0:
        p.error("--runs must be >= 1, --warmup and --max-repeats >= 0, --scale > 0")
    args.workloads = [w for w in ALL_WORKLOADS if w in names]
    args.tools = {t.strip() for t in args.tools.split(",") if t.strip()} if args.tools else None
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def oras_available() -> bool:
    try:
        import oras.layout  # noqa: F401
    except ImportError:
        return False
    return True


class Bench:
    """Runs the rows of one workload and collects their results."""

    def __init__(self, ctx: Context, registry: Registry, work: Path, args: argparse.Namespace):
        self.ctx = ctx
        self.registry = registry
        self.work = work
        self.runs = args.runs
        self.warmup = args.warmup
        self.max_repeats = args.max_repeats
        self.env = child_env()

    def dirs(self, wl: Workload, tool: Tool) -> tuple[Path, Path]:
        base = self.work / "rows" / f"{wl.name}-{tool.name}"
        return base / "dest", base / "store"

    def script(self, wl: Workload, tool: Tool) -> Path:
        dest, store = self.dirs(wl, tool)
        path = self.ctx.scripts / f"{wl.name}-{tool.name}.sh"
        lines = tool.render(self.ctx, wl, dest, store)
        path.write_text("\n".join(lines) + "\n")
        return path

    def run_rows(self, wl: Workload, tools: list[Tool]) -> list[RowResult]:
        rows = {
            t.name: RowResult(wl.name, t.name, t.note, t.limit, pulls=len(t.placements(wl)))
            for t in tools
        }
        scripts = {t.name: self.script(wl, t) for t in tools}
        try:
            for t in tools:
                if t.warm:
                    self._seed(wl, t, scripts[t.name], rows[t.name])
            for rnd in range(self.warmup + self.runs):
                order = tools if rnd % 2 == 0 else tools[::-1]
                counted = rnd >= self.warmup
                for t in order:
                    row = rows[t.name]
                    if row.error is None:
                        self._one_run(wl, t, scripts[t.name], row, counted, rnd)
        finally:
            shutil.rmtree(self.work / "rows", ignore_errors=True)
        return [rows[t.name] for t in tools]

    def _seed(self, wl: Workload, tool: Tool, script: Path, row: RowResult) -> None:
        dest, store = self.dirs(wl, tool)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            run_timed(["sh", "-e", str(script)], self._log(wl, tool), self.env)
        except RunFailed as exc:
            row.error = f"filling the warm store failed: {exc}"
        shutil.rmtree(dest, ignore_errors=True)

    def _log(self, wl: Workload, tool: Tool) -> Path:
        return self.ctx.scripts / f"{wl.name}-{tool.name}.log"

    def _one_run(
        self, wl: Workload, tool: Tool, script: Path, row: RowResult, counted: bool, rnd: int
    ) -> None:
        dest, store = self.dirs(wl, tool)
        for attempt in range(self.max_repeats + 1):
            shutil.rmtree(dest, ignore_errors=True)
            if tool.cold:
                shutil.rmtree(store, ignore_errors=True)
            dest.mkdir(parents=True)  # skopeo wants the parent of oci:DIR to exist
            os.sync()
            mark = self.registry.access_log_mark()
            try:
                sample = timed_with_contention(
                    ["sh", "-e", str(script)], self._log(wl, tool), self.env, self.registry_pid
                )
            except RunFailed as exc:
                row.error = str(exc)
                log(f"  {wl.name:8} {tool.name:20} FAILED: {str(exc).splitlines()[0]}")
                return
            contended = sample.contention > CONTENDED_SHARE and sample.wall >= CONTENDED_MIN_WALL
            if not contended or attempt == self.max_repeats:
                break
            row.repeats += 1
            log(f"    repeating: {sample.contention:.0%} of the CPUs were busy elsewhere")
        counts = self._requests(mark)
        problems = check(tool, wl, dest, store)
        label = f"run {rnd - self.warmup + 1}/{self.runs}" if counted else "warm-up"
        log(
            f"  {wl.name:10} {tool.name:20} {label:9} {sample.wall:8.3f} s"
            f" {sample.max_rss_kib / 1024:6.1f} MiB  blob GETs {counts.blob_gets}"
            f"  other CPU {sample.contention:4.0%}"
            + (f"  PROBLEMS: {problems[:2]}" if problems else "")
        )
        if counted:
            row.samples.append(sample)
            row.requests.append(counts)
            row.problems.extend(p for p in problems if p not in row.problems)
            row.disk_bytes = disk_usage([dest, store])
            row.store_bytes = disk_usage([store])
        # Free the space now (a warm row keeps its store), not only at the next prepare.
        shutil.rmtree(dest, ignore_errors=True)
        if tool.cold:
            shutil.rmtree(store, ignore_errors=True)

    @property
    def registry_pid(self) -> int | None:
        proc = self.registry.process
        return proc.pid if proc is not None else None

    def _requests(self, mark: int) -> RequestCounts:
        entries = self.registry.access_log_requests(mark)
        gets = [e for e in entries if e.method == "GET"]
        return RequestCounts(
            total=len(entries),
            blob_gets=sum("/blobs/sha256:" in e.path for e in gets),
            manifest_gets=sum("/manifests/" in e.path for e in gets),
            heads=sum(e.method == "HEAD" for e in entries),
        )


def check(tool: Tool, wl: Workload, dest: Path, store: Path) -> list[str]:
    """Every blob of every pull present with the right size, and the ref recorded.

    Sizes only (hashing every run would double the harness time); the pullers
    verify digests themselves, except oras-py and curl, which is noted in
    their rows.
    """
    problems: list[str] = []
    for i, target in tool.placements(wl):
        root = dest / str(i)
        blob_dir = store / "sha256" if tool.storage == "shared-dir" else root / "blobs" / "sha256"
        for blob in target.all_blobs:
            path = blob_dir / blob.hex
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                problems.append(f"{target.repo}: missing {blob.digest[:19]}")
                continue
            if size != blob.size:
                problems.append(f"{target.repo}: {blob.digest[:19]} has {size} bytes")
        if tool.storage != "files":
            index = root / "index.json"
            if not index.exists() or target.manifest.digest not in index.read_text():
                problems.append(f"{target.repo}: index.json lacks {target.manifest.digest[:19]}")
    return problems


def startup_rows(ctx: Context, work: Path, runs: int, warmup: int) -> list[RowResult]:
    """Start-up floors and ``hybridstore --help`` (goal: at most 0.15 s)."""
    cases: list[tuple[str, list[str], str]] = [
        ("python -c pass", [ctx.python, "-c", "pass"], "interpreter start-up (venv python)"),
        (
            "python -c 'import requests'",
            [ctx.python, "-c", "import requests"],
            "start-up floor of a requests-based puller",
        ),
        ("hybridstore --version", [ctx.hybridstore, "--version"], "CLI group only"),
        ("hybridstore --help", [ctx.hybridstore, "--help"], "issue 8 goal: at most 0.15 s"),
        ("hybridstore pull --help", [ctx.hybridstore, "pull", "--help"], "imports pull's CLI"),
        ("skopeo --version", ["skopeo", "--version"], "Go binary start-up"),
    ]
    rows = {name: RowResult("startup", name, note) for name, _, note in cases}
    env = child_env()
    logfile = work / "startup.log"
    runs = max(runs, 5)
    for rnd in range(warmup + runs):
        for name, argv, _ in cases if rnd % 2 == 0 else cases[::-1]:
            row = rows[name]
            if row.error is not None:
                continue
            try:
                sample = run_timed(argv, logfile, env)
            except RunFailed as exc:
                row.error = str(exc)
                continue
            if rnd >= warmup:
                row.samples.append(sample)
    for row in rows.values():
        st = row.stats
        if st is not None:
            log(f"  startup    {row.tool:28} {st.median:8.3f} s")
    return list(rows.values())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    hybridstore = Path(sys.executable).parent / "hybridstore"
    if not hybridstore.exists():
        missing.append(str(hybridstore))
    if missing:
        log(f"missing: {', '.join(missing)} (Debian: docker-registry skopeo curl time)")
        return 2
    with_oras = oras_available()
    if not with_oras:
        log("oras-py is not installed in this venv: its row is left out (pip install oras)")
    precompile([REPO / "hybridstore", HERE, REPO / "tests" / "support"], child_env())
    work = Path(tempfile.mkdtemp(prefix="hybridstore-bench-", dir=args.workdir))
    started = time.monotonic()
    try:
        scripts = work / "scripts"
        scripts.mkdir()
        registry = Registry(work / "registry", RegistryConfig(log_level="warn"))
        registry.start()
        try:
            ctx = Context(registry.host_port, sys.executable, str(hybridstore), HERE, scripts)
            info = machine_info(work, REPO)
            if EXT4_WITHOUT_JOURNAL in info["filesystem"]:
                log(
                    f"note: the work dir is on ext4 {EXT4_WITHOUT_JOURNAL}: there every row's "
                    "file creation slows after the previous run's deletions (see "
                    "benchmarks/README.md); --workdir on a journaled filesystem avoids it"
                )
            info["registry address"] = f"{registry.host_port} (plain HTTP, storage in {work})"
            with freed_memory_kept(not args.allow_page_reporting) as memory:
                info["VM memory"] = memory
                rows, workloads = run_all(args, ctx, registry, work, with_oras)
        finally:
            registry.stop()
    finally:
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    settings = {
        "runs": args.runs,
        "warmup": args.warmup,
        "scale": args.scale,
        "workloads": args.workloads,
        "oras": with_oras,
        "harness seconds": round(time.monotonic() - started, 1),
    }
    text = render(info, settings, workloads, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    payload = {
        "info": info,
        "settings": settings,
        "workloads": [workload_json(w) for w in workloads],
        "rows": [r.to_json() for r in rows],
    }
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    print(text)
    log(f"written: {args.out} and {args.out.with_suffix('.json')}")
    bad = [r for r in rows if r.error or r.problems]
    for r in bad:
        log(f"{r.workload}/{r.tool}: {r.error or '; '.join(r.problems[:5])}")
    return 1 if bad else 0


def run_all(
    args: argparse.Namespace, ctx: Context, registry: Registry, work: Path, with_oras: bool
) -> tuple[list[RowResult], list[Workload]]:
    bench = Bench(ctx, registry, work, args)
    content = WorkloadSet(registry, work, args.scale)
    rows: list[RowResult] = []
    used: list[Workload] = []
    for name in args.workloads:
        if name == "startup":
            log("startup")
            rows += startup_rows(ctx, work, args.runs, args.warmup)
            continue
        t0 = time.monotonic()
        wl = content.get(name)
        used.append(wl)
        log(
            f"{name}: {len(wl.targets)} ref(s), {wl.blob_count} blobs, "
            f"{wl.unique_bytes / 2**20:.1f} MiB unique, ready in {time.monotonic() - t0:.1f} s"
        )
        tools = {
            "concurrent": concurrency_tools,
            "sync": sync_tools,
            "sync-concurrent": sync_concurrency_tools,
        }.get(name, lambda: pull_tools(with_oras))()
        if args.tools is not None:
            tools = [t for t in tools if t.name in args.tools]
        rows += bench.run_rows(wl, tools)
    return rows, used


def workload_json(wl: Workload) -> dict[str, object]:
    return {
        "name": wl.name,
        "description": wl.description,
        "refs": [t.repo + ":" + t.tag for t in wl.targets],
        "blobs": wl.blob_count,
        "blob_endpoints": wl.unique_blob_endpoints,
        "logical_bytes": wl.logical_bytes,
        "unique_bytes": wl.unique_bytes,
    }


if __name__ == "__main__":
    raise SystemExit(main())
