"""Vendor faults: each classified, bounded in time and memory, the rest of the run unaffected.

One organisation holds one integration per fault (generic ``http``, ``xledger`` and
``tcp_tls`` adapters against :class:`~integration_health.testing.faults.FaultServer`) next to
an OAuth vendor (``business_central``) whose token endpoint misbehaves, and healthy
integrations against the healthy fakes; a single ``run_health_checks`` runs them all
at once, as production does. Everything goes over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from integration_health import ErrorCode, HealthStatus, Settings, run_health_checks
from integration_health.adapters.http import HttpConfig
from integration_health.checks import IntegrationRecord, default_registry
from integration_health.store import MemoryStore
from integration_health.store.base import Organization
from integration_health.testing import HttpEndpointFake, LocalServer
from integration_health.testing.faults import UNRESOLVABLE_HOST, FaultServer
from integration_health.testing.tls_server import TestCertificates
from integration_health.testing.vendors.xledger import XledgerFake

DEADLINE_S = 2.5
"""The runner's deadline in these tests (short, so trickling servers end quickly)."""
TIME_MARGIN_MS = 750
"""How far past the deadline a result may be reported (generous: the machine is shared)."""
MEMORY_BOUND_BYTES = 20 * 1024 * 1024
"""Peak traced Python memory for the whole run, 100 MiB bodies included."""
HEALTHY_LATENCY_MS = 1_500
"""Healthy integrations stay below the 2 000 ms degraded threshold despite the faults."""
TOKEN = "xl-fault-token-5f1c9a0e7d"
"""A test token: it must never appear in a result."""
SECRET = "bc-fault-secret-8d2b61"
"""A test client secret: it must never appear in a result either."""
BIG = 100 * 1024 * 1024

UNREACHABLE = HealthStatus.UNREACHABLE
HEALTHY = HealthStatus.HEALTHY


@dataclass(frozen=True)
class Expect:
    """What one integration of the run must end as."""

    status: HealthStatus
    code: ErrorCode | None
    words: str = ""
    """A phrase the error message must contain (plain language, not an exception dump)."""


@pytest.fixture(scope="module")
def certificates() -> Iterator[TestCertificates]:
    certs = TestCertificates()
    yield certs
    certs.cleanup()


@pytest.fixture
def ca_bundle(
    certificates: TestCertificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The private CA, trusted by HTTP checks through SSL_CERT_FILE and by tcp_tls via ca_bundle.

    Trusting the CA lets an expired or wrong-host certificate be reported as such rather than
    as untrusted (OpenSSL reports the first problem it meets: an unknown issuer).
    """
    path = certificates.write_ca_bundle(tmp_path / "ca.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return str(path)


@dataclass
class Servers:
    faults: FaultServer
    tls: dict[str, FaultServer]
    endpoint: str
    xledger: str


@pytest.fixture
async def servers(certificates: TestCertificates) -> AsyncIterator[Servers]:
    endpoint = HttpEndpointFake()
    xledger = XledgerFake(token=TOKEN)
    async with (
        FaultServer(big_bytes=BIG) as faults,
        FaultServer(tls="valid", certificates=certificates) as valid,
        FaultServer(tls="expired", certificates=certificates) as expired,
        FaultServer(tls="untrusted", certificates=certificates) as untrusted,
        FaultServer(tls="wrong_host", certificates=certificates) as wrong_host,
        LocalServer(endpoint.app) as endpoint_server,
        LocalServer(xledger.app) as xledger_server,
    ):
        yield Servers(
            faults=faults,
            tls={
                "valid": valid,
                "expired": expired,
                "untrusted": untrusted,
                "wrong_host": wrong_host,
            },
            endpoint=endpoint_server.url,
            xledger=xledger_server.url,
        )


TLS_EXPECT = {
    "valid": Expect(HEALTHY, None),
    "expired": Expect(UNREACHABLE, ErrorCode.TLS, "certificate has expired"),
    "untrusted": Expect(UNREACHABLE, ErrorCode.TLS, "not signed by a trusted CA"),
    "wrong_host": Expect(UNREACHABLE, ErrorCode.TLS, "not valid for 'localhost'"),
}


def build_org(org: uuid.UUID, s: Servers, ca_bundle: str) -> list[tuple[IntegrationRecord, Expect]]:
    """One integration per (adapter, fault) plus healthy ones, with what each must end as."""
    plan: list[tuple[IntegrationRecord, Expect]] = []

    def add(kind: str, name: str, expect: Expect, **config: Any) -> None:
        record = IntegrationRecord(
            integration_id=uuid.uuid4(),
            org_id=org,
            integration_type=kind,
            name=f"{kind} {name}",
            config=config,
            check_interval_s=3_600,
        )
        plan.append((record, expect))

    def http(name: str, url: str, expect: Expect, **fields: Any) -> None:
        add("http", name, expect, url=url, **fields)

    def xledger(name: str, base_url: str, expect: Expect) -> None:
        add("xledger", name, expect, base_url=base_url, api_token="${XL_FAULT_TOKEN}")

    def business_central(name: str, authority_url: str, expect: Expect) -> None:
        """Business Central's OAuth token request (shared ``_oauth`` code) meets the fault."""
        add(
            "business_central",
            name,
            expect,
            tenant_id=str(uuid.uuid4()),
            environment="Production",
            client_id=str(uuid.uuid4()),
            client_secret="${BC_FAULT_SECRET}",
            authority_url=authority_url,
            base_url=s.faults.url_for("ok"),
        )

    def tcp_tls(name: str, host: str, port: int, expect: Expect) -> None:
        add("tcp_tls", name, expect, host=host, port=port, ca_bundle=ca_bundle)

    f = s.faults
    reset = Expect(UNREACHABLE, ErrorCode.CONNECTION, "reset the connection")
    cut = Expect(UNREACHABLE, ErrorCode.CONNECTION, "broke off in the middle of the answer")
    timeout = Expect(UNREACHABLE, ErrorCode.TIMEOUT, f"No answer within {DEADLINE_S:g} s")
    too_big = Expect(UNREACHABLE, ErrorCode.BAD_RESPONSE, "larger than 1,048,576 bytes")
    loop = Expect(UNREACHABLE, ErrorCode.BAD_RESPONSE, "redirect loop")
    dns = Expect(UNREACHABLE, ErrorCode.DNS, f"{UNRESOLVABLE_HOST} could not be resolved")

    # Generic http adapter: it judges status and headers and never reads a body, so body
    # faults (a 100 MiB answer to GET) must not cost it time or memory.
    http("reset mid-headers", f.url_for("reset-head"), reset)
    http("trickle", f.url_for("trickle-head"), timeout)
    http("100 MiB body (GET)", f.url_for("big"), Expect(HEALTHY, None), method="GET")
    http("gzip bomb (GET)", f.url_for("gzip-bomb"), Expect(HEALTHY, None), method="GET")
    http("redirect loop", f.url_for("loop"), loop)
    http("dns", f"https://{UNRESOLVABLE_HOST}/health", dns)
    for scenario, server in s.tls.items():
        http(f"tls {scenario}", server.url_for("ok"), TLS_EXPECT[scenario])

    # Xledger reads (and caps) the GraphQL answer: every body fault shows.
    xledger("reset mid-headers", f.url_for("reset-head"), reset)
    xledger("reset mid-body", f.url_for("reset-body"), cut)
    xledger("trickle headers", f.url_for("trickle-head"), timeout)
    xledger("trickle body", f.url_for("trickle-body"), timeout)
    xledger("100 MiB body", f.url_for("big"), too_big)
    xledger("100 MiB body, no length", f.url_for("big-stream"), too_big)
    xledger("gzip bomb (100 KiB → 100 MiB)", f.url_for("gzip-bomb"), too_big)
    xledger("redirect loop", f.url_for("loop"), loop)
    xledger("dns", f"https://{UNRESOLVABLE_HOST}", dns)
    for scenario, server in s.tls.items():
        xledger(f"tls {scenario}", server.url_for("ok"), TLS_EXPECT[scenario])

    # OAuth vendors: the token endpoint is where the fault happens.
    business_central("token reset mid-body", f.url_for("reset-body"), cut)
    business_central("token trickle body", f.url_for("trickle-body"), timeout)
    business_central("token 100 MiB body", f.url_for("big-stream"), too_big)
    business_central("token gzip bomb", f.url_for("gzip-bomb"), too_big)
    business_central(
        "token redirect", f.url_for("loop"), Expect(UNREACHABLE, ErrorCode.BAD_RESPONSE, "302")
    )
    business_central("token tls expired", s.tls["expired"].url, TLS_EXPECT["expired"])

    for scenario, server in s.tls.items():
        tcp_tls(scenario, "localhost", server.port, TLS_EXPECT[scenario])
    tcp_tls("dns", UNRESOLVABLE_HOST, 443, Expect(UNREACHABLE, ErrorCode.DNS, "resolved"))

    # The healthy rest of the organisation.
    for n in range(3):
        http(f"healthy {n}", f"{s.endpoint}/ok", Expect(HEALTHY, None))
        xledger(f"healthy {n}", s.xledger, Expect(HEALTHY, None))
    return plan


async def test_every_fault_classified_bounded_and_isolated(
    servers: Servers, ca_bundle: str
) -> None:
    """One run with every vendor fault: each gets its status and error code within the
    deadline, memory stays bounded through four 100 MiB answers and three gzip bombs (100 KiB
    that inflate to 100 MiB), healthy integrations stay
    healthy and fast, every result is stored, and no secret shows."""
    org = uuid.uuid4()
    plan = build_org(org, servers, ca_bundle)
    store = MemoryStore()
    await store.import_definitions([Organization(org, "Faulty AS")], [], [r for r, _ in plan])
    registry = default_registry(Settings(allow_private_networks=True, database_url="memory://"))
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.monotonic()
    try:
        outcomes = await run_health_checks(
            org,
            store=store,
            registry=registry,
            timeout_s=DEADLINE_S,
            environ={"XL_FAULT_TOKEN": TOKEN, "BC_FAULT_SECRET": SECRET},
        )
        wall_s = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    results = {o.integration.integration_id: o.result for o in outcomes}
    assert len(results) == len(plan)
    problems = []
    for config, expect in plan:
        result = results[config.integration_id]
        got = (result.status, result.error_code)
        if got != (expect.status, expect.code):
            problems.append(
                f"{config.name}: {got} != {(expect.status, expect.code)}: {result.error}"
            )
        elif expect.words and expect.words not in (result.error or ""):
            problems.append(f"{config.name}: message {result.error!r} lacks {expect.words!r}")
        if result.latency_ms > DEADLINE_S * 1000 + TIME_MARGIN_MS:
            problems.append(f"{config.name}: {result.latency_ms} ms is past the deadline")
        if expect.code is ErrorCode.TIMEOUT and result.latency_ms < DEADLINE_S * 1000 - 50:
            problems.append(f"{config.name}: timed out early, after {result.latency_ms} ms")
        if expect.status is HEALTHY and result.latency_ms > HEALTHY_LATENCY_MS:
            problems.append(f"{config.name}: healthy but slow ({result.latency_ms} ms)")
        dumped = result.model_dump_json()
        if TOKEN in dumped or SECRET in dumped or "Traceback" in dumped:
            problems.append(f"{config.name}: secret or traceback in {dumped}")
    assert not problems, "\n".join(problems)

    assert wall_s < DEADLINE_S + 2.0, f"the run took {wall_s:.2f} s"
    assert peak < MEMORY_BOUND_BYTES, f"peak traced memory {peak / 2**20:.1f} MiB"
    # The clients stopped early: far less than the 2 x 100 MiB offered left the server.
    assert servers.faults.body_bytes_sent < BIG, servers.faults.body_bytes_sent
    statuses = {row.integration_id: row for row in await store.list_statuses(org)}
    assert statuses.keys() == results.keys()
    assert all(statuses[i].status == r.status for i, r in results.items())


async def test_fault_server_streams_big_bodies_without_holding_them() -> None:
    """The fault server sends a whole 100 MiB body while its memory stays flat (it streams)."""
    async with FaultServer(big_bytes=BIG) as server:
        tracemalloc.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /big-stream HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            received = 0
            while chunk := await reader.read(1024 * 1024):
                received += len(chunk)
            writer.close()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    head_bytes = received - BIG
    assert 0 < head_bytes < 200, received
    assert server.body_bytes_sent == BIG
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


async def read_to_end(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def test_reset_is_a_tcp_rst_not_a_clean_close() -> None:
    """``reset-body`` sends part of the answer and then a RST: the reader sees a reset."""
    async with FaultServer() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /reset-body HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Content-Length: 1000" in head
        with pytest.raises(ConnectionResetError):
            await read_to_end(reader)
        writer.close()


async def test_redirect_loop_stops_after_the_limit() -> None:
    """A redirect loop costs six requests (the first and five redirects), then bad_response."""
    async with FaultServer() as server:
        org = uuid.uuid4()
        config = HttpConfig(
            integration_id=uuid.uuid4(), org_id=org, name="loop", url=server.url_for("loop")
        )
        [(_, result)] = await run_health_checks(
            org,
            integrations=[config],
            store=None,
            registry=default_registry(Settings(allow_private_networks=True)),
            timeout_s=DEADLINE_S,
        )
    assert (result.status, result.error_code) == (UNREACHABLE, ErrorCode.BAD_RESPONSE)
    assert result.details["redirects"] == 5
    assert len(server.requests) == 6
