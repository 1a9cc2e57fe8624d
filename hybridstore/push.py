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
from typing import Any

from hybridstore.errors import InvalidInputError
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.model import Platform
from hybridstore.oci.reference import Reference
from hybridstore.oci.referrers import is_fallback_tag
from hybridstore.remote.credentials import Credential
from hybridstore.remote.transport import TransportOptions
from hybridstore.remote.upload import UploadOptions
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_refs import names_of
from hybridstore.transfer.copier import Copier, copy_options
from hybridstore.transfer.endpoint import Progress
from hybridstore.transfer.engine import CopyResult
from hybridstore.transfer.locator import Location, explicit_reference

__all__ = ["push", "push_all", "push_targets"]


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
    **kwargs: Any,
) -> CopyResult:
    """Push the layout ref ``name`` (its whole graph) to ``target`` (default: ``name``).

    Keyword arguments as for ``push_many``.
    """
    return push_many(layout, [(name, target)], **kwargs)[0]


def push_all(
    layout: str | os.PathLike[str], *, registry: str | None = None, **kwargs: Any
) -> list[CopyResult]:
    """Push every ref of ``layout`` to its recorded name (or into ``registry``),
    with their referrers."""
    pairs: list[tuple[str, str | None]] = [(n, str(t)) for n, t in push_targets(layout, registry)]
    kwargs.setdefault("include_referrers", True)
    return push_many(layout, pairs, **kwargs)


def push_many(
    layout: str | os.PathLike[str],
    pairs: Sequence[tuple[str, str | None]],
    *,
    cache: str | os.PathLike[str] | BlobCache | None = None,
    platforms: Sequence[str | Platform] = (),
    concurrency: int = 8,
    include_nondistributable: bool = False,
    include_referrers: bool = False,
    referrer_types: Sequence[str] = (),
    transport: TransportOptions | None = None,
    credential: Credential | None = None,
    upload: UploadOptions | None = None,
    manifest_limit: int = MAX_DOCUMENT_BYTES,
    progress: Progress | None = None,
) -> list[CopyResult]:
    """Push each ``(ref name, target or None)`` of ``layout``; one pool, one HTTP client."""
    options = copy_options(
        platforms=platforms,
        concurrency=concurrency,
        include_nondistributable=include_nondistributable,
        include_referrers=include_referrers,
        referrer_types=referrer_types,
    )
    plan = [(name, _target(name, target)) for name, target in pairs]
    root = Path(layout)
    results = []
    with Copier(
        options,
        cache=cache,
        transport=transport,
        credential=credential,
        upload=upload,
        manifest_limit=manifest_limit,
        progress=progress,
    ) as copier:
        for name, ref in plan:
            src = Location("layout", path=root, name=name)
            results.append(copier.copy(src, Location("registry", reference=ref)))
    return results
