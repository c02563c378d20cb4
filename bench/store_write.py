"""PostgreSQL store: write throughput, pruning-trigger cost as history grows, RLS read cost.

Runs against a PostgreSQL server (default ``postgresql://postgres@127.0.0.1:5432/postgres``,
a superuser: the bench creates and drops its own databases) and prints four tables:

1. **Writes** — ``--results`` results (one per integration, ``--batch`` per call), written by
   ``PostgresStore.record_results`` and by two hand-written raw SQL ceilings doing the same
   work (status upsert with consecutive_failures/last_healthy_at derived in SQL + history
   insert, pruning and event triggers firing): ``raw unnest`` (pre-built binary arrays, one
   statement per batch, no Python prep in the timing) and ``raw COPY`` (binary COPY into a
   temp table, then upsert + insert from it, one transaction per batch). Rounds alternate;
   medians are compared: ``store / fastest raw`` (throughput ratio, target ≥ 0.8).
2. **Slotted writes** (``--parts slots``) — the scheduler's and workers' batches: results
   that each complete a claimed slot, ``--slot-batch`` per call (a worker's batch: 50).
   ``one statement`` is ``record_results`` (the slots completed and the results written in
   one statement); ``transaction`` is what it did before, and still does for a batch with two
   results of one integration (``BEGIN``, complete the slots, write what they accept,
   ``COMMIT``). Rounds alternate; per result: wall time, this process's CPU and the
   PostgreSQL backends' CPU (``/proc``).
3. **Pruning trigger** — history holding 96 rows for each of 1,000 and of ``--scale``
   integrations; the per-insert cost of single-row inserts (a server-side loop, so no round
   trips are measured) with the trigger on and off, and of one 1,000-row insert. Target:
   per-insert cost at ``--scale`` ≤ 1.5× the cost at 1,000.
4. **Dashboard read under RLS** — the current status of one organisation's 1,000
   integrations (among ``--scale`` / 1,000 organisations), read inside a transaction as
   ``authenticated`` with JWT claims (as PostgREST does) and as ``service_role``.
   Target: ≤ 1.3× slower.

    .venv/bin/python bench/store_write.py                 # --scale 100000 (9.6M history rows)
    .venv/bin/python bench/store_write.py --scale 20000   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from _servers import process_cpu_seconds
from integration_health import HealthResult, HealthStatus
from integration_health.model import ErrorCode
from integration_health.store import ResultWrite
from integration_health.store.base import SlotClaim
from integration_health.store.postgres import PostgresStore, _batch_params, _complete_slots

T0 = datetime(2026, 11, 28, tzinfo=UTC)

RAW_UNNEST = """
with upserted as (
    insert into public.integration_health_status as current (
        integration_id, org_id, integration_type, status, latency_ms, checked_at, error,
        error_code, consecutive_failures, last_healthy_at, next_check_at, details, source
    )
    select s.integration_id, s.org_id, s.integration_type, s.status, s.latency_ms,
           s.checked_at, s.error, s.error_code,
           case when s.status = 'unreachable' then 1 else 0 end,
           case when s.status = 'healthy' then s.checked_at end,
           s.next_check_at, s.details, 'active'
    from unnest(%b::uuid[], %b::uuid[], %b::text[], %b::text[], %b::int[],
                %b::timestamptz[], %b::text[], %b::text[], %b::timestamptz[], %b::jsonb[])
        as s(integration_id, org_id, integration_type, status, latency_ms, checked_at, error,
             error_code, next_check_at, details)
    on conflict (integration_id) do update set
        status = excluded.status, latency_ms = excluded.latency_ms,
        checked_at = excluded.checked_at, error = excluded.error,
        error_code = excluded.error_code,
        consecutive_failures = case when excluded.status = 'unreachable'
            then current.consecutive_failures + 1 else 0 end,
        last_healthy_at = coalesce(excluded.last_healthy_at, current.last_healthy_at),
        next_check_at = excluded.next_check_at, details = excluded.details,
        updated_at = now()
    where current.checked_at <= excluded.checked_at
    returning 1
)
insert into public.integration_health_history (
    org_id, integration_id, status, latency_ms, checked_at, error, error_code
)
select h.org_id, h.integration_id, h.status, h.latency_ms, h.checked_at, h.error, h.error_code
from unnest(%b::uuid[], %b::uuid[], %b::text[], %b::int[], %b::timestamptz[], %b::text[],
            %b::text[]) as h(org_id, integration_id, status, latency_ms, checked_at, error,
                             error_code)
where (select count(*) from upserted) >= 0
"""

COPY_STAGING = """
create temp table if not exists staging (
    integration_id uuid, org_id uuid, integration_type text, status text, latency_ms int,
    checked_at timestamptz, error text, error_code text, next_check_at timestamptz,
    details jsonb
) on commit delete rows
"""

COPY_MERGE = """
insert into public.integration_health_status as current (
    integration_id, org_id, integration_type, status, latency_ms, checked_at, error,
    error_code, consecutive_failures, last_healthy_at, next_check_at, details, source
)
select integration_id, org_id, integration_type, status, latency_ms, checked_at, error,
       error_code, case when status = 'unreachable' then 1 else 0 end,
       case when status = 'healthy' then checked_at end, next_check_at, details, 'active'
from staging order by integration_id
on conflict (integration_id) do update set
    status = excluded.status, latency_ms = excluded.latency_ms,
    checked_at = excluded.checked_at, error = excluded.error, error_code = excluded.error_code,
    consecutive_failures = case when excluded.status = 'unreachable'
        then current.consecutive_failures + 1 else 0 end,
    last_healthy_at = coalesce(excluded.last_healthy_at, current.last_healthy_at),
    next_check_at = excluded.next_check_at, details = excluded.details, updated_at = now()
where current.checked_at <= excluded.checked_at;
insert into public.integration_health_history (
    org_id, integration_id, status, latency_ms, checked_at, error, error_code
)
select org_id, integration_id, status, latency_ms, checked_at, error, error_code
from staging order by integration_id
"""


def db_url(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


async def create_db(admin_url: str) -> tuple[str, str]:
    name = f"ih_bench_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f'create database "{name}"')
    return name, db_url(admin_url, name)


async def drop_db(admin_url: str, name: str) -> None:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f'drop database if exists "{name}" with (force)')


async def seed(
    url: str, integrations: int, *, per_org: int = 1000
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """``integrations`` integrations in orgs of ``per_org``; returns (org_id, integration_id)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "insert into public.organizations (id, name) "
            "select ('00000000-0000-4000-8000-' || lpad(to_hex(o), 12, '0'))::uuid, 'org ' || o "
            "from generate_series(0, %s) o",
            ((integrations - 1) // per_org,),
        )
        await conn.execute(
            "insert into public.integrations (id, org_id, integration_type, name, config) "
            "select gen_random_uuid(), "
            "('00000000-0000-4000-8000-' || lpad(to_hex(n / %s), 12, '0'))::uuid, "
            "'http', 'i' || n, '{\"url\": \"https://example.com\"}' "
            "from generate_series(0, %s) n",
            (per_org, integrations - 1),
        )
        cur = await conn.execute("select org_id, id from public.integrations order by org_id, id")
        return [(r[0], r[1]) for r in await cur.fetchall()]


def make_writes(keys: list[tuple[uuid.UUID, uuid.UUID]], at: datetime) -> list[ResultWrite]:
    writes = []
    for n, (org, integration) in enumerate(keys):
        bad = n % 10 == 0
        result = HealthResult(
            status=HealthStatus.UNREACHABLE if bad else HealthStatus.HEALTHY,
            latency_ms=100 + n % 50,
            checked_at=at,
            error="connect failed" if bad else None,
            error_code=ErrorCode.CONNECTION if bad else None,
            details={"http_status": 200, "phases": {"connect_ms": 3, "ttfb_ms": 40}},
        )
        writes.append(
            ResultWrite(
                org_id=org,
                integration_id=integration,
                integration_type="http",
                result=result,
                next_check_at=at + timedelta(minutes=15),
            )
        )
    return writes


def columns(writes: list[ResultWrite]) -> tuple[list[Any], list[Any]]:
    """Binary-ready column arrays for the raw statements (prepared outside the timing)."""
    ordered = sorted(writes, key=lambda w: w.integration_id)
    status = [
        [w.integration_id for w in ordered],
        [w.org_id for w in ordered],
        [w.integration_type for w in ordered],
        [w.result.status.value for w in ordered],
        [w.result.latency_ms for w in ordered],
        [w.result.checked_at for w in ordered],
        [w.result.error for w in ordered],
        [w.result.error_code.value if w.result.error_code else None for w in ordered],
        [w.next_check_at for w in ordered],
        [json.dumps(w.result.details) for w in ordered],
    ]
    history = [status[1], status[0], status[3], status[4], status[5], status[6], status[7]]
    return status, history


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def bench_writes(url: str, results: int, batch: int, rounds: int) -> tuple[str, float]:
    keys = await seed(url, results)
    store = await PostgresStore.open(url)
    raw = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await raw.execute(COPY_STAGING)
    timings: dict[str, list[float]] = {
        "store": [],
        "store's SQL, arrays pre-built": [],
        "raw unnest": [],
        "raw COPY": [],
    }
    try:
        # warm-up: every status row exists, caches are hot
        await store.record_results(make_writes(keys, T0))
        minute = 0

        async def via_store(batches: list[list[ResultWrite]]) -> None:
            for part in batches:
                await store.record_results(part)

        async def via_store_sql(batches: list[list[ResultWrite]]) -> None:
            prepared = [_batch_params(part) for part in batches]
            started = time.perf_counter()
            for statement, params in prepared:
                await raw.execute(statement, params)
            via_store_sql.elapsed = time.perf_counter() - started  # type: ignore[attr-defined]

        async def via_unnest(batches: list[list[ResultWrite]]) -> None:
            prepared = [columns(part) for part in batches]
            started = time.perf_counter()
            for status, history in prepared:
                await raw.execute(RAW_UNNEST, [*status, *history])
            via_unnest.elapsed = time.perf_counter() - started  # type: ignore[attr-defined]

        async def via_copy(batches: list[list[ResultWrite]]) -> None:
            prepared = [columns(part)[0] for part in batches]
            rows = [list(zip(*cols, strict=True)) for cols in prepared]
            started = time.perf_counter()
            for part in rows:
                async with raw.transaction():
                    async with raw.cursor().copy("copy staging from stdin (format binary)") as copy:
                        copy.set_types(
                            [
                                "uuid",
                                "uuid",
                                "text",
                                "text",
                                "int4",
                                "timestamptz",
                                "text",
                                "text",
                                "timestamptz",
                                "jsonb",
                            ]
                        )
                        for row in part:
                            await copy.write_row(row)
                    await raw.execute(COPY_MERGE)
            via_copy.elapsed = time.perf_counter() - started  # type: ignore[attr-defined]

        methods: dict[str, Callable[[list[list[ResultWrite]]], Awaitable[None]]] = {
            "store": via_store,
            "store's SQL, arrays pre-built": via_store_sql,
            "raw unnest": via_unnest,
            "raw COPY": via_copy,
        }
        for round_ in range(rounds):
            order = list(methods) if round_ % 2 == 0 else list(methods)[::-1]
            for name in order:
                minute += 15
                batches = chunks(make_writes(keys, T0 + timedelta(minutes=minute)), batch)
                started = time.perf_counter()
                await methods[name](batches)
                elapsed = time.perf_counter() - started
                elapsed = getattr(methods[name], "elapsed", elapsed)
                timings[name].append(elapsed)
    finally:
        await raw.close()
        await store.aclose()
    medians = {name: statistics.median(values) for name, values in timings.items()}
    fastest_raw = min(medians["raw unnest"], medians["raw COPY"])
    sql_ratio = fastest_raw / medians["store's SQL, arrays pre-built"]
    rows = [
        [
            name,
            " / ".join(f"{v * 1000:.0f}" for v in timings[name]),
            f"{medians[name] * 1000:.0f}",
            f"{results / medians[name]:,.0f}",
        ]
        for name in timings
    ]
    ratio = fastest_raw / medians["store"]
    text = table(["method", "ms per round", "median ms", "results/s"], rows)
    text += (
        f"\n\nstore throughput / fastest raw = **{ratio:.2f}×** "
        f"({results:,} results, batches of {batch}, target ≥ 0.8×). The store's time includes "
        "building its arrays from ResultWrite objects in Python; the other rows' does not. "
        f"The store's SQL alone / fastest raw = {sql_ratio:.2f}×."
    )
    return text, ratio


async def history_db(admin_url: str, integrations: int) -> tuple[str, str]:
    """A database whose history holds 96 rows for each of ``integrations`` integrations."""
    name, url = await create_db(admin_url)
    store = await PostgresStore.open(url)
    await store.upgrade()
    await store.aclose()
    await seed(url, integrations)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        # bulk load: skip foreign-key and pruning triggers (exactly 96 rows each anyway)
        await conn.execute("set session_replication_role = replica")
        await conn.execute(
            "insert into public.integration_health_history (org_id, integration_id, status, "
            "latency_ms, checked_at) select i.org_id, i.id, 'healthy', 100, "
            "%s - k * interval '15 minutes' from public.integrations i "
            "cross join generate_series(1, 96) k order by i.org_id, i.id, k desc",
            (T0,),
        )
        await conn.execute("set session_replication_role = origin")
        await conn.execute("vacuum analyze public.integration_health_history")
        await conn.execute("vacuum analyze public.integrations")
    return name, url


TRIGGER_LOOP = """
do $$
declare
    keys uuid[][];
    started timestamptz;
    n int := {inserts};
    k int;
begin
    select array_agg(array[org_id, id]) into keys
    from (select org_id, id from public.integrations order by random() limit 1000) s;
    started := clock_timestamp();
    for i in 1..n loop
        k := 1 + (i % 1000);
        insert into public.integration_health_history (org_id, integration_id, status,
            latency_ms, checked_at)
        values (keys[k][1], keys[k][2], 'healthy', i, '{t0}'::timestamptz + i * interval '1 s');
    end loop;
    perform set_config('bench.elapsed_us',
        (extract(epoch from clock_timestamp() - started) * 1e6)::bigint::text, false);
end $$
"""

BATCH_INSERT = """
insert into public.integration_health_history (org_id, integration_id, status, latency_ms,
    checked_at)
select org_id, id, 'healthy', 1, %s
from (select org_id, id from public.integrations order by random() limit 1000) s
"""


async def trigger_cost(url: str, inserts: int, rounds: int) -> dict[str, float]:
    """µs per single-row insert with and without the trigger, and per row of a batch."""
    out: dict[str, list[float]] = {"on": [], "off": [], "batch": []}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("set synchronous_commit = off")
        for r in range(rounds):
            for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
                action = "enable" if mode == "on" else "disable"
                await conn.execute(
                    f"alter table public.integration_health_history {action} trigger "
                    "integration_health_history_prune"
                )
                t0 = (T0 + timedelta(days=1 + r * 2 + (mode == "off"))).isoformat()
                await conn.execute(TRIGGER_LOOP.format(inserts=inserts, t0=t0))
                cur = await conn.execute("select current_setting('bench.elapsed_us')::bigint")
                row = await cur.fetchone()
                assert row is not None
                out[mode].append(row[0] / inserts)
            await conn.execute(
                "alter table public.integration_health_history enable trigger "
                "integration_health_history_prune"
            )
            started = time.perf_counter()
            await conn.execute(BATCH_INSERT, (T0 + timedelta(days=100 + r),))
            out["batch"].append((time.perf_counter() - started) * 1e6 / 1000)
        # with the trigger on, an insert leaves exactly 96 rows for its integration
        cur = await conn.execute(
            "insert into public.integration_health_history (org_id, integration_id, status, "
            "latency_ms, checked_at) select org_id, integration_id, 'healthy', 1, %s "
            "from public.integration_health_history order by id desc limit 1 "
            "returning integration_id",
            (T0 + timedelta(days=1000),),
        )
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute(
            "select count(*) from public.integration_health_history where integration_id = %s",
            (row[0],),
        )
        kept = await cur.fetchone()
        assert kept == (96,), kept
    return {k: statistics.median(v) for k, v in out.items()}


async def bench_trigger(
    admin_url: str, scale: int, inserts: int, rounds: int
) -> tuple[str, float, str]:
    rows = []
    costs: dict[int, dict[str, float]] = {}
    big_url = ""
    big_name = ""
    for integrations in (1000, scale):
        started = time.perf_counter()
        name, url = await history_db(admin_url, integrations)
        load_s = time.perf_counter() - started
        try:
            costs[integrations] = trigger_cost_result = await trigger_cost(url, inserts, rounds)
        except BaseException:
            await drop_db(admin_url, name)
            raise
        c = trigger_cost_result
        rows.append(
            [
                f"{integrations:,}",
                f"{integrations * 96:,}",
                f"{c['on']:.1f}",
                f"{c['off']:.1f}",
                f"{c['on'] - c['off']:.1f}",
                f"{c['batch']:.1f}",
                f"{load_s:.0f}",
            ]
        )
        if integrations == scale:
            big_url, big_name = url, name
        else:
            await drop_db(admin_url, name)
    ratio = costs[scale]["on"] / costs[1000]["on"]
    text = table(
        [
            "integrations",
            "history rows",
            "µs/insert, trigger on",
            "µs/insert, trigger off",
            "trigger µs",
            "µs/row, 1,000-row insert",
            "load s",
        ],
        rows,
    )
    text += (
        f"\n\nper-insert cost at {scale:,} / at 1,000 = **{ratio:.2f}×** (target ≤ 1.5×; "
        f"{inserts:,} single-row inserts per round in a server-side loop, median of {rounds} "
        "rounds, synchronous_commit off so fsync does not drown the trigger)"
    )
    return text + "\n" + big_url, ratio, big_name


async def bench_rls(url: str, reads: int) -> tuple[str, float]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        # statuses for every integration, members for every org (10 each), our user in org 0
        await conn.execute(
            "insert into public.integration_health_status (integration_id, org_id, "
            "integration_type, status, latency_ms, checked_at, next_check_at) "
            "select id, org_id, 'http', 'healthy', 100, %s, %s from public.integrations "
            "on conflict do nothing",
            (T0, T0 + timedelta(minutes=15)),
        )
        await conn.execute(
            "insert into public.organization_members (org_id, user_id, role) "
            "select id, gen_random_uuid(), 'member' from public.organizations, "
            "generate_series(1, 10) on conflict do nothing"
        )
        cur = await conn.execute("select id from public.organizations order by id limit 1")
        row = await cur.fetchone()
        assert row is not None
        org = row[0]
        user = uuid.uuid4()
        await conn.execute(
            "insert into public.organization_members (org_id, user_id) values (%s, %s)",
            (org, user),
        )
        await conn.execute("vacuum analyze")
        cur = await conn.execute(
            "select count(*), count(distinct org_id) from public.integration_health_status"
        )
        total = await cur.fetchone()
    query = (
        "select org_id, integration_id, integration_type, status, latency_ms, checked_at, "
        "error, error_code, consecutive_failures, last_healthy_at, next_check_at, details, source "
        "from public.integration_health_status where org_id = %s order by integration_id"
    )
    claims = json.dumps({"sub": str(user), "role": "authenticated"})
    timings: dict[str, list[float]] = {"authenticated (RLS)": [], "service_role": []}
    async with await psycopg.AsyncConnection.connect(url) as conn:

        async def as_user() -> int:
            async with conn.transaction():
                await conn.execute(
                    "select set_config('role', 'authenticated', true), "
                    "set_config('request.jwt.claims', %s, true)",
                    (claims,),
                )
                cur = await conn.execute(query, (org,))
                return len(await cur.fetchall())

        async def as_service() -> int:
            async with conn.transaction():
                await conn.execute(
                    "select set_config('role', 'service_role', true), "
                    "set_config('request.jwt.claims', %s, true)",
                    (json.dumps({"role": "service_role"}),),
                )
                cur = await conn.execute(query, (org,))
                return len(await cur.fetchall())

        assert await as_user() == await as_service() == 1000
        for _ in range(20):  # warm-up, and prepared statements
            await as_user()
            await as_service()
        for i in range(reads):
            pair = [("authenticated (RLS)", as_user), ("service_role", as_service)]
            for name, fn in pair if i % 2 == 0 else pair[::-1]:
                started = time.perf_counter()
                await fn()
                timings[name].append((time.perf_counter() - started) * 1000)
        async with conn.transaction():
            await conn.execute(
                "select set_config('role', 'authenticated', true), "
                "set_config('request.jwt.claims', %s, true)",
                (claims,),
            )
            cur = await conn.execute("explain (analyze, costs off, timing off) " + query, (org,))
            plan = "\n".join(r[0] for r in await cur.fetchall())
    medians = {k: statistics.median(v) for k, v in timings.items()}
    ratio = medians["authenticated (RLS)"] / medians["service_role"]
    rows = [
        [name, f"{statistics.median(v):.2f}", f"{sorted(v)[int(len(v) * 0.95)]:.2f}"]
        for name, v in timings.items()
    ]
    assert total is not None
    text = table(["read as", "median ms", "p95 ms"], rows)
    text += (
        f"\n\nRLS / service_role = **{ratio:.2f}×** (target ≤ 1.3×; 1,000 status rows of one "
        f"organisation among {total[0]:,} rows of {total[1]:,} organisations, {reads} reads "
        "each, each read = begin, set_config, select, commit)\n\nplan under RLS:\n\n```\n"
        + plan
        + "\n```"
    )
    return text, ratio


def backends_cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) of these PostgreSQL backends so far (Linux ``/proc``; a
    backend gone, or on another machine, counts nothing)."""
    return sum(process_cpu_seconds(pid) or 0.0 for pid in pids)


async def bench_slots(url: str, results: int, batch: int, rounds: int) -> str:
    keys = await seed(url, results)
    store = await PostgresStore.open(url)
    watch = await psycopg.AsyncConnection.connect(url, autocommit=True)

    async def one_statement(part: list[ResultWrite]) -> int:
        return await store.record_results(part)

    async def transaction(part: list[ResultWrite]) -> int:
        async def write(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.transaction():
                accepted = await _complete_slots(conn, part, part)
                await conn.execute(*_batch_params(accepted))
                return len(accepted)

        return await store._run(write)

    methods = {"one statement": one_statement, "transaction": transaction}
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in methods}
    try:
        await store.record_results(make_writes(keys, T0))  # warm-up: every status row exists
        minute = 0
        for round_ in range(rounds):
            for name in methods if round_ % 2 == 0 else list(methods)[::-1]:
                minute += 15
                slot = T0 + timedelta(minutes=minute)
                claims = [SlotClaim(org, integration, slot) for org, integration in keys]
                for part in chunks(claims, 1000):
                    await store.claim_slots(part, worker="w", at=slot, lease_s=600)
                writes = [
                    ResultWrite(**{**w.__dict__, "slot_at": slot, "worker": "w", "drift_ms": 5})
                    for w in make_writes(keys, slot + timedelta(seconds=1))
                ]
                cur = await watch.execute(
                    "select pid from pg_stat_activity where datname = current_database()"
                )
                pids = [row[0] for row in await cur.fetchall()]
                pg0, cpu0, wall0 = backends_cpu_s(pids), time.process_time(), time.perf_counter()
                written = 0
                for part in chunks(writes, batch):
                    written += await methods[name](part)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                pg = backends_cpu_s(pids) - pg0
                if written != results:
                    raise RuntimeError(f"{name}: {written} of {results} results written")
                figures[name].append((wall, cpu, pg))
    finally:
        await watch.close()
        await store.aclose()
    rows = []
    for name, runs in figures.items():
        per = [[1e6 * value / results for value in run] for run in runs]
        rows.append(
            [
                name,
                " / ".join(f"{w:.0f}" for w, _, _ in per),
                f"{statistics.median(w for w, _, _ in per):.0f}",
                f"{statistics.median(c for _, c, _ in per):.0f}",
                f"{statistics.median(p for _, _, p in per):.0f}",
            ]
        )
    text = table(
        [
            "method",
            "wall µs/result per round",
            "median wall µs",
            "median Python CPU µs",
            "median PostgreSQL CPU µs",
        ],
        rows,
    )
    return text + f"\n\n{results:,} results with slots, batches of {batch}, {rounds} rounds."


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--inserts", type=int, default=5_000)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--slot-batch", type=int, default=50, help="results per call (slots)")
    parser.add_argument(
        "--parts",
        default="writes,slots,trigger,rls",
        help="comma-separated: writes,slots,trigger,rls",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    async with await psycopg.AsyncConnection.connect(args.url) as conn:
        cur = await conn.execute("select version(), current_setting('synchronous_commit')")
        info = await cur.fetchone()
    assert info is not None
    print(
        f"# PostgreSQL store benchmark\n\n{info[0]}; synchronous_commit={info[1]}; "
        f"Python {platform.python_version()}; psycopg {psycopg.__version__}\n"
    )

    if "writes" in parts:
        name, url = await create_db(args.url)
        try:
            store = await PostgresStore.open(url)
            await store.upgrade()
            await store.aclose()
            text, _ = await bench_writes(url, args.results, args.batch, args.rounds)
            print("## Writes\n\n" + text + "\n")
        finally:
            await drop_db(args.url, name)

    if "slots" in parts:
        name, url = await create_db(args.url)
        try:
            store = await PostgresStore.open(url)
            await store.upgrade()
            await store.aclose()
            text = await bench_slots(url, args.results, args.slot_batch, args.rounds)
            print("## Slotted writes\n\n" + text + "\n")
        finally:
            await drop_db(args.url, name)

    if parts & {"trigger", "rls"}:
        text, _, big_name = await bench_trigger(args.url, args.scale, args.inserts, 3)
        text, big_url = text.rsplit("\n", 1)
        print("## Pruning trigger\n\n" + text + "\n")
        try:
            if "rls" in parts:
                text, _ = await bench_rls(big_url, args.reads)
                print("## Dashboard read under RLS\n\n" + text)
        finally:
            await drop_db(args.url, big_name)


if __name__ == "__main__":
    asyncio.run(main())
