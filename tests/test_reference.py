"""Registry reference grammar: normalisation table, rejection table, properties."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hybridstore.errors import InvalidInputError, InvalidReferenceError
from hybridstore.oci.digest import Digest
from hybridstore.oci.reference import Reference, is_valid_tag

SHA = "sha256:" + "ab" * 32
SHA512 = "sha512:" + "cd" * 64


# (input, registry, repository, tag, digest or None)
VALID = [
    ("alpine", "docker.io", "library/alpine", "latest", None),
    ("alpine:3.20", "docker.io", "library/alpine", "3.20", None),
    ("library/alpine", "docker.io", "library/alpine", "latest", None),
    ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
    ("docker.io/library/alpine", "docker.io", "library/alpine", "latest", None),
    ("index.docker.io/library/alpine", "docker.io", "library/alpine", "latest", None),
    ("registry-1.docker.io/alpine:edge", "docker.io", "library/alpine", "edge", None),
    ("Docker.IO/bitnami/redis", "docker.io", "bitnami/redis", "latest", None),
    ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
    ("ghcr.io/org/app", "ghcr.io", "org/app", "latest", None),
    # Only docker.io gets library/: other registries keep one-component names.
    ("ghcr.io/app", "ghcr.io", "app", "latest", None),
    ("localhost/a", "localhost", "a", "latest", None),
    ("localhost:5000/a", "localhost:5000", "a", "latest", None),
    ("LocalHost:5000/a", "localhost:5000", "a", "latest", None),
    ("127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000", "a/b/c", "v1", None),
    ("reg.example.com:443/team/app:1.2.3", "reg.example.com:443", "team/app", "1.2.3", None),
    ("[::1]:5000/a/b:t", "[::1]:5000", "a/b", "t", None),
    ("[::1]/a", "[::1]", "a", "latest", None),
    ("[2001:DB8::1]:5000/a", "[2001:db8::1]:5000", "a", "latest", None),
    (
        "my-reg.example:5000/a-b/c_d/e__f/g.h/i---j",
        "my-reg.example:5000",
        "a-b/c_d/e__f/g.h/i---j",
        "latest",
        None,
    ),
    # A first component without '.', ':' and not localhost is a path, not a host.
    ("myhost/a", "docker.io", "myhost/a", "latest", None),
    # Grammar quirk shared with docker: with no '/', ':5000' is a tag.
    ("localhost:5000", "docker.io", "library/localhost", "5000", None),
    ("oci://localhost:5000/charts/app:1.2.3", "localhost:5000", "charts/app", "1.2.3", None),
    ("docker://quay.io/a/b", "quay.io", "a/b", "latest", None),
    ("oci://alpine", "docker.io", "library/alpine", "latest", None),
    # Digest-only: no tag is invented.
    (f"reg.io/a@{SHA}", "reg.io", "a", None, SHA),
    (f"alpine@{SHA512}", "docker.io", "library/alpine", None, SHA512),
    (f"reg.io:5000/a/b:v1@{SHA}", "reg.io:5000", "a/b", "v1", SHA),
    # A grammatical digest of an unknown algorithm still names something.
    ("reg.io/a@foo+bar:abc", "reg.io", "a", None, "foo+bar:abc"),
    # Tags may carry uppercase, '_', '.', '-' (Helm's '+' -> '_').
    ("reg.io/a:V1.0_rc-1", "reg.io", "a", "V1.0_rc-1", None),
    ("reg.io/a:_", "reg.io", "a", "_", None),
    ("reg.io/a:" + "t" * 128, "reg.io", "a", "t" * 128, None),
]


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), VALID)
def test_parse_valid(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert ref.registry == registry
    assert ref.repository == repository
    assert ref.tag == tag
    assert ref.digest == (Digest.parse(digest) if digest else None)
    assert Reference.parse(str(ref)) == ref


def test_str_is_full_normalised_form() -> None:
    assert str(Reference.parse("alpine")) == "docker.io/library/alpine:latest"
    assert str(Reference.parse(f"reg.io/a@{SHA}")) == f"reg.io/a@{SHA}"
    assert str(Reference.parse(f"oci://reg.io/a:t@{SHA}")) == f"reg.io/a:t@{SHA}"
    assert str(Reference.parse("[::1]:5000/a/b:t")) == "[::1]:5000/a/b:t"


def test_docker_hub_spellings_are_one_reference() -> None:
    forms = [
        "alpine",
        "alpine:latest",
        "library/alpine",
        "docker.io/alpine",
        "docker.io/library/alpine:latest",
        "index.docker.io/library/alpine",
        "registry-1.docker.io/alpine",
        "docker://alpine",
        "oci://docker.io/library/alpine",
    ]
    refs = {Reference.parse(f) for f in forms}
    assert len(refs) == 1
    (ref,) = refs
    assert ref.name == "docker.io/library/alpine"
    assert ref.endpoint_host == "registry-1.docker.io"


# (input, a fragment the message must contain)
INVALID = [
    ("", "empty"),
    ("oci://", "repository is empty"),
    ("Alpine", "must be lowercase (did you mean 'alpine'?)"),
    ("reg.io/Team/App:v1", "must be lowercase (did you mean 'team/app'?)"),
    ("a//b", "empty path component"),
    ("reg.io/a//b:t", "empty path component"),
    ("reg.io/a/", "empty path component"),
    ("/a", "empty path component"),
    ("reg.io/", "no repository after registry 'reg.io'"),
    ("localhost:5000/", "no repository after registry"),
    ("a:", "tag after ':' is empty"),
    ("reg.io:5000/a:", "tag after ':' is empty"),
    ("a@", "digest after '@' is empty"),
    ("a:.hidden", "tag '.hidden' is invalid"),
    ("a:-x", "tag '-x' is invalid"),
    ("a:t:u", "tag 't:u' is invalid"),
    ("reg.io/a:" + "t" * 129, "longer than 128"),
    ("a-", "path component 'a-' is invalid"),
    ("-a", "path component '-a' is invalid"),
    ("a..b", "path component 'a..b' is invalid"),
    ("a___b", "path component 'a___b' is invalid"),
    ("reg.io/a/../b", "path component '..' is invalid"),
    ("reg.io:/a", "port '' is not a port number"),
    ("reg.io:http/a", "port 'http' is not a port number"),
    ("reg.io:0/a", "port '0' is not a port number"),
    ("reg.io:65536/a", "port '65536' is not a port number"),
    ("reg.io:5000:6000/a", "port '5000:6000' is not a port number"),
    ("-reg.io/a", "is not a host name"),
    ("reg-.io/a", "is not a host name"),
    ("reg..io/a", "is not a host name"),
    ("reg_x.io/a", "is not a host name"),
    ("[::1]", "needs '/repository'"),
    ("[::1]:5000", "needs '/repository'"),
    ("[::1/a", "closing ']'"),
    ("[::1]x/a", "junk after the IPv6 address"),
    ("[::g]/a", "not a bracketed IPv6"),
    ("[1:2:3:4:5:6:7:8:9]/a", "not a valid IPv6 address"),
    ("[fe80::1%eth0]/a", "not a bracketed IPv6"),
    ("a/" + "b" * 250, "longer than the 255"),
    # 250 characters is fine as given but not once docker.io/library/ is added.
    ("c" * 250, "once normalised"),
    ("x" * 5000, "longer than"),
    ("a@sha256:../x", "invalid digest 'sha256:../x'"),
    ("a@sha256:abc/def", "invalid digest"),
    ("a@sha256:" + "AB" * 32, "lowercase hex"),
    ("a@sha256:abc", "exactly 64"),
    ("a@sha256%3a" + "ab" * 32, "invalid digest"),
    ("a@" + SHA + "@" + SHA, "invalid digest"),
    ("https://reg.io/a", "scheme 'https://' is not supported"),
    ("oci://oci://reg.io/a", "scheme 'oci://' is not supported"),
    ("reg.io/a b", "whitespace"),
    ("alpine\n", "whitespace"),
    ("a\x00b", "is invalid"),
    ("reg.io/a\x00:t", "is invalid"),
    ("reg.io/ä", "is invalid"),
    ("\ud800", "is invalid"),
    ("a%2fb", "is invalid"),
]


@pytest.mark.parametrize(("text", "fragment"), INVALID)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    msg = str(info.value)
    assert fragment in msg
    assert msg.startswith("invalid reference ")
    assert "\n" not in msg and len(msg) < 600


def test_invalid_reference_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError):
        Reference.parse("Alpine")
    with pytest.raises(ValueError):
        Reference.parse("a@sha256:x")


@pytest.mark.parametrize("value", [None, b"alpine", 3, ["alpine"]])
def test_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidReferenceError, match="expected a string"):
        Reference.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("default", "text", "expected"),
    [
        ("ghcr.io", "app", "ghcr.io/app:latest"),
        ("localhost:5000", "a/b:t", "localhost:5000/a/b:t"),
        ("index.docker.io", "app", "docker.io/library/app:latest"),
        ("[::1]:5000", "app", "[::1]:5000/app:latest"),
        # An explicit registry wins over the default.
        ("ghcr.io", "quay.io/x/y", "quay.io/x/y:latest"),
    ],
)
def test_default_registry(default: str, text: str, expected: str) -> None:
    ref = Reference.parse(text, default_registry=default)
    assert str(ref) == expected
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize("default", ["myhost", "", "bad host", "reg.io/x", "reg.io:0"])
def test_bad_default_registry(default: str) -> None:
    # "myhost" would read back as a docker.io path, breaking parse(str(ref)) == ref.
    with pytest.raises(InvalidReferenceError, match="default registry"):
        Reference.parse("app", default_registry=default)


@pytest.mark.parametrize(
    ("text", "endpoint", "name", "reference", "local"),
    [
        ("alpine", "registry-1.docker.io", "docker.io/library/alpine", "latest", False),
        ("localhost:5000/a:t", "localhost:5000", "localhost:5000/a", "t", True),
        ("localhost/a", "localhost", "localhost/a", "latest", True),
        ("127.0.0.1:5000/a", "127.0.0.1:5000", "127.0.0.1:5000/a", "latest", True),
        ("127.8.9.10/a", "127.8.9.10", "127.8.9.10/a", "latest", True),
        ("[::1]:5000/a/b:t", "[::1]:5000", "[::1]:5000/a/b", "t", True),
        ("[0:0::1]/a", "[0:0::1]", "[0:0::1]/a", "latest", True),
        ("[::2]/a", "[::2]", "[::2]/a", "latest", False),
        ("128.0.0.1/a", "128.0.0.1", "128.0.0.1/a", "latest", False),
        (
            "localhost.example.com/a",
            "localhost.example.com",
            "localhost.example.com/a",
            "latest",
            False,
        ),
        ("10.0.0.1:5000/a", "10.0.0.1:5000", "10.0.0.1:5000/a", "latest", False),
        (f"reg.io/a:t@{SHA}", "reg.io", "reg.io/a", SHA, False),
        (f"reg.io/a@{SHA}", "reg.io", "reg.io/a", SHA, False),
    ],
)
def test_properties(text: str, endpoint: str, name: str, reference: str, local: bool) -> None:
    ref = Reference.parse(text)
    assert ref.endpoint_host == endpoint
    assert ref.name == name
    assert ref.reference == reference
    assert ref.is_local is local


def test_ipv4_mapped_loopback_is_local() -> None:
    # '.' is outside distribution's IPv6 grammar, so build it by hand.
    assert Reference("[::ffff:7f00:1]", "a", "t", None).is_local
    assert not Reference("[::ffff:a00:1]", "a", "t", None).is_local


def test_with_digest_and_with_tag() -> None:
    ref = Reference.parse("reg.io/a:v1")
    pinned = ref.with_digest(SHA)
    assert pinned.tag == "v1" and str(pinned.digest) == SHA
    assert pinned.reference == SHA
    assert str(pinned) == f"reg.io/a:v1@{SHA}"
    assert ref.with_digest(Digest.parse(SHA)) == pinned
    retagged = pinned.with_tag("v2")
    assert retagged.tag == "v2" and retagged.digest == pinned.digest
    assert ref == Reference.parse("reg.io/a:v1")  # frozen: originals untouched
    with pytest.raises(InvalidReferenceError, match="invalid digest"):
        ref.with_digest("sha256:../x")
    with pytest.raises(InvalidReferenceError, match="tag"):
        ref.with_tag("-bad")
    with pytest.raises(InvalidReferenceError, match="tag"):
        ref.with_tag("")
    # A Digest built by hand with a hostile value cannot slip into a reference.
    with pytest.raises(InvalidReferenceError, match="invalid digest"):
        ref.with_digest(Digest("sha256", "../../etc"))


def test_reference_is_frozen_and_hashable() -> None:
    ref = Reference.parse("reg.io/a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.tag = "x"  # type: ignore[misc]
    assert {ref: 1}[Reference.parse("reg.io/a:latest")] == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("index.docker.io", "library/a", "t", None), "not normalised"),
        (("REG.io", "a", "t", None), "not normalised"),
        (("docker.io", "alpine", "t", None), "namespace"),
        (("reg.io", "a", None, None), "needs a tag or a digest"),
        (("reg.io", "A", "t", None), "lowercase"),
        (("reg.io", "a", "t:x", None), "tag"),
        (("myhost", "a", "t", None), "would read back as a path"),
        (("reg.io/x", "a", "t", None), "host name"),
        (("reg.io", "a", "t", "sha256:" + "ab" * 32), "digest must be a Digest"),
        ((1, "a", "t", None), "must be strings"),
    ],
)
def test_hand_built_references_are_validated(args: tuple[object, ...], fragment: str) -> None:
    # Every Reference survives str() -> parse(); one that could not is refused.
    with pytest.raises(InvalidReferenceError, match=fragment):
        Reference(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("latest", True),
        ("v1.2.3-rc_1", True),
        ("_", True),
        ("A" * 128, True),
        ("A" * 129, False),
        ("", False),
        (".x", False),
        ("-x", False),
        ("a+b", False),
        ("a/b", False),
        ("ä", False),
        ("a\n", False),
        (None, False),
        (b"latest", False),
    ],
)
def test_is_valid_tag(value: object, ok: bool) -> None:
    assert is_valid_tag(value) is ok


# --- properties --------------------------------------------------------------

_component = st.from_regex(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", fullmatch=True)
_label = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
_port = st.integers(1, 65535).map(lambda p: f":{p}")
_host = st.one_of(
    st.lists(_label, min_size=2, max_size=4).map(".".join),
    st.just("localhost"),
    st.sampled_from(["docker.io", "index.docker.io", "registry-1.docker.io"]),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    # distribution's IPv6 grammar has no dotted (IPv4-mapped) form.
    st.ip_addresses(v=6).map(str).filter(lambda a: "." not in a).map(lambda a: f"[{a}]"),
)
# A single label is a host only with a port (else it is a path component).
_registry = st.one_of(
    st.builds(lambda h, p: h + p, _host, st.one_of(st.just(""), _port)),
    st.builds(lambda h, p: h + p, _label, _port),
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", fullmatch=True)
_digest = st.one_of(
    st.binary(max_size=64).map(lambda b: str(Digest.of_bytes(b))),
    st.binary(max_size=64).map(lambda b: str(Digest.of_bytes(b, "sha512"))),
)


@st.composite
def _reference_text(draw: st.DrawFn) -> str:
    components = draw(st.lists(_component, min_size=1, max_size=4))
    text = ""
    if draw(st.booleans()):
        text += draw(_registry) + "/"
    elif "." in components[0] or components[0] == "localhost":
        # Without an explicit registry such a first component *is* the registry.
        components.insert(0, "x")
    text += "/".join(components)
    if draw(st.booleans()):
        text += ":" + draw(_tag)
    if draw(st.booleans()):
        text += "@" + draw(_digest)
    return draw(st.sampled_from(["", "oci://", "docker://"])) + text


@given(_reference_text())
@example("[::1]:5000/a/b:t")
def test_roundtrip_generated(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except InvalidReferenceError as exc:
        # The generator does not bound the total name length.
        assert "longer than" in str(exc)
        return
    assert Reference.parse(str(ref)) == ref
    assert str(Reference.parse(str(ref))) == str(ref)
    assert ref.tag is not None or ref.digest is not None
    if "@" in text:
        assert ref.digest == Digest.parse(text.rsplit("@", 1)[1])
        assert ref.reference == str(ref.digest)


@given(st.text(max_size=300))
@example("\x00")
@example("[")
@example("[]/a")
@example("[::1]:/a")
@example(":")
@example("@")
@example("a:@")
@example("://")
@example("\ud800/a")
def test_random_text_never_raises_other_errors(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except InvalidReferenceError as exc:
        assert str(exc).startswith("invalid reference ")
        return
    assert Reference.parse(str(ref)) == ref


_grammar_chars = st.text(alphabet="aZ09._-:/@[]+%\x00\n é", max_size=80)


@given(st.one_of(_grammar_chars, st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_grammar_shaped_noise_never_raises_other_errors(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except InvalidReferenceError:
        return
    assert Reference.parse(str(ref)) == ref
    assert is_valid_tag(ref.tag) or ref.tag is None


@given(st.text(max_size=200), st.text(max_size=50))
def test_random_default_registry_never_raises_other_errors(text: str, default: str) -> None:
    try:
        ref = Reference.parse(text, default_registry=default)
    except InvalidReferenceError:
        return
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize("size", [10_000, 1_000_000])
def test_huge_inputs(size: int) -> None:
    for text in ("a" * size, "a-" * (size // 2) + "!", "reg.io/" + "a" * size + ":t"):
        with pytest.raises(InvalidReferenceError, match="longer than"):
            Reference.parse(text)
