"""Digest parsing, the digest-to-path route, and streaming verification."""

from __future__ import annotations

import hashlib
import io
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hybridstore.errors import (
    DigestMismatchError,
    IntegrityError,
    InvalidDigestError,
    InvalidInputError,
    SizeMismatchError,
    UnsupportedAlgorithmError,
)
from hybridstore.oci.digest import SUPPORTED_ALGORITHMS, Digest, Digester, DigestVerifier

HEX64 = hashlib.sha256(b"hello").hexdigest()
HEX128 = hashlib.sha512(b"hello").hexdigest()


@pytest.mark.parametrize(
    ("text", "algorithm", "encoded", "verifiable"),
    [
        (f"sha256:{HEX64}", "sha256", HEX64, True),
        (f"sha512:{HEX128}", "sha512", HEX128, True),
        ("sha256:" + "0" * 64, "sha256", "0" * 64, True),
        # Registered but not computable here.
        ("blake3:" + "a" * 64, "blake3", "a" * 64, False),
        # Unknown but grammatical: parses so documents carrying it can be read.
        ("foo+bar:abc", "foo+bar", "abc", False),
        (
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
            "multihash+base58",
            "QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
            False,
        ),
        ("a.b_c-d:X=_-y", "a.b_c-d", "X=_-y", False),
    ],
)
def test_parse_valid(text: str, algorithm: str, encoded: str, verifiable: bool) -> None:
    d = Digest.parse(text)
    assert (d.algorithm, d.encoded) == (algorithm, encoded)
    assert str(d) == text
    assert Digest.parse(str(d)) == d
    assert d.verifiable is verifiable
    assert d.short == f"{algorithm}:{encoded[:12]}"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected 'algorithm:encoded'"),
        ("sha256", "expected 'algorithm:encoded'"),
        (HEX64, "expected 'algorithm:encoded'"),
        ("sha256:", "expected 'algorithm:encoded'"),
        (":" + HEX64, "expected 'algorithm:encoded'"),
        ("sha256:" + HEX64.upper(), "lowercase hex"),
        ("SHA256:" + HEX64, "expected 'algorithm:encoded'"),
        ("sha256:" + HEX64[:-1], "exactly 64"),
        ("sha256:" + HEX64 + "0", "exactly 64"),
        ("sha256:" + HEX128, "exactly 64"),
        ("sha512:" + HEX64, "exactly 128"),
        ("blake3:" + "a" * 63, "exactly 64"),
        ("sha256:../x", "expected 'algorithm:encoded'"),
        ("sha256:../../etc/passwd", "expected 'algorithm:encoded'"),
        ("sha256:abc/def", "expected 'algorithm:encoded'"),
        ("sha256%3a" + HEX64, "expected 'algorithm:encoded'"),
        ("sha256:" + HEX64[:60] + "%2f", "expected 'algorithm:encoded'"),
        ("foo:a%2fb", "expected 'algorithm:encoded'"),
        ("sha256:" + HEX64 + "\x00", "expected 'algorithm:encoded'"),
        ("sha256\x00:" + HEX64, "expected 'algorithm:encoded'"),
        ("sha256:" + HEX64 + "\n", "expected 'algorithm:encoded'"),
        (" sha256:" + HEX64, "expected 'algorithm:encoded'"),
        ("sha256::" + HEX64, "expected 'algorithm:encoded'"),
        ("sha256:" + HEX64 + ":" + HEX64, "expected 'algorithm:encoded'"),
        ("..:abc", "expected 'algorithm:encoded'"),
        ("foo..bar:abc", "expected 'algorithm:encoded'"),
        ("+foo:abc", "expected 'algorithm:encoded'"),
        ("foo+:abc", "expected 'algorithm:encoded'"),
        ("foo:a.b", "expected 'algorithm:encoded'"),
        ("sha256:" + "é" * 64, "expected 'algorithm:encoded'"),
        ("sha256:" + "\uff10" * 64, "expected 'algorithm:encoded'"),  # fullwidth digits
        ("foo:" + "a" * 2000, "longer than 1024"),
    ],
)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(InvalidDigestError) as info:
        Digest.parse(text)
    msg = str(info.value)
    assert fragment in msg
    assert msg.startswith("invalid digest ")
    assert "\n" not in msg and len(msg) < 400


@pytest.mark.parametrize("value", [None, b"sha256:" + HEX64.encode(), 256])
def test_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidDigestError, match="must be a string"):
        Digest.parse(value)  # type: ignore[arg-type]


def test_invalid_digest_is_invalid_input_and_value_error() -> None:
    with pytest.raises(InvalidInputError):
        Digest.parse("nope")
    with pytest.raises(ValueError):
        Digest.parse("nope")


def test_path_components_for_supported_algorithms() -> None:
    assert Digest.parse(f"sha256:{HEX64}").path_components() == ("sha256", HEX64)
    assert Digest.parse(f"sha512:{HEX128}").path_components() == ("sha512", HEX128)


@pytest.mark.parametrize("text", ["foo+bar:abc", "blake3:" + "a" * 64, "sha384:" + "a" * 96])
def test_unverifiable_algorithms_refuse_every_use(text: str) -> None:
    d = Digest.parse(text)
    assert not d.verifiable
    with pytest.raises(UnsupportedAlgorithmError, match=re.escape(repr(d.algorithm))):
        d.require_verifiable()
    with pytest.raises(UnsupportedAlgorithmError):
        d.path_components()
    with pytest.raises(UnsupportedAlgorithmError):
        DigestVerifier(d)
    with pytest.raises(UnsupportedAlgorithmError, match="supported: sha256, sha512"):
        Digester(d.algorithm)
    with pytest.raises(UnsupportedAlgorithmError):
        Digest.of_bytes(b"x", d.algorithm)


def test_unsupported_algorithm_is_value_error_with_own_exit_code() -> None:
    with pytest.raises(ValueError):
        Digester("md5")
    assert UnsupportedAlgorithmError.exit_code != InvalidDigestError.exit_code


@pytest.mark.parametrize(
    ("algorithm", "encoded"),
    [
        ("sha256", "../../etc"),
        ("sha256", ".."),
        ("sha256", "a" * 63 + "/"),
        ("sha256", HEX64 + "/../../x"),
        ("sha256", HEX64.upper()),
        ("sha256", ""),
        ("sha256", HEX64 + "\x00"),
        ("../sha256", HEX64),
        ("sha256/..", HEX64),
        ("", HEX64),
        ("sha256:" + HEX64, ""),
        (".", "x"),
    ],
)
def test_hand_built_hostile_digest_never_becomes_a_path(algorithm: str, encoded: str) -> None:
    with pytest.raises(InvalidDigestError):
        Digest(algorithm, encoded).path_components()


def test_hand_built_valid_digest_gets_a_path() -> None:
    assert Digest("sha256", HEX64).path_components() == ("sha256", HEX64)


def _is_safe_component(part: str) -> bool:
    return (
        bool(part)
        and "/" not in part
        and "\\" not in part
        and "\x00" not in part
        and (part not in (".", "..") and ".." not in part)
    )


@given(st.text(max_size=200))
@example("sha256:../x")
@example("sha256:" + HEX64)
@example("sha512:" + HEX128)
@example("foo+bar:abc")
@example("a:..")
def test_path_components_only_ever_safe(text: str) -> None:
    try:
        d = Digest.parse(text)
    except InvalidDigestError:
        return
    try:
        alg, enc = d.path_components()
    except UnsupportedAlgorithmError:
        assert not d.verifiable
        return
    assert alg in SUPPORTED_ALGORITHMS
    assert _is_safe_component(alg) and _is_safe_component(enc)
    assert enc == enc.lower() and all(c in "0123456789abcdef" for c in enc)


_digest_alphabet = "abcdef0123456789ABZ+._-=:/\\\x00%é"


@given(
    st.one_of(
        st.text(alphabet=_digest_alphabet, max_size=140),
        st.builds(
            lambda a, e: f"{a}:{e}",
            st.sampled_from(["sha256", "sha512", "x"]),
            st.text(alphabet=_digest_alphabet, max_size=130),
        ),
    )
)
def test_grammar_shaped_noise_parses_or_raises_invalid(text: str) -> None:
    try:
        d = Digest.parse(text)
    except InvalidDigestError:
        return
    assert str(d) == text
    try:
        parts = d.path_components()
    except UnsupportedAlgorithmError:
        return
    assert all(_is_safe_component(p) for p in parts)


@given(st.text(max_size=80), st.text(max_size=80))
def test_hand_built_digests_path_components_are_safe(algorithm: str, encoded: str) -> None:
    try:
        parts = Digest(algorithm, encoded).path_components()
    except (InvalidDigestError, UnsupportedAlgorithmError):
        return
    assert parts == (algorithm, encoded)
    assert all(_is_safe_component(p) for p in parts)


@pytest.mark.parametrize("algorithm", SUPPORTED_ALGORITHMS)
@pytest.mark.parametrize("data", [b"", b"hello", bytes(range(256)) * 5000])
def test_of_bytes_and_of_file_match_hashlib(algorithm: str, data: bytes) -> None:
    want = Digest(algorithm, hashlib.new(algorithm, data).hexdigest())
    assert Digest.of_bytes(data, algorithm) == want
    assert Digest.of_file(io.BytesIO(data), algorithm) == (want, len(data))
    assert Digest.parse(str(want)) == want


def test_digester_counts_and_accepts_buffer_types() -> None:
    d = Digester()
    d.update(b"he")
    d.update(bytearray(b"l"))
    d.update(memoryview(b"lo"))
    assert d.size == 5
    assert d.digest() == Digest.parse(f"sha256:{HEX64}")


# --- DigestVerifier ------------------------------------------------------------

BODY = b"hello"
GOOD = Digest.of_bytes(BODY)


def test_verifier_accepts_exact_body_in_chunks() -> None:
    v = DigestVerifier(GOOD, len(BODY))
    for i in range(len(BODY)):
        v.update(BODY[i : i + 1])
    v.verify()
    assert v.size == len(BODY)


def test_verifier_without_size_accepts_exact_body() -> None:
    v = DigestVerifier(GOOD)
    v.update(BODY)
    v.verify()


def test_verifier_rejects_short_body() -> None:
    v = DigestVerifier(GOOD, len(BODY))
    v.update(BODY[:3])
    with pytest.raises(SizeMismatchError) as info:
        v.verify()
    msg = str(info.value)
    assert str(GOOD) in msg and "expected 5 bytes" in msg and "got 3" in msg


def test_verifier_rejects_long_body_early_during_update() -> None:
    v = DigestVerifier(GOOD, len(BODY))
    v.update(BODY)
    with pytest.raises(SizeMismatchError) as info:
        v.update(b"!")
    msg = str(info.value)
    assert str(GOOD) in msg and "more than the expected 5 bytes" in msg


def test_verifier_rejects_long_body_in_one_chunk() -> None:
    v = DigestVerifier(GOOD, len(BODY))
    with pytest.raises(SizeMismatchError, match="more than the expected 5 bytes"):
        v.update(BODY + b"x" * 1_000_000)


def test_verifier_rejects_wrong_body_of_right_size() -> None:
    wrong = b"jello"
    v = DigestVerifier(GOOD, len(BODY))
    v.update(wrong)
    with pytest.raises(DigestMismatchError) as info:
        v.verify()
    msg = str(info.value)
    assert f"expected {GOOD}" in msg
    assert f"got {Digest.of_bytes(wrong)}" in msg


def test_verifier_without_size_catches_short_body_by_digest() -> None:
    v = DigestVerifier(GOOD)
    v.update(BODY[:4])
    with pytest.raises(DigestMismatchError, match=str(Digest.of_bytes(BODY[:4]))):
        v.verify()


def test_verifier_rejects_empty_body() -> None:
    v = DigestVerifier(GOOD, len(BODY))
    with pytest.raises(SizeMismatchError, match="got 0"):
        v.verify()


def test_verifier_sha512() -> None:
    expected = Digest.of_bytes(BODY, "sha512")
    v = DigestVerifier(expected, len(BODY))
    v.update(BODY)
    v.verify()
    bad = DigestVerifier(expected, len(BODY))
    bad.update(b"jello")
    with pytest.raises(DigestMismatchError, match=f"expected {expected}"):
        bad.verify()


def test_integrity_errors_share_a_base() -> None:
    assert issubclass(DigestMismatchError, IntegrityError)
    assert issubclass(SizeMismatchError, IntegrityError)


@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(1, 64))
def test_verifier_property(expected_body: bytes, body: bytes, chunk: int) -> None:
    v = DigestVerifier(Digest.of_bytes(expected_body), len(expected_body))
    try:
        for i in range(0, len(body), chunk):
            v.update(body[i : i + chunk])
        v.verify()
    except SizeMismatchError:
        assert len(body) != len(expected_body)
        return
    except DigestMismatchError:
        assert body != expected_body
        return
    assert body == expected_body
