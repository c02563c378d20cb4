"""Planning cost on PostgreSQL: ``PostgresStore.list_due`` and ``Scheduler.plan`` as N grows.

For each size in ``--sizes`` (default 10,000, 100,000 and 1,000,000 integrations) the script
creates a fresh database on the server at ``--admin-url`` (a superuser; default
``postgresql://postgres@127.0.0.1:5432/postgres``), applies the schema with
``PostgresStore.upgrade()``, seeds it server-side with ``generate_series`` (organisations of
1,000 integrations; generic ``http`` configs) and drops it at the end.

The state seeded is a steady 15-minute schedule: every integration has a status row whose
``next_check_at`` is spread evenly over one interval so that ``--due-fraction`` (default 1/96)
of them are due at the planning instant ``at``, plus ``--never-checked`` integrations without a
status row (the planner puts those first). 1 % of the integrations are passive or disabled.
The slot runs table holds a done run of every checked integration's previous slot, and the
``--claimed`` earliest due slots are claimed and not done (queued or running batches, which
``list_due`` skips).

Timed, ``--rounds`` times each (medians reported):

- ``list_due``: ``PostgresStore.list_due(at, limit=batch_size, claimed_since=at − lease)``
  — the planning query plus turning rows into records (what ``Scheduler.plan`` asks for);
- ``plan pass``: ``Scheduler.plan(at, report)`` — that query, the type modes, turning each
  record into its config model, and the pure planner (``batch_size`` checks chosen);
- ``query only``: the SQL ``list_due`` sends, executed on a raw connection (with any planner
  setting the store sets for it) and fetched, without Python row handling: the database's share;

The ``EXPLAIN (ANALYZE, BUFFERS)`` of the same statement is printed for the largest size, and
its top plan lines for every size. Target (issue 5): one planning pass ≤ 1 s at 1M.

    .venv/bin/python bench/planning_cost.py                      # 10k, 100k, 1M
    .venv/bin/python bench/planning_cost.py --sizes 10000,100000 # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from _servers import markdown_table
from integration_health.checks import default_registry
from integration_health.scheduling.scheduler import PassReport, Scheduler, SchedulerOptions
from integration_health.settings import Settings
from integration_health.store import postgres as pg_module
from integration_health.store.postgres import PostgresStore

AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
INTERVAL_S = 900
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _db_url(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def _loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


SEED_ORGS = """
insert into public.organizations (id, name)
select ('00000000-0000-4000-8000-' || lpad(to_hex(o), 12, '0'))::uuid, 'org ' || o
from generate_series(0, %(orgs)s - 1) o
"""

# Deterministic ids (md5 of the number), so every size is seeded the same way. 1 % of the
# integrations are passive or disabled (never planned).
SEED_INTEGRATIONS = """
insert into public.integrations (id, org_id, integration_type, name, config, monitoring_mode)
select md5('i' || n)::uuid,
       ('00000000-0000-4000-8000-' || lpad(to_hex(n / 1000), 12, '0'))::uuid,
       'http', 'integration ' || n,
       jsonb_build_object('url', 'http://127.0.0.1:9/health/' || n),
       case when n %% 100 = 7 then 'passive' when n %% 100 = 8 then 'disabled' else 'active' end
from generate_series(0, %(n)s - 1) n
"""

# Every integration but the last ``never`` has a status row; next_check_at is spread evenly
# over one interval so that ``due`` of every ``n`` are due at ``at``.
SEED_STATUS = """
insert into public.integration_health_status (
    integration_id, org_id, integration_type, status, latency_ms, checked_at,
    consecutive_failures, last_healthy_at, next_check_at, details
)
select md5('i' || n)::uuid,
       ('00000000-0000-4000-8000-' || lpad(to_hex(n / 1000), 12, '0'))::uuid,
       'http', 'healthy', 40, t.next_at - make_interval(secs => %(interval)s), 0,
       t.next_at - make_interval(secs => %(interval)s), t.next_at, '{"http_status": 200}'
from generate_series(0, %(n)s - %(never)s - 1) n,
     lateral (select %(at)s::timestamptz
                     - make_interval(secs => %(interval)s * %(due)s)
                     + make_interval(secs => %(interval)s * ((n::bigint * 7919) %% %(n)s)::float8
                                     / %(n)s) as next_at) t
"""


# Slot runs as the scheduler leaves them: every checked integration's previous slot is done;
# the ``claimed`` earliest due checks are claimed and not done (batches queued or running),
# which ``list_due(claimed_since=…)`` skips.
SEED_RUNS = """
insert into public.integration_check_runs (
    integration_id, slot_at, org_id, state, worker, claimed_at, finished_at
)
select s.integration_id, s.next_check_at - make_interval(secs => %(interval)s), s.org_id,
       'done', 'seed', s.checked_at, s.checked_at
from public.integration_health_status s
"""
SEED_CLAIMS = """
insert into public.integration_check_runs (
    integration_id, slot_at, org_id, state, worker, claimed_at
)
select s.integration_id, s.next_check_at, s.org_id, 'claimed', 'plan:seed', %(at)s
from public.integration_health_status s
join public.integrations i on i.id = s.integration_id
where s.next_check_at <= %(at)s and i.enabled and i.monitoring_mode = 'active'
order by s.next_check_at, s.integration_id
limit %(claimed)s
"""


async def seed(
    url: str, n: int, *, due_fraction: float, never: int, claimed: int
) -> dict[str, int]:
    """Seed ``n`` integrations; returns how many are due at ``AT`` (by a direct count)."""
    params = {
        "orgs": (n + 999) // 1000,
        "n": n,
        "never": never,
        "interval": INTERVAL_S,
        "due": due_fraction,
        "at": AT,
        "claimed": claimed,
    }
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(SEED_ORGS, params)
        await conn.execute(SEED_INTEGRATIONS, params)
        await conn.execute(SEED_STATUS, params)
        await conn.execute(SEED_RUNS, params)
        await conn.execute(SEED_CLAIMS, params)
        await conn.execute("vacuum analyze")
        cur = await conn.execute(
            "select count(*) filter (where s.integration_id is null), "
            "count(*) filter (where s.next_check_at <= %s) "
            "from public.integrations i "
            "left join public.integration_health_status s on s.integration_id = i.id "
            "where i.enabled and i.monitoring_mode = 'active'",
            (AT,),
        )
        row = await cur.fetchone()
        assert row is not None
        return {"never": int(row[0]), "due": int(row[0]) + int(row[1])}


class _Capture:
    """Wraps ``postgres._fetch_tuples`` (how ``list_due`` reads) to remember the last
    statement, its parameters and any planner settings the store changed on the connection
    for it (``set local …``)."""

    def __init__(self) -> None:
        self.query: str | None = None
        self.params: Any = None
        self.settings: list[tuple[str, str]] = []
        self._original = pg_module._fetch_tuples

    async def __call__(self, conn: Any, query: str, params: Any = None) -> Any:
        self.query, self.params = query, params
        cur = await conn.execute(
            "select name, setting from pg_settings where source = 'session' "
            "and name not in ('application_name', 'client_encoding', 'DateStyle', "
            "'IntervalStyle', 'TimeZone', 'extra_float_digits')"
        )
        self.settings = [(r[0], r[1]) for r in await cur.fetchall()]
        return await self._original(conn, query, params)

    def __enter__(self) -> _Capture:
        pg_module._fetch_tuples = self
        return self

    def __exit__(self, *_exc: object) -> None:
        pg_module._fetch_tuples = self._original


async def measure(
    url: str, n: int, *, rounds: int, batch_size: int, explain_full: bool
) -> dict[str, Any]:
    store = await PostgresStore.open(url)
    registry = default_registry(Settings(allow_private_networks=True))
    options = SchedulerOptions(batch_size=batch_size)
    scheduler = Scheduler(store, registry, options=options, clock=lambda: AT)
    limit = batch_size  # as Scheduler.plan asks (it reads on only when checks are held back)
    claimed_since = AT - timedelta(seconds=options.lease_s)
    times: dict[str, list[float]] = {
        "list_due": [],
        "plan pass": [],
        "query only": [],
    }
    try:
        with _Capture() as capture:
            # warm-up; captures the statement
            due = await store.list_due(AT, limit=limit, claimed_since=claimed_since)
        assert capture.query is not None
        query, params = capture.query, capture.params
        raw = await psycopg.AsyncConnection.connect(url, autocommit=True)
        for name, value in capture.settings:  # as the store runs it
            await raw.execute("select set_config(%s, %s, false)", (name, value))
        try:
            await raw.execute(query, params)  # warm the raw connection too
            for _ in range(rounds):
                t0 = time.perf_counter()
                cur = await raw.execute(query, params)
                await cur.fetchall()
                times["query only"].append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                due = await store.list_due(AT, limit=limit, claimed_since=claimed_since)
                times["list_due"].append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                plan, _previous = await scheduler.plan(AT, PassReport(at=AT))
                times["plan pass"].append(time.perf_counter() - t0)
            cur = await raw.execute("explain (analyze, buffers) " + query, params)
            explain = [r[0] for r in await cur.fetchall()]
        finally:
            await raw.close()
    finally:
        await store.aclose()
    return {
        "n": n,
        "returned": len(due),
        "planned": len(plan.run),
        "times": times,
        "explain": explain,
        "explain_full": explain_full,
        "settings": capture.settings,
    }


async def one_size(admin_url: str, n: int, args: argparse.Namespace, last: bool) -> dict[str, Any]:
    name = f"ih_bench_plan_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f'create database "{name}"')
    url = _db_url(admin_url, name)
    try:
        store = await PostgresStore.open(url)
        try:
            await store.upgrade()
        finally:
            await store.aclose()
        t0 = time.perf_counter()
        counts = await seed(
            url, n, due_fraction=args.due_fraction, never=args.never_checked, claimed=args.claimed
        )
        seed_s = time.perf_counter() - t0
        print(
            f"  seeded {n:,} integrations in {seed_s:.1f} s: {counts['due']:,} due at the "
            f"planning instant ({counts['never']:,} never checked); load {_loadavg()}",
            flush=True,
        )
        result = await measure(
            url, n, rounds=args.rounds, batch_size=args.batch_size, explain_full=last
        )
        result.update(counts)
        return result
    finally:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
            await conn.execute(f'drop database if exists "{name}" with (force)')


def _plan_summary(explain: list[str]) -> str:
    """The first plan node and every index or sequential scan, condensed to one line."""
    nodes = [line.strip().lstrip("-> ").split("  (")[0] for line in explain if "cost=" in line]
    scans = [n for n in nodes if "Scan" in n]
    return f"{nodes[0] if nodes else '?'}; " + "; ".join(scans)


async def amain(args: argparse.Namespace) -> int:
    print(
        f"# planning_cost: sizes {', '.join(f'{n:,}' for n in args.sizes)}; due fraction "
        f"{args.due_fraction:.4f}; batch_size {args.batch_size} (list_due limit "
        f"{args.batch_size}, {args.claimed} due slots claimed); "
        f"{args.rounds} rounds; load average {_loadavg()}",
        flush=True,
    )
    results = []
    for index, n in enumerate(args.sizes):
        results.append(await one_size(args.admin_url, n, args, index == len(args.sizes) - 1))
        r = results[-1]
        print(
            f"  {n:>9,}: list_due {statistics.median(r['times']['list_due']) * 1000:8.1f} ms, "
            f"plan pass {statistics.median(r['times']['plan pass']) * 1000:8.1f} ms; "
            f"load {_loadavg()}",
            flush=True,
        )
    headers = [
        "integrations",
        "due at `at`",
        "rows returned",
        "planned",
        "query only ms",
        "list_due ms",
        "plan pass ms",
        "plan pass max ms",
        "execution ms (EXPLAIN)",
    ]
    rows = []
    for r in results:
        t = r["times"]
        exec_ms = next(
            (line.split(":")[1].strip() for line in r["explain"] if "Execution Time" in line), "?"
        )
        rows.append(
            [
                f"{r['n']:,}",
                f"{r['due']:,}",
                f"{r['returned']:,}",
                f"{r['planned']:,}",
                f"{statistics.median(t['query only']) * 1000:.1f}",
                f"{statistics.median(t['list_due']) * 1000:.1f}",
                f"{statistics.median(t['plan pass']) * 1000:.1f}",
                f"{max(t['plan pass']) * 1000:.1f}",
                exec_ms,
            ]
        )
    print()
    print(markdown_table(headers, rows, left=0))
    print()
    for r in results:
        print(f"plan at {r['n']:,}: {_plan_summary(r['explain'])}")
    print()
    settings = ", ".join(f"{k} = {v}" for k, v in results[-1]["settings"]) or "none"
    print(f"EXPLAIN (ANALYZE, BUFFERS) at {results[-1]['n']:,} (session settings: {settings}):")
    for line in results[-1]["explain"]:
        print("    " + line)
    print()
    biggest = results[-1]
    worst = statistics.median(biggest["times"]["plan pass"])
    verdict = "meets" if worst <= 1.0 else "MISSES"
    print(
        f"planning pass at {biggest['n']:,}: median {worst * 1000:.0f} ms — {verdict} the "
        f"≤ 1 s target; load average now {_loadavg()}"
    )
    if len(results) > 1:
        first = results[0]
        growth = statistics.median(biggest["times"]["plan pass"]) / statistics.median(
            first["times"]["plan pass"]
        )
        print(
            f"growth {first['n']:,} → {biggest['n']:,} integrations "
            f"(×{biggest['n'] / first['n']:,.0f}): plan pass ×{growth:.1f}"
        )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        help="comma-separated integration counts (default: 10000,100000,1000000)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default: 7)")
    parser.add_argument(
        "--due-fraction",
        type=float,
        default=1 / 96,
        help="share of integrations due at the planning instant (default: 1/96)",
    )
    parser.add_argument(
        "--never-checked",
        type=int,
        default=100,
        help="integrations without a status row (default: 100)",
    )
    parser.add_argument(
        "--claimed",
        type=int,
        default=1000,
        help="due slots claimed and not done, skipped by list_due (default: 1000)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="SchedulerOptions.batch_size (default: 1000)"
    )
    parser.add_argument("--admin-url", default=ADMIN_URL, help="a superuser URL")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes must be comma-separated integers")
    if not args.sizes or min(args.sizes) < 1000:
        parser.error("--sizes must be integers of at least 1000")
    if args.rounds < 1 or args.batch_size < 1:
        parser.error("--rounds and --batch-size must be positive")
    if not 0 < args.due_fraction <= 1:
        parser.error("--due-fraction must be in (0, 1]")
    if args.never_checked < 0 or args.never_checked >= min(args.sizes):
        parser.error("--never-checked must be between 0 and the smallest size")
    if args.claimed < 0:
        parser.error("--claimed must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except (psycopg.Error, OSError) as exc:
        print(f"planning_cost: PostgreSQL failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
