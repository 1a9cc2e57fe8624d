"""Measure one child run (wall, CPU, peak RSS), disk use, and describe the machine.

Peak RSS comes from GNU time (``/usr/bin/time -f %M``), not from this
process's own ``wait4``: Linux records the *old* address space's high-water
mark when a process execs, and a child forked (or vforked) from this harness
starts out with the harness's resident set, so ``ru_maxrss`` of a direct
child reports the harness (50+ MiB), not the tool. GNU time is a tiny C
program: its child starts small, and the ``%M`` it prints is that child's
peak, which covers every descendant the child waited for (``sh`` waits for
its commands), i.e. the largest single process of one run. Wall time and CPU
come from this process (``perf_counter`` around fork..reap, and ``wait4``).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Final

__all__ = [
    "TIME",
    "RunFailed",
    "Sample",
    "Stats",
    "child_env",
    "cpu_count",
    "cpu_snapshot",
    "disk_usage",
    "machine_info",
    "precompile",
    "run_timed",
    "summarize",
    "timed_with_contention",
]

TIME = "/usr/bin/time"  # GNU time (Debian package "time")
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class RunFailed(RuntimeError):
    """A measured command exited non-zero; the message holds its log tail."""


@dataclass(frozen=True)
class Sample:
    """One timed run of one command line."""

    wall: float  # seconds, fork to reap
    cpu: float  # user + sys seconds of the whole process tree
    max_rss_kib: int  # largest single process of the tree
    contention: float = 0.0  # share of all CPUs busy outside the tree and the registry


@dataclass(frozen=True)
class Stats:
    """Median and spread of several samples."""

    n: int
    median: float
    low: float
    high: float
    cpu: float  # median
    max_rss_mib: float  # max over the runs: the goal is a ceiling, so report the worst
    contention: float  # median


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for measured tools: no proxies (everything is loopback).

    ``PYTHONDONTWRITEBYTECODE`` is dropped: with it, every start of an
    uninstalled checkout compiles its sources again (30-40 ms of CPU for
    ``hybridstore pull``), which no installed copy pays. Byte code goes to the
    usual (git-ignored) ``__pycache__/`` directories; see ``precompile``.
    """
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env.pop("HYBRIDSTORE_CACHE_DIR", None)  # every hybridstore row passes --cache
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra or {})
    return env


def precompile(paths: Iterable[Path], env: Mapping[str, str]) -> None:
    """Byte-compile the checkout's own Python code once, as installing it would."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *(str(p) for p in paths)],
        env=dict(env),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_timed(
    argv: Sequence[str], log: Path, env: Mapping[str, str], timeout: float = 900.0
) -> Sample:
    """Run ``argv`` once under GNU time; its output goes to ``log``. ``RunFailed`` on failure.

    The child leads its own process group so a watchdog can stop exactly it
    (and its children) if it hangs.
    """
    rss_file = log.with_suffix(".rss")
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [TIME, "-f", "%M", "-o", str(rss_file), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )
        watchdog = threading.Timer(timeout, _kill_group, args=(proc.pid,))
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        raise RunFailed(f"exit {proc.returncode}: {' '.join(argv)}\n{tail}")
    # The last line is %M; GNU time puts "Command exited with ..." lines before it.
    max_rss = int(rss_file.read_text().split()[-1])
    return Sample(wall, usage.ru_utime + usage.ru_stime, max_rss)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def summarize(samples: Sequence[Sample]) -> Stats:
    walls = [s.wall for s in samples]
    return Stats(
        n=len(samples),
        median=statistics.median(walls),
        low=min(walls),
        high=max(walls),
        cpu=statistics.median(s.cpu for s in samples),
        max_rss_mib=max(s.max_rss_kib for s in samples) / 1024,
        contention=statistics.median(s.contention for s in samples),
    )


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pid: int | None) -> tuple[float, float]:
    """(CPU seconds the whole machine was busy, CPU seconds of process ``pid``) so far.

    Their deltas around a run, minus the run's own CPU, give what else kept
    the machine busy meanwhile (other jobs, write-back): the contention check.
    Tick resolution (10 ms) makes it meaningful for runs of 0.1 s and more.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(f) for f in fields]
        busy = sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    own = 0
    if pid is not None:
        try:
            stat_fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            own = int(stat_fields[11]) + int(stat_fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            own = 0
    return busy / _TICK, own / _TICK


def timed_with_contention(
    argv: Sequence[str], log: Path, env: Mapping[str, str], registry_pid: int | None
) -> Sample:
    """``run_timed`` plus the share of all CPUs that something else used meanwhile."""
    busy0, reg0 = cpu_snapshot(registry_pid)
    sample = run_timed(argv, log, env)
    busy1, reg1 = cpu_snapshot(registry_pid)
    other = (busy1 - busy0) - (reg1 - reg0) - sample.cpu
    share = max(0.0, other) / (max(sample.wall, 1e-6) * cpu_count())
    return replace(sample, contention=share)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def disk_usage(paths: Iterable[Path]) -> int:
    """Allocated bytes under ``paths``, each inode counted once (like one ``du`` call).

    Hard links between layouts and the cache therefore cost nothing extra;
    directories count too, as ``du`` counts them.
    """
    seen: set[tuple[int, int]] = set()
    total = 0

    def add(p: str) -> None:
        nonlocal total
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            total += st.st_blocks * 512

    for root in paths:
        if not root.exists():
            continue
        add(str(root))
        for dirpath, dirnames, filenames in os.walk(root):
            for name in (*dirnames, *filenames):
                add(os.path.join(dirpath, name))
    return total


def _first_line(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _meminfo_gib() -> str:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return "?"
    m = re.search(r"^MemTotal:\s+(\d+) kB", text, re.M)
    return f"{int(m.group(1)) / 1024 / 1024:.1f} GiB" if m else "?"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "?"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else platform.processor() or "?"


#: On ext4 without a journal the kernel skips inodes freed in the last minute when it
#: allocates one, looking each up as it goes: file creation soon after deletions
#: (the prepare step deletes the previous run) costs every tool CPU per file.
EXT4_WITHOUT_JOURNAL: Final = "without a journal"


def filesystem(path: Path, sysfs_ext4: Path = Path("/sys/fs/ext4")) -> str:
    """The filesystem type of the mount holding ``path`` (longest matching mount
    point), with "without a journal" for such an ext4 (see ``EXT4_WITHOUT_JOURNAL``)."""
    best, fstype, source = "", "?", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return fstype
    target = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1]
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) > len(best):
            best, fstype, source = mnt, parts[2], parts[0]
    if fstype == "ext4" and ext4_journal(source, sysfs_ext4) is False:
        return f"ext4 {EXT4_WITHOUT_JOURNAL}"
    return fstype


def ext4_journal(source: str, sysfs_ext4: Path = Path("/sys/fs/ext4")) -> bool | None:
    """Whether the ext4 on device ``source`` has a journal; ``None`` if sysfs does not say.

    ``/sys/fs/ext4/<device>/journal_task`` names the journal thread, or ``<none>``.
    """
    device = os.path.basename(os.path.realpath(source))
    try:
        task = (sysfs_ext4 / device / "journal_task").read_text().strip()
    except OSError:
        return None
    return task != "<none>"


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_revision(repo: Path) -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        return "?"
    return f"{rev or '?'}{' + local changes' if dirty else ''}"


def machine_info(workdir: Path, repo: Path) -> dict[str, str]:
    """What a reader needs to compare this report with another one."""
    cpus = cpu_count()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{cpus} ({_cpu_model()})",
        "memory": _meminfo_gib(),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "filesystem": f"{filesystem(workdir)} ({workdir})",
        "python": f"{platform.python_version()} ({sys.executable})",
        "hybridstore": f"{_package_version('hybridstore')} (git {_git_revision(repo)})",
        "skopeo": _first_line(["skopeo", "--version"]),
        "registry": _first_line(["docker-registry", "--version"]),
        "curl": _first_line(["curl", "--version"]),
        "oras-py": _package_version("oras"),
        "requests": _package_version("requests"),
    }
