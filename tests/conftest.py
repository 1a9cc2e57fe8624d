"""Shared pytest fixtures: real registries, fault proxy, OCI content, temp cache.

Import helpers in test modules as ``from support.oci_builder import ...``
(``tests/`` is on ``sys.path`` because it has no ``__init__.py``; keep it so).

Autouse: ``isolated_env`` points HOME, XDG_*, DOCKER_CONFIG, REGISTRY_AUTH_FILE and the
cache at empty temp dirs for every test, so no test reads the developer's credentials or
writes into their real cache; and in-process name resolution answers only ``localhost`` and
address literals, so no test depends on a resolver (other names fail as offline ones do).

Fixtures (lazy):
    registry          session-scoped plain-HTTP ``docker-registry`` (shared: use ``repo_name``)
    registry_factory  function-scoped: ``registry_factory(auth="basic"|"token", tls=True, ...)``
    registry_content  session-scoped sample image/index/chart/artifact/referrer in ``registry``
    fault_proxy       function-scoped ``FaultProxy`` in front of ``registry``
    test_ca           session-scoped certificate authority
    oci_builder       factory: ``oci_builder(name="layout", seed=0) -> LayoutBuilder``
    repo_name         a repository name unique to the test
    tmp_cache         empty cache dir; also sets ``HYBRIDSTORE_CACHE_DIR`` to it
    skopeo_bin / umoci_bin  path of the tool, or skip
    xfs               session-scoped mount point of a reflink XFS on a loop device (root)

Markers ``registry``, ``skopeo``, ``umoci`` skip a test when that peer is missing.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from support import require_binary
from support.faultproxy import FaultProxy
from support.oci_builder import LayoutBuilder, SampleContent, seed_sample_content
from support.registry import Registry, RegistryFactory
from support.tls import CertificateAuthority

# CI runs on a fresh clone with no example database: derandomize there, so a red
# run is reproducible and a green one does not depend on the examples drawn.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

_MARKER_BINARIES = {"registry": "docker-registry", "skopeo": "skopeo", "umoci": "umoci"}
_repo_counter = itertools.count()


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, binary in _MARKER_BINARIES.items():
        if item.get_closest_marker(marker) is not None and shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (test is marked {marker!r})")


_ISOLATED_DIRS = {
    "HOME": "home",
    "XDG_CACHE_HOME": "xdg-cache",
    "XDG_CONFIG_HOME": "xdg-config",
    "XDG_DATA_HOME": "xdg-data",
    "XDG_STATE_HOME": "xdg-state",
    "XDG_RUNTIME_DIR": "xdg-runtime",
    "DOCKER_CONFIG": "docker",
    "HYBRIDSTORE_CACHE_DIR": "hybridstore-cache",
}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test (and every subprocess it starts) sees an empty home: no real credentials,
    no real cache, no real registries.conf overrides. Outside ``tmp_path`` so tests that list
    their own temp dir see only what they made. Returns the directory holding them all."""
    root = tmp_path_factory.mktemp("env")
    for var, name in _ISOLATED_DIRS.items():
        (root / name).mkdir(mode=0o700)
        monkeypatch.setenv(var, str(root / name))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(root / "auth.json"))  # absent: no credentials
    monkeypatch.setattr(socket, "getaddrinfo", _offline_getaddrinfo)
    return root


_real_getaddrinfo = socket.getaddrinfo


def _offline_getaddrinfo(host: str | bytes | None, *args: object, **kwargs: object) -> object:
    name = (host.decode() if isinstance(host, bytes) else host or "").strip("[]").rstrip(".")
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        if name.lower() != "localhost" and not name.lower().endswith(".localhost"):
            raise socket.gaierror(socket.EAI_NONAME, f"tests resolve no names ({name})") from None
    return _real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def test_ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The plain-HTTP registry every test shares; push under ``repo_name`` to stay isolated."""
    reg = Registry(tmp_path_factory.mktemp("registry"))
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture
def registry_factory(tmp_path: Path, test_ca: CertificateAuthority) -> Iterator[RegistryFactory]:
    """Start variants per test; all are stopped when the test ends."""
    factory = RegistryFactory(tmp_path / "registries", test_ca)
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def registry_content(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> SampleContent:
    """Sample content pushed once per session into ``registry`` (read-only: don't delete)."""
    return seed_sample_content(tmp_path_factory.mktemp("sample-layout"), registry)


@pytest.fixture
def fault_proxy(registry: Registry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.host_port) as proxy:
        yield proxy


@pytest.fixture
def oci_builder(tmp_path: Path) -> Callable[..., LayoutBuilder]:
    """``oci_builder(name="layout", seed=0)``: a ``LayoutBuilder`` at ``tmp_path/name``."""

    def make(name: str = "layout", seed: int | str = 0) -> LayoutBuilder:
        return LayoutBuilder(tmp_path / name, seed=seed)

    return make


@pytest.fixture
def repo_name(request: pytest.FixtureRequest) -> str:
    """``tests/<test name>-<n>``: lower-case and valid as a repository path component."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60] or "t"
    return f"tests/{stem}-{next(_repo_counter)}"


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory for a hybridstore cache, exported as ``HYBRIDSTORE_CACHE_DIR``."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("HYBRIDSTORE_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def skopeo_bin() -> str:
    return require_binary("skopeo")


@pytest.fixture(scope="session")
def umoci_bin() -> str:
    return require_binary("umoci")


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A directory on a different filesystem than ``tmp_path`` (/dev/shm, or a tmpfs
    mounted for the test when root), for cross-device link tests."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        d = Path(tempfile.mkdtemp(prefix="hs-other-fs-", dir=shm))
        yield d
        shutil.rmtree(d, ignore_errors=True)
        return
    if os.geteuid() != 0:
        pytest.skip("needs /dev/shm on another filesystem than the temp dir, or root to mount one")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="session")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real XFS with reflink=1 on a loop device (root only)."""
    if os.geteuid() != 0:
        pytest.skip("reflink test needs root to mount an XFS loop device")
    if shutil.which("mkfs.xfs") is None:
        pytest.skip("reflink test needs mkfs.xfs (xfsprogs)")
    base = tmp_path_factory.mktemp("xfs")
    image, mnt = base / "fs.img", base / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(300 << 20)
    made = subprocess.run(
        ["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"mkfs.xfs -m reflink=1 failed: {made.stderr.strip()}")
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount an XFS loop device here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        image.unlink(missing_ok=True)
