"""Scheduler soak: many integrations, many simulated 15-minute slots, real checks.

``--integrations`` generic ``http`` integrations (spread over ``--orgs`` organisations) are
imported into a fresh store — SQLite (default) or, with ``--store postgres``, a new database
on ``--postgres`` (created and dropped by the script). Their history is pre-filled with
``--prefill-history`` rows each (default 95, so the pruning trigger works from the second slot
on, as in a store that has been running for a day).

Then a real :class:`~integration_health.scheduling.scheduler.Scheduler` runs ``--slots``
slots with a controllable clock: the clock is set to ``T0 + slot × 15 min`` and passes are run
until nothing is due — ``--loop passes`` (default): ``Scheduler.run_pass`` again at once while
a full batch ran; ``--loop run``: ``Scheduler.run``, the loop of ``integration-health
scheduler``, whose passes overlap, stopped once a pass finds nothing left to plan. Every
integration comes due once per slot (interval 900 s). The checks
are real HEAD requests to a local fake server in its own process (``raw``, real sockets).
Before the first slot the script calls ``settle_heap()`` (``gc.freeze()`` and the collector's
raised thresholds), as the long-running commands do once started; the last lines give the
process's peak RSS.

After each slot (outside the timing, after ``gc.collect()``): checks run, passes, seconds,
checks/s, RSS MiB, open fds (``/proc/self/fd``), GC-tracked objects, history rows and
``integration_check_runs`` rows in the store (budgets keep no start times in memory since
2026-11-30: the store counts claims). Verdict lines: RSS growth
from slot 3 to the last slot, fd growth, throughput slope (least squares over the slots, % of
the mean per slot), history rows per integration ≤ 96, every integration checked once per
slot.

    .venv/bin/python bench/soak.py --integrations 10000 --slots 25             # SQLite
    .venv/bin/python bench/soak.py --integrations 10000 --slots 20 --store postgres
    .venv/bin/python bench/soak.py --integrations 100000 --slots 4
    .venv/bin/python bench/soak.py --store postgres --loop run --slots 12 --runs-retention-h 0.5

``--runs-retention-h`` shortens how long slot runs are kept (a day by default, more than a
soak simulates), so that pruning runs during the soak: ``integration_check_runs`` must level
off at about (retention + 1 h) of slots instead of growing by a slot's rows each slot.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from _servers import ServerProcess, markdown_table, raise_fd_limit
from integration_health import Settings, default_registry
from integration_health._heap import settle_heap
from integration_health.adapters.http import HttpConfig
from integration_health.integrations_file import to_records
from integration_health.scheduling.scheduler import PassReport, Scheduler, SchedulerOptions
from integration_health.store.base import Organization
from integration_health.store.sqlite import ts

T0 = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
SLOT = timedelta(minutes=15)
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


class Clock:
    """The scheduler's clock: a time the soak sets."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _org(n: int) -> uuid.UUID:
    return uuid.UUID(f"00000000-0000-4000-8000-{n:012x}")


# -- the stores: create, import, pre-fill history, count ---------------------------------------


class SoakStore:
    """Creates the store, fills it, counts its rows; one subclass per kind."""

    kind = ""

    async def open(self) -> Any:
        raise NotImplementedError

    async def prefill(self, per_integration: int) -> None:
        raise NotImplementedError

    async def counts(self) -> tuple[int, int]:
        """(history rows, integration_check_runs rows)."""
        raise NotImplementedError

    async def max_history_per_integration(self) -> int:
        raise NotImplementedError

    async def drop(self) -> None:
        pass


class SQLiteSoak(SoakStore):
    kind = "SQLite"

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="ih-soak-")
        self.path = Path(self._tmp.name) / "soak.db"

    async def open(self) -> Any:
        from integration_health.store.sqlite import SQLiteStore  # noqa: PLC0415

        return await SQLiteStore.open(f"sqlite:///{self.path}")

    async def prefill(self, per_integration: int) -> None:
        stamps = [(ts(T0 - SLOT * (k + 1)),) for k in range(per_integration)]
        with sqlite3.connect(self.path, isolation_level=None) as conn:
            trigger = conn.execute(
                "select sql from sqlite_master where type = 'trigger' "
                "and name = 'integration_health_history_prune'"
            ).fetchone()[0]
            conn.execute("begin")
            conn.execute("drop trigger integration_health_history_prune")
            conn.execute("create temp table stamps (t text)")
            conn.executemany("insert into stamps values (?)", stamps)
            conn.execute(
                "insert into integration_health_history "
                "(org_id, integration_id, status, latency_ms, checked_at) "
                "select i.org_id, i.id, 'healthy', 40, s.t from integrations i, stamps s "
                "order by i.id, s.t"
            )
            conn.execute(trigger)
            conn.execute("commit")

    async def counts(self) -> tuple[int, int]:
        with sqlite3.connect(self.path) as conn:
            history = conn.execute("select count(*) from integration_health_history").fetchone()
            runs = conn.execute("select count(*) from integration_check_runs").fetchone()
        return int(history[0]), int(runs[0])

    async def max_history_per_integration(self) -> int:
        with sqlite3.connect(self.path) as conn:
            row = conn.execute(
                "select max(n) from (select count(*) as n from integration_health_history "
                "group by integration_id)"
            ).fetchone()
        return int(row[0] or 0)

    def size_mib(self) -> float:
        return sum(p.stat().st_size for p in self.path.parent.iterdir()) / 2**20

    async def drop(self) -> None:
        self._tmp.cleanup()


class PostgresSoak(SoakStore):
    kind = "PostgreSQL"

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"ih_bench_soak_{uuid.uuid4().hex[:10]}"
        self.url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{self.name}"))
        self.created = False

    async def open(self) -> Any:
        import psycopg  # noqa: PLC0415

        from integration_health.store.postgres import PostgresStore  # noqa: PLC0415

        if not self.created:
            async with await psycopg.AsyncConnection.connect(
                self.admin_url, autocommit=True
            ) as conn:
                await conn.execute(f'create database "{self.name}"')
            self.created = True
            store = await PostgresStore.open(self.url)
            await store.upgrade()
            return store
        return await PostgresStore.open(self.url)

    async def _exec(self, *statements: str, params: Any = None) -> list[Any]:
        import psycopg  # noqa: PLC0415

        out = []
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            for statement in statements:
                cur = await conn.execute(statement, params)
                out.append(await cur.fetchone() if cur.description else None)
        return out

    async def prefill(self, per_integration: int) -> None:
        await self._exec(
            "alter table public.integration_health_history "
            "disable trigger integration_health_history_prune",
            "insert into public.integration_health_history "
            "(org_id, integration_id, status, latency_ms, checked_at) "
            "select i.org_id, i.id, 'healthy', 40, %(t0)s - make_interval(mins => 15 * k) "
            "from public.integrations i, generate_series(1, %(k)s) k order by i.id, k desc",
            "alter table public.integration_health_history "
            "enable trigger integration_health_history_prune",
            "vacuum analyze",
            params={"t0": T0, "k": per_integration},
        )

    async def counts(self) -> tuple[int, int]:
        (row,) = await self._exec(
            "select (select count(*) from public.integration_health_history), "
            "(select count(*) from public.integration_check_runs)"
        )
        return int(row[0]), int(row[1])

    async def max_history_per_integration(self) -> int:
        (row,) = await self._exec(
            "select max(n) from (select count(*) as n from public.integration_health_history "
            "group by integration_id) c"
        )
        return int(row[0] or 0)

    async def drop(self) -> None:
        import psycopg  # noqa: PLC0415

        if self.created:
            async with await psycopg.AsyncConnection.connect(
                self.admin_url, autocommit=True
            ) as conn:
                await conn.execute(f'drop database if exists "{self.name}" with (force)')


# -- the soak -----------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, base_url: str, box: SoakStore) -> list[dict[str, Any]]:
    n = args.integrations
    orgs = [Organization(_org(o), f"soak org {o}") for o in range(args.orgs)]
    t0 = time.monotonic()
    store = await box.open()
    items = [
        HttpConfig(
            integration_id=uuid.uuid4(),
            org_id=_org(i % args.orgs),
            name=f"soak {i}",
            url=f"{base_url}/health/{i}",
        )
        for i in range(n)
    ]
    await store.import_definitions(orgs, [], to_records(items))
    del items
    await store.aclose()
    if args.prefill_history:
        await box.prefill(args.prefill_history)
    print(
        f"  set-up: {n:,} integrations imported, history pre-filled with "
        f"{args.prefill_history} rows each, in {time.monotonic() - t0:.0f} s",
        flush=True,
    )
    store = await box.open()
    clock = Clock(T0)
    registry = default_registry(Settings(allow_private_networks=True, concurrency=args.concurrency))
    scheduler = Scheduler(
        store,
        registry,
        # --loop run: a short tick, so a slot ends soon after its last partial pass
        options=SchedulerOptions(
            batch_size=args.batch_size,
            tick_s=0.02 if args.loop == "run" else 5.0,
            runs_retention_s=args.runs_retention_h * 3600,
        ),
        clock=clock,
        worker="soak",
    )
    rows: list[dict[str, Any]] = []
    ran = passes = written = 0
    outcomes: dict[str, int] = {}
    stop = asyncio.Event()

    async def count(report: PassReport) -> None:
        nonlocal ran, passes, written
        passes += 1
        ran += report.ran
        written += report.written
        for o in report.outcomes:
            key = o.result.status.value
            outcomes[key] = outcomes.get(key, 0) + 1
        report.outcomes.clear()
        if report.due == 0:  # --loop run: nothing left to plan (running passes finish)
            stop.set()

    scheduler.after_pass.append(count)
    settle_heap()  # as `integration-health scheduler` once started (gc.freeze, thresholds)
    try:
        async with registry:
            for slot in range(1, args.slots + 1):
                clock.now = T0 + SLOT * (slot - 1)
                ran = passes = written = 0
                outcomes.clear()
                started = time.monotonic()
                if args.loop == "run":
                    stop.clear()
                    await scheduler.run(stop)
                else:
                    while (await scheduler.run_pass(clock.now)).ran >= args.batch_size:
                        pass
                elapsed = time.monotonic() - started
                gc.collect()
                history, runs = await box.counts()
                row = {
                    "slot": slot,
                    "ran": ran,
                    "written": written,
                    "passes": passes,
                    "seconds": elapsed,
                    "rate": ran / elapsed if elapsed else 0.0,
                    "rss": rss_mib(),
                    "fds": open_fds(),
                    "gc_objects": len(gc.get_objects()),
                    "history": history,
                    "runs": runs,
                    "healthy": outcomes.get("healthy", 0),
                    "load": loadavg().split()[0],
                }
                rows.append(row)
                print(
                    f"  slot {slot:>3}: {ran:>7,} checks in {passes:>3} passes, "
                    f"{elapsed:7.1f} s, {row['rate']:6,.0f} checks/s, RSS {row['rss']:6.1f} MiB, "
                    f"fds {row['fds']:>4}, "
                    f"GC objects {row['gc_objects']:>9,}, history {history:>10,}, "
                    f"check_runs {runs:>10,}, "
                    f"load {row['load']}",
                    flush=True,
                )
        max_history = await box.max_history_per_integration()
        rows[-1]["max_history"] = max_history
    finally:
        await store.aclose()
    return rows


def slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against 0, 1, 2, …"""
    if len(values) < 2:
        return 0.0
    xs = list(range(len(values)))
    mx, my = statistics.fmean(xs), statistics.fmean(values)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True))
    den = sum((x - mx) ** 2 for x in xs)
    return num / den


async def amain(args: argparse.Namespace) -> int:
    soft, _ = raise_fd_limit()
    load_before = loadavg()
    box: SoakStore = PostgresSoak(args.postgres) if args.store == "postgres" else SQLiteSoak()
    print(
        f"# soak: {args.integrations:,} http integrations in {args.orgs} orgs, {args.slots} "
        f"slots of 15 simulated minutes, store {box.kind}, batch_size {args.batch_size}, "
        f"concurrency {args.concurrency}; Python {platform.python_version()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, fd limit {soft}, load average {load_before}",
        flush=True,
    )
    try:
        with ServerProcess("raw") as server:
            rows = await soak(args, server.url, box)
    finally:
        await box.drop()
    load_after = loadavg()
    headers = [
        "slot",
        "checks run",
        "passes",
        "seconds",
        "checks/s",
        "RSS MiB",
        "open fds",
        "GC objects",
        "history rows",
        "check_runs rows",
        "load 1m",
    ]
    table = [
        [
            str(r["slot"]),
            f"{r['ran']:,}",
            str(r["passes"]),
            f"{r['seconds']:.1f}",
            f"{r['rate']:,.0f}",
            f"{r['rss']:.1f}",
            str(r["fds"]),
            f"{r['gc_objects']:,}",
            f"{r['history']:,}",
            f"{r['runs']:,}",
            r["load"],
        ]
        for r in rows
    ]
    print()
    print(markdown_table(headers, table, left=0))
    print()
    n = args.integrations
    base = rows[2] if len(rows) >= 3 else rows[0]
    last = rows[-1]
    rss_growth = last["rss"] - base["rss"]
    print(
        f"RSS growth slot {base['slot']} → {last['slot']}: {rss_growth:+.1f} MiB "
        f"({rss_growth / base['rss'] * 100:+.1f} %); "
        f"per slot {slope([r['rss'] for r in rows[2:]] or [0.0]):+.2f} MiB"
    )
    print(
        f"GC objects slot {base['slot']} → {last['slot']}: "
        f"{last['gc_objects'] - base['gc_objects']:+,}"
    )
    fd_growth = last["fds"] - base["fds"]
    print(
        f"fd growth slot {base['slot']} → {last['slot']}: {fd_growth:+d} "
        f"({'ok' if abs(fd_growth) <= 2 else 'LEAK?'}; range {min(r['fds'] for r in rows)}–"
        f"{max(r['fds'] for r in rows)})"
    )
    rates = [r["rate"] for r in rows[1:]] or [rows[0]["rate"]]
    mean_rate = statistics.fmean(rates)
    print(
        f"throughput: mean {mean_rate:,.0f} checks/s over slots 2–{last['slot']}; slope "
        f"{slope(rates):+.1f} checks/s per slot ({slope(rates) / mean_rate * 100:+.2f} % per slot)"
    )
    every = all(r["ran"] == n and r["written"] == n for r in rows)
    healthy = all(r["healthy"] == n for r in rows)
    print(
        f"every integration checked and written once per slot: {'yes' if every else 'NO'}; "
        f"all healthy: {'yes' if healthy else 'NO'}"
    )
    expected_history = min(96, args.prefill_history + len(rows)) * n
    print(
        f"history: {last['history']:,} rows (expected {expected_history:,}), at most "
        f"{last['max_history']} per integration ({'ok' if last['max_history'] <= 96 else 'NO'} "
        f"≤ 96)"
    )
    print(
        f"integration_check_runs: {last['runs']:,} rows after {len(rows)} slots "
        f"({last['runs'] / n:.1f} per integration; runs older than {args.runs_retention_h:g} h"
        f" are pruned, a round every simulated hour; at most"
        f" {(args.runs_retention_h + 1) * 4 + 1:g} slots' worth stay)"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:,.1f} MiB (this process, set-up included)")
    print(f"load average before {load_before}, after {load_after}")
    return 0 if every else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--integrations", type=int, default=100_000, help="default: 100000")
    parser.add_argument("--orgs", type=int, default=100, help="organisations (default: 100)")
    parser.add_argument("--slots", type=int, default=20, help="15-minute slots (default: 20)")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres", default=ADMIN_URL, help="server for --store postgres")
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="SchedulerOptions.batch_size (default: 1000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=100, help="checks in flight (default: 100)"
    )
    parser.add_argument(
        "--loop",
        choices=("passes", "run"),
        default="passes",
        help="run_pass back to back (default), or Scheduler.run (overlapping passes)",
    )
    parser.add_argument(
        "--runs-retention-h",
        type=float,
        default=24.0,
        help="SchedulerOptions.runs_retention_s in hours (default: 24; a pruning round starts"
        " once an hour of the simulated clock, i.e. every 4 slots)",
    )
    parser.add_argument(
        "--prefill-history",
        type=int,
        default=95,
        help="history rows per integration before the first slot (default: 95)",
    )
    args = parser.parse_args(argv)
    if min(args.integrations, args.orgs, args.slots, args.batch_size, args.concurrency) < 1:
        parser.error("--integrations, --orgs, --slots, --batch-size, --concurrency: positive")
    if args.runs_retention_h * 3600 < SchedulerOptions().lease_s:
        parser.error("--runs-retention-h must cover the lease (120 s)")
    if not 0 <= args.prefill_history <= 96:
        parser.error("--prefill-history must be between 0 and 96")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except (RuntimeError, OSError) as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a store error: one line, no traceback
        print(f"soak: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
