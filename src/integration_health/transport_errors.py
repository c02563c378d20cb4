"""Translate exceptions from sockets, TLS, DNS and HTTP clients into error codes, in one place.

Adapters call :func:`classify_exception` for transport failures they catch; the runner calls
it for anything a check lets escape. The message is a short sentence for people; the runner
redacts secrets from it before it is stored.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl

import aiohttp

from .errors import ConfigError
from .model import ErrorCode

__all__ = ["ProbeFailure", "classify_exception"]


class ProbeFailure(Exception):
    """Raised inside an adapter to end the probe with a given error code and message.

    Handy deep inside helpers (size caps, redirect loops, unparseable answers); adapters turn
    it into a result with :func:`classify_exception`, and the runner does the same if it
    escapes.
    """

    def __init__(
        self, code: ErrorCode, message: str, *, details: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def classify_exception(exc: BaseException) -> tuple[ErrorCode, str]:
    """The error code and a human message for an exception raised while probing."""
    # Order matters: aiohttp's DNS and certificate errors subclass its connection errors,
    # which subclass OSError.
    if isinstance(exc, ProbeFailure):
        return exc.code, exc.message
    if isinstance(exc, ConfigError):
        return ErrorCode.CONFIG_INVALID, str(exc)
    if isinstance(exc, aiohttp.ClientConnectorDNSError | socket.gaierror):
        return ErrorCode.DNS, f"The host name could not be resolved ({_describe(exc)})."
    if isinstance(
        exc,
        aiohttp.ClientConnectorCertificateError
        | aiohttp.ClientSSLError
        | aiohttp.ServerFingerprintMismatch
        | ssl.SSLError
        | ssl.CertificateError,
    ):
        return ErrorCode.TLS, f"TLS handshake failed ({_describe(exc)})."
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError | TimeoutError):
        return ErrorCode.TIMEOUT, "The connection timed out."
    if isinstance(exc, aiohttp.TooManyRedirects):
        return ErrorCode.BAD_RESPONSE, "Too many redirects (a redirect loop?)."
    if isinstance(exc, aiohttp.InvalidURL):
        return ErrorCode.CONFIG_INVALID, f"The URL is invalid ({_describe(exc)})."
    if isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, aiohttp.ClientConnectorError)
        and isinstance(exc.os_error, ConnectionRefusedError)
    ):
        return ErrorCode.CONNECTION, "Connection refused: nothing is listening at that address."
    if isinstance(
        exc,
        aiohttp.ClientConnectorError
        | aiohttp.ServerDisconnectedError
        | aiohttp.ClientOSError
        | aiohttp.ClientPayloadError
        | ConnectionError
        | OSError,
    ):
        return ErrorCode.CONNECTION, f"The connection failed ({_describe(exc)})."
    if isinstance(
        exc, aiohttp.ClientResponseError | aiohttp.ContentTypeError | json.JSONDecodeError
    ):
        return ErrorCode.BAD_RESPONSE, f"The answer could not be understood ({_describe(exc)})."
    if isinstance(exc, aiohttp.ClientError):
        return ErrorCode.CONNECTION, f"The request failed ({_describe(exc)})."
    return ErrorCode.INTERNAL, f"The check failed unexpectedly ({_describe(exc)})."
