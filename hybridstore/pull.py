"""``hybridstore.pull``: the main job as one library call.

Example::

    from hybridstore import pull
    result = pull("oci://registry.example.com/charts/app:1.2.3", layout="./charts")
    result.digest, result.fetched, result.reused   # what arrived, what was reused
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hybridstore.oci.reference import Reference
from hybridstore.store.layout import OCILayout, removed_if_failed
from hybridstore.transfer.copier import Copier, CopySettings
from hybridstore.transfer.engine import CopyResult

if TYPE_CHECKING:
    from typing_extensions import Unpack


__all__ = ["PullResult", "pull", "pull_many"]

PullResult = CopyResult


def pull_many(
    refs: Sequence[str],
    *,
    layout: str | os.PathLike[str] | OCILayout,
    ref_name: str | None = None,
    init: bool = False,
    **settings: Unpack[CopySettings],
) -> list[PullResult]:
    """Pull each reference into ``layout`` through the shared cache; ``settings`` as
    ``CopySettings`` describes them.

    All references share one connection pool and one set of worker pools. ``ref_name``
    (the name recorded in the layout, default the full reference) only makes sense
    with a single reference. A ``layout`` given as an ``OCILayout`` links from the
    cache it was opened with. A non-empty directory that is not yet a layout is
    refused unless ``init``; a layout directory this call creates is removed again if
    the pull fails.
    """
    parsed = [Reference.parse(r) for r in refs]
    with Copier(**settings) as copier:
        # Sources first: credentials are resolved before the layout exists.
        sources = [copier.registry_source(ref) for ref in parsed]
        if isinstance(layout, OCILayout):
            return [
                copier.run(src, copier.layout_destination(layout, ref_name or src.display))
                for src in sources
            ]
        with removed_if_failed(layout):
            target = OCILayout.open_or_create(
                layout, cache=copier.cache, link_mode=copier.link_mode, init=init
            )
            return [
                copier.run(src, copier.layout_destination(target, ref_name or src.display))
                for src in sources
            ]


def pull(
    ref: str,
    *,
    layout: str | os.PathLike[str] | OCILayout,
    ref_name: str | None = None,
    init: bool = False,
    **settings: Unpack[CopySettings],
) -> PullResult:
    """Pull one reference into ``layout``; as ``pull_many``."""
    return pull_many([ref], layout=layout, ref_name=ref_name, init=init, **settings)[0]
