"""PostgresStore beyond the shared contract: pruning trigger, batches, retries, URL handling."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import decimal
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from integration_health import HealthResult, HealthStatus
from integration_health.checks import IntegrationRecord
from integration_health.errors import StoreError, StoreUnavailable
from integration_health.model import ErrorCode
from integration_health.store import HISTORY_LIMIT, Organization, ResultWrite, SQLiteStore, Store
from integration_health.store.postgres import PostgresStore, _parse_url

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

INSERT_HISTORY = (
    "insert into public.integration_health_history (org_id, integration_id, status, latency_ms, "
    "checked_at) values (%s, %s, 'healthy', %s, %s)"
)


async def seed(store: Store, count: int = 1) -> list[IntegrationRecord]:
    org = uuid.uuid4()
    items = [
        IntegrationRecord(
            integration_id=uuid.uuid4(),
            org_id=org,
            integration_type="http",
            name=f"i{n}",
            config={"url": "https://example.com"},
        )
        for n in range(count)
    ]
    await store.import_definitions([Organization(org, "Acme")], [], items)
    return items


async def latencies(url: str, item: IntegrationRecord) -> list[int]:
    """History latencies of one integration, newest first, as the owner sees them."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "select latency_ms from public.integration_health_history where integration_id = %s "
            "order by checked_at desc, id desc",
            (item.integration_id,),
        )
        return [r[0] for r in await cur.fetchall()]


async def test_100_single_inserts_leave_the_newest_96(pg_store: PostgresStore) -> None:
    """100 history inserts, each in its own transaction, leave exactly the newest 96."""
    [item, other] = await seed(pg_store, 2)
    url = pg_store._conninfo
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(INSERT_HISTORY, (other.org_id, other.integration_id, 7, T0))
        for i in range(100):
            await conn.execute(
                INSERT_HISTORY, (item.org_id, item.integration_id, i, T0 + timedelta(minutes=i))
            )
    assert await latencies(url, item) == list(range(99, 3, -1))
    assert await latencies(url, other) == [7]


async def test_one_batched_insert_of_100_rows_leaves_the_newest_96(pg_store: PostgresStore) -> None:
    """One INSERT of 100 rows (in shuffled time order) leaves exactly the newest 96."""
    [item] = await seed(pg_store)
    url = pg_store._conninfo
    order = list(range(100))
    order = order[50:] + order[:50]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "insert into public.integration_health_history (org_id, integration_id, status, "
            "latency_ms, checked_at) select %s, %s, 'healthy', i, %s + i * interval '1 minute' "
            "from unnest(%s::int[]) as i",
            (item.org_id, item.integration_id, T0, order),
        )
    assert await latencies(url, item) == list(range(99, 3, -1))


async def test_two_concurrent_transactions_leave_exactly_96(pg_store: PostgresStore) -> None:
    """Two open transactions inserting for the same integration still leave exactly 96 rows."""
    [item] = await seed(pg_store)
    url = pg_store._conninfo
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for i in range(96):
            await conn.execute(
                INSERT_HISTORY, (item.org_id, item.integration_id, i, T0 + timedelta(minutes=i))
            )
    first = await psycopg.AsyncConnection.connect(url)
    second = await psycopg.AsyncConnection.connect(url)
    try:
        await first.execute(
            INSERT_HISTORY, (item.org_id, item.integration_id, 1000, T0 + timedelta(days=1))
        )
        # The second writer's trigger waits for the first writer's lock on the integration.
        blocked = asyncio.create_task(
            second.execute(
                INSERT_HISTORY, (item.org_id, item.integration_id, 2000, T0 + timedelta(days=2))
            )
        )
        await asyncio.sleep(0.3)
        assert not blocked.done()
        await first.commit()
        await blocked
        await second.commit()
    finally:
        await first.close()
        await second.close()
    history = await latencies(url, item)
    assert len(history) == HISTORY_LIMIT
    assert history[:2] == [2000, 1000]


def _result(status: HealthStatus, at: datetime) -> HealthResult:
    return HealthResult(
        status=status,
        latency_ms=1,
        checked_at=at,
        error=None if status is HealthStatus.HEALTHY else "down",
        error_code=None if status is HealthStatus.HEALTHY else ErrorCode.CONNECTION,
    )


@pytest.mark.parametrize(
    "batches",
    [
        ["UU", "UU"],  # a whole batch of failures adds to the stored count
        ["UU", "UHU"],  # a success inside the batch restarts the count
        ["H", "UUD"],  # degraded is not a failure
        ["UUU", "HU", "U"],
        ["D", "UHUU"],
    ],
)
async def test_batches_with_several_results_per_integration_count_like_sqlite(
    pg_store: PostgresStore, tmp_path: Path, batches: list[str]
) -> None:
    """consecutive_failures and last_healthy_at match SQLite's one-result-at-a-time outcome."""
    sqlite = await SQLiteStore.open(f"sqlite:///{tmp_path / 'ref.db'}")
    try:
        statuses = {
            "U": HealthStatus.UNREACHABLE,
            "H": HealthStatus.HEALTHY,
            "D": HealthStatus.DEGRADED,
        }
        outcomes = []
        for store in (pg_store, sqlite):
            [item] = await seed(store)
            minute = 0
            for batch in batches:
                writes = []
                for letter in batch:
                    minute += 1
                    writes.append(
                        ResultWrite(
                            org_id=item.org_id,
                            integration_id=item.integration_id,
                            integration_type="http",
                            result=_result(statuses[letter], T0 + timedelta(minutes=minute)),
                        )
                    )
                await store.record_results(writes[::-1])  # order inside a batch must not matter
            [status] = await store.list_statuses(item.org_id)
            outcomes.append((status.status, status.consecutive_failures, status.last_healthy_at))
        assert outcomes[0] == outcomes[1]
    finally:
        await sqlite.aclose()


async def test_a_result_with_the_wrong_organization_is_refused(pg_store: PostgresStore) -> None:
    """A result naming another organisation than its integration's is refused, nothing written."""
    [item] = await seed(pg_store)
    wrong = ResultWrite(
        org_id=uuid.uuid4(),
        integration_id=item.integration_id,
        integration_type="http",
        result=_result(HealthStatus.HEALTHY, T0),
    )
    with pytest.raises(StoreError, match="not stored"):
        await pg_store.record_results([wrong])
    assert await pg_store.list_history(item.integration_id) == []


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL that can cut or refuse connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        """Drop every open connection (as a restarting server or a failing network would)."""
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        self.cut()


@pytest.fixture
async def proxy(pg_store: PostgresStore) -> AsyncIterator[Proxy]:
    """A proxy to the server holding ``pg_store``'s database."""
    info = psycopg.conninfo.conninfo_to_dict(pg_store._conninfo)
    proxy = Proxy(int(info.get("port") or 5432))
    await proxy.start()
    yield proxy
    await proxy.stop()


def _through(store: PostgresStore, proxy: Proxy) -> str:
    info = psycopg.conninfo.conninfo_to_dict(store._conninfo)
    return f"postgresql://{info.get('user', 'postgres')}@127.0.0.1:{proxy.port}/{info['dbname']}"


async def test_lost_connections_are_retried(pg_store: PostgresStore, proxy: Proxy) -> None:
    """A write on a connection that died in the pool is retried on a new one and succeeds."""
    items = await seed(pg_store, 2)
    store = await PostgresStore.open(_through(pg_store, proxy), max_size=1, timeout=5)
    try:
        write = ResultWrite(
            org_id=items[0].org_id,
            integration_id=items[0].integration_id,
            integration_type="http",
            result=_result(HealthStatus.HEALTHY, T0),
        )
        assert await store.record_results([write]) == 1
        proxy.cut()
        again = ResultWrite(
            **{
                **write.__dict__,
                "result": _result(HealthStatus.DEGRADED, T0 + timedelta(minutes=1)),
            }
        )
        assert await store.record_results([again]) == 1
        assert [h.status for h in await pg_store.list_history(items[0].integration_id)] == [
            HealthStatus.DEGRADED,
            HealthStatus.HEALTHY,
        ]
    finally:
        await store.aclose()


async def test_a_write_that_cannot_reach_the_database_fails_loudly(
    pg_store: PostgresStore, proxy: Proxy
) -> None:
    """When the database stays unreachable, record_results raises StoreUnavailable (not dropped)."""
    [item] = await seed(pg_store)
    store = await PostgresStore.open(_through(pg_store, proxy), max_size=1, timeout=1)
    try:
        await proxy.stop()
        write = ResultWrite(
            org_id=item.org_id,
            integration_id=item.integration_id,
            integration_type="http",
            result=_result(HealthStatus.HEALTHY, T0),
        )
        with pytest.raises(StoreUnavailable, match="1 result"):
            await store.record_results([write])
    finally:
        await store.aclose()
    assert await pg_store.list_history(item.integration_id) == []


async def test_statement_errors_are_not_retried(pg_store: PostgresStore) -> None:
    """A refused write fails at once (one attempt), whatever the retry budget."""
    [item] = await seed(pg_store)
    ghost = ResultWrite(
        org_id=item.org_id,
        integration_id=uuid.uuid4(),
        integration_type="http",
        result=_result(HealthStatus.HEALTHY, T0),
    )
    patient = await PostgresStore.open(pg_store._conninfo, attempts=50)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreError, match="not stored"):
            await patient.record_results([ghost])
        assert loop.time() - started < 1.0
    finally:
        await patient.aclose()


def test_supavisor_transaction_mode_disables_prepared_statements() -> None:
    """Port 6543 (Supavisor, transaction mode) or ?prepare_threshold=none turn prepares off."""
    pooled = _parse_url("postgresql://postgres.ref:pw@aws-0-eu.pooler.supabase.com:6543/postgres")
    assert pooled.prepare_threshold is None
    assert pooled.password == "pw"
    explicit = _parse_url("postgresql://u@h:5432/db?prepare_threshold=none&sslmode=require")
    assert explicit.prepare_threshold is None
    assert "prepare_threshold" not in explicit.conninfo
    assert "sslmode=require" in explicit.conninfo
    assert _parse_url("postgresql://u@h/db").prepare_threshold == 5
    with pytest.raises(StoreError, match="prepare_threshold"):
        _parse_url("postgresql://u@h/db?prepare_threshold=lots")


async def test_store_url_is_masked(pg_database: str) -> None:
    """The store's url never shows the password."""
    info = psycopg.conninfo.conninfo_to_dict(pg_database)
    url = f"postgresql://{info['user']}:hunter2@{info['host']}:{info['port']}/{info['dbname']}"
    store = await PostgresStore.open(url)  # trust auth here: the password is not checked
    try:
        assert "hunter2" not in store.url
        assert store.url.startswith(f"postgresql://{info['user']}:***@")
    finally:
        await store.aclose()


async def test_events_are_visible_to_members_only(pg_store: PostgresStore) -> None:
    """Status events follow the same RLS as statuses: members of the org only."""
    [item] = await seed(pg_store)
    member = uuid.uuid4()
    from integration_health.store import Member

    await pg_store.import_definitions([], [Member(item.org_id, member)], [])
    await pg_store.record_results(
        [
            ResultWrite(
                org_id=item.org_id,
                integration_id=item.integration_id,
                integration_type="http",
                result=_result(HealthStatus.UNREACHABLE, T0),
            )
        ]
    )

    async def visible(sub: uuid.UUID) -> Any:
        async with await psycopg.AsyncConnection.connect(pg_store._conninfo) as conn:
            await conn.execute(
                "select set_config('role', 'authenticated', true), "
                "set_config('request.jwt.claims', %s, true)",
                (f'{{"sub": "{sub}"}}',),
            )
            cur = await conn.execute("select count(*) from public.integration_health_events")
            row = await cur.fetchone()
            return row[0] if row else None

    assert await visible(member) == 1
    assert await visible(uuid.uuid4()) == 0


@dataclasses.dataclass
class _Point:
    x: int


async def test_details_are_stored_as_json_with_str_for_the_rest(pg_store: PostgresStore) -> None:
    """A result's details reach the status row as the standard library's ``json`` with
    ``default=str`` writes them (orjson writes the usual ones faster, ``json`` what orjson
    refuses): timestamps, UUIDs, decimals, dataclasses, sets as text; integers beyond 64
    bits as ``json`` has them; NaN, which ``jsonb`` refuses, as null."""
    [*items] = await seed(pg_store, 3)
    when = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    plain = {
        "at": when,
        "id": items[0].integration_id,
        "amount": decimal.Decimal("1.50"),
        "point": _Point(3),
        "tags": {"x"},
        "status": HealthStatus.DEGRADED,
        "nested": [{"a": 1, "b": [True, None, 2.5]}],
        "text": "æøå \u2028",
    }
    details: list[dict[str, Any]] = [plain, {"big": 2**70}, {"nan": float("nan")}]
    writes = [
        ResultWrite(
            org_id=item.org_id,
            integration_id=item.integration_id,
            integration_type="http",
            result=HealthResult.healthy(5, details=d),
        )
        for item, d in zip(items, details, strict=True)
    ]
    assert await pg_store.record_results(writes) == 3
    stored = {s.integration_id: s.details for s in await pg_store.list_statuses()}
    got = [stored[item.integration_id] for item in items]
    assert got[:2] == [json.loads(json.dumps(d, default=str)) for d in details[:2]]
    assert got[0]["at"] == str(when) and got[0]["point"] == "_Point(x=3)"
    assert got[0]["status"] == "degraded" and got[1]["big"] == 2**70
    assert got[2] == {"nan": None}
