"""Translate exceptions from sockets, TLS, DNS and HTTP clients into error codes, in one place.

Adapters call :func:`classify_exception` for transport failures they catch; the runner calls
it for anything a check lets escape. The message is a short sentence for people; the runner
redacts secrets from it before it is stored.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import ssl

import aiohttp

from .errors import ConfigError
from .model import ErrorCode

__all__ = ["ProbeFailure", "certificate_sentence", "classify_exception"]


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


_EXPIRED = 10
_NOT_YET_VALID = 9
_UNTRUSTED = frozenset({2, 18, 19, 20, 21})
"""Issuer missing, self-signed leaf or chain, local issuer unknown, leaf unverifiable."""
_NAME_MISMATCH = frozenset({62, 64})  # host name, IP address
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _os_reason(exc: BaseException | None) -> str:
    """The operating system's words for ``exc`` (``Connection reset by peer``), else its type."""
    if exc is None:
        return "no reason given"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    return text or type(exc).__name__


def certificate_sentence(
    exc: ssl.SSLCertVerificationError, name: str | None, *, private_ca_hint: str
) -> str:
    """A plain sentence for a failed certificate verification (expired, untrusted, wrong name).

    ``name`` is the host the certificate was checked against; ``private_ca_hint`` tells how
    to trust a private CA for this kind of check. Only OpenSSL's verification message is
    quoted: it holds no secret.
    """
    reason = (exc.verify_message or exc.reason or "certificate verify failed").rstrip(".")
    code = exc.verify_code
    if code == _EXPIRED:
        return f"The server's certificate has expired ({reason}): renew it."
    if code == _NOT_YET_VALID:
        return f"The server's certificate is not valid yet ({reason}): check its dates and clocks."
    if code in _UNTRUSTED:
        return (
            f"The server's certificate is not signed by a trusted CA ({reason}). If it comes "
            f"from a private CA, {private_ca_hint}."
        )
    if code in _NAME_MISMATCH:
        return (
            f"The server's certificate is not valid for {name!r} ({reason}): check the host name."
            if name
            else f"The server's certificate is for another host name ({reason})."
        )
    return f"The server's certificate could not be verified ({reason})."


_HTTP_CA_HINT = "add that CA to the trust store the monitor reads (SSL_CERT_FILE)"


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    # aiohttp's certificate error subclasses ssl.CertificateError, which *is*
    # ssl.SSLCertVerificationError, without its verify_code: unwrap it first.
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        inner = exc.certificate_error
        return inner if isinstance(inner, ssl.SSLCertVerificationError) else None
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc
    return None


def _tls_message(exc: BaseException) -> str:
    verification = _certificate_error(exc)
    if verification is not None:
        host = exc.host if isinstance(exc, aiohttp.ClientConnectorError) else None
        return certificate_sentence(verification, host, private_ca_hint=_HTTP_CA_HINT)
    inner: BaseException = exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        inner = exc.os_error
    if isinstance(inner, ssl.SSLError) and inner.reason:
        reason = inner.reason.replace("_", " ").lower()
    else:
        reason = _os_reason(inner)
    return f"TLS handshake failed ({reason}): is it a TLS port, with a supported TLS version?"


def _connection_message(exc: BaseException) -> str:
    """A sentence for a connection that failed or broke off."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return (
            "The connection broke off in the middle of the answer (the body ended early or was "
            "malformed)."
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "The server closed the connection without a complete answer."
    inner: BaseException = exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        inner = exc.os_error
    if isinstance(inner, OSError) and inner.errno in _RESET_ERRNOS:
        return f"The server reset the connection ({_os_reason(inner)})."
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"Could not connect to {exc.host} port {exc.port} ({_os_reason(inner)})."
    return f"The connection failed ({_describe(exc)})."


def classify_exception(exc: BaseException) -> tuple[ErrorCode, str]:
    """The error code and a human message for an exception raised while probing.

    Messages name the host and port at most, never a URL's query or a header, so they carry
    no secret (the runner redacts them again before they are stored).
    """
    # Order matters: aiohttp's DNS and certificate errors subclass its connection errors,
    # which subclass OSError; ssl.SSLError subclasses OSError too.
    if isinstance(exc, ProbeFailure):
        return exc.code, exc.message
    if isinstance(exc, ConfigError):
        return ErrorCode.CONFIG_INVALID, str(exc)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return (
            ErrorCode.DNS,
            f"The host name {exc.host} could not be resolved ({_os_reason(exc.os_error)}).",
        )
    if isinstance(exc, socket.gaierror):
        return ErrorCode.DNS, f"The host name could not be resolved ({_os_reason(exc)})."
    if isinstance(
        exc,
        aiohttp.ClientConnectorCertificateError
        | aiohttp.ClientSSLError
        | aiohttp.ServerFingerprintMismatch
        | ssl.SSLError
        | ssl.CertificateError,
    ):
        return ErrorCode.TLS, _tls_message(exc)
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
        return ErrorCode.CONNECTION, _connection_message(exc)
    if isinstance(
        exc, aiohttp.ClientResponseError | aiohttp.ContentTypeError | json.JSONDecodeError
    ):
        return ErrorCode.BAD_RESPONSE, f"The answer could not be understood ({_describe(exc)})."
    if isinstance(exc, aiohttp.ClientError):
        return ErrorCode.CONNECTION, f"The request failed ({_describe(exc)})."
    return ErrorCode.INTERNAL, f"The check failed unexpectedly ({_describe(exc)})."
