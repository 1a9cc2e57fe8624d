"""``hybridstore.push``: a layout's refs back into registries (the air-gap restore side).

Example::

    from hybridstore.push import push, push_all
    push("./charts", "registry.example.com/charts/app:1.2.3")          # to its own name
    push("./charts", "app:1.2.3", "localhost:5000/charts/app:1.2.3")   # elsewhere
    push_all("./charts", registry="localhost:5000")                    # every ref

The whole graph of a ref is pushed (all platforms of an index: a registry
needs every child), blobs the registry already has are skipped after a HEAD,
and the manifests keep their exact bytes, so digests are unchanged.
Referrers recorded in the layout go along with ``include_referrers`` (always
with ``push_all``, which restores everything).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hybridstore.errors import InvalidInputError
from hybridstore.oci.reference import Reference
from hybridstore.oci.referrers import is_fallback_tag
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_refs import names_of
from hybridstore.transfer.copier import Copier, bound_settings
from hybridstore.transfer.engine import CopyResult
from hybridstore.transfer.locator import Location, explicit_reference
from hybridstore.transfer.settings import CopySettings

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["push", "push_all", "push_many", "push_targets"]


def _target(name: str, target: str | None) -> Reference:
    if target:
        return Reference.parse(target)
    ref = explicit_reference(name)
    if ref is None:
        raise InvalidInputError(
            f"ref {name!r} does not name a registry; give a TARGET such as "
            f"localhost:5000/{name.split(':')[0] or 'app'}"
        )
    return ref


def push_targets(
    layout: str | os.PathLike[str] | OCILayout, registry: str | None = None
) -> list[tuple[str, Reference]]:
    """(ref name, target) for every ref of ``layout`` that ``push_all`` pushes.

    Referrers fallback indexes (``...:sha256-<hex>``) are not pushed as refs:
    their referrers travel with their subjects. ``registry`` replaces each
    name's registry (the repository path is kept).
    """
    lay = layout if isinstance(layout, OCILayout) else OCILayout.open(layout)
    out: list[tuple[str, Reference]] = []
    unnamed: list[str] = []
    for desc in lay.entries():
        names = names_of(desc)
        if not names:
            continue
        name = names[0]
        ref = explicit_reference(name)
        if ref is None:
            unnamed.append(name)
            continue
        if ref.tag is not None and is_fallback_tag(ref.tag):
            continue
        if registry is not None:
            ref = Reference.parse(f"{registry}/{ref.repository}" + _suffix(ref))
        out.append((name, ref))
    if unnamed:
        raise InvalidInputError(
            f"refs {', '.join(sorted(unnamed)[:5])} do not name a registry; push them one by "
            "one with a TARGET"
        )
    return out


def _suffix(ref: Reference) -> str:
    return (f":{ref.tag}" if ref.tag else "") + (f"@{ref.digest}" if ref.digest else "")


def push(
    layout: str | os.PathLike[str],
    name: str,
    target: str | None = None,
    **settings: Unpack[CopySettings],
) -> CopyResult:
    """Push the layout ref ``name`` (its whole graph) to ``target`` (default: ``name``);
    ``settings`` as ``CopySettings`` describes them."""
    return push_many(layout, [(name, target)], **settings)[0]


def push_all(
    layout: str | os.PathLike[str],
    *,
    registry: str | None = None,
    **settings: Unpack[CopySettings],
) -> list[CopyResult]:
    """Push every ref of ``layout`` to its recorded name (or into ``registry``),
    with their referrers unless ``include_referrers=False``."""
    pairs: list[tuple[str, str | None]] = [(n, str(t)) for n, t in push_targets(layout, registry)]
    settings.setdefault("include_referrers", True)
    return push_many(layout, pairs, **settings)


def push_many(
    layout: str | os.PathLike[str],
    pairs: Sequence[tuple[str, str | None]],
    **settings: Unpack[CopySettings],
) -> list[CopyResult]:
    """Push each ``(ref name, target or None)`` of ``layout``; one pool, one HTTP client."""
    plan = [(name, _target(name, target)) for name, target in pairs]
    root = Path(layout)
    results = []
    with Copier(**bound_settings(settings, [ref.registry for _, ref in plan])) as copier:
        for name, ref in plan:
            src = Location("layout", path=root, name=name)
            results.append(copier.copy(src, Location("registry", reference=ref)))
    return results
