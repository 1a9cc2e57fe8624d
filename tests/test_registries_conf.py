"""registries.conf v2: where it is found, how files merge, which table and mirrors apply.

Pure unit tests (no network): the fleet tests against real registries are in
``test_mirrors.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridstore.errors import AuthError, InvalidInputError
from hybridstore.oci.reference import Reference
from hybridstore.remote import registries_conf
from hybridstore.remote.mirrors import plan_pull, push_endpoint
from hybridstore.remote.registries_conf import RegistriesConf, RegistryEntry, load_registries_conf

CONF = """
unqualified-search-registries = ["registry.example.com"]

[[registry]]
prefix = "registry.example.com/team"
location = "registry.example.com/team"
some-future-key = "ignored"

[[registry.mirror]]
location = "cache.internal:5000/team"

[[registry.mirror]]
location = "digest.internal/team"
pull-from-mirror = "digest-only"

[[registry.mirror]]
location = "tags.internal/team"
pull-from-mirror = "tag-only"
insecure = true

[[registry]]
prefix = "registry.example.com"
location = "other.example.com/x"

[[registry]]
prefix = "*.corp.example"
insecure = true

[[registry]]
location = "blocked.example.com/bad"
blocked = true
"""


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No environment variable, an empty HOME and system dir: nothing found by default."""
    for var in (
        "HYBRIDSTORE_REGISTRIES_CONF",
        "CONTAINERS_REGISTRIES_CONF",
        "REGISTRIES_CONFIG_PATH",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(registries_conf, "SYSTEM_DIR", tmp_path / "etc")
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def names(conf: RegistriesConf, ref: str, extra: tuple[str, ...] = ()) -> dict[str, list[str]]:
    plan = plan_pull(conf, Reference.parse(ref), extra)
    return {
        "tags": [str(e.ref) for e in plan.tag_endpoints],
        "digests": [str(e.ref) for e in plan.digest_endpoints],
    }


def test_prefix_rewrite_and_mirror_selection(isolated: Path) -> None:
    conf = load_registries_conf(write(isolated / "r.conf", CONF))
    got = names(conf, "registry.example.com/team/app:1.2")
    # digest-only never answers a tag; every mirror may serve the resolved digests
    assert got["tags"] == [
        "cache.internal:5000/team/app:1.2",
        "tags.internal/team/app:1.2",
        "registry.example.com/team/app:1.2",
    ]
    assert got["digests"] == [
        "cache.internal:5000/team/app:1.2",
        "digest.internal/team/app:1.2",
        "tags.internal/team/app:1.2",
        "registry.example.com/team/app:1.2",
    ]
    digest = "sha256:" + "a" * 64
    by_digest = names(conf, f"registry.example.com/team/app@{digest}")
    assert by_digest["digests"] == [
        f"cache.internal:5000/team/app@{digest}",
        f"digest.internal/team/app@{digest}",
        f"registry.example.com/team/app@{digest}",
    ]
    # the shorter prefix rewrites the rest of the registry; "team2" is not under "team"
    assert names(conf, "registry.example.com/team2/app:1")["tags"] == [
        "other.example.com/x/team2/app:1"
    ]
    # no matching table: the reference as written
    assert names(conf, "elsewhere.example.org/a:1")["tags"] == ["elsewhere.example.org/a:1"]


def test_command_line_mirror_comes_first(isolated: Path) -> None:
    conf = load_registries_conf(write(isolated / "r.conf", CONF))
    got = names(conf, "registry.example.com/team/app:1", ("local.mirror:5000",))
    assert got["tags"][0] == "local.mirror:5000/team/app:1"
    assert got["tags"][1] == "cache.internal:5000/team/app:1"
    with pytest.raises(InvalidInputError, match="host\\[:port\\]"):
        names(conf, "registry.example.com/team/app:1", ("http://x",))


def test_wildcard_insecure_blocked_and_push(isolated: Path) -> None:
    conf = load_registries_conf(write(isolated / "r.conf", CONF))
    plan = plan_pull(conf, Reference.parse("a.b.corp.example/x:1"))
    assert (
        plan.primary.insecure
        and not plan.mirrors
        and str(plan.primary.ref) == "a.b.corp.example/x:1"
    )
    assert not plan_pull(conf, Reference.parse("corp.example/x:1")).primary.insecure
    with pytest.raises(AuthError, match="blocked by registries.conf"):
        plan_pull(conf, Reference.parse("blocked.example.com/bad/img:1"))
    with pytest.raises(AuthError, match="blocked"):
        push_endpoint(conf, Reference.parse("blocked.example.com/bad:1"))
    # push: never a mirror, never a rewrite
    ep = push_endpoint(conf, Reference.parse("registry.example.com/team/app:1"))
    assert str(ep.ref) == "registry.example.com/team/app:1" and not ep.is_mirror


def test_mirror_by_digest_only(isolated: Path) -> None:
    conf = load_registries_conf(
        write(
            isolated / "r.conf",
            '[[registry]]\nlocation = "reg.example.com"\nmirror-by-digest-only = true\n'
            '[[registry.mirror]]\nlocation = "m.example.com"\n',
        )
    )
    got = names(conf, "reg.example.com/a:1")
    assert got["tags"] == ["reg.example.com/a:1"]
    assert got["digests"] == ["m.example.com/a:1", "reg.example.com/a:1"]


def test_search_order_and_dropins(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = isolated / "etc"
    user = isolated / "home" / ".config" / "containers"
    assert load_registries_conf().files == ()  # nothing there: an empty configuration
    write(etc / "registries.conf", '[[registry]]\nlocation = "sys.example.com"\n')
    write(etc / "registries.conf.d" / "20-b.conf", '[[registry]]\nlocation = "b.example.com"\n')
    write(etc / "registries.conf.d" / "10-a.conf", '[[registry]]\nlocation = "a.example.com"\n')
    write(etc / "registries.conf.d" / "skipped.txt", "not toml [")
    write(user / "registries.conf.d" / "30-u.conf", '[[registry]]\nlocation = "u.example.com"\n')
    conf = load_registries_conf()
    assert [p.name for p in conf.files] == [
        "registries.conf",
        "10-a.conf",
        "20-b.conf",
        "30-u.conf",
    ]
    # the per-user main file wins, and then only the per-user drop-ins follow
    write(user / "registries.conf", '[[registry]]\nlocation = "user.example.com"\n')
    conf = load_registries_conf()
    assert [str(p) for p in conf.files] == [
        str(user / "registries.conf"),
        str(user / "registries.conf.d" / "30-u.conf"),
    ]
    # the containers variable, then ours, then the command line
    theirs = write(isolated / "theirs.conf", "")
    ours = write(isolated / "ours.conf", "")
    given_file = write(isolated / "given.conf", "")
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(theirs))
    assert load_registries_conf().files[0] == theirs
    monkeypatch.setenv("HYBRIDSTORE_REGISTRIES_CONF", str(ours))
    assert load_registries_conf().files[0] == ours
    assert load_registries_conf(given_file).files[0] == given_file
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_registries_conf(isolated / "missing.conf")


def test_version_1_main_file_is_converted_but_not_as_a_drop_in(isolated: Path) -> None:
    v1 = (
        '[registries.search]\nregistries = ["docker.io"]\n'
        '[registries.insecure]\nregistries = ["old.example.com:5000"]\n'
        '[registries.block]\nregistries = ["bad.example.com", "old.example.com:5000"]\n'
    )
    conf = load_registries_conf(write(isolated / "v1.conf", v1))
    old = conf.find("old.example.com:5000/x")
    assert old is not None and old.insecure and old.blocked
    bad = conf.find("bad.example.com/x")
    assert bad is not None and bad.blocked and not bad.insecure
    write(isolated / "etc" / "registries.conf.d" / "10.conf", v1)
    with pytest.raises(InvalidInputError, match="drop-in must use version 2"):
        load_registries_conf(write(isolated / "main.conf", ""))


def test_merge_replaces_whole_tables_by_prefix(isolated: Path) -> None:
    write(
        isolated / "etc" / "registries.conf",
        '[[registry]]\nprefix = "r.example.com"\nlocation = "r.example.com"\n'
        '[[registry.mirror]]\nlocation = "old.example.com"\n',
    )
    write(
        isolated / "etc" / "registries.conf.d" / "50.conf",
        '[[registry]]\nprefix = "r.example.com"\nlocation = "r.example.com"\ninsecure = true\n',
    )
    entry = load_registries_conf().find("r.example.com/x")
    assert entry is not None and entry.insecure and entry.mirrors == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[registry]]\nlocation = "a.example.com"\n\ninsecure = tru\n', "line 4"),
        (
            '[registries.search]\nregistries = ["docker.io"]\n[[registry]]\nlocation = "a.b"\n',
            "mixes version 1",
        ),
        ("[[registry]]\ninsecure = true\n", "needs a 'prefix' or a 'location'"),
        ('[[registry]]\nlocation = "https://a.example.com"\n', "has a scheme"),
        ('[[registry]]\nprefix = "*.example.com/x"\n', "wildcard prefix is a host"),
        ('[[registry]]\nlocation = "a.example.com"\ninsecure = "yes"\n', "true or false"),
        (
            '[[registry]]\nlocation = "a.example.com"\n[[registry.mirror]]\n'
            'location = "m.example.com"\npull-from-mirror = "sometimes"\n',
            "not one of all, digest-only, tag-only",
        ),
        (
            '[[registry]]\nlocation = "a.example.com"\nmirror-by-digest-only = true\n'
            '[[registry.mirror]]\nlocation = "m.example.com"\npull-from-mirror = "all"\n',
            "not both",
        ),
        (
            '[[registry]]\nprefix = "x.example.com"\nlocation = "a.example.com"\n'
            '[[registry]]\nprefix = "y.example.com"\nlocation = "a.example.com"\nblocked = true\n',
            "defined twice",
        ),
    ],
)
def test_invalid_files_name_the_problem(isolated: Path, text: str, message: str) -> None:
    path = write(isolated / "bad.conf", text)
    with pytest.raises(InvalidInputError, match=message) as info:
        load_registries_conf(path)
    assert str(path) in str(info.value) or "registries.conf" in str(info.value)


def test_cli_malformed_file_is_one_line_exit_10(isolated: Path) -> None:
    bad = write(isolated / "bad.conf", '[[registry]]\nlocation = "a.example.com\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybridstore",
            "inspect",
            "--registries-conf",
            str(bad),
            "127.0.0.1:9/x:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 10
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "malformed TOML" in lines[0] and "line 2" in lines[0], proc.stderr


_label = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)


@given(
    host=st.lists(_label, min_size=2, max_size=3).map(".".join),
    path=st.lists(_label, min_size=1, max_size=4),
    cut=st.integers(min_value=0, max_value=4),
)
def test_longest_matching_prefix_wins_and_rewrites(host: str, path: list[str], cut: int) -> None:
    """Every ancestor of a name is a matching prefix; the longest one is chosen, and
    rewriting it to itself is the identity."""
    name = "/".join([host, *path])
    ancestors = ["/".join([host, *path[:i]]) for i in range(min(cut, len(path)) + 1)]
    conf = RegistriesConf(tuple(RegistryEntry(p, p) for p in ancestors))
    found = conf.find(name)
    assert found is not None and found.prefix == ancestors[-1]
    assert found.rewrite(name, found.location) == name
    # a prefix matches only at a boundary: "/", ":", "@" or the end
    assert RegistryEntry(name, name).matches(name + "/sub")
    assert RegistryEntry(name, name).matches(name + "@sha256:0")
    assert not RegistryEntry(name, name).matches(name + "x")
    assert not RegistryEntry(name + "x", name + "x").matches(name)
