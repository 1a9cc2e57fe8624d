"""Credentials as skopeo, docker and podman users give them, and each kept to its registry.

Two real distribution registries with htpasswd basic auth (alice on A, bob on B), each
behind a recording proxy, so a test can see every Authorization header a registry got.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.faultproxy import FaultProxy
from support.oci_builder import LayoutBuilder, push_built
from support.registry import BasicAuth, Registry, RegistryFactory

pytestmark = pytest.mark.registry

HYBRIDSTORE = [sys.executable, "-m", "hybridstore"]
ALICE_PW = "alice-only-for-A"
BOB_PW = "bob-only-for-B"


@dataclass
class Site:
    """A basic-auth registry, the proxy clients talk to, and its one user."""

    registry: Registry
    proxy: FaultProxy
    user: str
    password: str

    @property
    def host(self) -> str:
        return self.proxy.host_port

    def basic(self) -> str:
        return base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def authorizations(self) -> list[str]:
        return [r.header("Authorization") or "" for r in self.proxy.requests]


def _site(factory: RegistryFactory, user: str, password: str) -> Iterator[Site]:
    reg = factory(auth="basic", basic=BasicAuth(users={user: password}))
    with FaultProxy(reg.host_port) as proxy:
        yield Site(reg, proxy, user, password)


@pytest.fixture
def site_a(registry_factory: RegistryFactory) -> Iterator[Site]:
    yield from _site(registry_factory, "alice", ALICE_PW)


@pytest.fixture
def site_b(registry_factory: RegistryFactory) -> Iterator[Site]:
    yield from _site(registry_factory, "bob", BOB_PW)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No ambient credentials: HOME, DOCKER_CONFIG and the XDG dirs are empty temp dirs."""
    out = dict(os.environ)
    out.pop("REGISTRY_AUTH_FILE", None)
    for name in ("HOME", "DOCKER_CONFIG", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME"):
        path = tmp_path / name.lower()
        path.mkdir()
        out[name] = str(path)
    out["HYBRIDSTORE_CACHE_DIR"] = str(tmp_path / "cache")
    return out


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HYBRIDSTORE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def seed(site: Site, builder: LayoutBuilder, repo: str = "team/app") -> str:
    push_built(builder.image("v1", layers=1), site.registry, f"{repo}:v1")
    return f"{site.host}/{repo}:v1"


def test_copy_sends_src_creds_only_to_the_source_and_dest_creds_only_to_the_destination(
    site_a: Site, site_b: Site, oci_builder: Callable[..., LayoutBuilder], env: dict[str, str]
) -> None:
    src = seed(site_a, oci_builder())
    done = run(
        env,
        "copy",
        "--plain-http",
        f"--src-creds=alice:{ALICE_PW}",
        f"--dest-creds=bob:{BOB_PW}",
        f"docker://{src}",
        f"docker://{site_b.host}/mirror/app:v1",
    )
    assert done.returncode == 0, done.stderr
    assert f"Basic {site_a.basic()}" in site_a.authorizations()
    assert f"Basic {site_b.basic()}" in site_b.authorizations()
    assert not any(site_a.basic() in h or ALICE_PW in h for h in site_b.authorizations())
    assert not any(site_b.basic() in h or BOB_PW in h for h in site_a.authorizations())


def test_copy_one_side_from_stdin_the_other_from_stored_credentials(
    site_a: Site, site_b: Site, oci_builder: Callable[..., LayoutBuilder], env: dict[str, str]
) -> None:
    src = seed(site_a, oci_builder())
    config = {"auths": {site_a.host: {"auth": site_a.basic()}}}
    Path(env["DOCKER_CONFIG"], "config.json").write_text(json.dumps(config))
    done = run(
        env,
        "copy",
        "--plain-http",
        "--dest-username",
        "bob",
        "--password-stdin",
        src,
        f"{site_b.host}/mirror/app:v1",
        stdin=BOB_PW + "\n",
    )
    assert done.returncode == 0, done.stderr
    assert not any(site_a.basic() in h for h in site_b.authorizations())
    assert not any(site_b.basic() in h for h in site_a.authorizations())


def test_copy_password_stdin_needs_exactly_one_side(
    site_a: Site, site_b: Site, env: dict[str, str]
) -> None:
    done = run(
        env,
        "copy",
        "--plain-http",
        "--password-stdin",
        f"{site_a.host}/team/app:v1",
        f"{site_b.host}/mirror/app:v1",
        stdin="x\n",
    )
    assert done.returncode == 10
    assert "--src-username" in done.stderr and done.stderr.count("\n") == 1
    assert site_a.proxy.requests == [] and site_b.proxy.requests == []


def test_pull_with_one_credential_refuses_refs_on_two_registries(
    site_a: Site,
    site_b: Site,
    oci_builder: Callable[..., LayoutBuilder],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    ref_a = seed(site_a, oci_builder())
    ref_b = seed(site_b, oci_builder(seed=1))
    layout = tmp_path / "pulled"
    done = run(
        env,
        "pull",
        "--plain-http",
        "-u",
        "alice",
        "--password-stdin",
        "--layout",
        str(layout),
        ref_a,
        ref_b,
        stdin=ALICE_PW + "\n",
    )
    assert done.returncode == 10, done.stderr
    assert done.stderr.count("\n") == 1
    assert site_a.host in done.stderr and site_b.host in done.stderr
    assert site_b.proxy.requests == []
    assert not layout.exists()


def test_creds_option_on_tags_and_pull(
    site_a: Site, oci_builder: Callable[..., LayoutBuilder], env: dict[str, str], tmp_path: Path
) -> None:
    ref = seed(site_a, oci_builder())
    tags = run(env, "tags", "--plain-http", "--creds", f"alice:{ALICE_PW}", ref)
    assert tags.returncode == 0, tags.stderr
    assert tags.stdout.split() == ["v1"]
    pulled = run(
        env, "pull", "--plain-http", f"--creds=alice:{ALICE_PW}", "--layout", str(tmp_path / "l"),
        ref,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    bad = run(env, "tags", "--plain-http", "--creds", "alice", ref)
    assert bad.returncode == 10 and "USER:PASSWORD" in bad.stderr


def test_login_with_password_warns_as_docker_does(site_a: Site, env: dict[str, str]) -> None:
    done = run(env, "login", "--plain-http", site_a.host, "-u", "alice", "-p", ALICE_PW)
    assert done.returncode == 0, done.stderr
    assert "WARNING! Using --password via the CLI is insecure. Use --password-stdin." in (
        done.stderr
    )
    stored = json.loads(Path(env["DOCKER_CONFIG"], "config.json").read_text())
    assert stored["auths"][site_a.host]["auth"] == site_a.basic()


def test_podman_auth_json_in_xdg_config_home_is_read(
    site_a: Site, oci_builder: Callable[..., LayoutBuilder], env: dict[str, str], tmp_path: Path
) -> None:
    ref = seed(site_a, oci_builder())
    auth_json = Path(env["XDG_CONFIG_HOME"], "containers", "auth.json")
    auth_json.parent.mkdir()
    auth_json.write_text(json.dumps({"auths": {site_a.host: {"auth": site_a.basic()}}}))
    done = run(env, "pull", "--plain-http", "--layout", str(tmp_path / "l"), ref)
    assert done.returncode == 0, done.stderr
