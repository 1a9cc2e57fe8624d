"""``RegistryClients``: one pooled HTTP client and one transport per registry for a command.

It is also where a logical reference becomes the repositories that serve it:
registries.conf (and ``--mirror``) is applied here, once per command, so every
verb that reads through ``RegistryClients`` follows the same mirrors and every
push ignores them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from hybridstore.errors import HybridstoreError, NetworkError, RegistryError
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.reference import Reference
from hybridstore.remote.credentials import Credential, bind_credential, resolve_credential
from hybridstore.remote.mirrored_repository import MirroredRepository
from hybridstore.remote.mirrors import Endpoint, plan_pull, push_endpoint
from hybridstore.remote.registries_conf import load_registries_conf
from hybridstore.remote.repository import Repository
from hybridstore.remote.transport import RegistryTransport, TransportOptions, new_client

__all__ = ["RegistryClients", "list_tags"]

log = logging.getLogger("hybridstore.remote")

# A mirror is an optimisation: one quick retry, then the next endpoint is asked.
_MIRROR_RETRIES = 1


class RegistryClients:
    """One pooled HTTP client and one transport (with its token cache) per registry.

    Repositories on the same registry share a transport, which is what makes a
    cross-repository mount possible (and lets tokens be reused). ``credentials`` maps a
    logical registry to the credential given for it; it goes to that registry only, never
    to another registry of the command nor to a mirror on another host: those get their
    own host's stored credentials.
    """

    def __init__(
        self, options: TransportOptions, credentials: Mapping[str, Credential] | None = None
    ) -> None:
        self.options = options
        # Read first: a malformed registries.conf fails the command before any I/O.
        self.registries = load_registries_conf(options.registries_conf)
        self.client = new_client(options)
        self.credentials = dict(credentials or {})
        self._transports: dict[tuple[str, bool, bool], RegistryTransport] = {}
        self._plain_http: dict[str, bool] = {}

    def transport(self, ref: Reference) -> RegistryTransport:
        """The transport to ``ref``'s registry, as the command's options say."""
        return self._transport(Endpoint(ref), ref.registry)

    def repository(
        self,
        ref: Reference,
        manifest_limit: int = MAX_DOCUMENT_BYTES,
        *,
        push: bool = False,
    ) -> Repository:
        """The repository serving the logical ``ref``: pulls follow registries.conf
        (rewrite, mirrors, insecure, blocked); pushes only ``blocked``/``insecure``."""
        if push:
            ep = push_endpoint(self.registries, ref)
            return Repository(
                self._transport(ep, ref.registry),
                ref.repository,
                push=True,
                manifest_limit=manifest_limit,
            )
        plan = plan_pull(self.registries, ref, self.options.mirrors)
        if plan.plain:
            return Repository(
                self._transport(plan.primary, ref.registry),
                plan.primary.ref.repository,
                manifest_limit=manifest_limit,
            )

        def open_repository(ep: Endpoint) -> Repository:
            transport = self._transport(ep, ref.registry)
            return Repository(transport, ep.ref.repository, manifest_limit=manifest_limit)

        return MirroredRepository(
            plan, self.transport(plan.primary.ref), open_repository, manifest_limit=manifest_limit
        )

    def _transport(self, ep: Endpoint, logical_registry: str) -> RegistryTransport:
        host = ep.ref.endpoint_host
        key = (host, ep.insecure, ep.is_mirror)
        transport = self._transports.get(key)
        if transport is None:
            options = self.options
            if ep.insecure:
                options = replace(options, insecure=True)
            if ep.is_mirror:
                options = replace(options, max_retries=min(options.max_retries, _MIRROR_RETRIES))
            cred = self.credentials.get(logical_registry)
            if ep.ref.registry != logical_registry:
                cred = None  # a mirror on another host: its own stored credentials
            transport = RegistryTransport(
                host,
                options,
                client=self.client,
                credential=cred or resolve_credential(ep.ref.registry),
                plain_http=self._use_plain_http(host, options) if ep.insecure else None,
            )
            self._transports[key] = transport
        return transport

    def _use_plain_http(self, host: str, options: TransportOptions) -> bool:
        """For an ``insecure`` registry: https (unverified) if it answers, else plain HTTP,
        as the containers tools do. Asked once per host and command."""
        if options.plain_http:
            return True
        known = self._plain_http.get(host)
        if known is not None:
            return known
        probe = RegistryTransport(
            host, replace(options, max_retries=0), client=self.client, plain_http=False
        )
        try:
            probe.send("GET", probe.url("/v2/"), scope="", ok=(200, 401)).close()
            plain = False
        except RegistryError:
            plain = False  # https answered, if not happily
        except NetworkError as e:
            log.debug("%s: no https (%s); using plain HTTP (insecure)", host, e)
            plain = True
        except HybridstoreError:
            plain = False  # https answered with an auth challenge we could not meet
        self._plain_http[host] = plain
        return plain

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RegistryClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def list_tags(
    reference: str, options: TransportOptions, credential: Credential | None = None
) -> list[str]:
    """Every tag of ``reference``'s repository (pagination followed), in the registry's order."""
    ref = Reference.parse(reference)
    with RegistryClients(options, bind_credential(credential, [ref.registry])) as clients:
        return clients.repository(ref).tags()
