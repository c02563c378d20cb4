"""SSRF: integration URLs aimed at the monitor's own network are refused unless allowed.

A fake HTTP endpoint listens on 127.0.0.1 and on ::1. Every spelling of a loopback, private,
link-local or metadata target (IP literals in their odd forms, IPv4-mapped IPv6, names that
resolve to loopback, vendor ``base_url``/``authority_url`` overrides) must come back
``unreachable``/``config_invalid`` with the ALLOW_PRIVATE_NETWORKS hint, and the fake must
see no request. The same URLs reach the fake once private networks are allowed, so the guard
is what refuses them. Redirect hops are re-checked: a redirect to a non-HTTP scheme is refused
even with private networks allowed.

Not covered here (no routable public address on a test machine): a redirect from a *public*
first hop to a private one end to end. The hop goes through the same ``check_target`` and
guarded resolver as the first request, which the tests below exercise.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from integration_health import ErrorCode, HealthResult, HealthStatus, Settings, run_health_checks
from integration_health.adapters._network import is_public_address
from integration_health.checks import CheckRegistry, default_registry
from integration_health.testing import HttpEndpointFake, LocalServer


@pytest.fixture(scope="module")
def fake4() -> Iterator[tuple[HttpEndpointFake, int]]:
    fake = HttpEndpointFake()
    with LocalServer(fake.app).in_thread() as server:
        yield fake, server.port


@pytest.fixture(scope="module")
def fake6() -> Iterator[tuple[HttpEndpointFake, int]]:
    fake = HttpEndpointFake()
    with LocalServer(fake.app, host="::1").in_thread() as server:
        yield fake, server.port


def _registry(allow_private: bool) -> CheckRegistry:
    return default_registry(Settings(allow_private_networks=allow_private))


async def _probe(registry: CheckRegistry, integration_type: str, **fields: Any) -> HealthResult:
    org = uuid.uuid4()
    config = registry.parse(
        {
            "integration_id": str(uuid.uuid4()),
            "org_id": str(org),
            "integration_type": integration_type,
            "name": "ssrf probe",
            **fields,
        }
    )
    async with registry:
        [(_, result)] = await run_health_checks(
            org, integrations=[config], store=None, registry=registry, timeout_s=5.0
        )
    return result


def _refused(result: HealthResult) -> bool:
    return (
        result.status is HealthStatus.UNREACHABLE
        and result.error_code is ErrorCode.CONFIG_INVALID
        and "ALLOW_PRIVATE_NETWORKS" in (result.error or "")
    )


def _loopback_names() -> list[str]:
    """Names this machine resolves to loopback (from /etc/hosts): real DNS answers, no fakes."""
    names = ["localhost", "localhost.", "LocalHost"]
    hostname = socket.gethostname()
    try:
        if all(not is_public_address(i[4][0]) for i in socket.getaddrinfo(hostname, 80)):
            names.append(hostname)
    except OSError:
        pass
    return names


# host spelling -> which fake it would reach if the guard let it through ("4" or "6")
REACHABLE_SPELLINGS: dict[str, str] = {
    "127.0.0.1": "4",
    "127.1": "4",
    "2130706433": "4",
    "0x7f000001": "4",
    "0177.0.0.1": "4",
    "0.0.0.0": "4",  # noqa: S104 - a target to refuse (Linux connects it to loopback)
    "[::ffff:127.0.0.1]": "4",
    "[::ffff:7f00:1]": "4",
    "[::1]": "6",
    "[0:0:0:0:0:0:0:1]": "6",
    "[::]": "6",
    **dict.fromkeys(_loopback_names(), "4"),
}

ODD_SPELLINGS = {"127.1", "2130706433", "0x7f000001", "0177.0.0.1", "localhost."}
"""Spellings aiohttp refuses as non-canonical (or the resolver cannot answer here)."""

UNREACHABLE_TARGETS = [
    "169.254.169.254",  # cloud metadata
    "[::ffff:169.254.169.254]",  # the same, IPv4-mapped
    "[fd00:ec2::254]",  # AWS metadata over IPv6
    "100.100.100.200",  # Alibaba metadata (CGNAT range)
    "10.0.0.1",
    "10.255.255.254",
    "192.168.1.1",
    "172.16.0.1",
    "172.31.255.255",
    "[::ffff:10.0.0.1]",
    "[fd12:3456::1]",
    "[fe80::1]",
    "224.0.0.1",
    "255.255.255.255",
]

# IPv6 forms that embed a private IPv4 address and that the guard currently treats as public.
# On a network with a NAT64 gateway or a 6to4 relay they lead to the embedded address.
EMBEDDED_V4_GAPS = [
    "[64:ff9b::a9fe:a9fe]",  # NAT64 well-known prefix + 169.254.169.254
    "[64:ff9b:1::a9fe:a9fe]",  # local-use NAT64 prefix
    "[2002:a9fe:a9fe::1]",  # 6to4 of 169.254.169.254
    "[::a9fe:a9fe]",  # deprecated IPv4-compatible form
]


@pytest.mark.parametrize("host", list(REACHABLE_SPELLINGS))
async def test_loopback_spellings_are_refused_and_never_reached(
    host: str, fake4: tuple[HttpEndpointFake, int], fake6: tuple[HttpEndpointFake, int]
) -> None:
    """Every spelling of a loopback target is refused by default; the fake sees nothing."""
    fake, port = fake4 if REACHABLE_SPELLINGS[host] == "4" else fake6
    fake.requests.clear()
    result = await _probe(_registry(False), "http", url=f"http://{host}:{port}/ok")
    assert fake.requests == []
    if host in ODD_SPELLINGS:  # refused before the guard: not a URL aiohttp accepts / no name
        assert result.status is HealthStatus.UNREACHABLE
        assert result.error_code in (ErrorCode.CONFIG_INVALID, ErrorCode.DNS), result.error
    else:
        assert _refused(result), (result.status, result.error_code, result.error)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "[::1]"])
async def test_the_same_targets_are_reached_when_private_networks_are_allowed(
    host: str, fake4: tuple[HttpEndpointFake, int], fake6: tuple[HttpEndpointFake, int]
) -> None:
    """The control: with ALLOW_PRIVATE_NETWORKS the same URL is probed (the guard refused it)."""
    fake, port = fake4 if REACHABLE_SPELLINGS[host] == "4" else fake6
    fake.requests.clear()
    result = await _probe(_registry(True), "http", url=f"http://{host}:{port}/ok")
    assert result.status is HealthStatus.HEALTHY, result.error
    assert len(fake.requests) >= 1


@pytest.mark.parametrize("host", UNREACHABLE_TARGETS)
async def test_private_and_metadata_targets_are_refused_at_once(host: str) -> None:
    """Metadata, RFC 1918, ULA, link-local and multicast targets are refused without a connect."""
    started = time.monotonic()
    result = await _probe(_registry(False), "http", url=f"http://{host}/latest/meta-data/")
    assert _refused(result), (result.status, result.error_code, result.error)
    assert time.monotonic() - started < 4.0  # no connection attempt to time out


@pytest.mark.parametrize("host", EMBEDDED_V4_GAPS)
async def test_ipv6_forms_embedding_a_private_ipv4_are_refused(host: str) -> None:
    """NAT64, 6to4 and IPv4-compatible addresses that embed a private IPv4 are refused too."""
    result = await _probe(_registry(False), "http", url=f"http://{host}/latest/meta-data/")
    assert _refused(result), (result.status, result.error_code, result.error)


@pytest.mark.parametrize(
    ("integration_type", "fields"),
    [
        ("xledger", {"api_token": "canary-ssrf-xledger-token", "base_url": "http://169.254.169.254"}),
        (
            "business_central",
            {
                "tenant_id": str(uuid.uuid4()),
                "environment": "production",
                "client_id": str(uuid.uuid4()),
                "client_secret": "canary-ssrf-bc-secret",
                "authority_url": "http://10.0.0.1",
            },
        ),
        (
            "business_central",
            {
                "tenant_id": str(uuid.uuid4()),
                "environment": "production",
                "client_id": str(uuid.uuid4()),
                "client_secret": "canary-ssrf-bc-secret",
                "base_url": "http://[::ffff:192.168.0.1]",
                "authority_url": "http://192.168.0.2",
            },
        ),
    ],
)  # fmt: skip
async def test_vendor_url_overrides_cannot_point_inside(
    integration_type: str, fields: dict[str, Any]
) -> None:
    """A vendor adapter's base_url/authority_url override is guarded like any URL."""
    result = await _probe(_registry(False), integration_type, **fields)
    assert _refused(result), (result.status, result.error_code, result.error)
    assert "canary-ssrf" not in result.model_dump_json()


@pytest.mark.parametrize(
    "location",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_stats",
        "ftp://127.0.0.1/",
        "dict://127.0.0.1:11211/",
    ],
)
async def test_redirect_hops_are_checked_even_when_private_networks_are_allowed(
    location: str, fake4: tuple[HttpEndpointFake, int]
) -> None:
    """A redirect to a non-HTTP scheme is refused: every hop passes the target check again."""
    _, port = fake4
    result = await _probe(
        _registry(True),
        "http",
        url=f"http://127.0.0.1:{port}/redirect-to?url={location}",
        method="GET",
    )
    assert result.status is HealthStatus.UNREACHABLE, result
    assert result.error_code is ErrorCode.CONFIG_INVALID, result.error
    assert "http:// and https://" in (result.error or "")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254"])
async def test_the_guarded_client_refuses_before_connecting(
    host: str, fake4: tuple[HttpEndpointFake, int]
) -> None:
    """HttpClient.request (the loop every redirect hop goes through) refuses before connecting."""
    from integration_health.adapters._http import HttpClient
    from integration_health.errors import UnsafeTargetError

    client = HttpClient(Settings(allow_private_networks=False))
    try:
        fake, port = fake4
        fake.requests.clear()
        with pytest.raises(UnsafeTargetError):
            await client.request("GET", f"http://{host}:{port}/ok")
        assert fake.requests == []
    finally:
        await client.aclose()
