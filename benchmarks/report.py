"""Render the benchmark results as one Markdown report (``results/latest.md``)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from results import RowResult
from tools import concurrency_tools, pull_tools, sync_concurrency_tools, sync_tools
from workloads import BLOB_WORKLOADS, SYNC_WORKLOADS, Workload

__all__ = ["render"]

MIB = 1024 * 1024
#: The peers hybridstore-cold is divided by in the ratio table.
RATIO_PEERS = (
    "skopeo",
    "skopeo-shared-cold",
    "oras-py",
    "requests-4",
    "curl-files",
    "curl-files+fsync",
)
STARTUP_FLOOR_FALLBACK = 0.014  # issue 8's interpreter start-up, if not measured here


class Table:
    def __init__(self, rows: Sequence[RowResult]) -> None:
        self.rows = rows
        self._index = {(r.workload, r.tool): r for r in rows}

    def get(self, workload: str, tool: str) -> RowResult | None:
        return self._index.get((workload, tool))

    def median(self, workload: str, tool: str) -> float | None:
        row = self.get(workload, tool)
        st = row.stats if row is not None else None
        return st.median if st is not None else None

    def tools(self, workloads: Iterable[str]) -> list[str]:
        wanted = set(workloads)
        seen: dict[str, None] = {}
        for r in self.rows:
            if r.workload in wanted:
                seen.setdefault(r.tool, None)
        return list(seen)


def _s(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(*names: str) -> list[str]:
    return [_row(names), _row("---" for _ in names)]


def render(
    info: Mapping[str, str],
    settings: Mapping[str, Any],
    workloads: Sequence[Workload],
    rows: Sequence[RowResult],
) -> str:
    table = Table(rows)
    by_name = {w.name: w for w in workloads}
    out = [
        "# hybridstore pull benchmarks",
        "",
        f"- Date: {info['date']}. Machine: {info['cpus']} CPUs, {info['memory']} RAM, "
        f"kernel {info['kernel']}, {info['os']}; work dir on {info['filesystem']}; "
        f"{info.get('VM memory', 'VM memory not checked')}.",
        f"- Versions: hybridstore {info['hybridstore']}; python {info['python']}; "
        f"{info['skopeo']}; {info['registry']}; oras-py {info['oras-py']}; "
        f"requests {info['requests']}; {info['curl'].split(' (')[0]}.",
        f"- Registry: {info.get('registry address', '?')}, log level warn, access log on "
        "(it counts the requests).",
        f"- Settings: {settings['runs']} timed run(s) per row after {settings['warmup']} "
        f"warm-up round(s); scale {settings['scale']:g}; the harness took "
        f"{settings['harness seconds']} s.",
        "- Method: the rows of a workload are interleaved (each round runs every row once, "
        "odd rounds reversed). An untimed prepare deletes the destination (and a cold row's "
        "cache or shared dir) and calls `sync` before each run. A run is `sh -e SCRIPT` "
        "(all pulls of the workload); wall = fork to reap, median (min-max). CPU = "
        "user+sys of the process tree (median). Peak RSS = largest single process "
        "(GNU time %M), max over runs. Disk = allocated bytes of all layouts plus the "
        "cache or shared dir, each inode once (hard links count once). MiB/s = logical bytes "
        "/ median wall. Requests = median count in the registry's access log per run. "
        "Python tools run with byte code compiled (the harness drops PYTHONDONTWRITEBYTECODE "
        "and precompiles the checkout, as an installed copy would be).",
        _contention_line(rows),
        "",
    ]
    out += _workloads(workloads)
    blob_wls = [w.name for w in workloads if w.name in BLOB_WORKLOADS]
    if blob_wls:
        out += _summary(table, blob_wls)
        out += _ratios(table, blob_wls)
    out += _goals(table, by_name)
    out += _sync_goals(table, by_name)
    detail_wls = blob_wls + [w.name for w in workloads if w.name in SYNC_WORKLOADS]
    if detail_wls:
        out += _details(table, [by_name[n] for n in detail_wls])
    if "concurrent" in by_name:
        out += _concurrency(table, by_name["concurrent"])
    if any(r.workload == "startup" for r in rows):
        out += _startup(table)
    out += _templates(bool(settings.get("oras")))
    return "\n".join(out) + "\n"


def _contention_line(rows: Sequence[RowResult]) -> str:
    shares = [r.stats.contention for r in rows if r.stats is not None and r.workload != "startup"]
    repeats = sum(r.repeats for r in rows)
    worst = max(shares, default=0.0)
    return (
        "- Contention check: per run, the CPU the machine spent outside the measured process "
        'tree and the registry, as a share of all CPUs ("other CPU"); runs of 0.1 s or more '
        "above 25 % were repeated (up to --max-repeats times). "
        f"Median over rows {statistics.median(shares) if shares else 0:.0%}, worst row "
        f"{worst:.0%}, {repeats} run(s) repeated."
    )


def _workloads(workloads: Sequence[Workload]) -> list[str]:
    out = ["## Workloads", ""]
    out += _header("workload", "description", "refs", "blobs", "logical MiB", "unique MiB")
    for w in workloads:
        out.append(
            _row(
                [
                    w.name,
                    w.description,
                    len(w.targets),
                    w.blob_count,
                    f"{w.logical_bytes / MIB:.1f}",
                    f"{w.unique_bytes / MIB:.1f}",
                ]
            )
        )
    return [*out, ""]


def _label(table: Table, tool: str) -> str:
    limit = any(r.limit for r in table.rows if r.tool == tool)
    return f"*limit: {tool}*" if limit else tool


def _summary(table: Table, wls: list[str]) -> list[str]:
    out = ["## Median wall seconds (lower is better)", ""]
    out += _header("tool", *wls)
    for tool in table.tools(wls):
        cells = []
        for w in wls:
            row = table.get(w, tool)
            cells.append("FAILED" if row and row.error else _s(table.median(w, tool)))
        out.append(_row([_label(table, tool), *cells]))
    return [*out, ""]


def _ratios(table: Table, wls: list[str]) -> list[str]:
    out = [
        "## hybridstore / peer (ratio of median walls; below 1 means hybridstore is faster)",
        "",
    ]
    out += _header("workload", *(f"cold / {p}" for p in RATIO_PEERS), "warm / skopeo-shared-warm")
    for w in wls:
        cold = table.median(w, "hybridstore-cold")
        warm = table.median(w, "hybridstore-warm")
        cells = [_x(_ratio(cold, table.median(w, p))) for p in RATIO_PEERS]
        cells.append(_x(_ratio(warm, table.median(w, "skopeo-shared-warm"))))
        out.append(_row([w, *cells]))
    return [*out, ""]


def _goals(table: Table, wls: Mapping[str, Workload]) -> list[str]:
    goals: list[tuple[str, str, str, bool | None]] = []

    def versus(w: str, peer: str, limit: float, what: str) -> None:
        if w not in wls:
            return
        r = _ratio(table.median(w, "hybridstore-cold"), table.median(w, peer))
        goals.append(
            (
                f"{w} cold vs {peer}",
                _x(r),
                f"<= {limit}x {what}".strip(),
                None if r is None else r <= limit,
            )
        )

    versus("big", "skopeo", 0.35, "")
    versus("big", "curl-files", 1.3, "(curl without fsync)")
    versus("many", "skopeo", 0.6, "")
    versus("many", "curl-files", 1.3, "(curl without fsync)")
    versus("tiny", "skopeo", 0.6, "")
    chart = table.median("chart", "hybridstore-cold")
    if chart is not None:
        goals.append(("chart cold wall", f"{chart:.3f} s", "<= 0.150 s", chart <= 0.15))
    for w in BLOB_WORKLOADS:
        row = table.get(w, "hybridstore-warm")
        warm = table.median(w, "hybridstore-warm")
        if row is not None and warm is not None:
            per = warm / row.pulls
            note = f" ({row.pulls} pulls)" if row.pulls > 1 else ""
            goals.append(
                (f"{w} warm wall per pull", f"{per:.3f} s{note}", "<= 0.150 s", per <= 0.15)
            )
        pinned = table.median(w, "hybridstore-digest-warm")
        if row is not None and pinned is not None:
            per = pinned / row.pulls
            goals.append(
                (f"{w} digest-pinned warm wall per pull", f"{per:.3f} s", "<= 0.100 s", per <= 0.1)
            )
    helptime = table.median("startup", "hybridstore --help")
    if helptime is not None:
        goals.append(("hybridstore --help", f"{helptime:.3f} s", "<= 0.150 s", helptime <= 0.15))
    shared = table.get("shared", "hybridstore-cold")
    if shared is not None and shared.disk_bytes is not None and "shared" in wls:
        x = shared.disk_bytes / wls["shared"].unique_bytes
        goals.append(("shared cold disk vs unique bytes", _x(x), "<= 1.02x", x <= 1.02))
    cold = table.median("shared", "hybridstore-cold")
    sk = table.median("shared", "skopeo-shared-cold")
    if cold is not None and sk is not None:
        floor = table.median("startup", "python -c pass") or STARTUP_FLOOR_FALLBACK
        bound = sk + 10 * floor
        goals.append(
            (
                "shared cold wall",
                f"{cold:.3f} s",
                f"<= {bound:.3f} s (skopeo-shared-cold {sk:.3f} + 10 x {floor:.3f})",
                cold <= bound,
            )
        )
    rss = [
        (r.stats.max_rss_mib, f"{r.workload}/{r.tool}")
        for r in table.rows
        if r.tool.startswith("hybridstore-") and r.stats is not None
    ]
    if rss:
        worst, where = max(rss)
        goals.append(
            (
                "peak RSS, every hybridstore row",
                f"{worst:.1f} MiB ({where})",
                "<= 64 MiB",
                worst <= 64,
            )
        )
    goals += _concurrency_goals(table, wls, "concurrent", "hybridstore", "pulls")
    return _goal_table("Goals of issue 8", goals)


def _concurrency_goals(
    table: Table, wls: Mapping[str, Workload], workload: str, prefix: str, what: str
) -> list[tuple[str, str, str, bool | None]]:
    """8 processes at once against one (``PREFIX-x1-cold``, ``PREFIX-x8-cold``): at most
    1.5x the time, and each blob fetched once."""
    one = table.median(workload, f"{prefix}-x1-cold")
    eight = table.get(workload, f"{prefix}-x8-cold")
    if one is None or eight is None or eight.stats is None:
        return []
    r = eight.stats.median / one
    want = wls[workload].unique_blob_endpoints
    got = max(c.blob_gets for c in eight.requests)
    return [
        (f"8 concurrent cold {what} vs one", _x(r), "<= 1.5x", r <= 1.5),
        (
            f"8 concurrent {what}: blob GETs per run (max)",
            str(got),
            f"== {want} blobs",
            got == want,
        ),
    ]


def _sync_goals(table: Table, wls: Mapping[str, Workload]) -> list[str]:
    """The speed goals of issue 18 (``hybridstore sync``)."""
    goals: list[tuple[str, str, str, bool | None]] = []
    cold = table.get("sync", "hybridstore-sync-cold")
    if cold is not None and cold.stats is not None:
        for peer, limit in (("skopeo", 0.3), ("skopeo-shared-cold", 1.0)):
            r = _ratio(cold.stats.median, table.median("sync", peer))
            label = "10 x skopeo copy" if peer == "skopeo" else "10 x skopeo, shared blob dir"
            ok = None if r is None else r <= limit
            goals.append((f"sync of shared vs {label}", _x(r), f"<= {limit}x", ok))
        if cold.disk_bytes is not None:
            x = cold.disk_bytes / wls["sync"].unique_bytes
            goals.append(("sync of shared: disk vs unique bytes", _x(x), "<= 1.02x", x <= 1.02))
    offline = table.median("sync", "hybridstore-sync-offline")
    if offline is not None:
        goals.append(
            (
                "warm sync --locked --offline, new project",
                f"{offline:.3f} s",
                "<= 0.250 s",
                offline <= 0.25,
            )
        )
    goals += _concurrency_goals(table, wls, "sync-concurrent", "hybridstore-sync", "syncs")
    return _goal_table("Goals of issue 18 (sync)", goals)


def _goal_table(title: str, goals: list[tuple[str, str, str, bool | None]]) -> list[str]:
    if not goals:
        return []
    out = [f"## {title}", ""]
    out += _header("goal", "measured", "target", "met")
    verdict = {True: "yes", False: "**no**", None: "n/a"}
    out += [_row([g, m, t, verdict[ok]]) for g, m, t, ok in goals]
    return [*out, ""]


def _contention(row: RowResult) -> str:
    st = row.stats
    if st is None:
        return ""
    return f"{st.contention:.0%}" + (f" ({row.repeats} repeated)" if row.repeats else "")


def _disk(row: RowResult, wl: Workload) -> str:
    if row.disk_bytes is None:
        return ""
    text = f"{row.disk_bytes / MIB:.1f} ({row.disk_bytes / wl.unique_bytes:.2f}x)"
    if row.store_bytes:
        text += f", store {row.store_bytes / MIB:.1f}"
    return text


def _details(table: Table, wls: Sequence[Workload]) -> list[str]:
    out = ["## Details", ""]
    out += _header(
        "workload",
        "tool",
        "median s",
        "min-max s",
        "MiB/s",
        "CPU s",
        "peak RSS MiB",
        "disk MiB (x unique)",
        "requests",
        "blob GETs",
        "other CPU",
        "check",
    )
    for wl in wls:
        for tool in table.tools([wl.name]):
            row = table.get(wl.name, tool)
            if row is None:
                continue
            st = row.stats
            if st is None:
                out.append(_row([wl.name, _label(table, tool), *[""] * 9, row.check]))
                continue
            out.append(
                _row(
                    [
                        wl.name,
                        _label(table, tool),
                        _s(st.median),
                        f"{st.low:.3f}-{st.high:.3f}",
                        f"{wl.logical_bytes / MIB / st.median:.0f}",
                        f"{st.cpu:.2f}",
                        f"{st.max_rss_mib:.1f}",
                        _disk(row, wl),
                        f"{row.median_requests('total'):.0f}",
                        f"{row.median_requests('blob_gets'):.0f}",
                        _contention(row),
                        row.check,
                    ]
                )
            )
    failures = [r for r in table.rows if r.error or r.problems]
    if failures:
        out += ["", "Failures:", ""]
        for r in failures:
            first = (r.error or "; ".join(r.problems[:3])).strip().splitlines()[0]
            out.append(f"- {r.workload}/{r.tool}: {first}")
    return [*out, ""]


def _concurrency(table: Table, wl: Workload) -> list[str]:
    one = table.median(wl.name, "hybridstore-x1-cold")
    out = [
        "## Concurrency: 8 processes pulling one image into 8 layouts, one cache",
        "",
        f"Image: `{wl.targets[0].repo}:{wl.targets[0].tag}`, {wl.unique_blob_endpoints} blobs "
        "behind `/blobs/` (config and layers) plus the manifest. Each blob should cross the "
        "network once per run, however many processes want it.",
        "",
    ]
    out += _header(
        "row",
        "median s",
        "min-max s",
        "x one cold pull",
        "blob GETs per run (min-max)",
        "blobs",
        "manifest GETs",
        "peak RSS MiB",
        "disk MiB (x unique)",
        "other CPU",
        "check",
    )
    for tool in table.tools([wl.name]):
        row = table.get(wl.name, tool)
        if row is None or row.stats is None:
            if row is not None:
                out.append(_row([tool, *[""] * 9, row.check]))
            continue
        st = row.stats
        gets = [c.blob_gets for c in row.requests]
        out.append(
            _row(
                [
                    tool,
                    _s(st.median),
                    f"{st.low:.3f}-{st.high:.3f}",
                    _x(_ratio(st.median, one)),
                    f"{min(gets)}-{max(gets)}",
                    wl.unique_blob_endpoints,
                    f"{row.median_requests('manifest_gets'):.0f}",
                    f"{st.max_rss_mib:.1f}",
                    _disk(row, wl),
                    _contention(row),
                    row.check,
                ]
            )
        )
    return [*out, ""]


def _startup(table: Table) -> list[str]:
    out = ["## Start-up", ""]
    out += _header("command", "median s", "min-max s", "peak RSS MiB", "note")
    for tool in table.tools(["startup"]):
        row = table.get("startup", tool)
        if row is None:
            continue
        st = row.stats
        if st is None:
            out.append(_row([f"`{tool}`", "", "", "", row.check]))
            continue
        out.append(
            _row(
                [
                    f"`{tool}`",
                    _s(st.median),
                    f"{st.low:.3f}-{st.high:.3f}",
                    f"{st.max_rss_mib:.1f}",
                    row.note,
                ]
            )
        )
    return [*out, ""]


def _templates(with_oras: bool) -> list[str]:
    out = ["## Rows (command per pull)", ""]
    extra = [t for t in sync_tools() + sync_concurrency_tools() if t.name.startswith("hybrid")]
    for tool in [*pull_tools(with_oras), *concurrency_tools(), *extra]:
        out.append(f"- `{tool.name}`: {tool.note}. `{tool.template}`")
    return [*out, ""]
