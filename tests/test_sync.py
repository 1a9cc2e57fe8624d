"""``hybridstore sync`` end to end against the real distribution registry."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from support.oci_builder import LayoutBuilder, SampleContent, push_built
from support.registry import Registry

from hybridstore.errors import ConflictError, NotFoundError
from hybridstore.fs.locking import FileLock
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.remote.transport import TransportOptions
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import verify_layout
from hybridstore.sync import sync

pytestmark = pytest.mark.registry

PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]


def write_project(root: Path, doc: dict[str, object]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "hybridstore.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ref_names(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_bytes())
    return {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }


def blob_gets(registry: Registry, since: int) -> list[str]:
    return [
        e.path.rsplit("/", 1)[1]
        for e in registry.access_log_requests(since)
        if e.method == "GET" and "/blobs/" in e.path
    ]


def run_cli(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYBRIDSTORE_CACHE_DIR": str(cache)}
    return subprocess.run(
        [*HYBRIDSTORE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def sample_project(tmp_path: Path, registry_content: SampleContent) -> Callable[[str], Path]:
    """A project with an image, one platform of an index (into a second layout) and a chart."""

    def make(name: str = "project") -> Path:
        c = registry_content
        return write_project(
            tmp_path / name,
            {
                "refs": [
                    f"oci://{c.image.ref}",
                    {"ref": c.index.ref, "platforms": ["linux/arm64"], "layout": "multi"},
                    {"ref": c.chart.ref, "ref-name": "charts/demo:0.1.0"},
                ]
            },
        )

    return make


def test_sync_locks_pulls_and_a_second_sync_asks_the_registry_nothing(
    sample_project: Callable[[str], Path],
    registry: Registry,
    registry_content: SampleContent,
    tmp_cache: Path,
) -> None:
    c = registry_content
    project = sample_project("project")
    result = sync(project, transport=PLAIN)
    assert result.lock_written
    assert {i.action for i in result.items} == {"added"}
    root = project.parent
    assert ref_names(root / "oci") == {
        c.image.ref: c.image.digest,
        "charts/demo:0.1.0": c.chart.digest,
    }
    assert ref_names(root / "multi") == {c.index.ref: c.index.digest}
    for layout in ("oci", "multi"):
        assert verify_layout(OCILayout.open(root / layout)).ok
    lock_bytes = (root / "hybridstore.lock").read_bytes()
    lock = yaml.safe_load(lock_bytes)
    assert lock["version"] == 1
    assert [(r["layout"], r["name"]) for r in lock["refs"]] == sorted(
        (r["layout"], r["name"]) for r in lock["refs"]
    )
    multi = next(r for r in lock["refs"] if r["layout"] == "multi")
    assert multi["platforms"] == ["linux/arm64/v8"] and multi["digest"] == c.index.digest
    assert multi["size"] == len(c.index.built.manifest.data)

    mark = registry.access_log_mark()
    again = sync(project, transport=PLAIN)
    assert not again.lock_written and (root / "hybridstore.lock").read_bytes() == lock_bytes
    assert {i.action for i in again.items} == {"unchanged"}
    assert registry.access_log_requests(mark) == []  # locked and cached: no request at all


def test_a_moved_tag_keeps_its_locked_digest_until_update(
    tmp_path: Path, registry: Registry, repo_name: str, tmp_cache: Path
) -> None:
    b = LayoutBuilder(tmp_path / "src", seed="moved")
    first, second = b.image("a", seed="first"), b.image("b", seed="second")
    push_built(first, registry, f"{repo_name}:stable")
    ref = f"{registry.host_port}/{repo_name}:stable"
    project = write_project(tmp_path / "p", {"refs": [ref]})
    sync(project, transport=PLAIN)
    push_built(second, registry, f"{repo_name}:stable")

    kept = sync(project, transport=PLAIN)
    assert not kept.lock_written and ref_names(tmp_path / "p" / "oci") == {ref: first.digest}

    updated = sync(project, update=[ref], transport=PLAIN)
    assert updated.lock_written and [i.action for i in updated.items] == ["updated"]
    assert ref_names(tmp_path / "p" / "oci") == {ref: second.digest}
    assert (
        yaml.safe_load((tmp_path / "p" / "hybridstore.lock").read_bytes())["refs"][0]["digest"]
        == second.digest
    )


def test_locked_fails_with_exit_8_and_changes_nothing(
    sample_project: Callable[[str], Path], registry_content: SampleContent, tmp_cache: Path
) -> None:
    project = sample_project("project")
    root = project.parent
    assert run_cli("sync", "--plain-http", cwd=root, cache=tmp_cache).returncode == 0
    before = (root / "hybridstore.lock").read_bytes(), (root / "oci" / "index.json").read_bytes()
    doc = yaml.safe_load(project.read_text())
    doc["refs"].append(registry_content.artifact.ref)
    project.write_text(yaml.safe_dump(doc))

    proc = run_cli("sync", "--locked", "--plain-http", cwd=root, cache=tmp_cache)
    assert proc.returncode == 8, proc.stderr
    assert "not locked" in proc.stderr and registry_content.artifact.ref in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    after = (root / "hybridstore.lock").read_bytes(), (root / "oci" / "index.json").read_bytes()
    assert after == before


def test_offline_into_a_new_project_opens_no_socket(
    sample_project: Callable[[str], Path],
    tmp_path: Path,
    tmp_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = sample_project("first")
    sync(first, transport=PLAIN)
    second = sample_project("second")
    (second.parent / "hybridstore.lock").write_bytes(
        (first.parent / "hybridstore.lock").read_bytes()
    )

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("sync --offline opened a socket")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    result = sync(second, locked=True, offline=True)
    assert {i.action for i in result.items} == {"added"} and not result.lock_written
    assert ref_names(second.parent / "oci") == ref_names(first.parent / "oci")
    assert verify_layout(OCILayout.open(second.parent / "multi")).ok


def test_offline_with_a_cold_cache_lists_what_is_missing_and_creates_nothing(
    sample_project: Callable[[str], Path], tmp_path: Path, tmp_cache: Path
) -> None:
    first = sample_project("first")
    sync(first, transport=PLAIN, cache=tmp_path / "other-cache")
    second = sample_project("second")
    lock = (first.parent / "hybridstore.lock").read_bytes()
    (second.parent / "hybridstore.lock").write_bytes(lock)

    proc = run_cli("sync", "--offline", cwd=second.parent, cache=tmp_cache)
    assert proc.returncode == 4, proc.stderr
    assert "the cache lacks 3 entries" in proc.stderr and "Traceback" not in proc.stderr
    left = sorted(p.name for p in second.parent.iterdir())
    assert left == ["hybridstore.lock", "hybridstore.lock.lock", "hybridstore.yaml"]
    assert (second.parent / "hybridstore.lock").read_bytes() == lock

    doc = yaml.safe_load(second.read_text())
    doc["refs"].append("localhost:1/never/resolved:1")
    second.write_text(yaml.safe_dump(doc))
    with pytest.raises(NotFoundError, match="not in the lock.*localhost:1/never/resolved:1"):
        sync(second, offline=True)


def test_sync_removes_only_the_refs_it_created(
    sample_project: Callable[[str], Path], registry_content: SampleContent, tmp_cache: Path
) -> None:
    c = registry_content
    project = sample_project("project")
    root = project.parent
    sync(project, transport=PLAIN)
    layout = OCILayout.open(root / "oci")
    image = layout.resolve(c.image.ref)
    layout.tag(image, "by-hand:1")
    doc = yaml.safe_load(project.read_text())
    doc["refs"] = doc["refs"][1:]  # the image entry goes
    project.write_text(yaml.safe_dump(doc))

    result = sync(project, transport=PLAIN)
    assert ("removed", c.image.ref) in {(i.action, i.ref) for i in result.items}
    assert ref_names(root / "oci") == {
        "by-hand:1": c.image.digest,
        "charts/demo:0.1.0": c.chart.digest,
    }
    assert all(
        r["name"] != c.image.ref
        for r in yaml.safe_load((root / "hybridstore.lock").read_text())["refs"]
    )


def test_a_hand_tagged_ref_is_never_overwritten_or_removed(
    sample_project: Callable[[str], Path], registry_content: SampleContent, tmp_cache: Path
) -> None:
    c = registry_content
    project = sample_project("project")
    root = project.parent
    layout = OCILayout.create(root / "oci")
    chart = Descriptor(
        "application/vnd.oci.image.manifest.v1+json",
        Digest.parse(c.chart.digest),
        len(c.chart.built.manifest.data),
    )
    layout.push_bytes(chart, c.chart.built.manifest.data)
    layout.tag(chart, c.image.ref)  # the image's name, pointing elsewhere, by hand
    before = (root / "oci" / "index.json").read_bytes()

    with pytest.raises(ConflictError, match="not created by sync"):
        sync(project, transport=PLAIN)
    assert (root / "oci" / "index.json").read_bytes() == before
    assert not (root / "hybridstore.lock").exists() and not (root / "multi").exists()

    layout.untag(c.image.ref)
    sync(project, transport=PLAIN)  # the name is free now: sync creates and owns it
    lock = yaml.safe_load((root / "hybridstore.lock").read_text())
    assert all(r["owned"] for r in lock["refs"])


def test_a_ref_pulled_by_hand_before_sync_is_adopted_but_never_removed(
    tmp_path: Path, registry_content: SampleContent, tmp_cache: Path
) -> None:
    from hybridstore.pull import pull

    ref = registry_content.image.ref
    project = write_project(tmp_path / "p", {"refs": [ref]})
    pull(ref, layout=tmp_path / "p" / "oci", transport=PLAIN)
    sync(project, transport=PLAIN)
    assert (
        yaml.safe_load((tmp_path / "p" / "hybridstore.lock").read_text())["refs"][0]["owned"]
        is False
    )
    write_project(tmp_path / "p", {"refs": []})
    result = sync(project, transport=PLAIN)
    assert [i.action for i in result.items] == ["kept"]
    assert ref_names(tmp_path / "p" / "oci") == {ref: registry_content.image.digest}


def test_a_missing_ref_fails_with_its_line_and_leaves_nothing(
    tmp_path: Path, registry: Registry, registry_content: SampleContent, tmp_cache: Path
) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "hybridstore.yaml").write_text(
        f"refs:\n  - {registry_content.image.ref}\n  - ref: {registry.host_port}/no/such:1\n"
    )
    proc = run_cli("sync", "--plain-http", cwd=root, cache=tmp_cache)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.startswith("hybridstore: error: hybridstore.yaml:3:5: ")
    assert f"{registry.host_port}/no/such:1" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in root.iterdir()) == ["hybridstore.lock.lock", "hybridstore.yaml"]


def test_two_syncs_of_one_project_take_turns_the_second_waiting_visibly(
    sample_project: Callable[[str], Path], tmp_cache: Path
) -> None:
    root = sample_project("project").parent
    held = FileLock(root / "hybridstore.lock.lock")
    assert held.try_acquire()
    env = {**os.environ, "HYBRIDSTORE_CACHE_DIR": str(tmp_cache)}
    proc = subprocess.Popen(
        [*HYBRIDSTORE, "sync", "--plain-http"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first_line = proc.stderr.readline()  # blocks until the waiting message
        assert "waiting for another sync" in first_line
        assert not (root / "hybridstore.lock").exists() and not (root / "oci").exists()
    finally:
        held.release()
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert (root / "hybridstore.lock").exists()


def test_two_projects_syncing_at_once_fetch_each_blob_once(
    tmp_path: Path, registry: Registry, repo_name: str, tmp_cache: Path
) -> None:
    image = LayoutBuilder(tmp_path / "src", seed="shared").image("x", layers=6, file_size=200_000)
    push_built(image, registry, f"{repo_name}:1")
    ref = f"{registry.host_port}/{repo_name}:1"
    roots = [write_project(tmp_path / f"p{i}", {"refs": [ref]}).parent for i in range(2)]
    env = {**os.environ, "HYBRIDSTORE_CACHE_DIR": str(tmp_cache)}
    mark = registry.access_log_mark()
    procs = [
        subprocess.Popen([*HYBRIDSTORE, "-q", "sync", "--plain-http"], cwd=r, env=env)
        for r in roots
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    gets = blob_gets(registry, mark)
    assert sorted(gets) == sorted(set(gets)) and set(gets) == set(image.blobs) - {image.digest}
    assert ref_names(roots[0] / "oci") == ref_names(roots[1] / "oci") == {ref: image.digest}


def test_helm_dependencies_are_written_byte_identical_through_the_cache(
    tmp_path: Path,
    registry: Registry,
    registry_content: SampleContent,
    repo_name: str,
    tmp_cache: Path,
) -> None:
    plus = LayoutBuilder(tmp_path / "src", seed="plus").helm_chart(
        name="plus-chart", version="0.2.0+build.1"
    )
    push_built(plus, registry, f"{repo_name}/plus-chart:0.2.0_build.1")  # Helm's tag rule
    host = registry.host_port

    def project(name: str) -> Path:
        chart = tmp_path / name / "deploy" / "app"
        chart.mkdir(parents=True)
        (chart / "Chart.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v2",
                    "name": "app",
                    "version": "1.0.0",
                    "dependencies": [
                        {
                            "name": "demo-chart",
                            "version": "0.1.0",
                            "repository": f"oci://{host}/sample/charts",
                        },
                        {
                            "name": "plus-chart",
                            "version": "0.2.0+build.1",
                            "repository": f"oci://{host}/{repo_name}",
                        },
                        {
                            "name": "redis",
                            "version": "17.0.0",
                            "repository": "https://charts.example.com",
                        },
                    ],
                }
            )
        )
        return write_project(tmp_path / name, {"helm": ["deploy/app"]})

    first = project("first")
    result = sync(first, transport=PLAIN)
    charts = first.parent / "deploy" / "app" / "charts"
    demo_layer = registry_content.chart.built.layers[0]
    assert (charts / "demo-chart-0.1.0.tgz").read_bytes() == demo_layer.data
    assert (charts / "plus-chart-0.2.0+build.1.tgz").read_bytes() == plus.layers[0].data
    assert sorted(p.name for p in charts.iterdir()) == [
        "demo-chart-0.1.0.tgz",
        "plus-chart-0.2.0+build.1.tgz",
    ]
    assert result.left_to_helm == ["deploy/app: redis 17.0.0 from https://charts.example.com"]
    lock = yaml.safe_load((first.parent / "hybridstore.lock").read_text())
    assert {c["archive"]["digest"] for c in lock["charts"]} == {
        demo_layer.digest,
        plus.layers[0].digest,
    }

    mark = registry.access_log_mark()
    second = project("second")
    sync(second, transport=PLAIN)
    assert blob_gets(registry, mark) == []  # the second project transfers no blob
    assert (
        second.parent / "deploy/app/charts/demo-chart-0.1.0.tgz"
    ).read_bytes() == demo_layer.data


def test_the_sync_example_project_runs(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "examples" / "sync_project.sh"
    env = dict(os.environ, HYBRIDSTORE=f"{sys.executable} -m hybridstore.cli", TMPDIR=str(tmp_path))
    env.pop("HYBRIDSTORE_CACHE_DIR", None)
    done = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "second sync transferred 0 bytes" in done.stdout
    assert "offline checkout matches" in done.stdout
    assert "sync --locked exits 8" in done.stdout
    assert "web-2.1.0+build.7.tgz" in done.stdout
    plan = done.stdout[done.stdout.index("== after an edit") :]
    assert re.search(r"^remove +oci \S+/charts/redis-lite:1\.0\.0 ", plan, re.M)
    assert "lock not written (dry run)" in plan


def test_a_failure_after_pulling_removes_the_new_layout_and_writes_no_lock(
    tmp_path: Path, registry_content: SampleContent, tmp_cache: Path
) -> None:
    c = registry_content
    project = write_project(
        tmp_path / "p",
        {
            "refs": [
                {"ref": c.image.ref, "layout": "fresh"},
                {"ref": c.index.ref, "platforms": ["linux/s390x"], "layout": "fresh"},
            ]
        },
    )
    with pytest.raises(NotFoundError, match=r"hybridstore.yaml:4:3: .*linux/s390x"):
        sync(project, transport=PLAIN)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "hybridstore.lock.lock",
        "hybridstore.yaml",
    ]


def test_offline_with_an_empty_cache_reads_what_the_layouts_hold(
    sample_project: Callable[[str], Path], tmp_path: Path, tmp_cache: Path
) -> None:
    project = sample_project("project")
    sync(project, transport=PLAIN)
    index_before = (project.parent / "oci" / "index.json").read_bytes()
    empty = tmp_path / "empty-cache"  # a carried layout on a machine whose cache is empty
    result = sync(project, locked=True, offline=True, cache=empty)
    assert {i.action for i in result.items} == {"unchanged"}
    assert (project.parent / "oci" / "index.json").read_bytes() == index_before
