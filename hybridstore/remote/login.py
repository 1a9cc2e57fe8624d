"""``login``: prove a credential against a registry, then store it where docker and podman look.

Checking first means a typo never lands in a credential file; storing goes through the same
helpers and files that lookups read (``credentials.save_credential``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hybridstore.remote.auth import check_login
from hybridstore.remote.credentials import Credential, normalize_registry, save_credential
from hybridstore.remote.transport import TransportOptions

__all__ = ["LoginResult", "login"]


@dataclass(frozen=True)
class LoginResult:
    registry: str
    auth: str  # "none", "basic" or "bearer": what the registry asked for
    stored_in: str  # a file path, or "docker-credential-<helper>"

    @property
    def stored_in_plain_file(self) -> bool:
        return not self.stored_in.startswith("docker-credential-")

    def to_json(self) -> dict[str, Any]:
        return {"registry": self.registry, "auth": self.auth, "stored_in": self.stored_in}


def login(registry: str, credential: Credential, options: TransportOptions) -> LoginResult:
    """Check ``credential`` against ``registry`` (host[:port]) and store it on success."""
    name = normalize_registry(registry)
    kind = check_login(
        name,
        credential,
        scheme="http" if options.plain_http else "https",
        verify=options.verify,
        timeout=options.timeout,
    )
    return LoginResult(name, kind, save_credential(name, credential))
