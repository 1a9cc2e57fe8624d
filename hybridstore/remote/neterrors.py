"""The two ways a request can fail below HTTP: no usable answer, or no TLS.

A module of its own so that the transport, the authenticator and the requests
layer (``session.py``, imported only once a command talks to a registry) can all
name them without loading requests.
"""

from __future__ import annotations

__all__ = ["TLSError", "TransportError"]


class TransportError(Exception):
    """No complete HTTP answer: refused, reset, timed out, dropped mid-body, trickling or
    garbled. The message is a short reason fit for an error line."""


class TLSError(TransportError):
    """The TLS handshake failed: certificate verification, or a peer that does not
    speak TLS at all (``plain_http_peer``: it answered in plain HTTP)."""

    def __init__(self, message: str, *, plain_http_peer: bool = False) -> None:
        super().__init__(message)
        self.plain_http_peer = plain_http_peer
