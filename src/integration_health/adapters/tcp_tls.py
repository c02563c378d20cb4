"""Network-level check: DNS, TCP connect and (by default) the TLS handshake and certificate.

Probe: resolve ``host`` (the SSRF guard refuses names that resolve only to loopback, private,
link-local or metadata addresses, and such IP literals, unless
``INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS=true``), open a TCP connection to the first vetted
address that accepts, then — unless ``tls`` is false — complete a TLS handshake that verifies
the certificate chain and the host name (``server_name``, else ``host``; also sent as SNI),
read the certificate's expiry and close. No application data is sent. Cost: one TCP
connection and one TLS handshake; no vendor API call.

``details``: ``address`` (the IP connected to), ``port``, ``dns_ms``, ``connect_ms``, and with
TLS ``tls_ms``, ``tls_version``, ``cipher``, ``server_name``, and the certificate's
``not_after`` (ISO 8601, UTC), ``days_to_expiry``, ``subject`` and ``issuer``. A failed
verification adds ``verify_code`` and ``verify_message`` (OpenSSL's).

========================================================  ===========  ================
observation                                                status       error_code
========================================================  ===========  ================
connected (and certificate valid for ≥ expiry_warning_days) healthy      —
certificate valid but expires within expiry_warning_days    degraded     tls
certificate expired, not yet valid, untrusted, wrong host   unreachable  tls
TLS handshake refused / not TLS on that port                unreachable  tls
name does not resolve                                       unreachable  dns
connection refused / reset / unreachable network            unreachable  connection
no TCP or TLS answer before the runner's deadline           unreachable  timeout
private target with the guard on; unreadable ca_bundle      unreachable  config_invalid
========================================================  ===========  ================

An expiring certificate is ``degraded`` with error code ``tls``: the endpoint works today,
and the code says which part needs attention. The check sets no timeout of its own: the
runner's deadline ends a hanging connect or handshake.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self
from uuid import UUID

from pydantic import Field, field_validator, model_validator

from ..checks import Adapter, CheckContext
from ..config import IntegrationConfigBase
from ..errors import ConfigError
from ..model import ErrorCode, HealthResult
from ..transport_errors import certificate_sentence, classify_exception
from ._network import connect_first, normalize_host, resolve_target

__all__ = ["ADAPTER", "TcpTlsCheck", "TcpTlsConfig"]

CONTEXT_TTL_S = 300.0
"""SSL contexts (trust stores) are reloaded after this long, so a renewed bundle is seen."""

_HANDSHAKE_LIMIT_S = 3_600.0
"""asyncio aborts handshakes after 60 s by default; the runner's deadline decides instead."""

_SHUTDOWN_LIMIT_S = 2.0
"""How long a closed TLS connection may wait for the server's close_notify in the background."""

_NAME_KEYS = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
}


class TcpTlsConfig(IntegrationConfigBase):
    """A TCP endpoint, by default with TLS: any HTTPS host, SMTPS, LDAPS, a database port…"""

    integration_type: Literal["tcp_tls"] = "tcp_tls"
    host: str = Field(min_length=1, max_length=253)
    """Host name or IP address to connect to (no scheme, no port)."""
    port: int = Field(default=443, ge=1, le=65_535)
    """TCP port (default 443)."""
    tls: bool = True
    """Complete a TLS handshake and check the certificate; ``false`` = TCP connect only."""
    server_name: str | None = Field(default=None, min_length=1, max_length=253)
    """Name sent as SNI and checked against the certificate (default: ``host``)."""
    expiry_warning_days: int = Field(default=14, ge=0, le=3_650)
    """A certificate expiring within this many days is ``degraded`` (0 = never warn)."""
    ca_bundle: str | None = Field(default=None, min_length=1, max_length=4_096)
    """Path to a PEM file of CA certificates to trust *instead of* the system store
    (for servers with a private CA)."""

    @field_validator("host", "server_name")
    @classmethod
    def _host_shape(cls, value: str | None) -> str | None:
        return None if value is None else normalize_host(value)

    @model_validator(mode="after")
    def _tls_fields_need_tls(self) -> Self:
        if not self.tls:
            given = [name for name in ("server_name", "ca_bundle") if getattr(self, name)]
            if given:
                raise ValueError(
                    f"{' and '.join(given)} only apply with tls: true (this check is TCP only)"
                )
        return self


class TcpTlsCheck:
    """Resolves, connects and (by default) shakes hands; reads the certificate's expiry."""

    integration_type = "tcp_tls"

    def __init__(self, context: CheckContext) -> None:
        self._settings = context.settings
        self._contexts: dict[str | None, tuple[float, ssl.SSLContext]] = {}

    async def check(self, org_id: UUID, config: TcpTlsConfig) -> HealthResult:
        """One TCP connection (and TLS handshake); the handshake and certificate decide."""
        details: dict[str, Any] = {"port": config.port}
        started = time.monotonic()
        sock: socket.socket | None = None
        try:
            ssl_context = await self._ssl_context(config.ca_bundle) if config.tls else None
            target = await resolve_target(
                config.host, config.port, allow_private=self._settings.allow_private_networks
            )
            details["dns_ms"] = round(target.dns_ms, 2)
            connecting = time.monotonic()
            sock, details["address"] = await connect_first(target)
            details["connect_ms"] = _ms_since(connecting)
            if ssl_context is None:
                return HealthResult.healthy(_ms_since(started), details=details)
            server_name = config.server_name or target.host
            details["server_name"] = server_name
            shaking = time.monotonic()
            connected, sock = sock, None  # from here the TLS transport owns and closes it
            cert = await _handshake(connected, ssl_context, server_name)
            details["tls_ms"] = _ms_since(shaking)
        except ssl.SSLCertVerificationError as exc:
            details["verify_code"] = exc.verify_code
            details["verify_message"] = exc.verify_message
            return HealthResult.unreachable(
                ErrorCode.TLS,
                certificate_sentence(
                    exc,
                    config.server_name or config.host,
                    private_ca_hint="point ca_bundle at that CA's certificate",
                ),
                _ms_since(started),
                details=details,
            )
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes a result
            code, message = classify_exception(exc)
            return HealthResult.unreachable(code, message, _ms_since(started), details=details)
        finally:
            if sock is not None:
                sock.close()
        latency_ms = _ms_since(started)
        details.update(tls_version=cert.version, cipher=cert.cipher)
        return _judge_certificate(cert.peer, config, latency_ms, details)

    async def _ssl_context(self, ca_bundle: str | None) -> ssl.SSLContext:
        """A verifying client context (cached; loading a trust store reads files, off-loop)."""
        cached = self._contexts.get(ca_bundle)
        now = time.monotonic()
        if cached is not None and now - cached[0] < CONTEXT_TTL_S:
            return cached[1]
        context = await asyncio.to_thread(_load_context, ca_bundle)
        self._contexts[ca_bundle] = (now, context)
        return context


def _load_context(ca_bundle: str | None) -> ssl.SSLContext:
    """``ssl.create_default_context()`` trusting ``ca_bundle`` alone, or the system store."""
    if ca_bundle is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise ConfigError(
                f"ca_bundle {ca_bundle} holds no valid PEM certificate ({exc.reason or exc})"
            ) from None
        raise ConfigError(
            f"ca_bundle {ca_bundle} cannot be read ({exc.strerror or type(exc).__name__})"
        ) from None


@dataclass(frozen=True)
class _Handshake:
    """What a completed handshake negotiated and the (verified) peer certificate."""

    version: str | None
    cipher: str | None
    peer: dict[str, Any] | None


async def _handshake(sock: socket.socket, context: ssl.SSLContext, server_name: str) -> _Handshake:
    """Run the TLS handshake over the connected ``sock`` (which the transport then owns).

    The connection is closed right after (close_notify is sent; the wait for the server's
    answer is bounded and happens in the background).
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(asyncio.Protocol, sock=sock)
    try:
        tls_transport = await loop.start_tls(
            transport,
            protocol,
            context,
            server_hostname=server_name,
            ssl_handshake_timeout=_HANDSHAKE_LIMIT_S,
            ssl_shutdown_timeout=_SHUTDOWN_LIMIT_S,
        )
    except BaseException:
        transport.abort()
        raise
    if tls_transport is None:  # the connection was closed under us
        transport.abort()
        raise ConnectionResetError("the connection closed during the TLS handshake")
    ssl_object: ssl.SSLObject = tls_transport.get_extra_info("ssl_object")
    cipher = ssl_object.cipher()
    result = _Handshake(
        version=ssl_object.version(),
        cipher=cipher[0] if cipher else None,
        peer=ssl_object.getpeercert(),
    )
    tls_transport.close()
    return result


def _judge_certificate(
    cert: dict[str, Any] | None,
    config: TcpTlsConfig,
    latency_ms: float,
    details: dict[str, Any],
) -> HealthResult:
    """Healthy, or degraded when the (verified) certificate expires within the warning."""
    if not cert or "notAfter" not in cert:
        return HealthResult.healthy(latency_ms, details=details)
    not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
    seconds_left = (not_after - datetime.now(UTC)).total_seconds()
    days_left = math.floor(seconds_left / 86_400)
    details.update(
        not_after=not_after.isoformat(),
        days_to_expiry=days_left,
        subject=_format_name(cert.get("subject", ())),
        issuer=_format_name(cert.get("issuer", ())),
    )
    if seconds_left < config.expiry_warning_days * 86_400:
        when = not_after.strftime("%Y-%m-%d %H:%M UTC")
        return HealthResult.degraded(
            ErrorCode.TLS,
            f"The server's certificate expires in {_days(days_left)} ({when}); renew it before "
            f"then (warning threshold: {config.expiry_warning_days} days).",
            latency_ms,
            details=details,
        )
    return HealthResult.healthy(latency_ms, details=details)


def _days(days: int) -> str:
    if days <= 0:
        return "less than a day"
    return "1 day" if days == 1 else f"{days} days"


def _format_name(name: Any) -> str:
    """``CN=example.com, O=Example`` from ``getpeercert()``'s nested tuples."""
    parts = []
    for rdn in name:
        for key, value in rdn:
            parts.append(f"{_NAME_KEYS.get(key, key)}={value}")
    return ", ".join(parts)


def _ms_since(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 2)


ADAPTER = Adapter(
    "tcp_tls",
    TcpTlsConfig,
    TcpTlsCheck,
    description="DNS, TCP connect and TLS handshake; certificate validity and days to expiry.",
)
