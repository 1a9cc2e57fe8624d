"""Every user-facing failure of hybridstore, as one exception hierarchy.

The CLI maps each class to a documented exit code (``exit_code``) and prints
``str(exc)`` as one line; library callers can catch by the matching builtin
(``FileNotFoundError``, ``ValueError``, ``TimeoutError``, ...) as well.

    HybridstoreError
    +-- InvalidInputError (ValueError)          exit 10
    |   +-- InvalidDigestError
    |   +-- InvalidReferenceError
    |   +-- InvalidDocumentError
    |   +-- UnsupportedMediaTypeError
    |   +-- InvalidArchiveError
    |   +-- UnsafePathError
    +-- IntegrityError                           exit 3
    |   +-- DigestMismatchError
    |   +-- SizeMismatchError
    |   +-- CorruptionError
    +-- UnsupportedAlgorithmError (ValueError)   exit 9
    +-- NotFoundError (FileNotFoundError)        exit 4
    +-- AuthError (PermissionError)              exit 5
    +-- NetworkError (ConnectionError)           exit 6
    |   +-- RegistryError
    +-- LockTimeoutError (TimeoutError)          exit 7
    +-- ConflictError                            exit 8
    +-- LinkError (OSError)                      exit 11
    +-- StorageError (OSError)                   exit 11
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConflictError",
    "CorruptionError",
    "DigestMismatchError",
    "HybridstoreError",
    "IntegrityError",
    "InvalidDigestError",
    "InvalidArchiveError",
    "InvalidDocumentError",
    "InvalidInputError",
    "InvalidReferenceError",
    "LinkError",
    "LockTimeoutError",
    "NetworkError",
    "NotFoundError",
    "RegistryError",
    "SizeMismatchError",
    "StorageError",
    "UnsupportedAlgorithmError",
    "UnsupportedMediaTypeError",
    "UnsafePathError",
]


class HybridstoreError(Exception):
    """Base of every error hybridstore reports to a user."""

    exit_code = 1


class InvalidInputError(HybridstoreError, ValueError):
    """Something the user or a document supplied is malformed."""

    exit_code = 10


class InvalidDigestError(InvalidInputError):
    """A string is not a digest (or not a valid one for its algorithm)."""


class InvalidReferenceError(InvalidInputError):
    """A string is not a valid registry reference."""


class InvalidDocumentError(InvalidInputError):
    """A manifest, index, config or layout file is malformed."""


class UnsupportedMediaTypeError(InvalidInputError):
    """A document has a media type this code refuses (e.g. Docker schema1)."""


class IntegrityError(HybridstoreError):
    """Bytes do not match what was promised for them."""

    exit_code = 3


class DigestMismatchError(IntegrityError):
    """Content hashed to a different digest than expected."""


class SizeMismatchError(IntegrityError):
    """Content had a different length than its descriptor says."""


class CorruptionError(IntegrityError):
    """A cache or layout on disk is inconsistent."""


class UnsupportedAlgorithmError(HybridstoreError, ValueError):
    """A grammatical digest whose algorithm this code cannot compute."""

    exit_code = 9


class NotFoundError(HybridstoreError, FileNotFoundError):
    """A blob, manifest, ref or repository does not exist."""

    exit_code = 4


class AuthError(HybridstoreError, PermissionError):
    """The registry refused our credentials or we have none."""

    exit_code = 5


class NetworkError(HybridstoreError, ConnectionError):
    """The registry could not be reached or the transfer failed."""

    exit_code = 6


class RegistryError(NetworkError):
    """The registry answered with an error we cannot recover from."""


class LockTimeoutError(HybridstoreError, TimeoutError):
    """Another process held a lock for longer than we were told to wait."""

    exit_code = 7


class ConflictError(HybridstoreError):
    """An operation would overwrite something the user did not ask to replace."""

    exit_code = 8


class LinkError(HybridstoreError, OSError):
    """A blob could not be materialized with the requested link mode."""

    exit_code = 11


class StorageError(HybridstoreError, OSError):
    """A filesystem operation on the cache or a layout failed (ENOSPC, EACCES, ...)."""

    exit_code = 11


class InvalidArchiveError(InvalidInputError):
    """A tar archive to import is malformed, unsafe (links, ``..``, devices), over a limit,
    or incomplete."""


class UnsafePathError(InvalidInputError):
    """A name from content (a layer title, a chart name, a tar entry) would write outside
    the output directory or through a symlink."""
