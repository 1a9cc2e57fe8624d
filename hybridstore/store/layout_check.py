"""Verify and garbage-collect an ``OCILayout``: reachability from ``index.json``.

Reachable means: every ``index.json`` entry, and from each present manifest
its config and layers, from each present index its manifests, from each
document its ``subject``; plus present referrers (manifests whose ``subject``
is reachable), which no index lists but which belong to what they refer to.
Unknown media types are opaque leaves (image spec), never errors.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hybridstore.errors import HybridstoreError, InvalidDocumentError, NotFoundError, StorageError
from hybridstore.fs.files import fsync_dir
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.graph import Node, walk
from hybridstore.oci.jsondoc import load_json
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.model import Descriptor, Index, Manifest, parse_document
from hybridstore.store.layout_files import (
    BLOBS_DIR,
    INDEX_FILE,
    INDEX_LOCK_FILE,
    LAYOUT_FILE,
    read_layout_file,
)
from hybridstore.store.layout_refs import follows_ref_grammar, names_of
from hybridstore.store.linking import TEMP_PREFIX

if TYPE_CHECKING:
    from hybridstore.store.layout import OCILayout

__all__ = [
    "DEFAULT_GC_GRACE",
    "GcReport",
    "VerifyReport",
    "gc_layout",
    "reachable",
    "verify_layout",
]


@dataclass
class VerifyReport:
    """What ``verify_layout`` found; ``ok`` is false when there are ``problems``.

    ``absent`` (index children and subjects not present: a sparse layout, which
    the spec allows), ``unreferenced``, ``foreign`` and ``temp_files`` are
    information, not problems.
    """

    refs: int = 0
    blobs_checked: int = 0
    bytes_checked: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    damaged: list[Descriptor] = field(default_factory=list)
    """Reachable blobs missing, of the wrong size or content: what a repair re-links."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "refs": self.refs,
            "blobsChecked": self.blobs_checked,
            "bytesChecked": self.bytes_checked,
            "problems": self.problems,
            "warnings": self.warnings,
            "absent": self.absent,
            "unreferenced": self.unreferenced,
            "foreign": self.foreign,
            "tempFiles": self.temp_files,
            "damaged": [str(d.digest) for d in self.damaged],
        }


@dataclass
class GcReport:
    """What ``gc_layout`` removed (or would remove, with ``dry_run``)."""

    dry_run: bool
    reachable: int = 0
    removed: list[tuple[str, int]] = field(default_factory=list)
    kept_recent: list[str] = field(default_factory=list)
    temp_files_removed: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(size for _, size in self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "reachable": self.reachable,
            "removed": [{"digest": d, "size": s} for d, s in self.removed],
            "bytesFreed": self.bytes_freed,
            "keptRecent": self.kept_recent,
            "tempFilesRemoved": self.temp_files_removed,
        }


# --- reachability ----------------------------------------------------------------------------


# Unreachable blobs younger than this (by ctime: when they were linked, cloned
# or copied in) survive gc, so a pull that has linked blobs but not yet tagged
# its ref (index.json is written last) never loses them.
DEFAULT_GC_GRACE: Final = 3600.0


def _referrer_candidates(
    layout: OCILayout, skip: Container[Digest]
) -> dict[Digest, tuple[Descriptor, Digest]]:
    """Present manifests not in ``skip`` that carry a ``subject``: digest -> (desc, subject).

    Only small blobs that start with ``{`` are read, and a candidate counts
    only if its bytes hash to its name.
    """
    out: dict[Digest, tuple[Descriptor, Digest]] = {}
    for path, digest in layout.blob_files():
        if digest is None or digest in skip or not digest.verifiable:
            continue
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DOCUMENT_BYTES:
                continue
            with open(path, "rb") as f:
                if f.read(1) != b"{":
                    continue
                raw = b"{" + f.read()
            obj = load_json(raw, what=str(path))
        except (OSError, InvalidDocumentError):
            continue
        media_type = obj.get("mediaType") if isinstance(obj, dict) else None
        if "subject" not in obj or not isinstance(media_type, str):
            continue
        if not (mt.is_manifest(media_type) or mt.is_index(media_type)):
            continue
        try:
            doc = parse_document(raw, media_type)
        except HybridstoreError:
            continue
        if doc.subject is not None and Digest.of_bytes(raw, digest.algorithm) == digest:
            desc = Descriptor(media_type, digest, len(raw), artifact_type=doc.artifact_type)
            out[digest] = (desc, doc.subject.digest)
    return out


def _present_referrers(layout: OCILayout, seen: set[Digest]) -> Callable[[Node], list[Descriptor]]:
    """The ``referrers`` edge of a layout walk: present manifests whose subject is the
    node. Found on first use, which comes after the walk of the roots, so the blobs
    already reached (``seen``) are not read again."""
    by_subject: dict[Digest, list[Descriptor]] | None = None

    def referrers(node: Node) -> list[Descriptor]:
        nonlocal by_subject
        if by_subject is None:
            by_subject = {}
            for desc, subject in _referrer_candidates(layout, set(seen)).values():
                by_subject.setdefault(subject, []).append(desc)
        return by_subject.get(node.desc.digest, [])

    return referrers


def reachable(layout: OCILayout, roots: Iterable[Descriptor]) -> dict[Digest, Descriptor]:
    """Digests reachable from ``roots``, plus present referrers of reachable content."""
    seen: set[Digest] = set()
    nodes = walk(
        roots,
        lambda node: layout.document(node.desc),
        referrers=_present_referrers(layout, seen),
        seen=seen,
    )
    return {node.desc.digest: node.desc for node in nodes}


# --- gc --------------------------------------------------------------------------------------


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise StorageError(f"cannot remove {path}: {e.strerror}") from e


def gc_layout(
    layout: OCILayout, *, dry_run: bool = False, grace: float = DEFAULT_GC_GRACE
) -> GcReport:
    """Remove blobs unreachable from ``index.json``, and stale temp files.

    Holds the index lock, so no ref is added meanwhile. Blobs whose ctime (when
    they were linked, cloned or copied in) is less than ``grace`` seconds ago
    are kept: a running pull links blobs before it tags them.
    """

    report = GcReport(dry_run=dry_run)
    with layout.locked():
        live = reachable(layout, layout.entries())
        report.reachable = len(live)
        cutoff = time.time() - grace
        touched: set[Path] = set()

        def remove(path: Path) -> None:
            if not dry_run:
                _unlink(path)
                touched.add(path.parent)

        for path, digest in list(layout.blob_files()):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if is_temp_name(path.name):
                if st.st_ctime < cutoff and stat.S_ISREG(st.st_mode):
                    report.temp_files_removed.append(str(path.relative_to(layout.root)))
                    remove(path)
                continue
            if digest is None or digest in live or stat.S_ISDIR(st.st_mode):
                continue
            if st.st_ctime >= cutoff:
                report.kept_recent.append(str(digest))
                continue
            report.removed.append((str(digest), st.st_size))
            remove(path)
        for entry in os.scandir(layout.root):
            if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                if entry.stat(follow_symlinks=False).st_ctime < cutoff:
                    report.temp_files_removed.append(entry.name)
                    remove(Path(entry.path))
        for directory in touched:
            fsync_dir(directory)
    return report


# --- verify ----------------------------------------------------------------------------------


def verify_layout(layout: OCILayout) -> VerifyReport:
    """Check every reachable blob (presence, type, size, digest) and document; list the rest."""
    from hybridstore.oci.schema import validate_document

    report = VerifyReport()
    header = read_layout_file(layout.layout_path, LAYOUT_FILE)
    report.problems += [
        f"{LAYOUT_FILE}: {p}" for p in validate_document(header, mt.OCI_LAYOUT_HEADER)
    ]
    try:
        raw_index = read_layout_file(layout.index_path, INDEX_FILE)
        report.problems += [
            f"{INDEX_FILE}: {p}" for p in validate_document(raw_index, mt.OCI_INDEX)
        ]
        entries = layout.entries()
    except (NotFoundError, InvalidDocumentError) as e:
        report.problems.append(f"{INDEX_FILE}: {e}")
        entries = []
    _checknames_of(entries, report)

    def visit(node: Node) -> Manifest | Index | None:
        if not _verify_blob(layout, node.desc, _via(node), node.optional, report):
            return None
        return _verify_document(layout, node.desc, report, validate_document)

    # Present referrers (manifests whose subject is reachable) are part of the graph.
    checked: set[Digest] = set()
    for _ in walk(entries, visit, referrers=_present_referrers(layout, checked), seen=checked):
        pass
    _list_rest(layout, checked, report)
    report.refs = len({names_of(e)[0] for e in entries if names_of(e)})
    return report


def _checknames_of(entries: list[Descriptor], report: VerifyReport) -> None:
    by_name: dict[str, set[str]] = {}
    for e in entries:
        for n in names_of(e):
            by_name.setdefault(n, set()).add(str(e.digest))
            if not follows_ref_grammar(n):
                report.warnings.append(f"ref name {n!r} does not follow the ref.name grammar")
    for n, digests in sorted(by_name.items()):
        if len(digests) > 1:
            report.problems.append(
                f"ref {n!r} names {len(digests)} different digests; re-tag or untag it"
            )


def _verify_blob(
    layout: OCILayout, desc: Descriptor, via: str, optional: bool, report: VerifyReport
) -> bool:
    """Presence, type, size and digest of one reachable blob; ``True`` if it is sound."""
    if not desc.digest.verifiable:
        report.warnings.append(f"{desc.digest}: algorithm cannot be verified (from {via})")
        return False
    path = layout.blob_path(desc.digest)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if optional:
            report.absent.append(str(desc.digest))
        else:
            report.problems.append(f"{desc.digest} missing (referenced by {via})")
            report.damaged.append(desc)
        return False
    rel = path.relative_to(layout.root)
    if stat.S_ISLNK(st.st_mode):
        report.problems.append(f"{rel} is a symlink (other tools reject linked blobs)")
        return False
    if not stat.S_ISREG(st.st_mode):
        report.problems.append(f"{rel} is not a regular file")
        return False
    if st.st_size != desc.size:
        report.problems.append(f"{desc.digest} has {st.st_size} bytes, {via} says {desc.size}")
        report.damaged.append(desc)
        return False
    with open(path, "rb") as f:
        actual, size = Digest.of_file(f, desc.digest.algorithm)
    report.blobs_checked += 1
    report.bytes_checked += size
    if actual != desc.digest:
        report.problems.append(f"{rel} is corrupt: its content hashes to {actual}")
        report.damaged.append(desc)
        return False
    return True


def _via(node: Node) -> str:
    """Who names ``node``, for messages."""
    if node.via == "root":
        names = names_of(node.desc)
        return f"{INDEX_FILE} entry {names[0] if names else node.desc.digest}"
    assert node.parent is not None
    if node.via == "referrer":
        return f"referrer of {node.parent.digest.short}"
    return node.parent.digest.short


def _verify_document(
    layout: OCILayout,
    desc: Descriptor,
    report: VerifyReport,
    validate: Callable[[bytes, str], list[str]],
) -> Manifest | Index | None:
    """Validate a (sound) document blob; the document, whose children come next."""
    from hybridstore.oci.schema import SUPPORTED_MEDIA_TYPES

    if desc.media_type not in SUPPORTED_MEDIA_TYPES or desc.size > MAX_DOCUMENT_BYTES:
        return None  # unknown media types are opaque bytes (image spec)
    problems = validate(layout.read_blob(desc), desc.media_type)
    report.problems += [f"{desc.digest} ({desc.media_type}): {p}" for p in problems]
    return layout.document(desc) if not problems else None


def _list_rest(layout: OCILayout, reached: set[Digest], report: VerifyReport) -> None:
    blobs = layout.blobs_path
    if blobs.is_dir() and not blobs.is_symlink():
        for entry in os.scandir(blobs):
            if entry.is_symlink():
                report.problems.append(f"{BLOBS_DIR}/{entry.name} is a symlink")
    known_root = {LAYOUT_FILE, INDEX_FILE, BLOBS_DIR, INDEX_LOCK_FILE}
    for entry in sorted(os.scandir(layout.root), key=lambda e: e.name):
        if is_temp_name(entry.name):
            report.temp_files.append(entry.name)
        elif entry.name not in known_root:
            report.foreign.append(entry.name)
    for path, digest in layout.blob_files():
        rel = str(path.relative_to(layout.root))
        if is_temp_name(path.name):
            report.temp_files.append(rel)
        elif digest is None:
            report.foreign.append(rel)
        elif digest not in reached:
            report.unreferenced.append(str(digest))


def is_temp_name(name: str) -> bool:
    """Our temp files: linking's, and ``atomic_write_bytes``' ``.<name>.<random>.tmp``."""
    return name.startswith(TEMP_PREFIX) or (name.startswith(".") and name.endswith(".tmp"))
