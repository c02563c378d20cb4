"""Row-level security on alerting's tables, tested as the roles themselves (PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from integration_health import HealthStatus
from integration_health.checks import IntegrationRecord
from integration_health.store import Member, Organization

from .conftest import Backend, Receiver, Timeline, config_for, open_backend, record

pytestmark = pytest.mark.postgres

TABLES = ("alerts", "alert_deliveries", "alert_delivery_attempts", "alert_incidents")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]


@asynccontextmanager
async def acting_as(url: str, role: str, user_id: uuid.UUID | None = None) -> AsyncIterator[Conn]:
    """A transaction as ``role`` with JWT claims, set the way PostgREST sets them."""
    claims: dict[str, Any] = {"role": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (role, json.dumps(claims)),
        )
        yield conn
        await conn.rollback()


async def count(conn: Conn, table: str, where: str = "true", params: Any = None) -> int:
    cur = await conn.execute(f"select count(*) from public.{table} where {where}", params)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class World:
    backend: Backend
    org_a: uuid.UUID
    org_b: uuid.UUID
    member_a: uuid.UUID
    member_b: uuid.UUID


@pytest.fixture
async def world(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    receiver: tuple[Receiver, str],
    secret_env: str,
) -> AsyncIterator[World]:
    """Org A: an http alert (delivered) and an xledger alert grouped under a vendor incident
    with 5 other organisations; org B: an http alert (delivered)."""
    _, url = receiver
    backend = await open_backend("postgres", tmp_path, request)
    org_a, org_b = uuid.uuid4(), uuid.uuid4()
    others = [uuid.uuid4() for _ in range(5)]
    member_a, member_b = uuid.uuid4(), uuid.uuid4()

    def integration(org: uuid.UUID, kind: str) -> IntegrationRecord:
        return IntegrationRecord(uuid.uuid4(), org, kind, f"{kind} of {org}", {})

    http = [integration(org_a, "http"), integration(org_b, "http")]
    xledger = [integration(org, "xledger") for org in (org_a, *others)]
    await backend.main.import_definitions(
        [Organization(o, str(o)) for o in (org_a, org_b, *others)],
        [Member(org_a, member_a), Member(org_b, member_b)],
        [*http, *xledger],
    )
    service = await backend.service(config_for(url))
    timeline = Timeline()
    for _ in range(3):
        await record(backend.main, [*http, *xledger], HealthStatus.UNREACHABLE, timeline.next())
        await service.run_once(timeline.now)
    assert len(await service.store.list_incidents()) == 1
    yield World(backend, org_a, org_b, member_a, member_b)
    await backend.aclose()


async def test_members_see_their_organisations_alerting_rows_only(world: World) -> None:
    """A member sees their org's alerts, deliveries and delivery log, never another org's."""
    url = world.backend.url
    async with acting_as(url, "authenticated", world.member_a) as conn:
        assert await count(conn, "alerts") == 2
        assert await count(conn, "alerts", "org_id <> %s", (world.org_a,)) == 0
        assert await count(conn, "alert_deliveries") == 1
        assert await count(conn, "alert_delivery_attempts") == 1
        assert await count(conn, "alert_incidents") == 1  # its xledger alert is grouped there
    async with acting_as(url, "authenticated", world.member_b) as conn:
        assert await count(conn, "alerts") == 1
        assert await count(conn, "alerts", "org_id = %s", (world.org_a,)) == 0
        assert await count(conn, "alert_deliveries") == 1
        assert await count(conn, "alert_delivery_attempts") == 1
        assert await count(conn, "alert_incidents") == 0  # not affected: not visible
    async with acting_as(url, "authenticated", uuid.uuid4()) as conn:
        for table in TABLES:
            assert await count(conn, table) == 0, table


async def test_anon_and_members_are_refused_what_is_not_theirs(world: World) -> None:
    """anon reads nothing; members cannot write alerting rows nor read the engine's state."""
    url = world.backend.url
    async with acting_as(url, "anon") as conn:
        for table in (*TABLES, "alert_integration_state"):
            with pytest.raises(pg_errors.InsufficientPrivilege):
                async with conn.transaction():
                    await conn.execute(f"select 1 from public.{table} limit 1")
    async with acting_as(url, "authenticated", world.member_a) as conn:
        for statement in (
            "select 1 from public.alert_integration_state",
            "update public.alerts set state = 'resolved'",
            "delete from public.alert_deliveries",
            "insert into public.alert_incidents (id, integration_type, state, opened_at, "
            "failing_orgs, failing_integrations, total_integrations, peak_failing_orgs) "
            "values (gen_random_uuid(), 'x', 'open', now(), 1, 1, 1, 1)",
        ):
            with pytest.raises(pg_errors.InsufficientPrivilege):
                async with conn.transaction():
                    await conn.execute(statement)


async def test_service_role_writes(world: World) -> None:
    """service_role (BYPASSRLS) reads and writes every alerting table."""
    async with acting_as(world.backend.url, "service_role") as conn:
        assert await count(conn, "alerts") == 8
        await conn.execute("update public.alerts set error = error")
        await conn.execute(
            "insert into public.alert_delivery_attempts (delivery_id, attempt, at, outcome, "
            "duration_ms, worker) select id, 9, now(), 'failed', 0, 'x' "
            "from public.alert_deliveries limit 1"
        )
        assert await count(conn, "alert_integration_state") == 8
