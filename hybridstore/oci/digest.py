"""The ``Digest`` value type: parse, validate, hash and verify content digests.

The grammar is the image spec's (``algorithm ":" encoded``). Registered
algorithms carry their own encoding rule; a grammatical digest with an unknown
algorithm parses (so documents carrying one can be read) but can never be
verified or stored. ``Digest.path_components`` is the only way a digest becomes
a filesystem path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import IO, Final

from hybridstore.errors import (
    DigestMismatchError,
    InvalidDigestError,
    SizeMismatchError,
    UnsupportedAlgorithmError,
)

__all__ = ["Digest", "DigestVerifier", "Digester", "SUPPORTED_ALGORITHMS"]

_GRAMMAR: Final = re.compile(
    r"(?P<alg>[a-z0-9]+(?:[+._-][a-z0-9]+)*):(?P<enc>[a-zA-Z0-9=_-]+)", re.ASCII
)

# Encoding rules of the algorithms the image spec registers.
_REGISTERED: Final[dict[str, re.Pattern[str]]] = {
    "sha256": re.compile(r"[a-f0-9]{64}", re.ASCII),
    "sha512": re.compile(r"[a-f0-9]{128}", re.ASCII),
    "blake3": re.compile(r"[a-f0-9]{64}", re.ASCII),
}

# The algorithms this code can compute (blake3 is registered but not in hashlib).
SUPPORTED_ALGORITHMS: Final = ("sha256", "sha512")

# A whole digest that may become a path: a supported algorithm and its encoding.
_PATHABLE: Final = re.compile(
    "|".join(f"{alg}:{_REGISTERED[alg].pattern}" for alg in SUPPORTED_ALGORITHMS), re.ASCII
)

_MAX_LEN: Final = 1024


@dataclass(frozen=True, order=True)
class Digest:
    """A validated content digest such as ``sha256:<64 hex>``."""

    algorithm: str
    encoded: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse and validate ``text``; raise ``InvalidDigestError`` naming the problem."""
        if not isinstance(text, str):
            raise InvalidDigestError(f"digest must be a string, got {type(text).__name__}")
        shown = text if len(text) <= 100 else text[:100] + "..."
        if len(text) > _MAX_LEN:
            raise InvalidDigestError(f"invalid digest {shown!r}: longer than {_MAX_LEN} characters")
        m = _GRAMMAR.fullmatch(text)
        if m is None:
            raise InvalidDigestError(
                f"invalid digest {shown!r}: expected 'algorithm:encoded' such as 'sha256:<64 hex>'"
            )
        alg, enc = m.group("alg", "enc")
        rule = _REGISTERED.get(alg)
        if rule is not None and not rule.fullmatch(enc):
            want = "128" if alg == "sha512" else "64"
            raise InvalidDigestError(
                f"invalid digest {shown!r}: {alg} needs exactly {want} lowercase hex characters"
            )
        return cls(alg, enc)

    @classmethod
    def of_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """Digest of ``data`` (the bytes as they are; never re-serialise JSON first)."""
        d = Digester(algorithm)
        d.update(data)
        return d.digest()

    @classmethod
    def of_file(cls, f: IO[bytes], algorithm: str = "sha256") -> tuple[Digest, int]:
        """Digest and length of everything readable from ``f``."""
        d = Digester(algorithm)
        while chunk := f.read(1 << 20):
            d.update(chunk)
        return d.digest(), d.size

    @property
    def verifiable(self) -> bool:
        """Whether this code can compute this digest's algorithm."""
        return self.algorithm in SUPPORTED_ALGORITHMS

    def require_verifiable(self) -> None:
        if not self.verifiable:
            raise UnsupportedAlgorithmError(
                f"cannot verify {self}: algorithm {self.algorithm!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_ALGORITHMS)})"
            )

    def path_components(self) -> tuple[str, str]:
        """``(algorithm, encoded)`` for ``blobs/<alg>/<encoded>``: the only digest-to-path route.

        Re-validates (one regex match) so that a ``Digest`` built by hand can never
        name a path outside ``blobs/``; only verifiable algorithms get a path.
        """
        if _PATHABLE.fullmatch(f"{self.algorithm}:{self.encoded}") is None:
            Digest.parse(str(self)).require_verifiable()  # raises, naming the problem
        return self.algorithm, self.encoded

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    @property
    def short(self) -> str:
        """A human-sized form for progress output (``sha256:0123456789ab``)."""
        return f"{self.algorithm}:{self.encoded[:12]}"


@dataclass
class Digester:
    """Hashes and counts bytes as they stream past."""

    algorithm: str = "sha256"
    size: int = 0
    _hash: hashlib._Hash = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.algorithm not in SUPPORTED_ALGORITHMS:
            raise UnsupportedAlgorithmError(
                f"cannot compute {self.algorithm!r} digests "
                f"(supported: {', '.join(SUPPORTED_ALGORITHMS)})"
            )
        self._hash = hashlib.new(self.algorithm)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())


class DigestVerifier:
    """Checks a stream against an expected digest and (optionally) size.

    ``update`` fails early once more bytes arrive than ``expected_size`` allows,
    so an over-long body is stopped without reading it all.
    """

    def __init__(self, expected: Digest, expected_size: int | None = None) -> None:
        expected.require_verifiable()
        self.expected = expected
        self.expected_size = expected_size
        self._digester = Digester(expected.algorithm)

    @property
    def size(self) -> int:
        return self._digester.size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._digester.update(data)
        if self.expected_size is not None and self._digester.size > self.expected_size:
            raise SizeMismatchError(
                f"{self.expected}: received more than the expected {self.expected_size} bytes"
            )

    def verify(self) -> None:
        """Raise unless the bytes seen so far are exactly the expected content."""
        if self.expected_size is not None and self.size != self.expected_size:
            raise SizeMismatchError(
                f"{self.expected}: expected {self.expected_size} bytes, got {self.size}"
            )
        actual = self._digester.digest()
        if actual != self.expected:
            raise DigestMismatchError(f"digest mismatch: expected {self.expected}, got {actual}")
