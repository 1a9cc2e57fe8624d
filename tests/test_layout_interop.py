"""Interop both ways with the real peers: layouts written by hybridstore are read by skopeo
and umoci; layouts written by skopeo and umoci are verified, re-tagged and gc'ed by
hybridstore and stay readable by them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import require_binary
from support.oci_builder import BuiltImage, LayoutBuilder

from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import gc_layout, reachable, verify_layout

NAME = "registry.example.com/test/app:1.0"


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(args)} failed: {done.stderr}"
    return done.stdout


def skopeo(*args: str) -> str:
    return _run(require_binary("skopeo"), "--insecure-policy", *args)


def umoci(*args: str) -> str:
    extra = ["--rootless"] if os.geteuid() != 0 and args and args[0] == "unpack" else []
    return _run(require_binary("umoci"), *args[:1], *extra, *args[1:])


def _inspect(layout_dir: Path, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(skopeo("inspect", f"oci:{layout_dir}:{ref}"))
    return out


def _rootfs_files(bundle: Path) -> dict[str, bytes]:
    root = bundle / "rootfs"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def _push(layout: OCILayout, img: BuiltImage, name: str) -> None:
    for blob in (*img.layers, img.config, img.manifest):
        layout.push_bytes(Descriptor.from_json(blob.descriptor()), blob.data)
    layout.tag(Descriptor.from_json(img.descriptor()), name)


def _reachable(layout: OCILayout) -> set[Digest]:
    return set(reachable(layout, layout.entries()))


# --- hybridstore -> peers --------------------------------------------------------------------


@pytest.mark.skopeo
@pytest.mark.umoci
def test_skopeo_and_umoci_read_a_hybridstore_layout(tmp_path: Path) -> None:
    img = LayoutBuilder(tmp_path / "scratch").image(None, layers=2, files_per_layer=2)
    cache = BlobCache(tmp_path / "cache")
    layout_dir = tmp_path / "layout"
    layout = OCILayout.create(layout_dir, cache=cache, link_mode="hardlink")
    _push(layout, img, NAME)
    layout.tag(layout.resolve(NAME), "v1")
    shutil.rmtree(cache.root)  # the cache is pruned: the layout must not need it

    for ref in (NAME, "v1"):
        info = _inspect(layout_dir, ref)
        assert info["Digest"] == img.digest
        assert info["Layers"] == [layer.digest for layer in img.layers]
    raw = skopeo("inspect", "--raw", f"oci:{layout_dir}:{NAME}")
    assert raw.encode() == img.manifest.data

    out = tmp_path / "dir-copy"
    skopeo("copy", f"oci:{layout_dir}:{NAME}", f"dir:{out}")
    assert Digest.of_bytes((out / "manifest.json").read_bytes()) == Digest.parse(img.digest)
    for blob in (*img.layers, img.config):
        assert (out / blob.hex).read_bytes() == blob.data

    bundle = tmp_path / "bundle"
    umoci("unpack", "--image", f"{layout_dir}:{NAME}", str(bundle))
    files = _rootfs_files(bundle)
    assert {k: files.get(k) for k in img.files} == dict(img.files)
    assert verify_layout(OCILayout.open(layout_dir)).ok  # the peers changed nothing we care about


# --- peers -> hybridstore --------------------------------------------------------------------


@pytest.mark.umoci
@pytest.mark.skopeo
def test_a_umoci_layout_is_verified_retagged_and_gced_without_loss(tmp_path: Path) -> None:
    lay = tmp_path / "umoci"
    umoci("init", "--layout", str(lay))
    umoci("new", "--image", f"{lay}:v1")
    work = tmp_path / "work"
    umoci("unpack", "--image", f"{lay}:v1", str(work))
    (work / "rootfs" / "etc").mkdir(parents=True, exist_ok=True)
    (work / "rootfs" / "etc" / "hello.txt").write_text("hello from umoci\n")
    umoci("repack", "--image", f"{lay}:v1", str(work))  # orphans the empty first manifest
    umoci("config", "--image", f"{lay}:v1", "--config.env", "FOO=bar")  # orphans more
    umoci("tag", "--image", f"{lay}:v1", "v2")

    layout = OCILayout.open(lay)
    assert set(layout.refs()) == {"v1", "v2"}
    report = verify_layout(layout)
    assert report.ok, report.problems
    orphans = set(report.unreferenced)
    assert len(orphans) >= 3  # old manifests and configs umoci left behind
    v1 = layout.resolve("v1")
    keep = set(reachable(layout, [v1]))

    layout.tag(v1, NAME)
    layout.untag("v2")
    gc = gc_layout(layout, grace=0)
    assert {d for d, _ in gc.removed} == orphans
    assert keep <= _reachable(layout)
    assert all(layout.exists(d) for d in reachable(layout, [v1]).values())
    after = verify_layout(layout)
    assert after.ok and after.unreferenced == []

    bundle = tmp_path / "bundle"
    umoci("unpack", "--image", f"{lay}:{NAME}", str(bundle))
    assert (bundle / "rootfs" / "etc" / "hello.txt").read_text() == "hello from umoci\n"
    assert "FOO=bar" in json.dumps(json.loads((bundle / "config.json").read_text()))
    assert "v1" in umoci("ls", "--layout", str(lay)).split()
    assert _inspect(lay, NAME)["Digest"] == str(v1.digest)


@pytest.mark.skopeo
def test_a_skopeo_layout_is_verified_retagged_and_gced_without_loss(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "src")
    base = b.image(None, layers=2, seed="base")
    app = b.image("app", layers=1, base_layers=base.layers, seed="app")
    other = b.image("other", layers=1, base_layers=base.layers, seed="other")
    lay = tmp_path / "skopeo"
    skopeo("copy", f"oci:{tmp_path / 'src'}:app", f"oci:{lay}:latest")
    skopeo("copy", f"oci:{tmp_path / 'src'}:other", f"oci:{lay}:other")

    layout = OCILayout.open(lay)
    assert set(layout.refs()) == {"latest", "other"}
    report = verify_layout(layout)
    assert report.ok, report.problems
    assert report.unreferenced == []
    latest = layout.resolve("latest")
    assert latest.digest == Digest.parse(app.digest)  # skopeo kept the bytes

    layout.tag(latest, NAME)
    removed_ref = layout.untag("other")
    assert removed_ref.digest == Digest.parse(other.digest)
    gc = gc_layout(layout, grace=0)
    unique = {other.digest, other.config.digest, other.layers[-1].digest}
    assert {d for d, _ in gc.removed} == unique
    assert all(layout.exists(d) for d in reachable(layout, [latest]).values())
    assert verify_layout(layout).ok

    for ref in (NAME, "latest"):
        assert _inspect(lay, ref)["Digest"] == app.digest
    out = tmp_path / "dir-copy"
    skopeo("copy", f"oci:{lay}:{NAME}", f"dir:{out}")
    assert Digest.of_bytes((out / "manifest.json").read_bytes()) == Digest.parse(app.digest)
