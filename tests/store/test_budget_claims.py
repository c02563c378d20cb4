"""Request budgets hold between workers that claim at the same moment (PostgreSQL, SQLite).

Eight stores with connections of their own — eight workers, or eight processes — claim ten
different slots of a budgeted type each, all at once, against a budget of 10 per minute. The
budget's count and the claims are one step (`Store.claim_slots` with ``budgets``): ten are made
in all, however the eight interleave. Counted first and claimed after, each would count none
spent and make its ten: 80 (seen on PostgreSQL with the advisory lock taken out).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from integration_health.checks import IntegrationRecord
from integration_health.store import Organization, SQLiteStore, Store
from integration_health.store.base import SlotClaim
from integration_health.store.postgres import PostgresStore

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BUDGETS = {"xledger": 10}


async def race(stores: Sequence[Store]) -> None:
    org = uuid.uuid4()
    items = [
        IntegrationRecord(
            integration_id=uuid.uuid4(),
            org_id=org,
            integration_type="xledger",
            name=f"x{n}",
            config={},
        )
        for n in range(80)
    ]
    await stores[0].import_definitions([Organization(org, "Acme")], [], items)
    batches = [
        [SlotClaim(org, i.integration_id, T0, "xledger") for i in items[n :: len(stores)]]
        for n in range(len(stores))
    ]
    for expected in (10, 0):  # then again: nothing is left of the minute's budget
        got = await asyncio.gather(
            *(
                store.claim_slots(batch, worker=f"w{n}", at=T0, lease_s=60, budgets=BUDGETS)
                for n, (store, batch) in enumerate(zip(stores, batches, strict=True))
            )
        )
        assert sum(map(len, got)) == expected, [len(g) for g in got]
        since = T0 - timedelta(minutes=1)
        assert await stores[0].count_claims(["xledger"], since=since) == {"xledger": 10}


async def test_budgets_hold_between_postgres_workers_claiming_at_once(pg_migrated: str) -> None:
    """Eight PostgresStores (pools of one connection each) on one database."""
    stores = [await PostgresStore.open(pg_migrated, min_size=1, max_size=1) for _ in range(8)]
    try:
        await race(stores)
    finally:
        for store in stores:
            await store.aclose()


async def test_budgets_hold_between_sqlite_processes_claiming_at_once(tmp_path: Path) -> None:
    """Eight SQLiteStores (a connection and a thread each) on one database file."""
    url = f"sqlite:///{tmp_path / 'budgets.db'}"
    stores = [await SQLiteStore.open(url) for _ in range(8)]
    try:
        await race(stores)
    finally:
        for store in stores:
            await store.aclose()
