"""Which children of an image index a pull takes: the platform rules of the image spec.

An index whose children carry no platform (an artifact index) is taken whole; an
image index gives the host platform by default, the wanted ones when named, all of
them on request.
"""

from __future__ import annotations

from collections.abc import Sequence

from hybridstore.errors import NotFoundError
from hybridstore.oci.model import Descriptor, Index, Platform, host_platform

__all__ = ["select_platforms"]


def select_platforms(
    index: Index, wanted: Sequence[Platform], all_platforms: bool
) -> list[Descriptor]:
    """Children of an index to take: all for artifacts or ``all_platforms``, else those
    matching ``wanted`` (default: the host platform)."""
    children = list(index.manifests)
    with_platform = [d for d in children if d.platform is not None]
    if all_platforms or not with_platform:
        return children
    want = tuple(wanted) or (host_platform(),)
    chosen = [d for d in with_platform if any(w.matches(d.platform) for w in want if d.platform)]
    if not chosen:
        have = ", ".join(sorted({str(d.platform) for d in with_platform}))
        asked = ", ".join(str(w) for w in want)
        raise NotFoundError(
            f"no manifest for platform {asked} in the index (available: {have}); "
            "use --platform or --all-platforms"
        )
    return chosen
