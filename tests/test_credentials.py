"""Credentials from docker config.json, containers auth.json and credential helpers.

Helpers are real executables (``docker-credential-test``, a small Python script
put on PATH) that record every call, so the tests see exactly what a helper
receives and what happens when it is missing, fails or hangs.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from hybridstore.errors import AuthError, InvalidInputError, StorageError
from hybridstore.remote import credentials as credmod
from hybridstore.remote.credentials import (
    DOCKER_HUB_KEY,
    Credential,
    erase_credential,
    normalize_registry,
    resolve_credential,
    save_credential,
)

SECRET = "pw-Zq8!x:y"  # a colon inside: split at the first one only


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Env:
    """An isolated HOME, XDG_RUNTIME_DIR and PATH for one test."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.run = tmp / "run"
        self.bin = tmp / "bin"
        for d in (self.home, self.run, self.bin):
            d.mkdir()
        self.mp = monkeypatch
        monkeypatch.setenv("HOME", str(self.home))
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(self.run))
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.delenv("DOCKER_CONFIG", raising=False)
        monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)

    @property
    def docker_config(self) -> Path:
        return self.home / ".docker" / "config.json"

    @property
    def runtime_auth(self) -> Path:
        return self.run / "containers" / "auth.json"

    def write(self, path: Path, doc: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
        return path

    def helper(self, name: str = "test", mode: str = "store") -> Helper:
        return Helper(self.bin, self.tmp / f"helper-{name}", name, mode)


class Helper:
    """A ``docker-credential-<name>`` executable with a JSON store and a call log.

    ``mode``: ``store`` (a working keychain), ``fail`` (errors on every call),
    ``hang`` (never answers)."""

    def __init__(self, bindir: Path, state: Path, name: str, mode: str) -> None:
        state.mkdir()
        self.store_path = state / "store.json"
        self.calls_path = state / "calls.jsonl"
        self.store_path.write_text("{}")
        script = textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, sys, time
            action = sys.argv[1]
            data = sys.stdin.read()
            store_path, calls_path = {str(self.store_path)!r}, {str(self.calls_path)!r}
            mode = {mode!r}
            with open(calls_path, "a") as f:
                f.write(json.dumps({{"action": action, "stdin": data}}) + "\\n")
            if mode == "hang":
                time.sleep(120)
            if mode == "fail":
                print("error: the keychain is locked")
                sys.exit(1)
            store = json.load(open(store_path))
            if action == "get":
                if data not in store:
                    print("credentials not found in native keychain")
                    sys.exit(1)
                print(json.dumps(store[data]))
            elif action == "store":
                doc = json.loads(data)
                store[doc["ServerURL"]] = doc
                json.dump(store, open(store_path, "w"))
            elif action == "erase":
                if store.pop(data, None) is None:
                    print("credentials not found in native keychain")
                    sys.exit(1)
                json.dump(store, open(store_path, "w"))
            """
        )
        exe = bindir / f"docker-credential-{name}"
        exe.write_text(script)
        exe.chmod(0o755)

    def put(self, server: str, username: str, secret: str) -> None:
        store = json.loads(self.store_path.read_text())
        store[server] = {"ServerURL": server, "Username": username, "Secret": secret}
        self.store_path.write_text(json.dumps(store))

    @property
    def store(self) -> dict[str, Any]:
        return dict(json.loads(self.store_path.read_text()))

    @property
    def calls(self) -> list[tuple[str, str]]:
        if not self.calls_path.exists():
            return []
        lines = self.calls_path.read_text().splitlines()
        return [(c["action"], c["stdin"]) for c in map(json.loads, lines)]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    return Env(tmp_path, monkeypatch)


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("registry.example.com", "registry.example.com"),
        ("Registry.Example.COM:5000", "registry.example.com:5000"),
        ("https://registry.example.com/", "registry.example.com"),
        ("http://localhost:5000/v2/", "localhost:5000"),
        ("oci://ghcr.io", "ghcr.io"),
        ("docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        (DOCKER_HUB_KEY, "docker.io"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_normalize_registry(given: str, key: str) -> None:
    assert normalize_registry(given) == key


@pytest.mark.parametrize("bad", ["", "  ", "registry.example.com/ns", "a b", "host:port", "x@y"])
def test_normalize_registry_rejects(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        normalize_registry(bad)


def test_credential_repr_hides_secrets() -> None:
    cred = Credential(username="alice", password=SECRET, identity_token="idtok-123")
    assert SECRET not in repr(cred) and "idtok-123" not in repr(cred)
    assert "alice" in repr(cred)


# -- docker config.json -----------------------------------------------------------------


def test_auths_entry_with_auth(env: Env) -> None:
    env.write(env.docker_config, {"auths": {"reg.example:5000": {"auth": b64(f"alice:{SECRET}")}}})
    assert resolve_credential("reg.example:5000") == Credential("alice", SECRET)
    assert resolve_credential("other.example") is None


def test_auths_entry_with_identity_token(env: Env) -> None:
    entry = {"auth": b64("alice:"), "identitytoken": "refresh-abc"}
    env.write(env.docker_config, {"auths": {"reg.example": entry}})
    assert resolve_credential("reg.example") == Credential("alice", identity_token="refresh-abc")


def test_docker_config_env_and_legacy_keys(env: Env) -> None:
    cfg = env.tmp / "dockercfg"
    env.mp.setenv("DOCKER_CONFIG", str(cfg))
    env.write(
        cfg / "config.json",
        {
            "auths": {
                DOCKER_HUB_KEY: {"auth": b64("hubuser:hubpw")},
                "https://legacy.example/v1/": {"auth": b64("old:oldpw")},
                "quay.io/some-org": {"auth": b64("ns:nspw")},
                "empty.example": {},
            }
        },
    )
    assert resolve_credential("docker.io") == Credential("hubuser", "hubpw")
    assert resolve_credential("index.docker.io") == Credential("hubuser", "hubpw")
    assert resolve_credential("legacy.example") == Credential("old", "oldpw")
    # A per-namespace key is not a credential for the whole registry.
    assert resolve_credential("quay.io") is None
    assert resolve_credential("empty.example") is None


def test_missing_config_means_anonymous(env: Env) -> None:
    assert resolve_credential("reg.example") is None


@pytest.mark.parametrize(
    "content",
    [
        '{"auths": {"reg.example": {"auth": "' + b64(f"alice:{SECRET}") + '"}',  # truncated
        '["not", "an", "object"]',
        '{"auths": []}',
        '{"auths": {"reg.example": {"auth": "%%%not-base64"}}}',
        '{"auths": {"reg.example": {"auth": "' + b64("no-colon") + '"}}}',
        '{"auths": ' + "[" * 100_000 + "]" * 100_000 + "}",  # nested too deeply
    ],
)
def test_broken_config_is_a_clear_error(env: Env, content: str) -> None:
    env.write(env.docker_config, content)
    with pytest.raises(AuthError) as info:
        resolve_credential("reg.example")
    assert str(env.docker_config) in str(info.value)
    assert SECRET not in str(info.value) and b64(f"alice:{SECRET}") not in str(info.value)


# -- containers auth.json ---------------------------------------------------------------


def test_registry_auth_file_takes_precedence(env: Env) -> None:
    env.write(env.docker_config, {"auths": {"reg.example": {"auth": b64("docker:dpw")}}})
    explicit = env.write(
        env.tmp / "auth.json", {"auths": {"reg.example": {"auth": b64("podman:ppw")}}}
    )
    env.write(env.runtime_auth, {"auths": {"reg.example": {"auth": b64("runtime:rpw")}}})
    env.mp.setenv("REGISTRY_AUTH_FILE", str(explicit))
    assert resolve_credential("reg.example") == Credential("podman", "ppw")
    env.mp.delenv("REGISTRY_AUTH_FILE")
    assert resolve_credential("reg.example") == Credential("runtime", "rpw")
    env.runtime_auth.unlink()
    assert resolve_credential("reg.example") == Credential("docker", "dpw")


def test_auth_json_without_entry_falls_through_to_docker(env: Env) -> None:
    env.write(env.runtime_auth, {"auths": {"other.example": {"auth": b64("x:y")}}})
    env.write(env.docker_config, {"auths": {"reg.example": {"auth": b64("docker:dpw")}}})
    assert resolve_credential("reg.example") == Credential("docker", "dpw")


# -- credential helpers -----------------------------------------------------------------


def test_cred_helper_get(env: Env) -> None:
    helper = env.helper()
    helper.put("reg.example", "alice", SECRET)
    env.write(env.docker_config, {"credHelpers": {"reg.example": "test"}})
    assert resolve_credential("reg.example") == Credential("alice", SECRET)
    assert helper.calls == [("get", "reg.example")]


def test_helper_identity_token_and_docker_hub_server_url(env: Env) -> None:
    helper = env.helper()
    helper.put(DOCKER_HUB_KEY, "<token>", "refresh-xyz")
    env.write(env.docker_config, {"credsStore": "test"})
    assert resolve_credential("docker.io") == Credential(identity_token="refresh-xyz")
    assert helper.calls == [("get", DOCKER_HUB_KEY)]


def test_helper_not_found_is_anonymous(env: Env) -> None:
    helper = env.helper()
    env.write(env.docker_config, {"credsStore": "test"})
    assert resolve_credential("reg.example") is None
    assert helper.calls == [("get", "reg.example")]


def test_configured_helper_owns_the_registry(env: Env) -> None:
    """docker's order: a helper for the registry wins over a plain auths entry."""
    helper = env.helper()
    helper.put("reg.example", "from-helper", "hpw")
    env.write(
        env.docker_config,
        {"credsStore": "test", "auths": {"reg.example": {"auth": b64("plain:ppw")}}},
    )
    assert resolve_credential("reg.example") == Credential("from-helper", "hpw")


def test_missing_helper_is_an_error_not_a_fallback(env: Env) -> None:
    """CVE-2021-41092: never fall back to another source or registry."""
    env.write(
        env.docker_config,
        {
            "credHelpers": {"private.example": "does-not-exist"},
            "auths": {
                "private.example": {"auth": b64("plain:ppw")},
                DOCKER_HUB_KEY: {"auth": b64("hub:hubpw")},
            },
        },
    )
    with pytest.raises(AuthError) as info:
        resolve_credential("private.example")
    msg = str(info.value)
    assert "docker-credential-does-not-exist" in msg and "private.example" in msg
    assert "ppw" not in msg and "hubpw" not in msg


def test_failing_helper_is_an_error(env: Env) -> None:
    helper = env.helper(mode="fail")
    env.write(env.docker_config, {"credHelpers": {"reg.example": "test"}})
    env.write(env.runtime_auth, {"auths": {"other.example": {"auth": b64("x:y")}}})
    with pytest.raises(AuthError) as info:
        resolve_credential("reg.example")
    assert "docker-credential-test" in str(info.value)
    assert "reg.example" in str(info.value) and "keychain is locked" in str(info.value)
    assert helper.calls == [("get", "reg.example")]


def test_hanging_helper_times_out(env: Env) -> None:
    env.helper(mode="hang")
    env.write(env.docker_config, {"credsStore": "test"})
    with pytest.raises(AuthError, match="did not answer within 0.5 s"):
        resolve_credential("reg.example", helper_timeout=0.5)


def test_helper_with_malformed_output(env: Env) -> None:
    exe = env.bin / "docker-credential-garbled"
    exe.write_text(f'#!/bin/sh\necho \'{{"Username": "alice", "Secret": "{SECRET}"\'\n')
    exe.chmod(0o755)
    env.write(env.docker_config, {"credsStore": "garbled"})
    with pytest.raises(AuthError, match="malformed output") as info:
        resolve_credential("reg.example")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("name", ["../../bin/sh", "a/b", ""])
def test_helper_name_must_be_a_plain_name(env: Env, name: str) -> None:
    env.write(env.docker_config, {"credHelpers": {"reg.example": name}})
    with pytest.raises(AuthError):
        resolve_credential("reg.example")


# -- saving -----------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_creates_private_dir_and_file(env: Env) -> None:
    where = save_credential("reg.example:5000", Credential("alice", SECRET))
    assert where == str(env.docker_config)
    assert mode(env.docker_config.parent) == 0o700
    assert mode(env.docker_config) == 0o600
    doc = json.loads(env.docker_config.read_text())
    assert doc == {"auths": {"reg.example:5000": {"auth": b64(f"alice:{SECRET}")}}}
    assert resolve_credential("reg.example:5000") == Credential("alice", SECRET)
    assert sorted(p.name for p in env.docker_config.parent.iterdir()) == ["config.json"]


def test_save_preserves_other_keys_and_tightens_mode(env: Env) -> None:
    original = {
        "auths": {"keep.example": {"auth": b64("k:kpw")}, "https://reg.example/v1/": {}},
        "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
        "currentContext": "desktop-linux",
    }
    env.write(env.docker_config, original)
    env.docker_config.chmod(0o644)
    save_credential("reg.example", Credential("alice", SECRET))
    doc = json.loads(env.docker_config.read_text())
    assert doc["proxies"] == original["proxies"] and doc["currentContext"] == "desktop-linux"
    assert doc["auths"] == {
        "keep.example": {"auth": b64("k:kpw")},
        "reg.example": {"auth": b64(f"alice:{SECRET}")},  # the legacy key is replaced
    }
    assert mode(env.docker_config) == 0o600


def test_save_docker_hub_uses_dockers_key(env: Env) -> None:
    save_credential("index.docker.io", Credential(identity_token="refresh-1", username="bob"))
    doc = json.loads(env.docker_config.read_text())
    assert doc["auths"] == {DOCKER_HUB_KEY: {"auth": b64("bob:"), "identitytoken": "refresh-1"}}


def test_save_through_symlinked_config(env: Env) -> None:
    real = env.write(env.tmp / "dotfiles" / "docker.json", {"auths": {}, "detachKeys": "ctrl-e"})
    env.docker_config.parent.mkdir()
    env.docker_config.symlink_to(real)
    save_credential("reg.example", Credential("alice", SECRET))
    assert env.docker_config.is_symlink()
    assert json.loads(real.read_text())["detachKeys"] == "ctrl-e"
    assert resolve_credential("reg.example") == Credential("alice", SECRET)


def test_save_goes_where_resolve_looks_first(env: Env) -> None:
    env.write(env.runtime_auth, {"auths": {"reg.example": {"auth": b64("old:oldpw")}}})
    assert save_credential("reg.example", Credential("alice", SECRET)) == str(env.runtime_auth)
    assert resolve_credential("reg.example") == Credential("alice", SECRET)
    assert not env.docker_config.exists()
    explicit = env.tmp / "explicit" / "auth.json"
    env.mp.setenv("REGISTRY_AUTH_FILE", str(explicit))
    assert save_credential("new.example", Credential("bob", "bpw")) == str(explicit)
    assert mode(explicit) == 0o600


def test_save_to_helper(env: Env) -> None:
    helper = env.helper()
    env.write(env.docker_config, {"credsStore": "test"})
    before = env.docker_config.read_text()
    assert save_credential("reg.example", Credential("alice", SECRET)) == "docker-credential-test"
    assert helper.store["reg.example"] == {
        "ServerURL": "reg.example",
        "Username": "alice",
        "Secret": SECRET,
    }
    assert env.docker_config.read_text() == before  # no secret in the file
    assert resolve_credential("reg.example") == Credential("alice", SECRET)


def test_save_to_failing_helper_does_not_echo_secret(env: Env) -> None:
    exe = env.bin / "docker-credential-echo"
    exe.write_text('#!/bin/sh\necho "cannot store: $(cat)"\nexit 1\n')
    exe.chmod(0o755)
    env.write(env.docker_config, {"credHelpers": {"reg.example": "echo"}})
    with pytest.raises(AuthError) as info:
        save_credential("reg.example", Credential("alice", SECRET))
    assert "docker-credential-echo" in str(info.value) and SECRET not in str(info.value)


def test_save_requires_a_secret(env: Env) -> None:
    with pytest.raises(InvalidInputError):
        save_credential("reg.example", Credential("alice"))


def test_failed_write_leaves_the_old_file(env: Env) -> None:
    env.write(env.docker_config, {"auths": {"keep.example": {"auth": b64("k:kpw")}}})
    before = env.docker_config.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    env.mp.setattr(credmod.os, "fsync", broken_fsync)
    with pytest.raises(StorageError, match="No space left"):
        save_credential("reg.example", Credential("alice", SECRET))
    assert env.docker_config.read_bytes() == before
    assert sorted(p.name for p in env.docker_config.parent.iterdir()) == ["config.json"]


_WRITER = """
import sys
from hybridstore.remote.credentials import Credential, save_credential
start, count = int(sys.argv[1]), int(sys.argv[2])
for i in range(start, start + count):
    save_credential(f"reg{i}.example", Credential(f"user{i}", f"pw{i}"))
"""


def test_concurrent_saves_are_atomic_and_lose_nothing(env: Env) -> None:
    """Four processes log in to 40 registries while a reader parses the file: every
    read sees whole JSON, and the lock keeps every entry."""
    env.write(env.docker_config, {"auths": {}})
    stop = threading.Event()
    reads = {"ok": 0, "bad": 0}

    def reader() -> None:
        while not stop.is_set():
            try:
                json.loads(env.docker_config.read_bytes())
                reads["ok"] += 1
            except ValueError:
                reads["bad"] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    child_env = {**os.environ, "HOME": str(env.home)}
    child_env.pop("XDG_RUNTIME_DIR", None)
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(i * 10), "10"], env=child_env)
        for i in range(4)
    ]
    codes = [w.wait(60) for w in writers]
    stop.set()
    thread.join(10)
    assert codes == [0, 0, 0, 0]
    assert reads["bad"] == 0 and reads["ok"] > 0
    auths = json.loads(env.docker_config.read_text())["auths"]
    assert sorted(auths) == sorted(f"reg{i}.example" for i in range(40))
    assert mode(env.docker_config) == 0o600


# -- erasing ----------------------------------------------------------------------------


def test_erase_everywhere(env: Env) -> None:
    env.write(
        env.docker_config,
        {
            "auths": {
                "reg.example": {"auth": b64("a:b")},
                "https://reg.example/v1/": {"auth": b64("c:d")},
                "keep.example": {"auth": b64("k:kpw")},
            },
            "proxies": {},
        },
    )
    env.write(env.runtime_auth, {"auths": {"reg.example": {"auth": b64("e:f")}}})
    assert erase_credential("reg.example") is True
    assert resolve_credential("reg.example") is None
    doc = json.loads(env.docker_config.read_text())
    assert doc == {"auths": {"keep.example": {"auth": b64("k:kpw")}}, "proxies": {}}
    assert mode(env.docker_config) == 0o600
    assert erase_credential("reg.example") is False


def test_erase_from_helper(env: Env) -> None:
    helper = env.helper()
    helper.put("reg.example", "alice", SECRET)
    env.write(env.docker_config, {"credHelpers": {"reg.example": "test"}})
    assert erase_credential("reg.example") is True
    assert helper.store == {}
    assert erase_credential("reg.example") is False
    assert [c[0] for c in helper.calls] == ["erase", "erase"]


def test_erase_with_failing_helper_is_an_error(env: Env) -> None:
    env.helper(mode="fail")
    env.write(env.docker_config, {"credsStore": "test"})
    with pytest.raises(AuthError, match="failed to erase"):
        erase_credential("reg.example")


def test_nothing_to_erase(env: Env) -> None:
    assert erase_credential("reg.example") is False
    assert not env.docker_config.exists()
