"""The SSRF guard: checks refuse loopback, private, link-local and metadata targets by default.

Every test uses ``Settings(allow_private_networks=False)`` explicitly (the test suite's
environment allows private networks so that other tests can reach their local servers).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration_health import ErrorCode, HealthResult, HealthStatus, Settings, run_health_checks
from integration_health.adapters._network import resolve_target
from integration_health.checks import CheckRegistry, default_registry
from integration_health.errors import UnsafeTargetError
from integration_health.testing import HttpEndpointFake, LocalServer
from integration_health.testing.sftp_server import SftpTestServer
from integration_health.testing.tls_server import TestCertificates, TlsTestServer

PRIVATE_HOSTS = ["127.0.0.1", "localhost", "10.0.0.1", "169.254.169.254", "::1", "[::1]"]


@pytest.fixture
def guarded() -> CheckRegistry:
    """A registry with the default policy: private networks are off limits."""
    return default_registry(Settings(allow_private_networks=False))


@pytest.fixture(scope="module")
def certs() -> Iterator[TestCertificates]:
    certificates = TestCertificates()
    yield certificates
    certificates.cleanup()


async def probe(registry: CheckRegistry, integration_type: str, **fields: Any) -> HealthResult:
    org = uuid.uuid4()
    config = registry.parse(
        {
            "integration_id": str(uuid.uuid4()),
            "org_id": str(org),
            "integration_type": integration_type,
            "name": f"{integration_type} ssrf",
            **fields,
        }
    )
    [(_, result)] = await run_health_checks(
        org, integrations=[config], store=None, registry=registry, timeout_s=2.0
    )
    return result


def refused(result: HealthResult) -> bool:
    return (result.status, result.error_code) == (
        HealthStatus.UNREACHABLE,
        ErrorCode.CONFIG_INVALID,
    ) and "ALLOW_PRIVATE_NETWORKS" in (result.error or "")


# -- tcp_tls ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
async def test_tcp_tls_refuses_private_targets_by_default(
    guarded: CheckRegistry, certs: TestCertificates, host: str
) -> None:
    """tcp_tls refuses loopback, 10/8, metadata and ::1 targets: config_invalid, no connection."""
    server_host = "::1" if "::1" in host else "127.0.0.1"
    with TlsTestServer(certs, host=server_host) as server:
        started = time.monotonic()
        result = await probe(guarded, "tcp_tls", host=host, port=server.port)
        await asyncio.sleep(0.1)  # give a connection, had one been made, time to be counted
        assert server.connections == 0
    assert refused(result), result.error
    assert time.monotonic() - started < 1.0


async def test_tcp_tls_reaches_loopback_when_allowed(
    certs: TestCertificates, tmp_path: Path
) -> None:
    """With allow_private_networks the same loopback target is probed (the guard is the cause)."""
    allowed = default_registry(Settings(allow_private_networks=True))
    bundle = str(certs.write_ca_bundle(tmp_path / "ca.pem"))
    with TlsTestServer(certs) as server:
        result = await probe(
            allowed, "tcp_tls", host="localhost", port=server.port, ca_bundle=bundle
        )
    assert result.status is HealthStatus.HEALTHY, result.error


# -- sftp ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
async def test_sftp_refuses_private_targets_by_default(
    guarded: CheckRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    """sftp refuses loopback, 10/8, metadata and IPv6 loopback targets: config_invalid, no login."""
    monkeypatch.setenv("SSRF_SFTP_PASSWORD", "canary-ssrf-pass-1f2e")
    server_host = "::1" if "::1" in host else "127.0.0.1"
    async with SftpTestServer(
        tmp_path, users={"monitor": "canary-ssrf-pass-1f2e"}, host=server_host
    ) as server:
        result = await probe(
            guarded,
            "sftp",
            host=host,
            port=server.port,
            username="monitor",
            password="${SSRF_SFTP_PASSWORD}",
            host_key_fingerprint=server.host_key_fingerprint,
        )
        assert server.connections == 0
    assert refused(result), result.error
    assert "canary-ssrf-pass-1f2e" not in result.model_dump_json()


# -- the generic http adapter -------------------------------------------------------------


async def test_http_refuses_ipv6_loopback_by_default(guarded: CheckRegistry) -> None:
    """http://[::1]:port/ is refused by default even though a server listens there."""
    fake = HttpEndpointFake()
    async with LocalServer(fake.app, host="::1") as server:
        result = await probe(guarded, "http", url=f"http://[::1]:{server.port}/ok")
    assert refused(result), result.error
    assert fake.requests == []


async def test_http_reaches_ipv6_loopback_when_allowed() -> None:
    """With allow_private_networks the same [::1] URL is probed (the guard is the cause)."""
    allowed = default_registry(Settings(allow_private_networks=True))
    fake = HttpEndpointFake()
    async with LocalServer(fake.app, host="::1") as server:
        result = await probe(allowed, "http", url=f"http://[::1]:{server.port}/ok")
    assert result.status is HealthStatus.HEALTHY, result.error
    assert len(fake.requests) == 1


async def test_http_refuses_ten_slash_eight_by_default(guarded: CheckRegistry) -> None:
    """http://10.0.0.1/ is refused at once by default, without trying to connect."""
    started = time.monotonic()
    result = await probe(guarded, "http", url="http://10.0.0.1/")
    assert refused(result), result.error
    assert time.monotonic() - started < 1.0


# -- the resolver itself ------------------------------------------------------------------


async def test_public_addresses_pass_the_guard() -> None:
    """A public IP literal passes the guard (it refuses only non-public targets)."""
    target = await resolve_target("192.0.43.10", 443, allow_private=False)
    assert [sockaddr[0] for _family, sockaddr in target.addresses] == ["192.0.43.10"]
    assert target.dns_ms == 0.0


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.2",
        "192.168.1.10",
        "172.16.0.1",
        "100.64.0.1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "fd00::1",
    ],
)
async def test_non_public_literals_are_refused(address: str) -> None:
    """Private, CGNAT, link-local, IPv4-mapped loopback and ULA literals are refused."""
    with pytest.raises(UnsafeTargetError):
        await resolve_target(address, 443, allow_private=False)


async def test_unresolvable_name_is_a_dns_error() -> None:
    """A name that does not resolve raises socket.gaierror (mapped to the dns code)."""
    with pytest.raises(socket.gaierror):
        await resolve_target("no-such-host.invalid", 443, allow_private=False)
