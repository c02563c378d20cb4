"""The generic http adapter against a real local server (no mocks)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
from aiohttp import web

from integration_health import ErrorCode, HealthResult, HealthStatus, Settings, run_health_checks
from integration_health.adapters._results import parse_retry_after
from integration_health.adapters.http import HttpConfig
from integration_health.checks import CheckRegistry, default_registry
from integration_health.testing import HttpEndpointFake, LocalServer

Endpoint = tuple[HttpEndpointFake, str]


async def probe(
    url: str,
    *,
    registry: CheckRegistry | None = None,
    timeout_s: float = 3.0,
    **fields: Any,
) -> HealthResult:
    org = uuid.uuid4()
    config = HttpConfig(integration_id=uuid.uuid4(), org_id=org, name="probe", url=url, **fields)
    registry = registry or default_registry(Settings(allow_private_networks=True))
    [(_, result)] = await run_health_checks(
        org, integrations=[config], store=None, registry=registry, timeout_s=timeout_s
    )
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_ok_is_healthy_with_phases(endpoint: Endpoint) -> None:
    """HEAD to a 200 endpoint is healthy; latency and phases are recorded."""
    fake, url = endpoint
    result = await probe(f"{url}/ok")
    assert result.status is HealthStatus.HEALTHY
    assert result.details["http_status"] == 200
    assert result.details["method"] == "HEAD"
    assert {"connect_ms", "ttfb_ms", "total_ms"} <= set(result.details["phases"])
    assert 0 <= result.latency_ms < 1000
    [request] = fake.requests
    assert request.method == "HEAD"
    assert request.headers["User-Agent"].startswith("integration-health/")


async def test_slow_answer_is_degraded(endpoint: Endpoint) -> None:
    """An answer slower than degraded_latency_ms is degraded, not unreachable."""
    _, url = endpoint
    result = await probe(f"{url}/slow?ms=400", degraded_latency_ms=200)
    assert result.status is HealthStatus.DEGRADED
    assert result.error_code is None
    assert result.latency_ms >= 400


async def test_hang_times_out(endpoint: Endpoint) -> None:
    """A server that never answers is unreachable/timeout at the deadline."""
    _, url = endpoint
    started = time.monotonic()
    result = await probe(f"{url}/hang", timeout_s=0.5)
    assert time.monotonic() - started < 1.0
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.TIMEOUT)
    assert 480 <= result.latency_ms < 900


@pytest.mark.parametrize(
    ("code", "status", "error_code"),
    [
        (500, HealthStatus.UNREACHABLE, ErrorCode.SERVER_ERROR),
        (503, HealthStatus.UNREACHABLE, ErrorCode.SERVER_ERROR),
        (401, HealthStatus.UNREACHABLE, ErrorCode.AUTH),
        (403, HealthStatus.UNREACHABLE, ErrorCode.AUTH),
        (404, HealthStatus.UNREACHABLE, ErrorCode.NOT_FOUND),
        (418, HealthStatus.UNREACHABLE, ErrorCode.BAD_RESPONSE),
        (204, HealthStatus.HEALTHY, None),
    ],
)
async def test_status_codes_map_to_results(
    endpoint: Endpoint, code: int, status: HealthStatus, error_code: ErrorCode | None
) -> None:
    """Each HTTP status class maps to the status and error code of DESIGN §4."""
    _, url = endpoint
    result = await probe(f"{url}/status/{code}")
    assert (result.status, result.error_code) == (status, error_code)
    assert result.details["http_status"] == code


async def test_rate_limit_is_degraded_with_retry_after(endpoint: Endpoint) -> None:
    """429 is degraded/rate_limited and Retry-After is kept in details."""
    _, url = endpoint
    result = await probe(f"{url}/status/429?retry_after=120")
    assert (result.status, result.error_code) == (HealthStatus.DEGRADED, ErrorCode.RATE_LIMITED)
    assert result.details["retry_after_s"] == 120
    assert "120 s" in (result.error or "")


async def test_connection_refused(endpoint: Endpoint) -> None:
    """Nothing listening is unreachable/connection, quickly."""
    result = await probe(f"http://127.0.0.1:{free_port()}/")
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.CONNECTION)
    assert "refused" in (result.error or "")


@pytest.mark.parametrize("path", ["/head-not-allowed", "/not-implemented-head"])
async def test_head_rejected_then_get(endpoint: Endpoint, path: str) -> None:
    """HEAD answered with 405/501 is retried with GET, which decides."""
    fake, url = endpoint
    result = await probe(f"{url}{path}")
    assert result.status is HealthStatus.HEALTHY
    assert result.details["head_fallback"] is True
    assert [r.method for r in fake.requests] == ["HEAD", "GET"]


async def test_expected_status(endpoint: Endpoint) -> None:
    """expected_status overrides the default 2xx/3xx rule both ways."""
    _, url = endpoint
    assert (await probe(f"{url}/status/404", expected_status=404)).status is HealthStatus.HEALTHY
    wrong = await probe(f"{url}/ok", expected_status=[201, 202])
    assert (wrong.status, wrong.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.BAD_RESPONSE)
    assert "expected 201, 202" in (wrong.error or "")


async def test_redirects_followed_and_loops_stopped(endpoint: Endpoint) -> None:
    """Up to 5 redirects are followed; a loop ends as bad_response."""
    _, url = endpoint
    followed = await probe(f"{url}/redirect/3")
    assert followed.status is HealthStatus.HEALTHY
    assert followed.details["redirects"] == 3
    loop = await probe(f"{url}/loop")
    assert loop.error_code is ErrorCode.BAD_RESPONSE
    assert "redirect" in (loop.error or "")
    not_followed = await probe(f"{url}/redirect/1", follow_redirects=False)
    assert not_followed.status is HealthStatus.HEALTHY  # a 302 is a 3xx: reachable


async def test_bearer_token_is_sent_and_never_leaks(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token comes from the environment; a wrong token is auth, and is never shown."""
    fake, url = endpoint
    monkeypatch.setenv("HOOK_TOKEN", fake.token)
    ok = await probe(f"{url}/auth", bearer_token="${HOOK_TOKEN}")
    assert ok.status is HealthStatus.HEALTHY
    monkeypatch.setenv("HOOK_TOKEN", "wrong-token-value")
    bad = await probe(f"{url}/auth", bearer_token="${HOOK_TOKEN}")
    assert bad.error_code is ErrorCode.AUTH
    assert "wrong-token-value" not in bad.model_dump_json()


async def test_connection_reset(endpoint: Endpoint) -> None:
    """A server that drops the connection is unreachable/connection."""
    _, url = endpoint
    result = await probe(f"{url}/reset", method="GET")
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.CONNECTION)


async def test_private_targets_are_refused_by_default(endpoint: Endpoint) -> None:
    """Without ALLOW_PRIVATE_NETWORKS, loopback by IP or by name is config_invalid (SSRF guard)."""
    fake, url = endpoint
    guarded = default_registry(Settings(allow_private_networks=False))
    by_ip = await probe(f"{url}/ok", registry=guarded)
    assert (by_ip.status, by_ip.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.CONFIG_INVALID)
    assert "ALLOW_PRIVATE_NETWORKS" in (by_ip.error or "")
    by_name = await probe(url.replace("127.0.0.1", "localhost") + "/ok", registry=guarded)
    assert by_name.error_code is ErrorCode.CONFIG_INVALID
    metadata = await probe("http://169.254.169.254/latest/meta-data", registry=guarded)
    assert metadata.error_code is ErrorCode.CONFIG_INVALID
    assert fake.requests == []


async def test_redirect_to_private_address_is_refused(endpoint: Endpoint) -> None:
    """Each redirect hop is checked again by the guard."""
    guarded = default_registry(Settings(allow_private_networks=False))

    async def redirect(_request: web.Request) -> web.Response:
        raise web.HTTPFound("http://10.0.0.1/admin")

    app = web.Application()
    app.router.add_route("*", "/", redirect)
    async with LocalServer(app) as server:
        # reach the first hop through the guard-free client, then see the hop refused
        result = await probe(server.url + "/", registry=guarded)
    assert result.error_code is ErrorCode.CONFIG_INVALID


@pytest.fixture
async def tls_server() -> AsyncIterator[str]:
    """An HTTPS server whose certificate no system trust store knows."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    fake = HttpEndpointFake()
    async with LocalServer(fake.app, ssl_context=context) as server:
        yield server.url


async def test_untrusted_certificate_is_tls(tls_server: str) -> None:
    """A certificate from an unknown CA is unreachable/tls."""
    result = await probe(f"{tls_server}/ok")
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.TLS)
    assert "certificate" in (result.error or "").lower()


async def test_dns_failure() -> None:
    """A name that does not resolve is unreachable/dns."""
    result = await probe("http://no-such-host.invalid/", timeout_s=8)
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.DNS)


def test_retry_after_parsing() -> None:
    """Retry-After accepts seconds and HTTP dates; garbage is ignored; values are clamped."""
    from datetime import UTC, datetime

    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Sat, 28 Nov 2026 12:01:00 GMT", now=now) == 60
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("999999999") == 24 * 3600


def test_http_config_validation() -> None:
    """Only http(s) URLs and real status codes are accepted."""
    from pydantic import ValidationError

    base = {"integration_id": uuid.uuid4(), "org_id": uuid.uuid4(), "name": "x"}
    with pytest.raises(ValidationError, match="http:// or https://"):
        HttpConfig(url="ftp://example.com", **base)
    with pytest.raises(ValidationError, match="between 100 and 599"):
        HttpConfig(url="https://example.com", expected_status=[999], **base)
    with pytest.raises(ValidationError, match="at least one"):
        HttpConfig(url="https://example.com", expected_status=[], **base)
    assert HttpConfig(url="https://e.com", expected_status=200, **base).expected_status == [200]


async def test_many_concurrent_probes_against_one_server(endpoint: Endpoint) -> None:
    """200 probes at once all succeed (each its own connection): no false timeouts."""
    fake, url = endpoint
    org = uuid.uuid4()
    configs = [
        HttpConfig(integration_id=uuid.uuid4(), org_id=org, name=f"p{i}", url=f"{url}/ok")
        for i in range(200)
    ]
    registry = default_registry(Settings(allow_private_networks=True))
    outcomes = await run_health_checks(
        org, integrations=configs, store=None, registry=registry, timeout_s=5
    )
    assert all(o.result.status is HealthStatus.HEALTHY for o in outcomes)
    assert fake.count("/ok") == 200
    await asyncio.sleep(0)
