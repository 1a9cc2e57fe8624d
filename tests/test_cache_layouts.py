"""What the cache does through the layouts it knows, against the real registry: where a
blob is used, prune --unreferenced in every link mode, verified reuse, repair that
reaches layouts, and pull --offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.oci_builder import BuiltImage, LayoutBuilder, push_built
from support.registry import Registry

from hybridstore.cli import main
from hybridstore.fs.seal import seal
from hybridstore.oci.digest import Digest
from hybridstore.pull import pull
from hybridstore.remote.transport import TransportOptions
from hybridstore.store.cache import BlobCache
from hybridstore.store.cache_admin import prune_cache
from hybridstore.store.cache_layouts import where_used
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import verify_layout
from hybridstore.store.layout_registry import REGISTRY_DIR, LayoutRegistry
from hybridstore.transfer.engine import CopyResult

pytestmark = pytest.mark.registry

HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]
PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
Builder = Callable[..., LayoutBuilder]


@pytest.fixture(params=["hardlink", "copy", "reflink"])
def mode_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(link mode, a directory where a cache and its layouts live for that mode)."""
    if request.param != "reflink":
        yield request.param, tmp_path
        return
    xfs: Path = request.getfixturevalue("xfs")
    root = Path(tempfile.mkdtemp(dir=xfs))
    yield "reflink", root
    shutil.rmtree(root, ignore_errors=True)


def _image(
    oci_builder: Builder, registry: Registry, repo: str, tag: str
) -> tuple[BuiltImage, str]:
    built = oci_builder().image(None, layers=2, seed=f"{repo}:{tag}")
    push_built(built, registry, f"{repo}:{tag}")
    return built, f"{registry.host_port}/{repo}:{tag}"


def _layer(built: BuiltImage, i: int = 0) -> Digest:
    return Digest.parse(built.layers[i].digest)


@dataclass
class Scene:
    """One image in the registry, a cache, and layouts pulled from them under ``root``."""

    root: Path
    registry: Registry
    cache: BlobCache
    built: BuiltImage
    ref: str

    def pull(self, name: str, mode: str = "copy", **kw: Any) -> CopyResult:
        into = self.root / name
        return pull(self.ref, layout=into, cache=self.cache, link_mode=mode, transport=PLAIN, **kw)

    def layer(self, i: int = 0) -> Digest:
        return _layer(self.built, i)

    def layout(self, name: str) -> OCILayout:
        return OCILayout.open(self.root / name, cache=self.cache)


@pytest.fixture
def scene(tmp_path: Path, registry: Registry, oci_builder: Builder, repo_name: str) -> Scene:
    built, ref = _image(oci_builder, registry, repo_name, "v1")
    return Scene(tmp_path, registry, BlobCache(tmp_path / "cache"), built, ref)


def _blob_gets(registry: Registry, since: int) -> list[str]:
    return [
        e.path.rsplit("/", 1)[1]
        for e in registry.access_log_requests(since)
        if e.method == "GET" and "/blobs/" in e.path
    ]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(list(argv)))  # as the console script: sys.exit(main())
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def _tamper(path: Path, keep_seal: bool = False) -> None:
    """Rewrite a read-only blob in place, same size (as an editor or bit rot would);
    ``keep_seal`` forges the seal afterwards, which only a full re-hash sees through."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as f:
        f.write(data)
    os.chmod(path, 0o444)
    if keep_seal:
        seal(path, os.lstat(path))


# --- prune --unreferenced, where, layouts ---------------------------------------------------


def test_prune_unreferenced_is_right_in_every_link_mode(
    mode_root: tuple[str, Path], registry: Registry, oci_builder: Builder, repo_name: str
) -> None:
    mode, root = mode_root
    cache = BlobCache(root / "cache")
    kept, kept_ref = _image(oci_builder, registry, repo_name, "kept")
    gone, gone_ref = _image(oci_builder, registry, repo_name, "gone")
    pull(kept_ref, layout=root / "kept", cache=cache, link_mode=mode, transport=PLAIN)
    pull(gone_ref, layout=root / "gone", cache=cache, link_mode=mode, transport=PLAIN)
    shutil.rmtree(root / "gone")

    # In reflink and copy modes every blob has link count 1: --unlinked cannot tell.
    unlinked = prune_cache(cache, unlinked=True, grace=0, dry_run=True)
    everything = len(kept.blobs) + len(gone.blobs)
    assert (len(unlinked.removed) == everything) is (mode != "hardlink")

    dry = prune_cache(cache, unreferenced=True, grace=0, dry_run=True)
    assert {str(e.digest) for e in dry.removed} == set(gone.blobs)
    assert prune_cache(cache, unreferenced=True, older_than=86400, grace=0).removed == ()
    report = prune_cache(cache, unreferenced=True, grace=0)
    assert {str(e.digest) for e in report.removed} == set(gone.blobs)
    assert {str(d) for d, _ in cache.blobs()} == set(kept.blobs)
    assert verify_layout(OCILayout.open(root / "kept")).ok


def test_prune_unreferenced_spares_a_pull_in_flight(tmp_path: Path, oci_builder: Builder) -> None:
    """Blobs linked into a layout whose ref is not written yet are protected by --grace."""
    cache = BlobCache(tmp_path / "cache")
    layout = OCILayout.create(tmp_path / "inflight", cache=cache)
    blob = oci_builder().image(None, layers=1).layers[0]
    d = Digest.parse(blob.digest)
    cache.ingest_bytes(d, blob.data)
    layout.add_blob_from_cache(d, blob.size)  # linked, not yet tagged
    report = prune_cache(cache, unreferenced=True)  # default grace: one hour
    assert report.removed == () and report.kept_in_grace == 1
    assert cache.exists(d)


def test_where_and_layouts(scene: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b", "dropped"):
        scene.pull(name, mode="auto")
    shutil.rmtree(scene.root / "dropped")
    a, b, ref = scene.root / "a", scene.root / "b", scene.ref

    holders = list(where_used(scene.cache, str(scene.layer(1))))
    assert {(h.layout, h.ref) for h in holders} == {(a, ref), (b, ref)}
    assert all(str(h.root) == scene.built.digest for h in holders)
    assert {h.layout for h in where_used(scene.cache, f"oci://{ref}")} == {a, b}

    c = str(scene.cache.root)
    code, out, _ = _cli(capsys, "--cache", c, "cache", "where", str(scene.layer()), "--json")
    assert code == 0 and {h["layout"] for h in json.loads(out)} == {str(a), str(b)}
    code, _, err = _cli(capsys, "--cache", c, "cache", "where", "sha256:" + "0" * 64)
    assert code == 4 and err.count("\n") == 1 and "no layout this cache knows" in err

    code, out, _ = _cli(capsys, "--cache", c, "cache", "layouts", "--json")
    listed = {e["path"]: e for e in json.loads(out)}
    assert (listed[str(a)]["refs"], listed[str(a)]["state"]) == (1, "live")
    assert listed[str(scene.root / "dropped")]["state"] == "missing"
    code, out, _ = _cli(capsys, "--cache", c, "cache", "layouts", "--forget-missing")
    assert code == 0 and out.splitlines()[0].startswith(str(scene.root))
    assert "missing" in out and "forgotten" in out
    code, out, _ = _cli(capsys, "--cache", c, "cache", "layouts")
    assert str(scene.root / "dropped") not in out and out.count("1 ref(s)") == 2


def test_concurrent_pulls_each_record_their_layout(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(scene.cache.root)
    argv = [*HYBRIDSTORE, "--quiet", "--cache", c, "pull", "--plain-http", "--layout"]
    procs = [subprocess.Popen([*argv, str(scene.root / f"p{i}"), scene.ref]) for i in range(6)]
    assert [p.wait() for p in procs] == [0] * 6
    code, out, _ = _cli(capsys, "--cache", c, "cache", "layouts", "--json")
    listed = {e["path"]: (e["state"], e["refs"]) for e in json.loads(out)}
    assert listed == {str(scene.root / f"p{i}"): ("live", 1) for i in range(6)}


def test_a_pull_that_links_nothing_still_records_the_layout(scene: Scene) -> None:
    scene.pull("a")
    shutil.rmtree(scene.cache.root / REGISTRY_DIR)  # as an older hybridstore left it
    again = scene.pull("a")
    assert {b.action for b in again.blobs} == {"present"}
    assert [k.path for k in LayoutRegistry(scene.cache.root)] == [scene.root / "a"]


# --- verified reuse --------------------------------------------------------------------------


def _gets_while(scene: Scene, step: Callable[[], object]) -> list[str]:
    """The blob GETs the registry served while ``step`` ran."""
    mark = scene.registry.access_log_mark()
    step()
    return _blob_gets(scene.registry, mark)


def test_a_changed_cache_blob_is_not_linked_silently(scene: Scene) -> None:
    scene.pull("a")
    _tamper(scene.cache.path(scene.layer()))
    # re-hashed (its seal is broken), set aside, fetched again
    assert _gets_while(scene, lambda: scene.pull("b")) == [str(scene.layer())]
    assert list(scene.cache.quarantine_dir.iterdir())
    assert verify_layout(scene.layout("b")).ok


def test_pull_verify_rehashes_what_the_seal_cannot_see(scene: Scene) -> None:
    scene.pull("a")
    _tamper(scene.cache.path(scene.layer()), keep_seal=True)  # bit rot keeps the metadata
    assert _gets_while(scene, lambda: scene.pull("b", verify=True)) == [str(scene.layer())]
    assert verify_layout(scene.layout("b")).ok


def test_a_wrong_content_layout_blob_is_not_reported_present(scene: Scene) -> None:
    scene.pull("a")
    _tamper(scene.layout("a").blob_path(scene.layer()))
    actions = {b.digest: b.action for b in scene.pull("a").blobs}
    assert actions[str(scene.layer())] == "linked"
    assert actions[str(scene.layer(1))] == "present"
    assert verify_layout(scene.layout("a")).ok


# --- repair ----------------------------------------------------------------------------------


def test_cache_verify_repair_reaches_hardlinked_layouts(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b"):
        scene.pull(name, mode="hardlink")
    _tamper(scene.cache.path(scene.layer()), keep_seal=True)  # the inode all three names share
    assert not verify_layout(scene.layout("a")).ok

    args = ["--cache", str(scene.cache.root), "cache", "verify", "--repair", "--plain-http"]
    code, out, err = _cli(capsys, *args)
    assert code == 0, out + err
    # The first layout is pulled again; the second re-links the good blob that brought.
    assert out.count("1 ref(s) pulled again") == 1 and out.count("1 blob(s) re-linked") == 1
    for name in ("a", "b"):
        assert verify_layout(scene.layout(name)).ok
    assert scene.cache.hash_file(scene.cache.path(scene.layer()), "sha256") == scene.layer()


def test_cache_verify_repair_restores_the_cache_from_a_copy_without_the_network(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    scene.pull("copied", mode="copy")
    scene.pull("linked", mode="hardlink")
    _tamper(scene.cache.path(scene.layer()), keep_seal=True)

    mark = scene.registry.access_log_mark()
    args = ["--cache", str(scene.cache.root), "cache", "verify", "--repair", "--json"]
    code, out, _ = _cli(capsys, *args)
    assert code == 0
    mends = {m["layout"]: m for m in json.loads(out)["layouts"]}
    assert mends[str(scene.root / "linked")]["relinked"] == [str(scene.layer())]
    assert mends[str(scene.root / "copied")]["relinked"] == []
    assert scene.registry.access_log_requests(mark) == []
    for name in ("copied", "linked"):
        assert verify_layout(scene.layout(name)).ok


def test_a_corrupt_blob_is_repaired_end_to_end_in_every_link_mode(
    mode_root: tuple[str, Path],
    registry: Registry,
    oci_builder: Builder,
    repo_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mode, root = mode_root
    cache = BlobCache(root / "cache")
    built, ref = _image(oci_builder, registry, repo_name, "v1")
    pull(ref, layout=root / "l", cache=cache, link_mode=mode, transport=PLAIN)
    layer = _layer(built)
    _tamper(cache.path(layer), keep_seal=True)  # reflinks and copies keep their own bytes

    mark = registry.access_log_mark()
    args = ["--cache", str(cache.root), "cache", "verify", "--repair", "--plain-http", "--json"]
    code, out, _ = _cli(capsys, *args)
    assert code == 0
    report = json.loads(out)
    assert [b["digest"] for b in report["corrupt"]] == [str(layer)]
    [mend] = report["layouts"]
    assert mend["repulled"] == ([ref] if mode == "hardlink" else [])  # else: from the layout
    assert _blob_gets(registry, mark) == ([str(layer)] if mode == "hardlink" else [])
    assert verify_layout(OCILayout.open(root / "l")).ok
    assert cache.hash_file(cache.path(layer), "sha256") == layer


def test_layout_verify_repair_from_the_cache_or_says_what_needs_a_pull(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    scene.pull("a")
    layout = scene.layout("a")
    os.unlink(layout.blob_path(scene.layer()))
    _tamper(layout.blob_path(scene.layer(1)), keep_seal=True)
    repair = ["--cache", str(scene.cache.root), "layout", "verify", "--repair"]
    d = str(scene.root / "a")

    code, out, _ = _cli(capsys, *repair, "--offline", d)
    assert code == 0 and "2 blob(s) re-linked from the cache" in out
    assert verify_layout(layout).ok

    os.unlink(layout.blob_path(scene.layer()))
    os.unlink(scene.cache.path(scene.layer()))
    code, out, _ = _cli(capsys, *repair, "--offline", d)
    assert code == 1 and f"ref {scene.ref} needs a pull (lacks {scene.layer()})" in out, out
    code, out, _ = _cli(capsys, *repair, "--plain-http", d)
    assert code == 0 and "1 ref(s) pulled again" in out


# --- pull --offline ----------------------------------------------------------------------------


def test_pull_offline_from_a_known_layout_and_from_the_cache(
    scene: Scene, repo_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    scene.pull("a", mode="auto")
    root, ref = scene.root, scene.ref
    mark = scene.registry.access_log_mark()
    offline = ["--cache", str(scene.cache.root), "pull", "--offline", "--layout"]

    code, out, _ = _cli(capsys, *offline, str(root / "b"), ref)
    assert code == 0 and f"resolved offline from layout {root / 'a'} (last used " in out
    pinned = f"{scene.registry.host_port}/{repo_name}@{scene.built.digest}"
    result = pull(pinned, layout=root / "c", cache=scene.cache, offline=True)
    assert result.digest == scene.built.digest and result.resolved_from == ""
    assert scene.registry.access_log_requests(mark) == []
    for name in ("b", "c"):
        assert verify_layout(scene.layout(name)).ok

    unknown = f"{scene.registry.host_port}/{repo_name}:never-pulled"
    code, _, err = _cli(capsys, *offline, str(root / "d"), unknown)
    assert code == 4 and err.count("\n") == 1 and "no layout this cache knows holds" in err
    assert not (root / "d").exists()

    os.unlink(scene.cache.path(scene.layer()))
    os.unlink(scene.layout("a").blob_path(scene.layer()))
    for name in ("b", "c"):
        shutil.rmtree(root / name)
    code, _, err = _cli(capsys, *offline, str(root / "e"), ref)
    assert code == 4 and str(scene.layer()) in err and not (root / "e").exists()


def test_pull_offline_loads_no_network_code(scene: Scene) -> None:
    scene.pull("a", mode="auto")
    argv = ["--cache", str(scene.cache.root), "pull", "--offline"]
    argv += ["--layout", str(scene.root / "b"), scene.ref]
    probe = (  # what the command loads (coverage, when it measures the run, loads socket)
        "import sys\n"
        "before = set(sys.modules)\n"
        "from hybridstore.cli import main\n"
        f"code = main({argv!r})\n"
        "new = set(sys.modules) - before\n"
        "net = [m for m in ('socket', 'ssl', 'http.client') if m in new]\n"
        "print(code, net, [m for m in new if m.startswith('hybridstore.remote')])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "None [] []", done.stdout + done.stderr
    assert verify_layout(scene.layout("b")).ok
