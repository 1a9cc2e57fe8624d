"""The rows of the benchmark: each tool (or limit) as a shell script per workload.

Every row owns ``<work>/<row>/``: ``dest/`` (layouts or plain files, one
``dest/<i>`` per pulled copy) and ``store/`` (the hybridstore cache or
skopeo's shared blob dir). Before every timed run an untimed prepare deletes
``dest/``, and ``store/`` too for cold rows; warm rows fill ``store/`` once
before the first round. A run is ``sh -e SCRIPT``, so multi-pull rows
(``shared``: 10 pulls; ``concurrent``: 8 at once) are timed as a whole.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workloads import Target, Workload

__all__ = [
    "Context",
    "Placement",
    "Tool",
    "concurrency_tools",
    "placements",
    "pull_tools",
    "sync_concurrency_tools",
    "sync_tools",
]

#: Accept list for manifests fetched by digest (distribution 2.8 refuses OCI without it).
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)

Placement = tuple[int, Target]  # (index of dest/<i>, what is pulled there)
Storage = Literal["layout", "shared-dir", "files"]


@dataclass(frozen=True)
class Context:
    host_port: str
    python: str
    hybridstore: str
    here: Path  # benchmarks/
    scripts: Path  # where generated scripts and curl configs go


@dataclass(frozen=True)
class Tool:
    """One row. ``render`` returns the shell lines for one run of a workload."""

    name: str
    note: str
    template: str  # shown in the report; placeholders as in ``render``
    render: Callable[[Context, Workload, Path, Path], list[str]]
    limit: bool = False  # a floor (curl), not a puller a user would pick
    cold: bool = False  # prepare empties store/ before every run
    warm: bool = False  # store/ is filled once, before the first round
    storage: Storage = "layout"
    copies: int = 1  # pulls of each target (concurrency rows: 8)
    project: bool = False  # a sync: every target of a copy in one layout, dest/<copy>

    def placements(self, workload: Workload) -> list[Placement]:
        if self.project:
            return [(k, t) for k in range(self.copies) for t in workload.targets]
        return placements(workload, self.copies)


def placements(workload: Workload, copies: int = 1) -> list[Placement]:
    """Where each pull goes: ``dest/<i>`` for every target, ``copies`` times each."""
    return [(i, t) for i, t in enumerate(t for t in workload.targets for _ in range(copies))]


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _per_pull(line: str, copies: int = 1, background: bool = False) -> Callable[..., list[str]]:
    """Lines for ``line`` formatted once per placement; ``background`` runs them at once."""

    def render(ctx: Context, wl: Workload, dest: Path, store: Path) -> list[str]:
        lines = []
        for i, target in placements(wl, copies):
            cmd = line.format(
                py=_q(ctx.python),
                here=_q(ctx.here),
                hybridstore=_q(ctx.hybridstore),
                store=_q(store),
                dest=_q(dest / str(i)),
                ref=_q(target.ref(ctx.host_port)),
                digest_ref=_q(f"{ctx.host_port}/{target.repo}@{target.manifest.digest}"),
                tag=_q(target.tag),
            )
            lines.append(f'{cmd} & pids="$pids $!"' if background else cmd)
        if background:
            wait_all = 'rc=0; for p in $pids; do wait "$p" || rc=1; done'
            lines = ["pids=", *lines, wait_all, "exit $rc"]
        return lines

    return render


def _curl(parallel: bool, fsync: bool) -> Callable[..., list[str]]:
    """One curl process for every blob (keep-alive), each to ``dest/<i>/blobs/sha256/<hex>``.

    The blob URLs are known in advance: a floor for receiving and writing,
    with no manifest round trip, no hashing and (without ``fsync``) no durability.
    """

    def render(ctx: Context, wl: Workload, dest: Path, store: Path) -> list[str]:
        config = ctx.scripts / f"{dest.parent.name}.curl"  # dest.parent: the row's own dir
        entries, files = [], []
        for i, target in placements(wl):
            base = f"http://{ctx.host_port}/v2/{target.repo}"
            urls = [(f"{base}/manifests/{target.manifest.digest}", target.manifest)]
            urls += [(f"{base}/blobs/{b.digest}", b) for b in target.blobs]
            for url, blob in urls:
                out = dest / str(i) / "blobs" / "sha256" / blob.hex
                entries.append(f'url = "{url}"\noutput = "{out}"\n')
                files.append(out)
        config.write_text("".join(entries))
        opts = "--parallel --parallel-max 4 " if parallel else ""
        lines = [
            f"curl -q -sS --fail --create-dirs -H {_q('Accept: ' + MANIFEST_ACCEPT)} "
            f"{opts}--config {_q(config)}"
        ]
        if fsync:
            lines.append("sync -- " + " ".join(_q(f) for f in files))
        return lines

    return render


_HS = "{hybridstore} -q --cache {store} pull --plain-http --layout {dest} {ref}"
_HS_DIGEST = "{hybridstore} -q --cache {store} pull --plain-http --layout {dest} {digest_ref}"
_SKOPEO = "skopeo --insecure-policy copy -q --src-tls-verify=false docker://{ref} oci:{dest}:{tag}"
_SKOPEO_SHARED = (
    "skopeo --insecure-policy copy -q --src-tls-verify=false "
    "--dest-shared-blob-dir {store} docker://{ref} oci:{dest}:{tag}"
)
_ORAS = "{py} {here}/oraspull.py {dest} {ref}"
_REQUESTS = "{py} {here}/refpull.py --jobs 4 {dest} {ref}"
_CURL = "curl -sS --fail --create-dirs -H 'Accept: ...' --config FILE (url/output per blob)"


def pull_tools(with_oras: bool) -> list[Tool]:
    """The side-by-side rows of issue 8, in report order."""
    tools = [
        Tool("hybridstore-cold", "empty cache, new layout", _HS, _per_pull(_HS), cold=True),
        Tool("hybridstore-warm", "every blob cached, new layout", _HS, _per_pull(_HS), warm=True),
        Tool(
            "hybridstore-digest-warm",
            "every blob cached, ref pinned by digest (no request), new layout",
            _HS_DIGEST,
            _per_pull(_HS_DIGEST),
            warm=True,
        ),
        Tool("skopeo", "copy docker:// -> oci: (fsync per blob)", _SKOPEO, _per_pull(_SKOPEO)),
        Tool(
            "skopeo-shared-cold",
            "--dest-shared-blob-dir, dir emptied before each run",
            _SKOPEO_SHARED,
            _per_pull(_SKOPEO_SHARED),
            cold=True,
            storage="shared-dir",
        ),
        Tool(
            "skopeo-shared-warm",
            "--dest-shared-blob-dir already holding every blob",
            _SKOPEO_SHARED,
            _per_pull(_SKOPEO_SHARED),
            warm=True,
            storage="shared-dir",
        ),
    ]
    if with_oras:
        tools.append(
            Tool(
                "oras-py",
                "oras.layout.NewLayoutFromRegistry: into an OCI layout "
                "(sequential, 8 KiB chunks, no digest check)",
                _ORAS,
                _per_pull(_ORAS),
            )
        )
    tools += [
        Tool(
            "requests-4",
            "limit: requests + hashlib, 1 MiB chunks, 4 threads, verified, no fsync",
            _REQUESTS,
            _per_pull(_REQUESTS),
            limit=True,
        ),
        Tool(
            "curl-files",
            "limit: one curl, keep-alive, sequential, blobs to files (no hash, no fsync)",
            _CURL,
            _curl(parallel=False, fsync=False),
            limit=True,
            storage="files",
        ),
        Tool(
            "curl-Z4-files",
            "limit: as curl-files with --parallel --parallel-max 4",
            _CURL + " --parallel --parallel-max 4",
            _curl(parallel=True, fsync=False),
            limit=True,
            storage="files",
        ),
        Tool(
            "curl-files+fsync",
            "limit: curl-files, then `sync FILE...` (fsync each blob)",
            _CURL + " && sync -- FILES",
            _curl(parallel=False, fsync=True),
            limit=True,
            storage="files",
        ),
    ]
    return tools


def concurrency_tools() -> list[Tool]:
    """8 processes pulling one image into 8 layouts with one cache, against one pull."""
    return [
        Tool("hybridstore-x1-cold", "one pull, empty cache", _HS, _per_pull(_HS), cold=True),
        Tool(
            "hybridstore-x8-cold",
            "8 pulls at once into 8 layouts, one empty cache",
            _HS + " & (x8); wait",
            _per_pull(_HS, copies=8, background=True),
            cold=True,
            copies=8,
        ),
        Tool(
            "hybridstore-x8-warm",
            "8 pulls at once into 8 new layouts, every blob cached",
            _HS + " & (x8); wait",
            _per_pull(_HS, copies=8, background=True),
            warm=True,
            copies=8,
        ),
    ]


_SYNC = "{hybridstore} -q --cache {store} sync --plain-http -f {file}"
_SYNC_OFFLINE = "{hybridstore} -q --cache {store} sync --locked --offline -f {file}"


def _sync(
    ctx: Context, wl: Workload, dest: Path, store: Path, copies: int, lines: list[str]
) -> list[str]:
    """Write one project per copy (every target, into the one layout ``dest/<copy>``);
    return ``lines`` formatted for each project (``{file}``, ``{lock}``, ``{store}``)."""
    out = []
    for k in range(copies):
        project = ctx.scripts / f"{dest.parent.name}-p{k}"
        project.mkdir(parents=True, exist_ok=True)
        refs = "".join(f"  - {target.ref(ctx.host_port)}\n" for target in wl.targets)
        (project / "hybridstore.yaml").write_text(f"layout: {dest / str(k)}\nrefs:\n{refs}")
        for line in lines:
            out.append(
                line.format(
                    hybridstore=_q(ctx.hybridstore),
                    store=_q(store),
                    file=_q(project / "hybridstore.yaml"),
                    lock=_q(project / "hybridstore.lock"),
                )
            )
    return out


def _sync_cold(copies: int) -> Callable[..., list[str]]:
    """A fresh project (no lock) per copy; ``copies`` > 1 run at once."""

    def render(ctx: Context, wl: Workload, dest: Path, store: Path) -> list[str]:
        lines = _sync(ctx, wl, dest, store, copies, ["rm -f {lock}; " + _SYNC])
        if copies == 1:
            return lines
        return [
            "pids=",
            *(f'{{ {x}; }} & pids="$pids $!"' for x in lines),
            'rc=0; for p in $pids; do wait "$p" || rc=1; done',
            "exit $rc",
        ]

    return render


def _sync_offline(ctx: Context, wl: Workload, dest: Path, store: Path) -> list[str]:
    """The lock is written by the untimed seeding run; every timed run is offline."""
    return _sync(ctx, wl, dest, store, 1, ["[ -f {lock} ] || " + _SYNC, _SYNC_OFFLINE])


def sync_tools() -> list[Tool]:
    """``shared`` as one sync, against ten skopeo copies (with and without a shared dir)."""
    peers = [t for t in pull_tools(False) if t.name in ("skopeo", "skopeo-shared-cold")]
    return [
        Tool(
            "hybridstore-sync-cold",
            "one sync of a project of the 10 refs (one layout), empty cache, no lock",
            _SYNC,
            _sync_cold(1),
            cold=True,
            project=True,
        ),
        Tool(
            "hybridstore-sync-offline",
            "sync --locked --offline into a new layout: lock + warm cache",
            _SYNC_OFFLINE,
            _sync_offline,
            warm=True,
            project=True,
        ),
        *peers,
    ]


def sync_concurrency_tools() -> list[Tool]:
    """8 syncs at once of 8 projects holding ``many``, one cache, against one sync."""
    return [
        Tool(
            "hybridstore-sync-x1-cold",
            "one sync, empty cache",
            _SYNC,
            _sync_cold(1),
            cold=True,
            project=True,
        ),
        Tool(
            "hybridstore-sync-x8-cold",
            "8 syncs at once of 8 projects, one empty cache",
            _SYNC + " & (x8); wait",
            _sync_cold(8),
            cold=True,
            copies=8,
            project=True,
        ),
    ]
