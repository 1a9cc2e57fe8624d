"""``RegistryClients``: one pooled HTTP client and one transport per registry for a command."""

from __future__ import annotations

from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.reference import Reference
from hybridstore.remote.credentials import Credential, resolve_credential
from hybridstore.remote.repository import Repository
from hybridstore.remote.transport import RegistryTransport, TransportOptions, new_client

__all__ = ["RegistryClients"]


class RegistryClients:
    """One pooled HTTP client and one transport (with its token cache) per registry.

    Repositories on the same registry share a transport, which is what makes a
    cross-repository mount possible (and lets tokens be reused).
    """

    def __init__(self, options: TransportOptions, credential: Credential | None = None) -> None:
        self.options = options
        self.client = new_client(options)
        self.credential = credential
        self._transports: dict[str, RegistryTransport] = {}

    def transport(self, ref: Reference) -> RegistryTransport:
        host = ref.endpoint_host
        transport = self._transports.get(host)
        if transport is None:
            cred = self.credential or resolve_credential(ref.registry)
            transport = RegistryTransport(host, self.options, client=self.client, credential=cred)
            self._transports[host] = transport
        return transport

    def repository(
        self,
        ref: Reference,
        manifest_limit: int = MAX_DOCUMENT_BYTES,
        *,
        push: bool = False,
    ) -> Repository:
        return Repository(
            self.transport(ref), ref.repository, manifest_limit=manifest_limit, push=push
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RegistryClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
