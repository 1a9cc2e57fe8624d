"""``hybridstore pull`` against every registry variant and credential source.

Each variant is a real distribution registry (basic auth via htpasswd, token
auth via the test token server, TLS with a generated CA); credentials come
from ``--password-stdin``, a docker ``config.json``, or a
``docker-credential-*`` helper on PATH, exactly as a user would supply them.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.oci_builder import LayoutBuilder, push_built
from support.registry import Registry, RegistryFactory
from support.tokenserver import TokenServerConfig

pytestmark = pytest.mark.registry

HYBRIDSTORE = [sys.executable, "-m", "hybridstore"]


def run_pull(
    ref: str,
    layout: Path,
    *args: str,
    env: dict[str, str],
    stdin: str | None = None,
    global_args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HYBRIDSTORE, *global_args, "pull", "--json", "--layout", str(layout), *args, ref],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def run_pull_as(
    user: str,
    password: str,
    ref: str,
    layout: Path,
    env: dict[str, str],
    global_args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``run_pull`` over plain HTTP with ``-u USER --password-stdin``, ``password`` as stdin."""
    return run_pull(
        ref,
        layout,
        "--plain-http",
        "-u",
        user,
        "--password-stdin",
        env=env,
        stdin=password,
        global_args=global_args,
    )


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """No ambient credentials: an empty DOCKER_CONFIG and REGISTRY_AUTH_FILE."""
    docker = tmp_path / "docker-config"
    docker.mkdir()
    env = dict(os.environ)
    env.update(
        DOCKER_CONFIG=str(docker),
        REGISTRY_AUTH_FILE=str(tmp_path / "auth.json"),
        HYBRIDSTORE_CACHE_DIR=str(tmp_path / "cache"),
        XDG_RUNTIME_DIR=str(tmp_path / "runtime"),
    )
    return env


def seed(registry: Registry, builder: LayoutBuilder, repo: str) -> tuple[str, str]:
    built = builder.image("v1", layers=2)
    push_built(built, registry, f"{repo}:v1")
    return f"{registry.host_port}/{repo}:v1", built.digest


def write_docker_config(env: dict[str, str], config: dict[str, object]) -> None:
    """The ``config.json`` in ``env``'s ``DOCKER_CONFIG``."""
    (Path(env["DOCKER_CONFIG"]) / "config.json").write_text(json.dumps(config))


def assert_pulled(done: subprocess.CompletedProcess[str], digest: str) -> None:
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["digest"] == digest


def test_basic_auth_with_password_stdin(
    registry_factory: RegistryFactory,
    oci_builder: Callable[..., LayoutBuilder],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    reg = registry_factory(auth="basic")
    ref, digest = seed(reg, oci_builder(), "team/app")
    assert reg.credentials is not None
    user, password = reg.credentials
    anon = run_pull(ref, tmp_path / "anon", "--plain-http", env=clean_env)
    assert anon.returncode == 5 and "hybridstore login" in anon.stderr
    assert anon.stderr.count("\n") == 1
    done = run_pull_as(user, password + "\n", ref, tmp_path / "l", clean_env)
    assert_pulled(done, digest)
    wrong = run_pull_as(user, "not-the-password\n", ref, tmp_path / "w", clean_env)
    assert wrong.returncode == 5 and "not-the-password" not in wrong.stderr


def test_token_auth_anonymous_pull(
    registry_factory: RegistryFactory,
    oci_builder: Callable[..., LayoutBuilder],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    reg = registry_factory(auth="token", token=TokenServerConfig(anonymous_pull=True))
    ref, digest = seed(reg, oci_builder(), "public/app")
    assert_pulled(run_pull(ref, tmp_path / "l", "--plain-http", env=clean_env), digest)
    assert reg.token_server is not None
    assert all(not r.text().count("alice") for r in reg.token_server.requests)


def test_token_auth_with_docker_config_credentials(
    registry_factory: RegistryFactory,
    oci_builder: Callable[..., LayoutBuilder],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    reg = registry_factory(auth="token")
    ref, digest = seed(reg, oci_builder(), "private/app")
    assert reg.credentials is not None
    user, password = reg.credentials
    anon = run_pull(ref, tmp_path / "anon", "--plain-http", env=clean_env)
    assert anon.returncode == 5
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    write_docker_config(clean_env, {"auths": {reg.host_port: {"auth": auth}}})
    assert_pulled(run_pull(ref, tmp_path / "l", "--plain-http", env=clean_env), digest)


def test_credential_helper_on_path(
    registry_factory: RegistryFactory,
    oci_builder: Callable[..., LayoutBuilder],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    reg = registry_factory(auth="basic")
    ref, digest = seed(reg, oci_builder(), "helper/app")
    assert reg.credentials is not None
    user, password = reg.credentials
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-hstest"
    calls = tmp_path / "helper-calls"
    helper.write_text(
        "#!/bin/sh\n"
        f'echo "$1" >> {calls}\n'
        "read -r server\n"
        f'printf \'{{"ServerURL":"%s","Username":"{user}","Secret":"{password}"}}\' "$server"\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    write_docker_config(clean_env, {"credHelpers": {reg.host_port: "hstest"}})
    env = dict(clean_env, PATH=f"{bindir}:{clean_env['PATH']}")
    assert_pulled(run_pull(ref, tmp_path / "l", "--plain-http", env=env), digest)
    assert calls.read_text().split() and set(calls.read_text().split()) == {"get"}


def test_failing_credential_helper_is_an_error_not_a_fallback(
    registry_factory: RegistryFactory,
    oci_builder: Callable[..., LayoutBuilder],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    reg = registry_factory(auth="basic")
    ref, _ = seed(reg, oci_builder(), "helper/broken")
    write_docker_config(clean_env, {"credHelpers": {reg.host_port: "does-not-exist"}})
    done = run_pull(ref, tmp_path / "l", "--plain-http", env=clean_env)
    assert done.returncode == 5
    assert "docker-credential-does-not-exist" in done.stderr
    assert not (tmp_path / "l" / "index.json").exists()


def test_tls_with_ca_file_and_insecure(
    registry_factory: RegistryFactory,
    oci_builder: Callable[..., LayoutBuilder],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    reg = registry_factory(tls=True)
    ref, digest = seed(reg, oci_builder(), "tls/app")
    # No ambient trust either: the system store is the only other source of CAs.
    env = {k: v for k, v in clean_env.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    untrusted = run_pull(ref, tmp_path / "u", env=env)
    assert untrusted.returncode == 6 and "Traceback" not in untrusted.stderr
    assert_pulled(run_pull(ref, tmp_path / "ca", "--ca-file", str(reg.ca_path), env=env), digest)
    assert_pulled(run_pull(ref, tmp_path / "k", "--insecure", env=env), digest)


def test_debug_output_never_contains_secrets(
    registry_factory: RegistryFactory,
    oci_builder: Callable[..., LayoutBuilder],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    reg = registry_factory(auth="token")
    ref, digest = seed(reg, oci_builder(), "secret/app")
    assert reg.credentials is not None and reg.token_server is not None
    user, password = reg.credentials
    done = run_pull_as(user, password, ref, tmp_path / "l", clean_env, global_args=("--debug",))
    assert_pulled(done, digest)
    assert "GET" in done.stderr  # debug logging really was on
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert reg.token_server.tokens_issued >= 1
    for secret in [password, basic, "eyJ"]:  # every JWT (the bearer tokens) starts with eyJ
        assert secret not in done.stderr and secret not in done.stdout



def test_system_trust_honours_ssl_cert_file_and_ca_file_trusts_only_its_ca(
    registry_factory: RegistryFactory,
    oci_builder: Callable[..., LayoutBuilder],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The platform's trust (as skopeo, curl and docker): an admin-installed CA named by
    SSL_CERT_FILE is trusted without --ca-file; requests' certifi bundle is not used."""
    reg = registry_factory(tls=True)
    ref, digest = seed(reg, oci_builder(), "tls/system")
    env = {**clean_env, "SSL_CERT_FILE": str(reg.ca_path)}
    env.pop("SSL_CERT_DIR", None)
    assert_pulled(run_pull(ref, tmp_path / "sys", env=env), digest)
    # REQUESTS_CA_BUNDLE is requests' own variable, not the platform's: ignored.
    other = {**clean_env, "REQUESTS_CA_BUNDLE": str(reg.ca_path)}
    other.pop("SSL_CERT_FILE", None)
    refused = run_pull(ref, tmp_path / "rq", env=other)
    assert refused.returncode == 6 and "--ca-file" in refused.stderr, refused.stderr


def run_login(host: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HYBRIDSTORE, "login", *args, "-u", "a", "--password-stdin", host],
        input="pw",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_plain_http_registry_without_plain_http_says_so(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    ref, _ = seed(registry, oci_builder(), repo_name)
    for extra in ((), ("--insecure",)):
        done = run_pull(ref, tmp_path / f"l{len(extra)}", *extra, env=clean_env)
        assert done.returncode == 6, done.stderr
        line = done.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line
        assert "speaks plain HTTP" in line and "use --plain-http" in line, line
    login = run_login(registry.host_port, env=clean_env)
    assert login.returncode == 6 and "use --plain-http" in login.stderr, login.stderr


def test_plain_http_against_a_tls_registry_says_so(
    registry_factory: RegistryFactory,
    oci_builder: Callable[..., LayoutBuilder],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    reg = registry_factory(tls=True)
    ref, _ = seed(reg, oci_builder(), "tls/plain")
    done = run_pull(ref, tmp_path / "l", "--plain-http", env=clean_env)
    assert done.returncode == 6, done.stderr
    assert "speaks HTTPS" in done.stderr and "leave out --plain-http" in done.stderr
    assert "400" not in done.stderr and "Traceback" not in done.stderr
    login = run_login(reg.host_port, "--plain-http", env=clean_env)
    assert login.returncode == 6 and "leave out --plain-http" in login.stderr, login.stderr
