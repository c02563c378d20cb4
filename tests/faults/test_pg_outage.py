"""PostgreSQL stopped in the middle of a run and started again: nothing lost, nothing doubled.

The end-to-end test runs ``integration-health serve`` (API + in-process scheduler) as a real
process on a private PostgreSQL server, with checks in flight against a local fake endpoint,
and stops and restarts that server. The in-process tests below it pin the scheduler's buffer:
its limit, its retries, the idempotence of a retried write and the single log line per outage.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from integration_health import HealthResult, Settings
from integration_health.errors import StoreUnavailable
from integration_health.integrations_file import to_records
from integration_health.scheduling import Scheduler, SchedulerOptions
from integration_health.scheduling.scheduler import DROPPED_RESULTS
from integration_health.store import MemoryStore, Organization, SQLiteStore
from integration_health.store.base import ResultWrite
from integration_health.store.postgres import PostgresStore
from integration_health.testing import FakeConfig, HttpEndpointFake, fake_registry
from tests.faults.conftest import (
    PrivatePostgres,
    _free_port,
    cli,
    cli_env,
    count,
    integrations_without_one_history_row,
    terminate,
    wait_for,
)

ORG = "7d3f0000-0000-4000-8000-0000000000aa"
SLOW_MS = 4000
N = 12


def _integrations_file(tmp_path: Path, url: str) -> Path:
    lines = [f"organizations:\n  - {{id: {ORG}, name: Outage AS}}\nintegrations:"]
    for i in range(N):
        lines.append(
            f"  - {{id: 0b1c0000-0000-4000-8000-{i:012d}, org_id: {ORG}, "
            f'integration_type: http, name: slow {i:02d}, url: "{url}/slow?ms={SLOW_MS}"}}'
        )
    path = tmp_path / "integrations.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _healthz(base: str) -> tuple[int, dict[str, Any]]:
    try:
        answer = httpx.get(f"{base}/healthz", timeout=10)
    except httpx.HTTPError:
        return 0, {}
    return answer.status_code, answer.json()


@pytest.mark.slow
def test_results_in_flight_during_an_outage_land_exactly_once(
    private_pg: PrivatePostgres, endpoint_in_thread: tuple[HttpEndpointFake, str], tmp_path: Path
) -> None:
    """PostgreSQL stops while checks are in flight: /healthz turns 503 with the store's reason
    and shows the buffered results; once PostgreSQL is back, every result is written exactly
    once and /healthz is 200 again, with no restart and one log line for the outage."""
    fake, fake_url = endpoint_in_thread
    admin = private_pg.admin_url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("create database outage")
    url = private_pg.url("outage")
    env = cli_env(url, INTEGRATION_HEALTH_LOG_LEVEL="warning")
    upgraded = cli(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    imported = cli(env, "integrations", "import", str(_integrations_file(tmp_path, fake_url)))
    assert imported.returncode == 0, imported.stderr

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "integration_health",
                "serve",
                "--port",
                str(port),
                "--tick",
                "1",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_for(lambda: fake.count("/slow") >= N, 30, "every check to be in flight")
        assert _healthz(base)[0] == 200

        private_pg.stop("immediate")  # the checks are still running (SLOW_MS)
        stopped_at = time.monotonic()

        def down() -> bool:
            code, body = _healthz(base)
            return code == 503 and body["checks"]["store"]["ok"] is False

        wait_for(down, 20, "/healthz to report the store outage")
        body = _healthz(base)[1]
        store_error = body["checks"]["store"]["error"]
        assert "PostgreSQL" in store_error and "unavailable" in store_error, store_error
        assert str(private_pg.port) in store_error  # names the server, never a password

        def buffered() -> bool:
            scheduler = _healthz(base)[1]["checks"]["scheduler"]
            return scheduler["buffered_results"] == N and scheduler["store_error"] is not None

        wait_for(buffered, 40, "the scheduler to hold the results in memory")
        scheduler = _healthz(base)[1]["checks"]["scheduler"]
        assert scheduler["buffer_limit"] == 100_000 and scheduler["dropped_results"] == 0
        assert scheduler["store_unavailable_since"] is not None
        assert time.monotonic() - stopped_at >= SLOW_MS / 1000 - 1  # results came after the stop

        private_pg.start()
        restarted_at = time.monotonic()

        def recovered() -> bool:
            code, body = _healthz(base)
            return code == 200 and body["checks"]["scheduler"]["buffered_results"] == 0

        wait_for(recovered, 60, "/healthz to recover and the buffer to be written")
        print(f"recovered {time.monotonic() - restarted_at:.1f} s after PostgreSQL restarted")
        scheduler = _healthz(base)[1]["checks"]["scheduler"]
        assert scheduler["store_error"] is None and scheduler["store_unavailable_since"] is None
        health = httpx.get(f"{base}/api/orgs/{ORG}/health", timeout=10)
        assert health.status_code == 200, health.text
        time.sleep(2)  # a duplicate write, if any, would land now
    finally:
        terminate(proc)
    output = log_path.read_text()
    assert proc.returncode == 0, output
    assert fake.count("/slow") == N  # no check ran twice
    assert count(url, "select count(*) from integration_health_history") == N
    assert integrations_without_one_history_row(url) == 0
    assert count(url, "select count(*) from integration_check_runs where state = 'done'") == N
    assert count(url, "select count(*) from integration_check_runs where state <> 'done'") == 0
    assert count(url, "select count(*) from integration_health_status") == N
    assert output.count("store unavailable, scheduling paused") == 1, output
    assert output.count("store reachable again") == 1, output
    assert "Traceback" not in output, output
    assert "error connecting" not in output and "retry_scheduled" not in output, output


# -- the scheduler's buffer, in-process ---------------------------------------------------------


class FlakyStore(MemoryStore):
    """A memory store whose writes fail as an unreachable database's would, on demand.

    ``down``: planning and writing raise :class:`StoreUnavailable`; ``calls`` counts them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("PostgreSQL at postgresql://db/x is unavailable: refused")

    async def record_results(self, writes: Sequence[ResultWrite]) -> int:
        self._check()
        return await super().record_results(writes)

    async def list_due(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().list_due(*args, **kwargs)


async def _seed(store: Any, n: int, *, delay_s: float = 0.0) -> list[FakeConfig]:
    org = uuid.uuid4()
    items = [
        FakeConfig(integration_id=uuid.uuid4(), org_id=org, name=f"f{i}", delay_s=delay_s)
        for i in range(n)
    ]
    await store.import_definitions([Organization(org, "Org")], [], to_records(items))
    return items


async def _history_counts(store: Any, items: list[FakeConfig]) -> list[int]:
    return [len(await store.list_history(i.integration_id)) for i in items]


async def test_buffer_keeps_the_newest_results_up_to_its_limit() -> None:
    """Results the store cannot take are buffered; beyond the limit the oldest are dropped
    and counted; the next pass that reaches the store writes the rest, each once."""
    store = FlakyStore()
    registry, check, _ = fake_registry(settings=Settings(timeout_s=2))
    items = await _seed(store, 5, delay_s=0.3)
    scheduler = Scheduler(store, registry, options=SchedulerOptions(buffer_limit=3))
    dropped_before = DROPPED_RESULTS.labels("buffer_full")._value.get()
    async with registry:
        report_task = asyncio.create_task(scheduler.run_pass(buffer_on_outage=True))
        while len(check.calls) < 5:  # the checks are in flight: now the store goes away
            await asyncio.sleep(0.01)
        store.down = True
        report = await report_task
        assert report.buffered == 5 and report.written == 0
        state = scheduler.buffer_state()
        assert (state.size, state.limit, state.dropped) == (3, 3, 2)
        assert state.store_error is not None and "unavailable" in state.store_error
        assert DROPPED_RESULTS.labels("buffer_full")._value.get() - dropped_before == 2
        with pytest.raises(StoreUnavailable):  # still down: the pass stops before planning
            await scheduler.run_pass(buffer_on_outage=True)
        store.down = False
        report = await scheduler.run_pass(buffer_on_outage=True)
    assert report.flushed == 3 and report.ran == 2  # the two dropped slots are due again
    state = scheduler.buffer_state()
    assert (state.size, state.store_error, state.store_unavailable_since) == (0, None, None)
    assert sorted(await _history_counts(store, items)) == [1, 1, 1, 1, 1]


class _GatedStore(FlakyStore):
    """Its next ``record_results`` waits for ``gate`` (a flush in progress, held open)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()

    async def record_results(self, writes: Sequence[ResultWrite]) -> int:
        gate, self.gate = self.gate, None
        if gate is not None:
            self.waiting.set()
            await gate.wait()
        return await super().record_results(writes)


async def test_results_buffered_while_a_flush_writes_are_not_lost() -> None:
    """Overlapping passes: one flushes the buffer while another buffers more and the buffer
    is full. The results being written are out of the buffer meanwhile, so the limit drops
    none of them, and every result lands once."""
    store = _GatedStore()
    registry, _check, _ = fake_registry(settings=Settings(timeout_s=2))
    items = await _seed(store, 5)
    scheduler = Scheduler(store, registry, options=SchedulerOptions(buffer_limit=3))
    writes = [
        ResultWrite(
            org_id=i.org_id,
            integration_id=i.integration_id,
            integration_type=i.integration_type,
            result=HealthResult.healthy(5),
            next_check_at=None,
        )
        for i in items
    ]
    down = StoreUnavailable("PostgreSQL at postgresql://db/x is unavailable: refused")
    scheduler._keep(writes[:3], down)  # the buffer is full
    store.gate = gate = asyncio.Event()
    flush = asyncio.create_task(scheduler.flush_buffer())
    await store.waiting.wait()  # the flush is writing the three
    scheduler._keep(writes[3:], down)  # another pass's results arrive meanwhile
    assert scheduler.buffer_state().dropped == 0
    gate.set()
    assert await flush == 5
    assert await _history_counts(store, items) == [1, 1, 1, 1, 1]


async def test_a_refused_flush_puts_its_batch_back_within_the_limit() -> None:
    """A flush the store refuses while another pass filled the buffer up puts its batch back
    first — and the buffer still holds at most its limit: the oldest go, counted."""
    store = _GatedStore()
    registry, _check, _ = fake_registry(settings=Settings(timeout_s=2))
    items = await _seed(store, 5)
    scheduler = Scheduler(store, registry, options=SchedulerOptions(buffer_limit=3))
    writes = [
        ResultWrite(i.org_id, i.integration_id, i.integration_type, HealthResult.healthy(5))
        for i in items
    ]
    down = StoreUnavailable("PostgreSQL at postgresql://db/x is unavailable: refused")
    scheduler._keep(writes[:3], down)
    store.gate = gate = asyncio.Event()
    flush = asyncio.create_task(scheduler.flush_buffer())
    await store.waiting.wait()  # the flush holds the three; the buffer is empty
    scheduler._keep(writes[3:], down)  # another pass buffers two
    store.down = True
    gate.set()
    with pytest.raises(StoreUnavailable):
        await flush
    state = scheduler.buffer_state()
    assert (state.size, state.dropped) == (3, 2)
    assert [w.integration_id for _, w in scheduler._buffer] == [
        i.integration_id for i in items[2:]
    ]  # the two oldest went
    store.down = False
    assert await scheduler.flush_buffer() == 3
    assert await _history_counts(store, items) == [0, 0, 1, 1, 1]


async def test_a_cancelled_flush_keeps_its_batch_buffered() -> None:
    """A flush cancelled while it writes (the scheduler stopped) puts its batch back."""
    store = _GatedStore()
    registry, _check, _ = fake_registry(settings=Settings(timeout_s=2))
    items = await _seed(store, 3)
    scheduler = Scheduler(store, registry)
    scheduler._keep(
        [
            ResultWrite(i.org_id, i.integration_id, i.integration_type, HealthResult.healthy(5))
            for i in items
        ],
        StoreUnavailable("PostgreSQL at postgresql://db/x is unavailable: refused"),
    )
    store.gate = asyncio.Event()
    flush = asyncio.create_task(scheduler.flush_buffer())
    await store.waiting.wait()
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    assert scheduler.buffer_state().size == 3
    assert await scheduler.flush_buffer() == 3
    assert await _history_counts(store, items) == [1, 1, 1]


@pytest.mark.parametrize(
    "kind", ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_a_retried_write_whose_ack_was_lost_writes_nothing_twice(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A batch that committed but whose acknowledgement was lost is buffered and retried: the
    retry finds its slots done and writes nothing, in every store."""
    if kind == "memory":
        inner: Any = MemoryStore()
    elif kind == "sqlite":
        inner = await SQLiteStore.open(f"sqlite:///{tmp_path / 'ack.db'}")
    else:
        inner = await PostgresStore.open(request.getfixturevalue("pg_migrated"))
    store = _LostAck(inner)
    try:
        registry, _check, _ = fake_registry(settings=Settings(timeout_s=2))
        items = await _seed(inner, 4)
        scheduler = Scheduler(store, registry)  # type: ignore[arg-type]
        store.lose_acks = 1
        async with registry:
            first = await scheduler.run_pass(buffer_on_outage=True)
            assert first.buffered == 4 and scheduler.buffer_state().size == 4
            second = await scheduler.run_pass(buffer_on_outage=True)
        assert second.flushed == 0 and second.ran == 0  # committed the first time: nothing new
        assert scheduler.buffer_state().size == 0
        assert await _history_counts(inner, items) == [1, 1, 1, 1]
        statuses = await inner.list_statuses()
        assert len(statuses) == 4
    finally:
        if kind != "memory":
            await inner.aclose()


class _LostAck:
    """Wraps a real store: ``lose_acks`` writes commit, then raise as a dropped connection."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lose_acks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def record_results(self, writes: Sequence[ResultWrite]) -> int:
        written: int = await self.inner.record_results(writes)
        if self.lose_acks:
            self.lose_acks -= 1
            raise StoreUnavailable(f"{len(writes)} result(s) could not be written: reset")
        return written


async def test_outage_is_logged_once_backs_off_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the store is down the loop logs one line, backs off instead of retrying every
    tick, and resumes by itself when the store is back (one more line)."""
    store = FlakyStore()
    registry, _check, _ = fake_registry(settings=Settings(timeout_s=2))
    items = await _seed(store, 3)
    store.down = True
    options = SchedulerOptions(tick_s=0.05, outage_backoff_max_s=0.4)
    scheduler = Scheduler(store, registry, options=options)
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="integration_health.scheduling.scheduler")
    task = asyncio.create_task(scheduler.run(stop))
    await asyncio.sleep(2.0)
    failed_passes = store.calls
    # every tick for 2 s would be ~40 passes; doubling up to 0.4 s allows about 8
    assert 2 <= failed_passes <= 15, failed_passes
    assert scheduler.buffer_state().store_error is not None
    store.down = False
    for _ in range(100):
        if await _history_counts(store, items) == [1, 1, 1]:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert await _history_counts(store, items) == [1, 1, 1]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("store unavailable, scheduling paused" in m for m in messages) == 1, messages
    assert sum("store reachable again" in m for m in messages) == 1, messages
    assert all(r.exc_info is None for r in caplog.records)


async def test_the_pool_reports_the_outage_and_reconnects_by_itself(
    private_pg: PrivatePostgres,
) -> None:
    """With the server stopped, ping fails fast with the server's reason; once it is started
    again, the same store (same pool, dead connections inside) works again within seconds."""
    with psycopg.connect(private_pg.admin_url, autocommit=True) as conn:
        conn.execute("create database pool")
    store = await PostgresStore.open(private_pg.url("pool"), min_size=2)
    try:
        await store.upgrade()
        items = await _seed(store, 2)
        await store.ping()
        private_pg.stop("fast")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as failed:
            await store.ping()
        assert time.monotonic() - started < 3.0  # inside /healthz's 3 s budget
        assert "refused" in str(failed.value), failed.value
        assert "unavailable" in str(failed.value)

        private_pg.start()
        started = time.monotonic()
        while True:
            try:
                await store.ping()
                break
            except StoreUnavailable:
                assert time.monotonic() - started < 20, "the pool did not reconnect"
                await asyncio.sleep(0.2)
        recovered_s = time.monotonic() - started
        assert recovered_s < 20
        assert len(await store.list_integrations()) == 2  # reads work on the same store
        assert await _history_counts(store, items) == [0, 0]
    finally:
        await store.aclose()
