"""Row-level security on real PostgreSQL, tested as the roles themselves.

Each check runs inside a transaction that switches identity exactly as PostgREST does
(``set_config('role', …, true)`` and ``set_config('request.jwt.claims', …, true)``): the
connecting superuser and the table owner bypass RLS, so a test running as them would prove
nothing. Expected failures run inside savepoints so the transaction can go on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from integration_health import HealthResult, HealthStatus
from integration_health.checks import IntegrationRecord
from integration_health.store import Member, Organization, ResultWrite
from integration_health.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TABLES = (
    "organizations",
    "organization_members",
    "integrations",
    "integration_health_status",
    "integration_health_history",
)
ORG_COLUMN = {"organizations": "id"}


@dataclass
class World:
    """Two organisations with members, integrations, statuses and history."""

    url: str
    store: PostgresStore
    org_a: uuid.UUID
    org_b: uuid.UUID
    member_a: uuid.UUID
    admin_a: uuid.UUID
    member_b: uuid.UUID
    member_ab: uuid.UUID
    integrations_a: list[IntegrationRecord]
    integrations_b: list[IntegrationRecord]


def _record(org: uuid.UUID, name: str) -> IntegrationRecord:
    return IntegrationRecord(
        integration_id=uuid.uuid4(),
        org_id=org,
        integration_type="http",
        name=name,
        config={"url": "https://example.com", "bearer_token": "${TOKEN}"},
    )


@pytest.fixture
async def world(pg_store: PostgresStore, pg_migrated: str) -> World:
    """Org A (3 integrations) and org B (2), a member of each, an admin of A, one of both."""
    org_a, org_b = uuid.uuid4(), uuid.uuid4()
    member_a, admin_a, member_b, member_ab = (uuid.uuid4() for _ in range(4))
    a = [_record(org_a, f"a{i}") for i in range(3)]
    b = [_record(org_b, f"b{i}") for i in range(2)]
    await pg_store.import_definitions(
        [Organization(org_a, "A"), Organization(org_b, "B")],
        [
            Member(org_a, member_a),
            Member(org_a, admin_a, "admin"),
            Member(org_b, member_b),
            Member(org_a, member_ab),
            Member(org_b, member_ab),
        ],
        [*a, *b],
    )
    writes = [
        ResultWrite(
            org_id=item.org_id,
            integration_id=item.integration_id,
            integration_type="http",
            result=HealthResult(
                status=HealthStatus.HEALTHY, latency_ms=10, checked_at=T0 + timedelta(minutes=i)
            ),
        )
        for item in [*a, *b]
        for i in range(2)
    ]
    await pg_store.record_results(writes)
    return World(pg_migrated, pg_store, org_a, org_b, member_a, admin_a, member_b, member_ab, a, b)


Conn = psycopg.AsyncConnection[tuple[Any, ...]]


@asynccontextmanager
async def acting_as(
    url: str, role: str, claims: dict[str, Any] | None = None
) -> AsyncIterator[Conn]:
    """A transaction running as ``role`` with ``claims``, set the way PostgREST sets them."""
    async with await psycopg.AsyncConnection.connect(url) as conn:  # autocommit off: a transaction
        await conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (role, json.dumps(claims or {"role": role})),
        )
        assert await scalar(conn, "select current_user") == role
        yield conn
        await conn.rollback()


def user(user_id: uuid.UUID) -> dict[str, Any]:
    return {"sub": str(user_id), "role": "authenticated", "aud": "authenticated"}


async def scalar(conn: Conn, query: str, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def counts(conn: Conn, org: uuid.UUID) -> dict[str, int]:
    """Rows of each table that belong to ``org``, as the connection's role sees them."""
    return {
        table: await scalar(
            conn,
            f"select count(*) from public.{table} where {ORG_COLUMN.get(table, 'org_id')} = %s",
            (org,),
        )
        for table in TABLES
    }


async def owner_counts(world: World, org: uuid.UUID) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(world.url) as conn:
        return await counts(conn, org)


async def test_member_sees_all_of_own_org_and_nothing_of_another(world: World) -> None:
    """A member of org A, as `authenticated`, sees every row of A and 0 rows of B in every table."""
    all_a = await owner_counts(world, world.org_a)
    assert all_a == {
        "organizations": 1,
        "organization_members": 3,
        "integrations": 3,
        "integration_health_status": 3,
        "integration_health_history": 6,
    }
    async with acting_as(world.url, "authenticated", user(world.member_a)) as conn:
        assert await counts(conn, world.org_a) == all_a
        assert await counts(conn, world.org_b) == dict.fromkeys(TABLES, 0)
        # no filter at all: still only A
        assert await scalar(conn, "select count(*) from public.integrations") == 3
        assert (
            await scalar(
                conn, "select count(distinct org_id) from public.integration_health_history"
            )
            == 1
        )


async def test_member_of_both_sees_both(world: World) -> None:
    """A member of A and B sees all rows of both."""
    async with acting_as(world.url, "authenticated", user(world.member_ab)) as conn:
        assert await counts(conn, world.org_a) == await owner_counts(world, world.org_a)
        assert await counts(conn, world.org_b) == await owner_counts(world, world.org_b)


@pytest.mark.parametrize("claims", [{"sub": str(uuid.uuid4()), "role": "authenticated"}, {}])
async def test_user_in_no_org_sees_nothing(world: World, claims: dict[str, Any]) -> None:
    """A user who belongs to no organisation (or a request without a user) sees no rows."""
    async with acting_as(world.url, "authenticated", claims) as conn:
        for table in TABLES:
            assert await scalar(conn, f"select count(*) from public.{table}") == 0, table


async def test_anon_is_refused(world: World) -> None:
    """`anon` gets permission denied on every table and on the membership helper."""
    async with acting_as(world.url, "anon") as conn:
        for query in [
            *(f"select 1 from public.{t} limit 1" for t in TABLES),
            "select private.user_org_ids()",
        ]:
            with pytest.raises(pg_errors.InsufficientPrivilege):
                async with conn.transaction():  # a savepoint
                    await conn.execute(query)


async def test_authenticated_cannot_write_status_or_history(world: World) -> None:
    """Even an org admin cannot insert, update or delete status or history rows."""
    item = world.integrations_a[0]
    statements = [
        (
            "insert into public.integration_health_history (org_id, integration_id, status, "
            "latency_ms, checked_at) values (%s, %s, 'healthy', 1, now())",
            (item.org_id, item.integration_id),
        ),
        ("update public.integration_health_history set latency_ms = 0", None),
        ("delete from public.integration_health_history", None),
        (
            "insert into public.integration_health_status (org_id, integration_id, "
            "integration_type, status, latency_ms, checked_at) "
            "values (%s, %s, 'http', 'healthy', 1, now())",
            (item.org_id, uuid.uuid4()),
        ),
        ("update public.integration_health_status set status = 'healthy'", None),
        ("delete from public.integration_health_status", None),
    ]
    async with acting_as(world.url, "authenticated", user(world.admin_a)) as conn:
        for query, params in statements:
            with pytest.raises(pg_errors.InsufficientPrivilege):
                async with conn.transaction():
                    await conn.execute(query, params)
    assert (await owner_counts(world, world.org_a))["integration_health_history"] == 6


async def _try_manage(conn: Conn, org: uuid.UUID, existing: uuid.UUID) -> tuple[bool, int, int]:
    """Insert into, update and delete in ``org`` as the connection's role.

    Returns (insert allowed, rows updated, rows deleted).
    """
    try:
        async with conn.transaction():
            await conn.execute(
                "insert into public.integrations (org_id, integration_type, name, config) "
                "values (%s, 'http', 'new', '{}')",
                (org,),
            )
        inserted = True
    except pg_errors.InsufficientPrivilege:  # "new row violates row-level security policy"
        inserted = False
    async with conn.transaction():
        cur = await conn.execute(
            "update public.integrations set name = 'renamed' where id = %s", (existing,)
        )
        updated = cur.rowcount
    async with conn.transaction():
        cur = await conn.execute("delete from public.integrations where id = %s", (existing,))
        deleted = cur.rowcount
    return inserted, updated, deleted


async def test_admins_manage_their_own_orgs_integrations_only(world: World) -> None:
    """An admin of A may insert, update and delete A's integrations, and none of B's."""
    async with acting_as(world.url, "authenticated", user(world.admin_a)) as conn:
        a_item = world.integrations_a[0].integration_id
        assert await _try_manage(conn, world.org_a, a_item) == (True, 1, 1)
        # deleting the integration took its status and history with it
        assert (
            await scalar(
                conn,
                "select count(*) from public.integration_health_history where integration_id = %s",
                (a_item,),
            )
            == 0
        )
        b_item = world.integrations_b[0].integration_id
        assert await _try_manage(conn, world.org_b, b_item) == (False, 0, 0)
        # moving an integration of A into B is refused too
        with pytest.raises(pg_errors.InsufficientPrivilege):
            async with conn.transaction():
                await conn.execute(
                    "update public.integrations set org_id = %s where id = %s",
                    (world.org_b, world.integrations_a[1].integration_id),
                )
    assert (await owner_counts(world, world.org_b))["integrations"] == 2


async def test_plain_members_cannot_manage_integrations(world: World) -> None:
    """A plain member of A (and a member of both) can change no integration of either org."""
    for member in (world.member_a, world.member_ab):
        async with acting_as(world.url, "authenticated", user(member)) as conn:
            for org, items in (
                (world.org_a, world.integrations_a),
                (world.org_b, world.integrations_b),
            ):
                assert await _try_manage(conn, org, items[0].integration_id) == (False, 0, 0)


async def test_authenticated_cannot_change_memberships_or_organizations(world: World) -> None:
    """Users cannot add themselves to an organisation or rename one (no write grants)."""
    async with acting_as(world.url, "authenticated", user(world.admin_a)) as conn:
        for query, params in [
            (
                "insert into public.organization_members (org_id, user_id) values (%s, %s)",
                (world.org_b, world.admin_a),
            ),
            ("update public.organizations set name = 'mine'", None),
        ]:
            with pytest.raises(pg_errors.InsufficientPrivilege):
                async with conn.transaction():
                    await conn.execute(query, params)


async def test_service_role_sees_and_writes_everything(world: World) -> None:
    """`service_role` reads every organisation's rows and writes statuses and history."""
    async with acting_as(world.url, "service_role") as conn:
        assert await counts(conn, world.org_a) == await owner_counts(world, world.org_a)
        assert await counts(conn, world.org_b) == await owner_counts(world, world.org_b)
        item = world.integrations_b[0]
        await conn.execute(
            "insert into public.integration_health_history (org_id, integration_id, status, "
            "latency_ms, checked_at) values (%s, %s, 'degraded', 5, now())",
            (item.org_id, item.integration_id),
        )
        cur = await conn.execute(
            "update public.integration_health_status set status = 'degraded' where org_id = %s",
            (world.org_b,),
        )
        assert cur.rowcount == 2
        assert (
            await scalar(
                conn,
                "select count(*) from public.integration_health_history where org_id = %s",
                (world.org_b,),
            )
            == 5
        )


async def test_store_reads_as_user_are_filtered_by_rls(world: World) -> None:
    """`PostgresStore.as_user` returns only what RLS lets the user see."""
    b_item = world.integrations_b[0].integration_id
    async with world.store.as_user(user(world.member_a)) as reader:
        assert [o.id for o in await reader.list_organizations()] == [world.org_a]
        assert {i.org_id for i in await reader.list_integrations()} == {world.org_a}
        assert await reader.list_integrations(world.org_b) == []
        assert len(await reader.list_statuses(world.org_a)) == 3
        assert await reader.list_statuses(world.org_b) == []
        assert await reader.list_history(b_item) == []
        assert len(await reader.list_history(world.integrations_a[0].integration_id)) == 2
    async with world.store.as_user(user(world.member_ab)) as reader:
        assert len(await reader.list_statuses()) == 5
        assert len(await reader.list_history(b_item, limit=1)) == 1
    async with world.store.as_user({"sub": str(uuid.uuid4())}) as reader:
        assert await reader.list_organizations() == []
        assert await reader.list_statuses() == []
    # the identity ended with the transaction: the store itself still sees everything
    assert len(await world.store.list_statuses()) == 5
