"""Ref names in a layout's ``index.json``: the grammar, the names one entry
carries (containerd's full name and ``ref.name``), and finding entries by a
full name or an unambiguous short tag (as skopeo and umoci record them).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Final

from hybridstore.errors import ConflictError, InvalidInputError
from hybridstore.oci.model import ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, Descriptor
from hybridstore.oci.reference import Reference

__all__ = [
    "IndexEntry",
    "check_name",
    "find_entries",
    "follows_ref_grammar",
    "named_descriptor",
    "names_of",
    "one_descriptor",
]

log = logging.getLogger("hybridstore.store.layout")

# The image spec's ref.name grammar; names outside it are stored with a warning.
_REF_NAME: Final = re.compile(
    r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*",
    re.ASCII,
)
_TAG: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", re.ASCII)


def _tag_of(name: str) -> str | None:
    """The tag part of a full reference name (``reg/app:1.2`` -> ``1.2``)."""
    base = name.split("@", 1)[0]
    colon = base.rfind(":")
    if colon <= base.rfind("/") or "/" not in base:
        return None
    return base[colon + 1 :]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name or name != name.strip():
        raise InvalidInputError(f"invalid ref name {name!r}: must be non-empty, no outer spaces")
    if len(name) > 1024 or any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise InvalidInputError(
            f"invalid ref name {name[:100]!r}: too long or contains control characters"
        )
    if not follows_ref_grammar(name):
        log.warning(
            "ref name %r does not follow the image spec's ref.name grammar; "
            "some tools may not find it",
            name,
        )
    return name


# --- names ---------------------------------------------------------------------------------


def names_of(desc: Descriptor) -> tuple[str, ...]:
    """An index.json entry's names, fullest first: containerd's full name, then ``ref.name``."""
    ann = desc.annotations
    both = (ann.get(ANNOTATION_CONTAINERD_NAME), ann.get(ANNOTATION_REF_NAME))
    return tuple(dict.fromkeys(n for n in both if n))


def follows_ref_grammar(name: str) -> bool:
    """Whether ``name`` follows the image spec's ``ref.name`` grammar."""
    return _REF_NAME.fullmatch(name) is not None


# --- index.json entries ---------------------------------------------------------------------


@dataclass
class IndexEntry:
    """One ``index.json`` descriptor: its raw JSON (kept verbatim) and parsed form."""

    raw: dict[str, Any]
    desc: Descriptor

    @property
    def names(self) -> tuple[str, ...]:
        return names_of(self.desc)

    @property
    def name(self) -> str | None:
        """The fullest name: containerd's full name when present, else ``ref.name``."""
        names = self.names
        return names[0] if names else None


def named_descriptor(desc: Descriptor, name: str) -> Descriptor:
    ann = {
        k: v
        for k, v in desc.annotations.items()
        if k not in (ANNOTATION_REF_NAME, ANNOTATION_CONTAINERD_NAME)
    }
    ann[ANNOTATION_REF_NAME] = name
    if "/" in name:  # containerd only understands full references
        ann[ANNOTATION_CONTAINERD_NAME] = name
    return desc.with_annotations(ann)


def find_entries(entries: list[IndexEntry], name: str) -> list[int]:
    """Indices of the entries ``name`` refers to, in every spelling ``pull`` takes: the exact
    name, the name without ``oci://`` or ``docker://``, an unambiguous short tag, and the
    reference as ``pull`` records it (``app:1`` is ``docker.io/library/app:1``)."""
    bare = name.removeprefix("oci://").removeprefix("docker://")
    for spelling in dict.fromkeys((name, bare)):
        exact = [i for i, e in enumerate(entries) if spelling in e.names]
        if exact:
            return exact
    if _TAG.fullmatch(bare):
        by_tag = [i for i, e in enumerate(entries) if any(_tag_of(n) == bare for n in e.names)]
        full_names = {entries[i].name for i in by_tag}
        if len(full_names) > 1:
            shown = ", ".join(sorted(n for n in full_names if n))
            raise ConflictError(
                f"tag {bare!r} is ambiguous in this layout ({shown}); use a full name"
            )
        if by_tag:
            return by_tag
    try:
        recorded = str(Reference.parse(bare))
    except InvalidInputError:
        return []
    return [i for i, e in enumerate(entries) if recorded in e.names]


def one_descriptor(entries: list[IndexEntry], idx: list[int], name: str) -> Descriptor:
    digests = {str(entries[i].desc.digest) for i in idx}
    if len(digests) > 1:
        raise ConflictError(
            f"index.json has {len(idx)} entries named {name!r} with different digests "
            f"({', '.join(sorted(digests))}); fix it with `hybridstore tag` or `untag`"
        )
    return entries[idx[-1]].desc
