"""hybridstore.yaml, hybridstore.lock and Helm dependency reading: no registry needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from hybridstore.errors import InvalidInputError
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.project.helmdeps import HelmDependency, read_dependencies
from hybridstore.project.lockfile import Lock, LockedChart, LockedRef, read_lock, write_lock
from hybridstore.project.plan import make_plan
from hybridstore.project.projectfile import load_project

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def project_at(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hybridstore.yaml"
    path.write_text(text)
    return path


def problem(tmp_path: Path, text: str) -> str:
    with pytest.raises(InvalidInputError) as info:
        load_project(project_at(tmp_path, text))
    return str(info.value).replace(str(tmp_path) + "/", "")


def test_the_issue_example_loads_with_defaults(tmp_path: Path) -> None:
    project = load_project(
        project_at(
            tmp_path,
            "layout: oci\n"
            "refs:\n"
            "  - oci://registry.example.com/charts/app:1.2.3\n"
            "  - ref: registry.example.com/team/api:2.0\n"
            "    platforms: [linux/amd64, linux/arm64]\n"
            "    include-referrers: true\n"
            f"  - ref: registry.example.com/tools/cli@sha256:{'a' * 64}\n"
            "    layout: tools\n"
            "    ref-name: cli:pinned\n"
            "helm:\n"
            "  - deploy/mychart\n",
        )
    )
    app, api, cli = project.refs
    assert (app.layout, app.name) == ("oci", "registry.example.com/charts/app:1.2.3")
    assert api.platforms == ("linux/amd64", "linux/arm64") and api.include_referrers
    assert (cli.layout, cli.name) == ("tools", "cli:pinned")
    assert [c.path for c in project.charts] == ["deploy/mychart"]
    assert project.lock_path == tmp_path / "hybridstore.lock"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("refs: [a\n", "hybridstore.yaml:2:1: invalid YAML"),
        (
            "refs:\n  - ref: r.example.com/a:1\n    plaforms: [linux/amd64]\n",
            "hybridstore.yaml:3:5: unknown key 'plaforms'",
        ),
        ("layout: a\nlayout: b\n", "hybridstore.yaml:2:1: duplicate key 'layout'"),
        (
            "refs:\n  - ref: r.example.com/a:1\n    platforms: linux/amd64\n",
            "hybridstore.yaml:3:16: refs[0].platforms: 'linux/amd64' is not of type 'array'",
        ),
        (
            "refs:\n  - ref: r.example.com/a:1\n    platforms: [linux]\n",
            "hybridstore.yaml:3:17: refs[0].platforms[0]: 'linux' is not OS/ARCH[/VARIANT]",
        ),
        ("refs:\n  - layout: x\n", "hybridstore.yaml:2:5: refs[0]: 'ref' is a required property"),
        (
            "refs:\n  - r.example.com/a:1\n  - Not A Ref\n",
            "hybridstore.yaml:3:5: invalid reference",
        ),
        (
            "refs:\n  - r.example.com/a:1\n  - oci://r.example.com/a:1\n",
            "hybridstore.yaml:3:5: duplicate entry 'r.example.com/a:1' (first at line 2)",
        ),
        (
            "refs:\n  - r.example.com/a:1\n  - ref: r.example.com/b:1\n"
            "    ref-name: r.example.com/a:1\n",
            "hybridstore.yaml:3:5: conflict: this entry and line 2 both write ref",
        ),
        ("helm: [c, ./c]\n", "hybridstore.yaml:1:11: duplicate helm chart 'c'"),
        (
            "refs:\n  - ref: r.example.com/a:1\n    platforms: [linux/amd64]\n"
            "    all-platforms: true\n",
            "hybridstore.yaml:4:5: 'platforms' and 'all-platforms' exclude each other",
        ),
    ],
)
def test_problems_are_placed_at_file_line_column(tmp_path: Path, text: str, expected: str) -> None:
    assert problem(tmp_path, text).startswith(expected)


def test_a_missing_project_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file.*-f FILE"):
        load_project(tmp_path / "hybridstore.yaml")


def test_the_cli_prints_one_line_and_exit_10_for_a_bad_file(tmp_path: Path) -> None:
    project_at(tmp_path, "refs:\n  - ref: r.example.com/a:1\n    bogus: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hybridstore.cli", "sync", "--dry-run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 10
    assert proc.stderr.startswith("hybridstore: error: hybridstore.yaml:3:5: unknown key 'bogus'")
    assert len(proc.stderr.splitlines()) == 1 and not (tmp_path / "hybridstore.lock").exists()


def _lock(n: int) -> Lock:
    lock = Lock()
    for i in range(n):
        desc = Descriptor(MANIFEST, Digest.of_bytes(str(i).encode()), 100 + i)
        ref = LockedRef(
            "oci",
            f"r.example.com/app:{i}",
            {"ref": f"r.example.com/app:{i}"},
            desc,
            ("linux/amd64",),
            i % 2 == 0,
        )
        lock.refs[ref.key] = ref
    chart = LockedChart(
        "deploy/c",
        "dep",
        "1.0.0+x",
        "oci://r.example.com/charts",
        "r.example.com/charts/dep:1.0.0_x",
        desc,
        desc,
    )
    lock.charts[chart.key] = chart
    return lock


@given(st.permutations(range(5)))
def test_the_lock_is_the_same_bytes_whatever_the_insertion_order(order: list[int]) -> None:
    lock, shuffled = _lock(5), Lock()
    for i in order:
        key = list(lock.refs)[i]
        shuffled.refs[key] = lock.refs[key]
    shuffled.charts = lock.charts
    assert shuffled.to_bytes() == lock.to_bytes()


def test_the_lock_round_trips_and_an_unchanged_lock_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "hybridstore.lock"
    lock = _lock(3)
    assert write_lock(path, lock)
    text = path.read_text()
    assert text.startswith("# hybridstore.lock") and "version: 1" in text
    again = read_lock(path)
    assert again is not None and again.to_bytes() == lock.to_bytes()
    mtime = path.stat().st_mtime_ns
    assert not write_lock(path, again) and path.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob(".hybridstore.lock.*"))  # no temp file left


def test_a_lock_from_a_newer_hybridstore_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hybridstore.lock"
    path.write_text("version: 2\nrefs: []\nsomething-new: true\n")
    with pytest.raises(InvalidInputError, match="lock format version 2, newer.*upgrade"):
        read_lock(path)


def test_a_damaged_lock_names_where(tmp_path: Path) -> None:
    path = tmp_path / "hybridstore.lock"
    path.write_text("version: 1\nrefs:\n- layout: oci\n  name: x\n")
    with pytest.raises(InvalidInputError, match=r"damaged at \.refs\[0\].*delete it"):
        read_lock(path)


def test_locked_entries_keep_their_digest_unless_changed_or_updated(tmp_path: Path) -> None:
    project = load_project(
        project_at(tmp_path, "refs:\n  - r.example.com/app:0\n  - r.example.com/app:1\n")
    )
    lock = _lock(3)
    lock.refs = {k: r for k, r in lock.refs.items()}
    for key, ref in list(lock.refs.items()):
        lock.refs[key] = LockedRef(
            ref.layout,
            ref.name,
            {**project.refs[0].request(), "ref": ref.name},
            ref.descriptor,
            ref.platforms,
            ref.owned,
        )
    plan = make_plan(project, lock)
    assert [locked is not None for _, locked in plan.refs] == [True, True]
    assert [r.name for r in plan.stale_refs] == ["r.example.com/app:2"]
    assert [
        locked is None for _, locked in make_plan(project, lock, ["r.example.com/app:1"]).refs
    ] == [False, True]
    assert all(locked is None for _, locked in make_plan(project, lock, []).refs)
    with pytest.raises(InvalidInputError, match="--update r.example.com/other:1: no entry"):
        make_plan(project, lock, ["r.example.com/other:1"])


def test_helm_oci_refs_use_the_tag_rule_and_keep_plus_in_the_file_name() -> None:
    dep = HelmDependency("redis", "1.2.3+build.4", "oci://r.example.com/charts/")
    assert dep.ref == "r.example.com/charts/redis:1.2.3_build.4"
    assert dep.filename == "redis-1.2.3+build.4.tgz"


def _chart(
    tmp_path: Path, deps: list[dict[str, str]], lock: list[dict[str, str]] | None = None
) -> Path:
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "c", "version": "1.0.0", "dependencies": deps})
    )
    if lock is not None:
        (chart / "Chart.lock").write_text(
            yaml.safe_dump({"dependencies": lock, "digest": "sha256:x"})
        )
    return chart


def test_chart_lock_wins_over_chart_yaml_ranges(tmp_path: Path) -> None:
    chart = _chart(
        tmp_path,
        [{"name": "a", "version": "^1.0", "repository": "oci://r.example.com/c"}],
        [{"name": "a", "version": "1.4.2", "repository": "oci://r.example.com/c"}],
    )
    assert read_dependencies(chart, "c") == [HelmDependency("a", "1.4.2", "oci://r.example.com/c")]


def test_a_range_without_chart_lock_asks_for_helm_dependency_update(tmp_path: Path) -> None:
    chart = _chart(
        tmp_path, [{"name": "a", "version": "~1.2", "repository": "oci://r.example.com/c"}]
    )
    with pytest.raises(InvalidInputError, match="range '~1.2'.*helm dependency update"):
        read_dependencies(chart, "c")


def test_a_chart_lock_out_of_sync_with_chart_yaml_is_refused(tmp_path: Path) -> None:
    chart = _chart(
        tmp_path,
        [
            {"name": "a", "version": "1.0.0", "repository": "oci://r.example.com/c"},
            {"name": "b", "version": "2.0.0", "repository": "oci://r.example.com/c"},
        ],
        [{"name": "a", "version": "1.0.0", "repository": "oci://r.example.com/c"}],
    )
    with pytest.raises(
        InvalidInputError, match="Chart.lock is out of sync.*helm dependency update"
    ):
        read_dependencies(chart, "c")


@given(st.text(max_size=300))
def test_any_text_is_a_project_or_one_clean_error(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "hybridstore.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_project(path)
        except InvalidInputError as e:
            assert str(e).startswith(str(path)) and len(str(e).splitlines()) == 1


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["r.example.com/a", "r.example.com/b/c", "localhost:5000/x"]),
            st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True),
            st.sampled_from([None, "oci", "images"]),
        ),
        max_size=6,
        unique_by=lambda t: (t[0], t[1], t[2] or "oci"),
    )
)
def test_written_entries_read_back_with_their_layouts_and_names(
    entries: list[tuple[str, str, str | None]],
) -> None:
    import tempfile

    refs = [
        f"{r}:{t}" if lay is None else {"ref": f"{r}:{t}", "layout": lay} for r, t, lay in entries
    ]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "hybridstore.yaml"
        path.write_text(yaml.safe_dump({"refs": refs}))
        project = load_project(path)
    assert [(str(e.ref), e.layout) for e in project.refs] == [
        (f"{r}:{t}", lay or "oci") for r, t, lay in entries
    ]
