"""A command's first write into a new layout directory: nothing is left behind if it fails.

A pull, an import or a copy into a directory that did not exist creates it (and maybe its
parents); when the command fails, that directory goes again, unless another process tagged
a ref into it meanwhile. An existing directory is never removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from hybridstore.errors import HybridstoreError, NotFoundError
from hybridstore.store.layout import OCILayout

__all__ = ["removed_if_failed"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def removed_if_failed(root: str | os.PathLike[str]) -> Iterator[None]:
    """Run a command that may create the layout ``root``; if it fails, leave nothing behind.

    When ``root`` (or any of its parents) did not exist before, the topmost directory
    this created is removed on failure, unless a ref was tagged into the layout meanwhile
    (by another process sharing the new directory). An existing directory is never removed.
    """
    path = Path(root)
    top = None
    probe = path.absolute()
    while not os.path.lexists(probe):
        top, probe = probe, probe.parent
    try:
        yield
    except BaseException:
        if top is not None:
            _remove_untagged(path, top)
        raise


def _remove_untagged(root: Path, top: Path) -> None:
    try:
        if OCILayout.open(root).refs():
            return
    except NotFoundError:
        pass  # failed before the layout files were written: still ours to remove
    except HybridstoreError as e:
        log.warning("keeping the unfinished layout %s: %s", root, e)
        return
    try:
        shutil.rmtree(top)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("could not remove the unfinished layout %s: %s", top, e)
