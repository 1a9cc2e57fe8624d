"""OCILayout over layouts written by the test builder (not by hybridstore): refs, symlink
refusal, verify and gc. Blobs entering through the cache are in test_layout_linkmodes.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from support.oci_builder import LayoutBuilder, canonical_json

from hybridstore.errors import (
    ConflictError,
    InvalidDocumentError,
    NotFoundError,
    StorageError,
)
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, Descriptor
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import gc_layout, verify_layout
from hybridstore.store.layout_files import INDEX_LOCK_FILE

FULL = "registry.example.com/charts/app:1.2.3"


def _desc(d: dict[str, object]) -> Descriptor:
    return Descriptor.from_json(d)


def _index(path: Path) -> dict[str, object]:
    doc = json.loads((path / "index.json").read_bytes())
    assert isinstance(doc, dict)
    return doc


def _names(path: Path) -> list[str | None]:
    entries = _index(path)["manifests"]
    assert isinstance(entries, list)
    return [e.get("annotations", {}).get(ANNOTATION_REF_NAME) for e in entries]


# --- create / open ---------------------------------------------------------------------------


def test_create_writes_a_standard_empty_layout(tmp_path: Path) -> None:
    root = tmp_path / "project" / "charts"
    layout = OCILayout.create(root)
    assert json.loads((root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    assert _index(root)["manifests"] == []
    assert _index(root)["schemaVersion"] == 2
    assert (root / "blobs").is_dir()
    assert layout.refs() == {}
    lock = root / INDEX_LOCK_FILE  # stays behind, empty: unlinking lock files races
    assert not lock.exists() or (lock.is_file() and not lock.is_symlink())
    again = OCILayout.open_or_create(root)
    assert again.refs() == {}


def test_create_keeps_an_existing_index(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    img = b.image("v1", layers=1)
    OCILayout.create(tmp_path / "l")
    assert OCILayout.open(tmp_path / "l").resolve("v1").digest == Digest.parse(img.digest)


def test_open_refuses_a_directory_that_is_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not an OCI layout"):
        OCILayout.open(tmp_path)


@pytest.mark.parametrize("header", [b'{"imageLayoutVersion":"2.0.0"}', b"{}", b"[1]", b"nope"])
def test_open_refuses_unknown_layout_versions(tmp_path: Path, header: bytes) -> None:
    LayoutBuilder(tmp_path)
    (tmp_path / "oci-layout").write_bytes(header)
    with pytest.raises(InvalidDocumentError, match="oci-layout|imageLayoutVersion"):
        OCILayout.open(tmp_path)


def test_unknown_files_and_media_types_are_tolerated_and_kept(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    img = b.image("v1", layers=1)
    (tmp_path / "manifest.json").write_text("[]")  # docker save leaves these
    (tmp_path / "blobs" / "sha256" / "README").write_text("hello")
    doc = _index(tmp_path)
    strange = {
        "mediaType": "application/vnd.example.future+json",
        "digest": "sha256:" + "ab" * 32,
        "size": 12,
        "annotations": {ANNOTATION_REF_NAME: "future"},
        "x-unknown-field": {"kept": True},
    }
    doc["manifests"].append(strange)  # type: ignore[attr-defined]
    doc["annotations"] = {"org.example.top": "level"}
    (tmp_path / "index.json").write_bytes(canonical_json(doc))

    layout = OCILayout.open(tmp_path)
    assert set(layout.refs()) == {"v1", "future"}
    layout.tag(layout.resolve("v1"), FULL)
    after = _index(tmp_path)
    assert after["annotations"] == {"org.example.top": "level"}
    assert strange in after["manifests"]  # type: ignore[operator]
    report = verify_layout(layout)
    assert "manifest.json" in report.foreign
    assert "blobs/sha256/README" in report.foreign
    assert report.absent == [] and img.digest not in report.unreferenced


# --- refs ------------------------------------------------------------------------------------


def test_tag_resolve_untag_refs(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    one = b.image("latest", layers=1, seed="one")
    two = b.image(None, layers=1, seed="two")
    layout = OCILayout.open(tmp_path)

    src = layout.resolve("latest")
    assert src.digest == Digest.parse(one.digest)
    layout.tag(src, FULL)
    entry = _index(tmp_path)["manifests"][-1]  # type: ignore[index]
    assert entry["annotations"][ANNOTATION_REF_NAME] == FULL
    assert entry["annotations"][ANNOTATION_CONTAINERD_NAME] == FULL
    assert entry["digest"] == one.digest
    assert set(layout.refs()) == {"latest", FULL}
    # a short tag finds the full name when it is unambiguous
    assert layout.resolve("1.2.3").digest == Digest.parse(one.digest)

    # re-tagging replaces: still exactly one entry of that name
    layout.tag(_desc(two.descriptor()), FULL)
    assert _names(tmp_path).count(FULL) == 1
    assert layout.resolve(FULL).digest == Digest.parse(two.digest)
    assert layout.resolve("latest").digest == Digest.parse(one.digest)

    removed = layout.untag("latest")
    assert removed.digest == Digest.parse(one.digest)
    assert _names(tmp_path) == [FULL]
    with pytest.raises(NotFoundError, match="latest"):
        layout.resolve("latest")
    with pytest.raises(NotFoundError):
        layout.untag("latest")
    assert layout.untag("1.2.3").digest == Digest.parse(two.digest)  # by unambiguous tag
    assert layout.refs() == {}


def test_a_short_tag_shared_by_two_names_is_ambiguous(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    b.image("a.example/x:1", layers=1)
    b.image("b.example/y:1", layers=1)
    layout = OCILayout.open(tmp_path)
    with pytest.raises(ConflictError, match="ambiguous"):
        layout.resolve("1")
    assert layout.resolve("a.example/x:1") != layout.resolve("b.example/y:1")


def test_duplicate_names_with_different_digests_are_a_conflict(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    one = b.image("x", layers=1, seed="1")
    two = b.image(None, layers=1, seed="2")
    doc = _index(tmp_path)
    doc["manifests"].append(two.descriptor(annotations={ANNOTATION_REF_NAME: "x"}))  # type: ignore[attr-defined]
    (tmp_path / "index.json").write_bytes(canonical_json(doc))
    layout = OCILayout.open(tmp_path)
    with pytest.raises(ConflictError, match="different digests"):
        layout.resolve("x")
    assert any("'x'" in p for p in verify_layout(layout).problems)
    layout.tag(_desc(one.descriptor()), "x")  # the fix the message names
    assert _names(tmp_path) == ["x"]


def test_resolve_by_digest_even_when_untagged(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    idx = b.index("multi", layers=1)
    child = idx.images[0]
    layout = OCILayout.open(tmp_path)
    assert layout.resolve(idx.digest).media_type == idx.manifest.media_type
    d = layout.resolve(child.digest)
    assert (d.digest, d.size, d.media_type) == (
        Digest.parse(child.digest),
        child.manifest.size,
        child.manifest.media_type,
    )
    layout.tag(d, "child")
    assert layout.resolve("child").digest == d.digest
    with pytest.raises(NotFoundError):
        layout.resolve("sha256:" + "0" * 64)


def test_tag_refuses_content_that_is_not_in_the_layout(tmp_path: Path) -> None:
    LayoutBuilder(tmp_path)
    layout = OCILayout.open(tmp_path)
    before = (tmp_path / "index.json").read_bytes()
    ghost = Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.of_bytes(b"x"), 1)
    with pytest.raises(NotFoundError, match="not in layout"):
        layout.tag(ghost, "ghost")
    assert (tmp_path / "index.json").read_bytes() == before


def test_tag_many_is_one_transaction(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    img = b.image(None, layers=1)
    layout = OCILayout.open(tmp_path)
    d = _desc(img.descriptor())
    layout.tag_many([(d, "a"), (d, "b"), (d, "a")])
    assert _names(tmp_path) == ["b", "a"]


def test_tag_many_without_replace_refuses_a_moved_name_and_tags_nothing(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    one, two = b.image(None, layers=1), b.image(None, layers=1, seed="other")
    layout = OCILayout.open(tmp_path)
    d1, d2 = _desc(one.descriptor()), _desc(two.descriptor())
    layout.tag(d1, "a")
    with pytest.raises(ConflictError, match="--overwrite"):
        layout.tag_many([(d2, "new"), (d2, "a")], replace=False)
    assert _names(tmp_path) == ["a"]
    layout.tag_many([(d1, "a")], replace=False)  # same digest: not a conflict
    assert layout.resolve("a").digest == d1.digest


# --- symlinks --------------------------------------------------------------------------------


def _victim(tmp_path: Path) -> tuple[Path, bytes, float]:
    victim = tmp_path / "victim.json"
    content = b'{"schemaVersion":2,"manifests":[]}'
    victim.write_bytes(content)
    past = time.time() - 1000
    os.utime(victim, (past, past))
    return victim, content, victim.stat().st_mtime


def test_a_symlink_planted_at_index_json_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    b = LayoutBuilder(root)
    img = b.image(None, layers=1)
    layout = OCILayout.open(root)
    victim, content, mtime = _victim(tmp_path)
    (root / "index.json").unlink()
    (root / "index.json").symlink_to(victim)
    for action in (
        lambda: layout.tag(_desc(img.descriptor()), "x"),
        lambda: layout.refs(),
        lambda: layout.untag("x"),
        lambda: gc_layout(layout, grace=0),
        lambda: OCILayout.open(root),
        lambda: OCILayout.create(root),
    ):
        with pytest.raises(StorageError, match="index.json is a symlink"):
            action()
    assert victim.read_bytes() == content
    assert victim.stat().st_mtime == mtime
    assert (root / "index.json").is_symlink()
    assert all((root / "blobs" / "sha256" / h).exists() for h in [img.manifest.hex])


def test_a_symlink_planted_at_oci_layout_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    LayoutBuilder(root)
    victim = tmp_path / "header"
    victim.write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    (root / "oci-layout").unlink()
    (root / "oci-layout").symlink_to(victim)
    for opener in (OCILayout.open, OCILayout.create):
        with pytest.raises(StorageError, match="oci-layout is a symlink"):
            opener(root)
    assert victim.read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'


def test_symlinked_blob_directories_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    b = LayoutBuilder(root)
    img = b.image(None, layers=1)
    elsewhere = tmp_path / "elsewhere"
    (root / "blobs" / "sha256").rename(elsewhere)
    (root / "blobs" / "sha256").symlink_to(elsewhere)
    before = sorted(p.name for p in elsewhere.iterdir())
    layout = OCILayout.open(root)
    with pytest.raises(StorageError, match="blobs/sha256 is a symlink"):
        layout.tag(_desc(img.descriptor()), "x")
    with pytest.raises(StorageError, match="blobs/sha256 is a symlink"):
        layout.exists(_desc(img.descriptor()))
    layout.tag_many([])  # index.json itself is fine
    assert "blobs/sha256 is a symlink" in verify_layout(OCILayout.open(root)).problems
    assert sorted(p.name for p in elsewhere.iterdir()) == before

    (root / "blobs" / "sha256").unlink()
    (root / "blobs").rmdir()
    (root / "blobs").symlink_to(tmp_path)
    with pytest.raises(StorageError, match="blobs is a symlink"):
        OCILayout.open(root)


# --- verify ----------------------------------------------------------------------------------


def _full_layout(root: Path) -> LayoutBuilder:
    b = LayoutBuilder(root)
    img = b.image("app:1", layers=2)
    b.index("multi", layers=1)
    b.helm_chart("chart:0.1.0")
    b.artifact("artifact")
    b.referrer(img)  # untagged: reachable only through its subject
    return b


def test_verify_a_sound_layout(tmp_path: Path) -> None:
    b = _full_layout(tmp_path)
    report = verify_layout(OCILayout.open(tmp_path))
    assert report.ok, report.problems
    blob_files = [p for p in (tmp_path / "blobs" / "sha256").iterdir()]
    assert report.blobs_checked == len(blob_files)
    assert report.refs == len(b.refs)
    assert report.unreferenced == [] and report.absent == [] and report.foreign == []


def test_verify_finds_corrupt_short_and_missing_blobs(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    img = b.image("app", layers=3)
    corrupt, short, gone = (b.blob_path(layer.digest) for layer in img.layers)
    corrupt.write_bytes(b"\0" * img.layers[0].size)  # same size, wrong bytes
    short.write_bytes(img.layers[1].data[:-1])
    gone.unlink()
    report = verify_layout(OCILayout.open(tmp_path))
    assert not report.ok
    text = "\n".join(report.problems)
    assert f"blobs/sha256/{img.layers[0].hex} is corrupt" in text
    assert f"{img.layers[1].digest} has {img.layers[1].size - 1} bytes" in text
    assert f"{img.layers[2].digest} missing" in text
    assert len(report.problems) == 3


def test_verify_validates_documents_and_reports_sparse_and_unreferenced(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    idx = b.index("multi", layers=1)
    arm = idx.child("linux/arm64/v8")
    for blob in arm.blobs.values():  # a single-platform pull of a multi-arch index
        b.blob_path(blob.digest).unlink()
    stray = b.image(None, layers=1, seed="stray")
    bad = b.write_blob(type(stray.manifest)(stray.manifest.media_type, b'{"schemaVersion":3}'))
    doc = _index(tmp_path)
    doc["manifests"].append(  # type: ignore[attr-defined]
        {
            "mediaType": stray.manifest.media_type,
            "digest": "sha256:" + bad.name,
            "size": bad.stat().st_size,
            "annotations": {ANNOTATION_REF_NAME: "broken"},
        }
    )
    (tmp_path / "index.json").write_bytes(canonical_json(doc))
    report = verify_layout(OCILayout.open(tmp_path))
    assert report.absent == [arm.digest]
    assert any("broken" not in p and bad.name in p for p in report.problems), report.problems
    assert set(report.unreferenced) == set(stray.blobs)


def test_verify_reports_a_symlinked_blob(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    img = b.image("app", layers=1)
    target = b.blob_path(img.config.digest)
    moved = tmp_path / "config"
    target.rename(moved)
    target.symlink_to(moved)
    report = verify_layout(OCILayout.open(tmp_path / "l"))
    assert any("is a symlink" in p for p in report.problems)


# --- gc --------------------------------------------------------------------------------------


def _files(root: Path) -> set[str]:
    return {p.name for p in (root / "blobs" / "sha256").iterdir()}


def test_gc_removes_exactly_the_unreachable_blobs(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    base = b.image(None, layers=2, seed="base")
    keep = b.image("keep", layers=1, base_layers=base.layers, seed="keep")
    drop = b.image("drop", layers=1, base_layers=base.layers, seed="drop")
    sbom_keep = b.referrer(keep)
    sbom_drop = b.referrer(drop)
    chart = b.helm_chart("chart")
    stale_tmp = tmp_path / "blobs" / "sha256" / ".hybridstore-tmp-abc-1-ff"
    stale_tmp.write_bytes(b"partial")
    layout = OCILayout.open(tmp_path)
    layout.untag("drop")

    live = {**keep.blobs, **sbom_keep.blobs, **chart.blobs}
    written = {**base.blobs, **drop.blobs, **sbom_drop.blobs, **live}
    expected = set(written) - set(live)
    assert set(drop.layers[-1:]) and {drop.digest, sbom_drop.digest} <= expected
    assert base.layers[0].digest not in expected  # shared with "keep"
    before = _files(tmp_path)
    dry = gc_layout(layout, dry_run=True, grace=0)
    assert {d for d, _ in dry.removed} == expected
    assert dry.temp_files_removed == ["blobs/sha256/.hybridstore-tmp-abc-1-ff"]
    assert _files(tmp_path) == before

    young = gc_layout(layout)  # default grace: everything here was just written
    assert young.removed == [] and set(young.kept_recent) == expected
    assert _files(tmp_path) == before

    report = gc_layout(layout, grace=0)
    assert {d for d, _ in report.removed} == expected
    assert report.bytes_freed == sum(s for _, s in report.removed) > 0
    assert _files(tmp_path) == before - {d.split(":")[1] for d in expected} - {stale_tmp.name}
    after = verify_layout(layout)
    assert after.ok and after.unreferenced == []
    assert gc_layout(layout, grace=0).removed == []


def test_gc_keeps_what_a_tagged_referrer_points_at(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    img = b.image(None, layers=1)
    sig = b.referrer(img, "signature")  # only the referrer is tagged
    report = gc_layout(OCILayout.open(tmp_path), grace=0)
    assert report.removed == []
    assert set(img.blobs) | set(sig.blobs) <= {"sha256:" + n for n in _files(tmp_path)}
