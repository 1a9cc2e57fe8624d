"""``hybridstore.pull``: the main job as one library call.

Example::

    from hybridstore import pull
    result = pull("oci://registry.example.com/charts/app:1.2.3", layout="./charts")
    result.digest, result.fetched, result.reused   # what arrived, what was reused
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hybridstore.errors import HybridstoreError
from hybridstore.oci.reference import Reference
from hybridstore.store.layout import OCILayout
from hybridstore.transfer.copier import Copier, CopySettings
from hybridstore.transfer.engine import CopyResult

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger("hybridstore.pull")

__all__ = ["PullResult", "pull", "pull_many"]

PullResult = CopyResult


def pull_many(
    refs: Sequence[str],
    *,
    layout: str | os.PathLike[str] | OCILayout,
    ref_name: str | None = None,
    **settings: Unpack[CopySettings],
) -> list[PullResult]:
    """Pull each reference into ``layout`` through the shared cache; ``settings`` as
    ``CopySettings`` describes them.

    All references share one connection pool and one set of worker pools. ``ref_name``
    (the name recorded in the layout, default the full reference) only makes sense
    with a single reference. A ``layout`` given as an ``OCILayout`` links from the
    cache it was opened with.
    """
    parsed = [Reference.parse(r) for r in refs]
    with Copier(**settings) as copier:
        # Sources first: credentials are resolved before the layout exists.
        sources = [copier.registry_source(ref) for ref in parsed]
        new_dir = None if isinstance(layout, OCILayout) else Path(layout)
        if new_dir is not None and new_dir.exists():
            new_dir = None
        target = (
            layout
            if isinstance(layout, OCILayout)
            else OCILayout.open_or_create(layout, cache=copier.cache, link_mode=copier.link_mode)
        )
        try:
            return [
                copier.run(src, copier.layout_destination(target, ref_name or src.display))
                for src in sources
            ]
        except BaseException:
            if new_dir is not None:
                _remove_if_untagged(target, new_dir)
            raise


def _remove_if_untagged(layout: OCILayout, root: Path) -> None:
    """Undo a layout this call created when the pull failed before tagging anything."""
    try:
        if not layout.refs():
            shutil.rmtree(root)
    except (OSError, HybridstoreError) as e:
        log.warning("could not remove the unfinished layout %s: %s", root, e)


def pull(
    ref: str,
    *,
    layout: str | os.PathLike[str] | OCILayout,
    ref_name: str | None = None,
    **settings: Unpack[CopySettings],
) -> PullResult:
    """Pull one reference into ``layout``; as ``pull_many``."""
    return pull_many([ref], layout=layout, ref_name=ref_name, **settings)[0]
