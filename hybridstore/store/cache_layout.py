"""The cache directory's own shape: its version file, ``CACHEDIR.TAG`` and
``.gitignore``, written once on first use and checked before every use.

A cache whose version file names a newer layout is refused, never rewritten:
an older hybridstore must not write into a layout it does not understand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from hybridstore.errors import CorruptionError, InvalidDocumentError, StorageError
from hybridstore.fs.files import atomic_write_bytes, storage_error
from hybridstore.fs.realdir import real_dir
from hybridstore.oci.jsondoc import load_json_object
from hybridstore.oci.limits import MAX_LAYOUT_FILE_BYTES

__all__ = ["CACHE_HINT", "LAYOUT_FILE", "LAYOUT_VERSION", "create_cache", "layout_version"]

LAYOUT_VERSION: Final = 1
LAYOUT_FILE: Final = "hybridstore-layout"
CACHE_HINT: Final = "choose another cache with --cache or HYBRIDSTORE_CACHE_DIR"
_CACHEDIR_TAG: Final = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by hybridstore.\n"
    b"# For information about cache directory tags see https://bford.info/cachedir/\n"
)


def layout_version(root: Path) -> int | None:
    """The cache's layout version (``None`` if not yet written); refuse newer ones."""
    path = root / LAYOUT_FILE
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise storage_error(e, "read", path, CACHE_HINT) from e
    try:
        version = load_json_object(raw, what=str(path), limit=MAX_LAYOUT_FILE_BYTES)[
            "cacheLayoutVersion"
        ]
        if not isinstance(version, int) or isinstance(version, bool):
            raise TypeError(version)
    except (InvalidDocumentError, KeyError, TypeError) as e:
        raise CorruptionError(
            f"{path} is not a hybridstore cache layout file; delete it to let hybridstore "
            "rewrite it"
        ) from e
    if version > LAYOUT_VERSION:
        raise StorageError(
            f"the cache at {root} has layout version {version}, newer than this "
            f"hybridstore understands ({LAYOUT_VERSION}); upgrade hybridstore or {CACHE_HINT}"
        )
    return version


def create_cache(root: Path, areas: Iterable[str]) -> None:
    """Create the root, its ``areas`` (real directories: ``fs.realdir``) and whichever of
    the version file, CACHEDIR.TAG (backup tools skip the tree) and .gitignore are
    missing; existing files are left as they are."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        for area in areas:
            real_dir(root, area, CACHE_HINT)
        for name, data in (
            ("CACHEDIR.TAG", _CACHEDIR_TAG),
            (".gitignore", b"*\n"),
            (LAYOUT_FILE, json.dumps({"cacheLayoutVersion": LAYOUT_VERSION}).encode() + b"\n"),
        ):
            if not os.path.lexists(root / name):
                atomic_write_bytes(root / name, data, overwrite=False)
    except OSError as e:
        raise storage_error(e, "set up the cache in", root, CACHE_HINT) from e
