"""The tcp_tls adapter against real TLS servers on 127.0.0.1 (certificates made per run)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from integration_health import ErrorCode, HealthResult, HealthStatus, Settings, run_health_checks
from integration_health.adapters.tcp_tls import TcpTlsConfig
from integration_health.checks import CheckRegistry, default_registry
from integration_health.testing import HttpEndpointFake, LocalServer
from integration_health.testing.tls_server import TestCertificates, TlsTestServer

PHASES = {"dns_ms", "connect_ms", "tls_ms"}


@pytest.fixture(scope="module")
def certs() -> Iterator[TestCertificates]:
    """One private CA and its scenario certificates for the whole module."""
    certificates = TestCertificates()
    yield certificates
    certificates.cleanup()


@pytest.fixture
def ca_bundle(certs: TestCertificates, tmp_path: Path) -> str:
    return str(certs.write_ca_bundle(tmp_path / "ca.pem"))


@pytest.fixture
def server(certs: TestCertificates) -> Iterator[TlsTestServer]:
    with TlsTestServer(certs) as running:
        yield running


@pytest.fixture
def registry() -> CheckRegistry:
    return default_registry(Settings(allow_private_networks=True))


async def probe(registry: CheckRegistry, *, timeout_s: float = 3.0, **fields: Any) -> HealthResult:
    org = uuid.uuid4()
    config = registry.parse(
        {
            "integration_id": str(uuid.uuid4()),
            "org_id": str(org),
            "integration_type": "tcp_tls",
            "name": "tls probe",
            **fields,
        }
    )
    [(_, result)] = await run_health_checks(
        org, integrations=[config], store=None, registry=registry, timeout_s=timeout_s
    )
    return result


async def eventually(condition: Callable[[], bool], within_s: float = 2.0) -> bool:
    """Poll ``condition`` (the server counts connections in its own thread)."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- certificates -------------------------------------------------------------------------


async def test_valid_certificate_is_healthy_with_phases_and_certificate_facts(
    server: TlsTestServer, registry: CheckRegistry, ca_bundle: str
) -> None:
    """A valid certificate is healthy; DNS/connect/TLS times and the certificate are reported."""
    result = await probe(registry, host="localhost", port=server.port, ca_bundle=ca_bundle)
    assert (result.status, result.error_code) == (HealthStatus.HEALTHY, None), result.error
    assert set(result.details) >= PHASES
    assert all(result.details[phase] >= 0 for phase in PHASES)
    assert result.details["address"] == "127.0.0.1"
    assert result.details["server_name"] == "localhost"
    assert result.details["tls_version"].startswith("TLS")
    assert 360 <= result.details["days_to_expiry"] <= 365
    assert result.details["not_after"].endswith("+00:00")
    assert "CN=localhost" in result.details["subject"]
    assert "CN=Integration Health Test CA" in result.details["issuer"]
    assert await eventually(lambda: server.handshakes == 1)


async def test_certificate_expiring_soon_is_degraded(
    server: TlsTestServer, registry: CheckRegistry, ca_bundle: str
) -> None:
    """A certificate expiring in 5 days is degraded/tls with the days left in the sentence."""
    server.set_scenario("expiring")
    result = await probe(registry, host="127.0.0.1", port=server.port, ca_bundle=ca_bundle)
    assert (result.status, result.error_code) == (HealthStatus.DEGRADED, ErrorCode.TLS)
    assert result.details["days_to_expiry"] == 5
    assert "expires in 5 days" in (result.error or "")
    assert set(result.details) >= PHASES


async def test_expiry_warning_threshold_is_configurable(
    server: TlsTestServer, registry: CheckRegistry, ca_bundle: str
) -> None:
    """With expiry_warning_days=3, a certificate with 5 days left is healthy."""
    server.set_scenario("expiring")
    result = await probe(
        registry, host="127.0.0.1", port=server.port, ca_bundle=ca_bundle, expiry_warning_days=3
    )
    assert result.status is HealthStatus.HEALTHY, result.error
    assert result.details["days_to_expiry"] == 5


async def test_expired_certificate_is_unreachable_tls(
    server: TlsTestServer, registry: CheckRegistry, ca_bundle: str
) -> None:
    """An expired certificate is unreachable/tls and the sentence says it expired."""
    server.set_scenario("expired")
    result = await probe(registry, host="localhost", port=server.port, ca_bundle=ca_bundle)
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.TLS)
    assert "expired" in (result.error or "")
    assert result.details["verify_code"] == 10
    assert {"dns_ms", "connect_ms"} <= set(result.details)


async def test_self_signed_certificate_is_unreachable_tls(
    server: TlsTestServer, registry: CheckRegistry, ca_bundle: str
) -> None:
    """A self-signed certificate (no trusted CA) is unreachable/tls with a ca_bundle hint."""
    server.set_scenario("untrusted")
    result = await probe(registry, host="localhost", port=server.port, ca_bundle=ca_bundle)
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.TLS)
    assert "trusted CA" in (result.error or "")
    assert "ca_bundle" in (result.error or "")


async def test_unknown_ca_without_ca_bundle_is_unreachable_tls(
    server: TlsTestServer, registry: CheckRegistry
) -> None:
    """Without ca_bundle the system store does not know the private CA: unreachable/tls."""
    result = await probe(registry, host="localhost", port=server.port)
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.TLS)
    assert result.details["verify_code"] == 20  # unable to get local issuer certificate


async def test_wrong_host_name_is_unreachable_tls(
    server: TlsTestServer, registry: CheckRegistry, ca_bundle: str
) -> None:
    """A certificate for another name is unreachable/tls naming the expected host."""
    server.set_scenario("wrong_host")
    result = await probe(registry, host="localhost", port=server.port, ca_bundle=ca_bundle)
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.TLS)
    assert "'localhost'" in (result.error or "")


async def test_server_name_overrides_the_name_checked(
    server: TlsTestServer, registry: CheckRegistry, ca_bundle: str
) -> None:
    """server_name is what the certificate is checked against (and sent as SNI)."""
    good = await probe(
        registry, host="127.0.0.1", port=server.port, ca_bundle=ca_bundle, server_name="localhost"
    )
    assert good.status is HealthStatus.HEALTHY, good.error
    assert good.details["server_name"] == "localhost"
    bad = await probe(
        registry,
        host="127.0.0.1",
        port=server.port,
        ca_bundle=ca_bundle,
        server_name="elsewhere.example",
    )
    assert (bad.status, bad.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.TLS)


async def test_unreadable_ca_bundle_is_config_invalid(
    server: TlsTestServer, registry: CheckRegistry, tmp_path: Path
) -> None:
    """A missing or non-PEM ca_bundle is config_invalid, and nothing is contacted."""
    missing = await probe(
        registry, host="localhost", port=server.port, ca_bundle=str(tmp_path / "nope.pem")
    )
    assert (missing.status, missing.error_code) == (
        HealthStatus.UNREACHABLE,
        ErrorCode.CONFIG_INVALID,
    )
    assert "cannot be read" in (missing.error or "")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    bad = await probe(registry, host="localhost", port=server.port, ca_bundle=str(garbage))
    assert bad.error_code is ErrorCode.CONFIG_INVALID
    assert server.connections == 0


# -- transport failures -------------------------------------------------------------------


async def test_handshake_that_hangs_times_out_at_the_deadline(
    server: TlsTestServer, registry: CheckRegistry, ca_bundle: str
) -> None:
    """A server that accepts TCP but never answers the ClientHello is a timeout, on time."""
    server.set_scenario("hang")
    started = time.monotonic()
    result = await probe(
        registry, host="127.0.0.1", port=server.port, ca_bundle=ca_bundle, timeout_s=0.5
    )
    assert time.monotonic() - started < 1.0
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.TIMEOUT)
    assert 450 <= result.latency_ms < 1000
    assert await eventually(lambda: server.connections == 1)


async def test_event_loop_stays_responsive_during_a_probe(
    server: TlsTestServer, registry: CheckRegistry, ca_bundle: str
) -> None:
    """The check never blocks the event loop: a 10 ms ticker keeps ticking throughout."""
    server.set_scenario("hang")
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await probe(registry, host="localhost", port=server.port, ca_bundle=ca_bundle, timeout_s=0.3)
    stop.set()
    await task
    assert len(gaps) > 10
    assert max(gaps) < 0.15, max(gaps)


async def test_plain_http_port_is_unreachable_tls(registry: CheckRegistry) -> None:
    """A port that does not speak TLS (plain HTTP) fails the handshake: unreachable/tls."""
    fake = HttpEndpointFake()
    async with LocalServer(fake.app) as http:
        result = await probe(registry, host="127.0.0.1", port=http.port)
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.TLS)
    assert "TLS handshake failed" in (result.error or "")


async def test_connection_refused_is_unreachable_connection(registry: CheckRegistry) -> None:
    """Nothing listening on the port is unreachable/connection, quickly."""
    started = time.monotonic()
    result = await probe(registry, host="127.0.0.1", port=free_port())
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.CONNECTION)
    assert "refused" in (result.error or "")
    assert "dns_ms" in result.details
    assert time.monotonic() - started < 1.0


async def test_unknown_host_name_is_unreachable_dns(registry: CheckRegistry) -> None:
    """A name that does not resolve is unreachable/dns."""
    result = await probe(registry, host="no-such-host.invalid", port=443)
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.DNS)
    assert "resolved" in (result.error or "")


async def test_plain_tcp_connect_is_healthy_without_tls(
    server: TlsTestServer, registry: CheckRegistry
) -> None:
    """With tls: false only the TCP connect is made: healthy, with no TLS phase."""
    server.set_scenario("hang")  # accepts TCP, would never finish a handshake
    result = await probe(registry, host="localhost", port=server.port, tls=False)
    assert result.status is HealthStatus.HEALTHY, result.error
    assert {"dns_ms", "connect_ms"} <= set(result.details)
    assert "tls_ms" not in result.details
    assert await eventually(lambda: server.connections == 1)


async def test_plain_tcp_connection_refused(registry: CheckRegistry) -> None:
    """With tls: false a closed port is still unreachable/connection."""
    result = await probe(registry, host="127.0.0.1", port=free_port(), tls=False)
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.CONNECTION)


# -- configuration ------------------------------------------------------------------------


def config(**fields: Any) -> TcpTlsConfig:
    return TcpTlsConfig(integration_id=uuid.uuid4(), org_id=uuid.uuid4(), name="t", **fields)


def test_defaults() -> None:
    """Port 443, TLS on and a 14-day expiry warning are the defaults."""
    made = config(host="example.com")
    assert (made.port, made.tls, made.expiry_warning_days) == (443, True, 14)
    assert made.server_name is None
    assert made.ca_bundle is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [("[::1]", "::1"), (" example.com ", "example.com"), ("10.1.2.3", "10.1.2.3")],
)
def test_host_is_normalised(host: str, expected: str) -> None:
    """Brackets around IPv6 literals and surrounding blanks are removed."""
    assert config(host=host).host == expected


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("https://example.com", "not a URL"),
        ("example.com:443", "without a port"),
        ("exa mple.com", "host name"),
    ],
)
def test_bad_hosts_are_refused_with_a_hint(host: str, hint: str) -> None:
    """URLs, host:port and garbage are refused at validation, saying what to write instead."""
    with pytest.raises(ValidationError) as caught:
        config(host=host)
    assert hint in str(caught.value)


def test_tls_only_fields_need_tls() -> None:
    """server_name or ca_bundle with tls: false is a configuration mistake, refused."""
    with pytest.raises(ValidationError, match="only apply with tls: true"):
        config(host="example.com", tls=False, server_name="example.com")


@pytest.mark.parametrize("port", [0, 65_536])
def test_port_range(port: int) -> None:
    """Ports outside 1..65535 are refused."""
    with pytest.raises(ValidationError):
        config(host="example.com", port=port)
