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
from pathlib import Path

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

pytestmark = pytest.mark.registry

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


def test_where_and_layouts(
    tmp_path: Path,
    registry: Registry,
    oci_builder: Builder,
    repo_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = BlobCache(tmp_path / "cache")
    built, ref = _image(oci_builder, registry, repo_name, "v1")
    for name in ("a", "b", "dropped"):
        pull(ref, layout=tmp_path / name, cache=cache, transport=PLAIN)
    shutil.rmtree(tmp_path / "dropped")

    holders = list(where_used(cache, str(_layer(built, 1))))
    assert {(h.layout, h.ref) for h in holders} == {(tmp_path / "a", ref), (tmp_path / "b", ref)}
    assert all(str(h.root) == built.digest for h in holders)
    assert {h.layout for h in where_used(cache, f"oci://{ref}")} == {tmp_path / "a", tmp_path / "b"}

    c = str(cache.root)
    code, out, _ = _cli(capsys, "--cache", c, "cache", "where", str(_layer(built)), "--json")
    assert code == 0
    assert {h["layout"] for h in json.loads(out)} == {str(tmp_path / "a"), str(tmp_path / "b")}
    code, _, err = _cli(capsys, "--cache", c, "cache", "where", "sha256:" + "0" * 64)
    assert code == 4 and err.count("\n") == 1 and "no layout this cache knows" in err

    code, out, _ = _cli(capsys, "--cache", c, "cache", "layouts", "--json")
    listed = {e["path"]: e for e in json.loads(out)}
    a = listed[str(tmp_path / "a")]
    assert (a["refs"], a["state"]) == (1, "live")
    assert listed[str(tmp_path / "dropped")]["state"] == "missing"
    code, out, _ = _cli(capsys, "--cache", c, "cache", "layouts", "--forget-missing")
    assert code == 0 and out.splitlines()[0].startswith(str(tmp_path))
    assert "missing" in out and "forgotten" in out
    code, out, _ = _cli(capsys, "--cache", c, "cache", "layouts")
    assert str(tmp_path / "dropped") not in out and out.count("1 ref(s)") == 2


# --- verified reuse --------------------------------------------------------------------------


def test_a_changed_cache_blob_is_not_linked_silently(
    tmp_path: Path, registry: Registry, oci_builder: Builder, repo_name: str
) -> None:
    cache = BlobCache(tmp_path / "cache")
    built, ref = _image(oci_builder, registry, repo_name, "v1")
    pull(ref, layout=tmp_path / "a", cache=cache, link_mode="copy", transport=PLAIN)
    layer = _layer(built)
    _tamper(cache.path(layer))

    mark = registry.access_log_mark()
    pull(ref, layout=tmp_path / "b", cache=cache, link_mode="copy", transport=PLAIN)
    assert _blob_gets(registry, mark) == [str(layer)]  # re-hashed, set aside, fetched again
    assert list(cache.quarantine_dir.iterdir())
    assert verify_layout(OCILayout.open(tmp_path / "b")).ok


def test_pull_verify_rehashes_what_the_seal_cannot_see(
    tmp_path: Path, registry: Registry, oci_builder: Builder, repo_name: str
) -> None:
    cache = BlobCache(tmp_path / "cache")
    built, ref = _image(oci_builder, registry, repo_name, "v1")
    pull(ref, layout=tmp_path / "a", cache=cache, link_mode="copy", transport=PLAIN)
    _tamper(cache.path(_layer(built)), keep_seal=True)  # bit rot keeps the metadata
    mark = registry.access_log_mark()
    pull(ref, layout=tmp_path / "b", cache=cache, link_mode="copy", transport=PLAIN, verify=True)
    assert _blob_gets(registry, mark) == [str(_layer(built))]
    assert verify_layout(OCILayout.open(tmp_path / "b")).ok


def test_a_wrong_content_layout_blob_is_not_reported_present(
    tmp_path: Path, registry: Registry, oci_builder: Builder, repo_name: str
) -> None:
    cache = BlobCache(tmp_path / "cache")
    built, ref = _image(oci_builder, registry, repo_name, "v1")
    pull(ref, layout=tmp_path / "a", cache=cache, link_mode="copy", transport=PLAIN)
    layout = OCILayout.open(tmp_path / "a")
    _tamper(layout.blob_path(_layer(built)))
    again = pull(ref, layout=tmp_path / "a", cache=cache, link_mode="copy", transport=PLAIN)
    actions = {b.digest: b.action for b in again.blobs}
    assert actions[str(_layer(built))] == "linked"
    assert actions[str(_layer(built, 1))] == "present"
    assert verify_layout(layout).ok


# --- repair ----------------------------------------------------------------------------------


def test_cache_verify_repair_reaches_hardlinked_layouts(
    tmp_path: Path,
    registry: Registry,
    oci_builder: Builder,
    repo_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = BlobCache(tmp_path / "cache")
    built, ref = _image(oci_builder, registry, repo_name, "v1")
    for name in ("a", "b"):
        pull(ref, layout=tmp_path / name, cache=cache, link_mode="hardlink", transport=PLAIN)
    layer = _layer(built)
    _tamper(cache.path(layer), keep_seal=True)  # the one inode all three names share
    assert not verify_layout(OCILayout.open(tmp_path / "a")).ok

    args = ["--cache", str(cache.root), "cache", "verify", "--repair", "--plain-http"]
    code, out, err = _cli(capsys, *args)
    assert code == 0, out + err
    # The first layout is pulled again; the second re-links the good blob that brought.
    assert out.count("1 ref(s) pulled again") == 1 and out.count("1 blob(s) re-linked") == 1
    for name in ("a", "b"):
        assert verify_layout(OCILayout.open(tmp_path / name)).ok
    assert cache.exists(layer) and cache.hash_file(cache.path(layer), "sha256") == layer


def test_cache_verify_repair_restores_the_cache_from_a_copy_without_the_network(
    tmp_path: Path,
    registry: Registry,
    oci_builder: Builder,
    repo_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = BlobCache(tmp_path / "cache")
    built, ref = _image(oci_builder, registry, repo_name, "v1")
    pull(ref, layout=tmp_path / "copied", cache=cache, link_mode="copy", transport=PLAIN)
    pull(ref, layout=tmp_path / "linked", cache=cache, link_mode="hardlink", transport=PLAIN)
    _tamper(cache.path(_layer(built)), keep_seal=True)

    mark = registry.access_log_mark()
    code, out, _ = _cli(capsys, "--cache", str(cache.root), "cache", "verify", "--repair", "--json")
    assert code == 0
    mends = {m["layout"]: m for m in json.loads(out)["layouts"]}
    assert mends[str(tmp_path / "linked")]["relinked"] == [str(_layer(built))]
    assert mends[str(tmp_path / "copied")]["relinked"] == []
    assert registry.access_log_requests(mark) == []
    for name in ("copied", "linked"):
        assert verify_layout(OCILayout.open(tmp_path / name)).ok


def test_layout_verify_repair_from_the_cache_or_says_what_needs_a_pull(
    tmp_path: Path,
    registry: Registry,
    oci_builder: Builder,
    repo_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = BlobCache(tmp_path / "cache")
    built, ref = _image(oci_builder, registry, repo_name, "v1")
    pull(ref, layout=tmp_path / "a", cache=cache, link_mode="copy", transport=PLAIN)
    layout = OCILayout.open(tmp_path / "a")
    os.unlink(layout.blob_path(_layer(built)))
    _tamper(layout.blob_path(_layer(built, 1)), keep_seal=True)
    c, d = str(cache.root), str(tmp_path / "a")

    code, out, _ = _cli(capsys, "--cache", c, "layout", "verify", "--repair", "--offline", d)
    assert code == 0 and "2 blob(s) re-linked from the cache" in out
    assert verify_layout(layout).ok

    os.unlink(layout.blob_path(_layer(built)))
    os.unlink(cache.path(_layer(built)))
    code, out, _ = _cli(capsys, "--cache", c, "layout", "verify", "--repair", "--offline", d)
    assert code == 1 and f"ref {ref} needs a pull (lacks {_layer(built)})" in out, out
    code, out, _ = _cli(capsys, "--cache", c, "layout", "verify", "--repair", "--plain-http", d)
    assert code == 0 and "1 ref(s) pulled again" in out


# --- pull --offline ----------------------------------------------------------------------------


def test_pull_offline_from_a_known_layout_and_from_the_cache(
    tmp_path: Path,
    registry: Registry,
    oci_builder: Builder,
    repo_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = BlobCache(tmp_path / "cache")
    built, ref = _image(oci_builder, registry, repo_name, "v1")
    pull(ref, layout=tmp_path / "a", cache=cache, transport=PLAIN)
    mark = registry.access_log_mark()
    c = str(cache.root)

    offline = ["--cache", c, "pull", "--offline", "--layout"]
    code, out, _ = _cli(capsys, *offline, str(tmp_path / "b"), ref)
    assert code == 0 and f"resolved offline from layout {tmp_path / 'a'} (last used " in out
    pinned = f"{registry.host_port}/{repo_name}@{built.digest}"
    result = pull(pinned, layout=tmp_path / "c", cache=cache, offline=True)
    assert result.digest == built.digest and result.resolved_from == ""
    assert registry.access_log_requests(mark) == []
    for name in ("b", "c"):
        assert verify_layout(OCILayout.open(tmp_path / name)).ok

    unknown = f"{registry.host_port}/{repo_name}:never-pulled"
    code, _, err = _cli(capsys, *offline, str(tmp_path / "d"), unknown)
    assert code == 4 and err.count("\n") == 1 and "no layout this cache knows holds" in err
    assert not (tmp_path / "d").exists()

    os.unlink(cache.path(_layer(built)))
    os.unlink(OCILayout.open(tmp_path / "a").blob_path(_layer(built)))
    for name in ("b", "c"):
        shutil.rmtree(tmp_path / name)
    code, _, err = _cli(capsys, *offline, str(tmp_path / "e"), ref)
    assert code == 4 and str(_layer(built)) in err and not (tmp_path / "e").exists()


def test_pull_offline_loads_no_network_code(
    tmp_path: Path, registry: Registry, oci_builder: Builder, repo_name: str
) -> None:
    cache = BlobCache(tmp_path / "cache")
    _, ref = _image(oci_builder, registry, repo_name, "v1")
    pull(ref, layout=tmp_path / "a", cache=cache, transport=PLAIN)
    probe = (
        "import sys\n"
        "from hybridstore.cli import main\n"
        "code = None\n"
        "try:\n"
        f"    main(['--cache', {str(cache.root)!r}, 'pull', '--offline', '--layout', "
        f"{str(tmp_path / 'b')!r}, {ref!r}])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "net = [m for m in ('socket', 'ssl', 'http.client') if m in sys.modules]\n"
        "print(code, net, [m for m in sys.modules if m.startswith('hybridstore.remote')])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "None [] []", done.stdout + done.stderr
    assert verify_layout(OCILayout.open(tmp_path / "b")).ok
