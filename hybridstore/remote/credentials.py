"""Registry credentials from the files and helpers docker and podman already use.

Lookup order (the first file with something for the registry decides):

1. containers ``auth.json``: ``$REGISTRY_AUTH_FILE``, else
   ``$XDG_RUNTIME_DIR/containers/auth.json`` then ``$XDG_CONFIG_HOME/containers/auth.json``
   (``~/.config/containers/auth.json``), where podman and skopeo read them;
2. docker ``config.json``: ``$DOCKER_CONFIG/config.json``, else
   ``~/.docker/config.json``.

Within one file: ``credHelpers[registry]``, then (docker only) ``credsStore``,
then ``auths[registry]`` (``auth`` = base64 ``user:pass``, ``identitytoken``).
That is docker's own order: a configured helper owns the registry and plain
entries are ignored. A helper that is missing, hangs or fails is an
``AuthError`` naming the registry and the helper -- never a fallback to another
source or registry (CVE-2021-41092). Only the helper's "credentials not found"
answer means "no credentials".

A credential given on the command line belongs to one registry (``bind_credential``):
it is never offered to another host of the same command, which looks up its own stored
credentials instead.

Secrets never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from hybridstore.errors import AuthError, InvalidDocumentError, InvalidInputError, StorageError
from hybridstore.oci.jsondoc import parse_json

__all__ = [
    "Credential",
    "DOCKER_HUB_KEY",
    "HELPER_TIMEOUT",
    "auth_files",
    "bind_credential",
    "merge_credentials",
    "parse_creds",
    "erase_credential",
    "normalize_registry",
    "resolve_credential",
    "save_credential",
]

log = logging.getLogger("hybridstore.remote.credentials")

HELPER_TIMEOUT: Final = 30.0
# Docker Hub's key in config.json and the server URL its helpers expect.
DOCKER_HUB_KEY: Final = "https://index.docker.io/v1/"
_DOCKER_HUB: Final = "docker.io"
_HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# What every docker-credential-helpers program prints when it has nothing.
_HELPER_NOT_FOUND: Final = "credentials not found in native keychain"
_TOKEN_USER: Final = "<token>"
_HELPER_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)
_HOSTPORT: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?", re.ASCII)
_MAX_CONFIG_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True)
class Credential:
    """A user name with a password, or an identity (OAuth2 refresh) token."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)  # docker "identitytoken"

    @property
    def has_password(self) -> bool:
        return bool(self.username) and bool(self.password)

    def secrets(self) -> tuple[str, ...]:
        """The values that must never be shown (for scrubbing server messages)."""
        return tuple(s for s in (self.password, self.identity_token) if s)


Kind = Literal["containers", "docker"]


@dataclass(frozen=True)
class AuthFile:
    """One credentials file we read: containers ``auth.json`` or docker ``config.json``."""

    path: Path
    kind: Kind


def normalize_registry(registry: str) -> str:
    """``host[:port]`` as a config key: scheme and path dropped, host lower-cased,
    Docker Hub's aliases (and its legacy ``https://index.docker.io/v1/``) folded
    into ``docker.io``."""
    text = registry.strip()
    for prefix in ("oci://", "docker://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    host = _key_host(text) if "://" in text else text.rstrip("/").lower()
    if not host or _HOSTPORT.fullmatch(host) is None:
        raise InvalidInputError(
            f"invalid registry {registry[:100]!r}: expected a host name with optional "
            "port, such as 'registry.example.com' or 'localhost:5000'"
        )
    return _DOCKER_HUB if host in _HUB_ALIASES else host


def _key_host(key: str) -> str:
    """docker's ``ConvertToHostname``: a key with a scheme keeps only its host[:port]."""
    if "://" in key:
        return urlsplit(key).netloc.lower()
    return key.lower()


def _server_url(registry: str) -> str:
    """What docker passes to a credential helper for ``registry``."""
    return DOCKER_HUB_KEY if registry == _DOCKER_HUB else registry


def _matches(key: str, registry: str) -> bool:
    """Whether a config key names ``registry``. Keys with a scheme are docker's
    legacy URLs (``https://host/v1/``) and match by host; keys with a path but no
    scheme are containers' per-namespace entries and never match a whole registry."""
    host = _key_host(key)
    if host in _HUB_ALIASES:
        host = _DOCKER_HUB
    return host == registry


def _find_key(mapping: Mapping[str, Any], registry: str) -> str | None:
    """The key of ``mapping`` for ``registry``, preferring the one docker writes."""
    for key in (_server_url(registry), registry):
        if key in mapping:
            return key
    return next((key for key in mapping if _matches(key, registry)), None)


def _all_keys(mapping: Mapping[str, Any], registry: str) -> list[str]:
    return [key for key in mapping if _matches(key, registry)]


def auth_files() -> list[AuthFile]:
    """The credential files in lookup order (they need not exist)."""
    files: list[AuthFile] = []
    explicit = os.environ.get("REGISTRY_AUTH_FILE")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if explicit:
        files.append(AuthFile(Path(explicit), "containers"))
    else:
        if runtime:
            files.append(AuthFile(Path(runtime, "containers", "auth.json"), "containers"))
        config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        files.append(AuthFile(Path(config, "containers", "auth.json"), "containers"))
    docker_dir = os.environ.get("DOCKER_CONFIG")
    base = Path(docker_dir) if docker_dir else Path.home() / ".docker"
    files.append(AuthFile(base / "config.json", "docker"))
    return files


def _load(path: Path) -> dict[str, Any]:
    """Parse a credentials file; a missing file is empty, a broken one an AuthError."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise AuthError(f"cannot read credentials file {path}: {e.strerror}") from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise AuthError(f"credentials file {path} is larger than 16 MiB: fix or remove it")
    if not raw.strip():
        return {}
    try:
        # Repeated keys are tolerated here, as docker does: this is the user's own file.
        data = parse_json(raw, what="it", limit=None)[0]
    except InvalidDocumentError:
        # Nothing of the text itself is shown: it may hold a secret.
        raise AuthError(
            f"credentials file {path} is not valid JSON (or is nested too deeply): fix or "
            "remove it"
        ) from None
    if not isinstance(data, dict):
        raise AuthError(f"credentials file {path} is not a JSON object: fix or remove it")
    for section in ("auths", "credHelpers"):
        if not isinstance(data.get(section, {}), dict):
            raise AuthError(f"credentials file {path}: {section!r} is not an object: fix it")
    if not isinstance(data.get("credsStore", ""), str):
        raise AuthError(f"credentials file {path}: 'credsStore' is not a string: fix it")
    return data


def _helper_for(af: AuthFile, data: Mapping[str, Any], registry: str) -> str | None:
    """The credential helper that owns ``registry`` in this file, if any."""
    helpers = data.get("credHelpers", {})
    key = _find_key(helpers, registry)
    if key is not None:
        name = helpers[key]
        if not isinstance(name, str) or not name:
            raise AuthError(f"credentials file {af.path}: credHelpers[{key!r}] is not a name")
        return name
    store = data.get("credsStore") if af.kind == "docker" else None
    return store or None


def _decode_entry(af: AuthFile, key: str, entry: object) -> Credential | None:
    """An ``auths`` entry as a Credential; None when it holds no secret (``{}``)."""
    if not isinstance(entry, dict):
        raise AuthError(f"credentials file {af.path}: auths[{key!r}] is not an object: fix it")
    username = entry.get("username") or None
    password = entry.get("password") or None
    encoded = entry.get("auth")
    if encoded:
        try:
            text = base64.b64decode(str(encoded), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            text = ""
        if ":" not in text:
            raise AuthError(
                f"credentials file {af.path}: auths[{key!r}].auth is not base64 'user:password'; "
                f"run 'hybridstore login {key}' again"
            )
        username, _, password = text.partition(":")
        username, password = username or None, password or None
    token = entry.get("identitytoken") or None
    if token is not None:
        return Credential(username=username, identity_token=str(token))
    if username and password:
        return Credential(username=str(username), password=str(password))
    return None


def resolve_credential(
    registry: str, *, helper_timeout: float = HELPER_TIMEOUT
) -> Credential | None:
    """The stored credential for ``registry`` (``host[:port]``, ``docker.io`` for Docker
    Hub), or None for anonymous access."""
    registry = normalize_registry(registry)
    for af in auth_files():
        data = _load(af.path)
        helper = _helper_for(af, data, registry)
        if helper is not None:
            log.debug(
                "credentials for %s: helper docker-credential-%s (%s)", registry, helper, af.path
            )
            return _helper_get(helper, registry, af, helper_timeout)
        auths = data.get("auths", {})
        key = _find_key(auths, registry)
        if key is not None:
            cred = _decode_entry(af, key, auths[key])
            if cred is not None:
                log.debug("credentials for %s: %s entry %r", registry, af.path, key)
                return cred
    log.debug("no stored credentials for %s", registry)
    return None


# -- credential helpers ---------------------------------------------------------------


def _helper_exe(name: str, registry: str, af: AuthFile) -> str:
    if _HELPER_NAME.fullmatch(name) is None:
        raise AuthError(
            f"credential helper name {name[:60]!r} for {registry} in {af.path} is invalid: fix it"
        )
    exe = shutil.which(f"docker-credential-{name}")
    if exe is None:
        raise AuthError(
            f"credential helper docker-credential-{name} (configured for {registry} in "
            f"{af.path}) is not on PATH: install it or remove it from that file"
        )
    return exe


def _run_helper(
    name: str,
    action: str,
    payload: bytes,
    registry: str,
    af: AuthFile,
    timeout: float,
    secrets: tuple[str, ...] = (),
) -> tuple[bool, bytes]:
    """Run ``docker-credential-<name> <action>``; (found, stdout). A helper that
    says "credentials not found" gives (False, b""); anything else that fails
    raises AuthError naming the helper and the registry."""
    # Imported here: only helpers need them, and every command's start-up would pay.
    import signal
    import subprocess

    exe = _helper_exe(name, registry, af)
    # The user's environment is kept: real helpers need it (D-Bus for
    # secretservice, AWS_* for ecr-login, GNUPGHOME for pass). Its own session
    # lets a timeout kill the helper together with anything it started.
    try:
        proc = subprocess.Popen(
            [exe, action],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as e:
        raise AuthError(
            f"credential helper docker-credential-{name} for {registry} cannot run: {e.strerror}"
        ) from None
    try:
        out, err = proc.communicate(payload, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AuthError(
            f"credential helper docker-credential-{name} did not answer within {timeout:g} s "
            f"({action} for {registry}): check the helper (is it waiting for an unlock?)"
        ) from None
    if proc.returncode == 0:
        return True, out
    message = (out.strip() or err.strip()).decode(errors="replace")
    if _HELPER_NOT_FOUND in message and action in ("get", "erase"):
        return False, b""
    first = message.splitlines()[0][:200] if message else f"exit status {proc.returncode}"
    for secret in secrets:
        first = first.replace(secret, "***")
    raise AuthError(
        f"credential helper docker-credential-{name} failed to {action} credentials for "
        f"{registry}: {first}"
    )


def _helper_get(name: str, registry: str, af: AuthFile, timeout: float) -> Credential | None:
    found, out = _run_helper(name, "get", _server_url(registry).encode(), registry, af, timeout)
    if not found:
        return None
    try:
        answer = parse_json(out, what="helper output", limit=None)[0]
        username, secret = answer.get("Username") or "", answer.get("Secret") or ""
        if not isinstance(username, str) or not isinstance(secret, str):
            raise ValueError
    except (ValueError, AttributeError):  # InvalidDocumentError is a ValueError
        # Never echo the output: it is where the secret would be.
        raise AuthError(
            f"credential helper docker-credential-{name} returned malformed output for {registry}"
        ) from None
    if not secret:
        return None
    if username == _TOKEN_USER:
        return Credential(identity_token=secret)
    return Credential(username=username or None, password=secret)


# -- saving and erasing ---------------------------------------------------------------


def _encode_entry(cred: Credential) -> dict[str, str]:
    user = cred.username or ""
    if cred.identity_token:
        return {
            "auth": base64.b64encode(f"{user}:".encode()).decode(),
            "identitytoken": cred.identity_token,
        }
    return {"auth": base64.b64encode(f"{user}:{cred.password}".encode()).decode()}


@contextlib.contextmanager
def _locked_dir(directory: Path) -> Iterator[None]:
    """Serialise read-modify-write of files in ``directory`` across processes.

    The lock is taken on the directory itself, so no lock file is left in the
    user's ``~/.docker``; it is advisory and released by the kernel on exit."""
    created = not directory.exists()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if created:
            os.chmod(directory, 0o700)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise StorageError(
            f"cannot create {directory}: {e.strerror}: check its permissions"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``data``: 0600 temp file, fsync, rename, fsync dir.

    A symlinked config (dotfile managers) is written at its target, as docker does."""
    existing: os.stat_result | None
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        existing = None
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror}") from None
    target = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(data, indent="\t").encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        if existing is not None and os.geteuid() == 0:
            # root (sudo) editing a user's file must not hand it to root.
            os.chown(tmp, existing.st_uid, existing.st_gid)
        os.replace(tmp, target)
        dfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise StorageError(f"cannot write {path}: {e.strerror}: check its permissions") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _save_target(registry: str) -> tuple[AuthFile, str | None]:
    """Where a login for ``registry`` goes: the place ``resolve_credential`` will
    look first -- a helper that owns it, a file that already has an entry, else
    ``$REGISTRY_AUTH_FILE`` when set, else docker's config.json."""
    files = auth_files()
    for af in files:
        data = _load(af.path)
        helper = _helper_for(af, data, registry)
        if helper is not None:
            return af, helper
        if _find_key(data.get("auths", {}), registry) is not None:
            return af, None
    # Nothing yet: the file the user pointed us at, else docker's config.json.
    return (files[0] if os.environ.get("REGISTRY_AUTH_FILE") else files[-1]), None


def save_credential(
    registry: str, cred: Credential, *, helper_timeout: float = HELPER_TIMEOUT
) -> str:
    """Store ``cred`` for ``registry``; return where (a file path or a helper name)."""
    registry = normalize_registry(registry)
    if not (cred.identity_token or cred.has_password):
        raise InvalidInputError("a credential needs a user name and password, or an identity token")
    af, helper = _save_target(registry)
    if helper is not None:
        if cred.identity_token:
            user, secret = _TOKEN_USER, cred.identity_token
        else:
            user, secret = cred.username or "", cred.password or ""
        payload = json.dumps(
            {"ServerURL": _server_url(registry), "Username": user, "Secret": secret}
        )
        _run_helper(helper, "store", payload.encode(), registry, af, helper_timeout, cred.secrets())
        log.debug("stored credentials for %s in docker-credential-%s", registry, helper)
        return f"docker-credential-{helper}"
    with _locked_dir(af.path.parent):
        data = _load(af.path)
        auths = dict(data.get("auths", {}))
        for old in _all_keys(auths, registry):
            del auths[old]
        key = _server_url(registry) if af.kind == "docker" else registry
        auths[key] = _encode_entry(cred)
        _write_json_atomic(af.path, {**data, "auths": auths})
    log.debug("stored credentials for %s in %s", registry, af.path)
    return str(af.path)


def erase_credential(registry: str, *, helper_timeout: float = HELPER_TIMEOUT) -> bool:
    """Forget ``registry`` everywhere ``resolve_credential`` looks; True if anything went."""
    registry = normalize_registry(registry)
    removed = False
    for af in auth_files():
        data = _load(af.path)
        helper = _helper_for(af, data, registry)
        if helper is not None:
            found, _ = _run_helper(
                helper, "erase", _server_url(registry).encode(), registry, af, helper_timeout
            )
            removed |= found
        if not _all_keys(data.get("auths", {}), registry):
            continue
        with _locked_dir(af.path.parent):
            data = _load(af.path)
            auths = dict(data.get("auths", {}))
            keys = _all_keys(auths, registry)
            for key in keys:
                del auths[key]
            if keys:
                _write_json_atomic(af.path, {**data, "auths": auths})
                removed = True
    return removed


# -- command-line credentials ------------------------------------------------------------


def parse_creds(text: str, option: str = "--creds") -> Credential:
    """``USER:PASSWORD`` as skopeo's ``--creds`` takes it (the password may hold colons)."""
    username, sep, password = text.partition(":")
    if not sep or not username or not password:
        raise InvalidInputError(
            f"{option} takes USER:PASSWORD; to keep the password out of the process list, "
            "use -u USER --password-stdin"
        )
    return Credential(username=username, password=password)


def bind_credential(
    credential: Credential | None, registries: Iterable[str], option: str = "-u/--creds"
) -> dict[str, Credential]:
    """``{registry: credential}`` for the one registry a command-line credential is for.

    A command naming refs on several registries cannot say which one the credential
    belongs to; sending it to all of them would hand one registry's password to the
    others, so that is refused.
    """
    if credential is None:
        return {}
    names = sorted(set(registries))
    if len(names) > 1:
        raise InvalidInputError(
            f"{option} belongs to one registry, but the refs name {', '.join(names)}: "
            "run one command per registry, or store each credential with `hybridstore login`"
        )
    return {names[0]: credential} if names else {}


def merge_credentials(*scoped: Mapping[str, Credential]) -> dict[str, Credential]:
    """One ``{registry: credential}`` from per-side ones; two different credentials for one
    registry (``--src-creds`` and ``--dest-creds`` on the same host) are refused."""
    out: dict[str, Credential] = {}
    for mapping in scoped:
        for registry, cred in mapping.items():
            if out.get(registry, cred) != cred:
                raise InvalidInputError(
                    f"source and destination are both on {registry} but were given different "
                    "credentials; give one (--src-creds or --dest-creds)"
                )
            out[registry] = cred
    return out
