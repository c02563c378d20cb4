"""PostgreSQL keeps the never-checked integrations in a table of their own (migration
20261207010000), by triggers: planning reads it instead of comparing every integration with
every status row. These tests hold the triggers to the definition — never checked means no
status row — through every way a status or an integration comes and goes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from integration_health import HealthResult, HealthStatus
from integration_health.checks import IntegrationRecord
from integration_health.store import Organization, ResultWrite, SlotClaim
from integration_health.store import postgres as postgres_module
from integration_health.store.base import INITIAL_SLOT
from integration_health.store.postgres import PostgresStore, migrations

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


async def _sql(store: PostgresStore, query: str, params: Sequence[Any] = ()) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(store._conninfo, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


async def _unchecked(store: PostgresStore) -> set[uuid.UUID]:
    rows = await _sql(store, "select integration_id from public.integration_health_unchecked")
    return {r[0] for r in rows}


async def _never_checked(store: PostgresStore) -> set[uuid.UUID]:
    """The definition: integrations without a status row."""
    rows = await _sql(
        store,
        "select i.id from public.integrations i where not exists"
        " (select 1 from public.integration_health_status s where s.integration_id = i.id)",
    )
    return {r[0] for r in rows}


async def _seed(store: PostgresStore, count: int) -> tuple[uuid.UUID, list[IntegrationRecord]]:
    org = uuid.uuid4()
    items = [
        IntegrationRecord(uuid.uuid4(), org, "http", f"i{n}", {"url": f"https://x{n}.test"})
        for n in range(count)
    ]
    await store.import_definitions([Organization(org, "Org")], [], items)
    return org, items


def _write(item: IntegrationRecord, at: datetime = T0) -> ResultWrite:
    return ResultWrite(
        item.org_id,
        item.integration_id,
        item.integration_type,
        HealthResult(status=HealthStatus.HEALTHY, latency_ms=3, checked_at=at),
        next_check_at=at + timedelta(minutes=15),
    )


async def _due_never_checked(
    store: PostgresStore,
    at: datetime,
    *,
    claimed_since: datetime | None = None,
    claimed_by_me: str | None = None,
) -> list[uuid.UUID]:
    due = await store.list_due(at, claimed_since=claimed_since, claimed_by_me=claimed_by_me)
    return [d.integration.integration_id for d in due if d.status is None]


async def test_new_integrations_wait_until_their_first_status(pg_store: PostgresStore) -> None:
    _, items = await _seed(pg_store, 6)
    ids = {i.integration_id for i in items}
    assert await _unchecked(pg_store) == ids
    assert sorted(await _due_never_checked(pg_store, T0)) == sorted(ids)  # in id order

    first, rest = items[:4], items[4:]
    await pg_store.record_results([_write(i) for i in first])
    assert await _unchecked(pg_store) == {i.integration_id for i in rest}
    assert await _due_never_checked(pg_store, T0) == sorted(i.integration_id for i in rest)
    # a second result changes nothing (an update, not a first status)
    await pg_store.record_results([_write(i, T0 + timedelta(minutes=15)) for i in first])
    assert await _unchecked(pg_store) == await _never_checked(pg_store)
    # each first status logged its event, from no status
    events = await _sql(
        pg_store,
        "select integration_id, from_status, to_status from public.integration_health_events",
    )
    assert sorted(events) == sorted((i.integration_id, None, "healthy") for i in first)


async def test_a_deleted_or_truncated_status_makes_its_integration_due_again(
    pg_store: PostgresStore,
) -> None:
    _, items = await _seed(pg_store, 3)
    await pg_store.record_results([_write(i) for i in items])
    assert await _unchecked(pg_store) == set()
    assert await _due_never_checked(pg_store, T0) == []

    gone = items[0].integration_id
    await _sql(
        pg_store, "delete from public.integration_health_status where integration_id = %s", [gone]
    )
    assert await _unchecked(pg_store) == {gone}
    assert await _due_never_checked(pg_store, T0) == [gone]

    await _sql(pg_store, "truncate public.integration_health_status")
    ids = {i.integration_id for i in items}
    assert await _unchecked(pg_store) == ids == await _never_checked(pg_store)
    assert sorted(await _due_never_checked(pg_store, T0)) == sorted(ids)


async def test_deleting_integrations_checked_or_not_leaves_nothing_behind(
    pg_store: PostgresStore,
) -> None:
    org, items = await _seed(pg_store, 4)
    await pg_store.record_results([_write(items[0]), _write(items[1])])
    # one checked and one never checked integration deleted, one statement
    doomed = [items[0].integration_id, items[2].integration_id]
    await _sql(pg_store, "delete from public.integrations where id = any(%s)", [doomed])
    assert await _unchecked(pg_store) == {items[3].integration_id}
    assert await _unchecked(pg_store) == await _never_checked(pg_store)
    # the organisation with all that is left (cascades through integrations and statuses)
    await _sql(pg_store, "delete from public.organizations where id = %s", [org])
    assert await _unchecked(pg_store) == set()


async def test_only_active_enabled_integrations_of_allowed_types_are_due(
    pg_store: PostgresStore,
) -> None:
    _, items = await _seed(pg_store, 4)
    paused, passive, other_type, plain = items
    await _sql(
        pg_store,
        "update public.integrations set enabled = false where id = %s",
        [paused.integration_id],
    )
    await _sql(
        pg_store,
        "update public.integrations set monitoring_mode = 'passive' where id = %s",
        [passive.integration_id],
    )
    await _sql(
        pg_store,
        "update public.integrations set integration_type = 'xledger' where id = %s",
        [other_type.integration_id],
    )
    due = await pg_store.list_due(T0, exclude_types=["xledger"])
    assert [d.integration.integration_id for d in due] == [plain.integration_id]
    due = await pg_store.list_due(T0)
    assert {d.integration.integration_id for d in due} == {
        plain.integration_id,
        other_type.integration_id,
    }


async def test_live_claims_of_never_checked_integrations_are_skipped(
    pg_store: PostgresStore,
) -> None:
    _, items = await _seed(pg_store, 3)
    held = items[0]
    claim = SlotClaim(held.org_id, held.integration_id, INITIAL_SLOT, "http")
    assert await pg_store.claim_slots([claim], worker="w1", at=T0, lease_s=60)
    due = await _due_never_checked(pg_store, T0, claimed_since=T0 - timedelta(seconds=60))
    assert sorted(due) == sorted(i.integration_id for i in items[1:])
    # the holder itself still sees its own claim as due (it renews it)
    due = await _due_never_checked(
        pg_store, T0, claimed_since=T0 - timedelta(seconds=60), claimed_by_me="w1"
    )
    assert sorted(due) == sorted(i.integration_id for i in items)


async def test_the_migration_fills_the_table_from_the_statuses_already_stored(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database of the previous version, some integrations checked and some not: the
    upgrade lists exactly the unchecked ones, and planning finds them."""
    older = migrations()[:-1]
    assert migrations()[-1][0] == "20261207010000_never_checked"
    store = await PostgresStore.open(pg_database)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(postgres_module, "migrations", lambda: older)
            await store.upgrade()
            _, items = await _seed(store, 5)
            await store.record_results([_write(i) for i in items[:2]])
        assert await store.upgrade() == ["20261207010000_never_checked"]
        expected = {i.integration_id for i in items[2:]}
        assert await _unchecked(store) == expected == await _never_checked(store)
        assert sorted(await _due_never_checked(store, T0)) == sorted(expected)
    finally:
        await store.aclose()


async def test_an_admin_adding_an_integration_through_the_api_role_lists_it(
    pg_store: PostgresStore,
) -> None:
    """The triggers run as their owner: an integration added as ``authenticated`` (an
    organisation admin, under RLS, no privilege on the table) still enters it."""
    org, _ = await _seed(pg_store, 0)
    user = uuid.uuid4()
    await _sql(
        pg_store,
        "insert into public.organization_members (org_id, user_id, role) values (%s, %s, 'admin')",
        [org, user],
    )
    new = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(pg_store._conninfo) as conn:
        await conn.execute(
            "select set_config('role', 'authenticated', true), "
            "set_config('request.jwt.claims', %s, true)",
            (f'{{"sub": "{user}"}}',),
        )
        await conn.execute(
            "insert into public.integrations (id, org_id, integration_type, name, config)"
            " values (%s, %s, 'http', 'new', '{\"url\": \"https://n.test\"}')",
            (new, org),
        )
        await conn.commit()
    assert await _unchecked(pg_store) == {new}
    assert await _due_never_checked(pg_store, T0) == [new]
