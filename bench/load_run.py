"""One run of 10,000 ``http`` integrations of one organisation, stored and written back.

``--integrations`` generic ``http`` integrations of one organisation are imported into a
fresh store (not timed): a SQLite file by default, or, with ``--postgres ADMIN_URL``, a new
PostgreSQL database created on that server (and dropped at the end). Then one
``run_health_checks(org, store=store, registry=default_registry(…))`` — the same call as
``integration-health check --org`` — loads them from the store, checks every one against a
local fake server in its own process (``raw`` kind, see ``_servers.py``; real sockets on
127.0.0.1) and writes every status and history row.

``--refused-every K`` (default 100) points every K-th integration at a closed local port, so
that the run has a known mix of outcomes: those must come back ``unreachable`` with
``error_code`` ``connection``, all others ``healthy``.

Reported: wall time and checks/s of the run, CPU, RSS before / peak (sampled every 20 ms and
``ru_maxrss``) / after, open file descriptors (``/proc/self/fd``) before / peak / after, the
rows in the store afterwards (status and history, counted with SQL), and whether every status
is the expected one. Verdict lines: every result written, statuses correct, fds back to the
starting count.

    .venv/bin/python bench/load_run.py                                  # SQLite
    .venv/bin/python bench/load_run.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import resource
import socket
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from _servers import ServerProcess, markdown_table, raise_fd_limit
from integration_health import HealthStatus, Settings, default_registry, run_health_checks
from integration_health.adapters.http import HttpConfig
from integration_health.integrations_file import to_records
from integration_health.store.base import Organization

ORG = UUID("00000000-0000-4000-8000-00000000d0d0")


def rss_mib() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> int:
    """File descriptors this process has open now."""
    return len(os.listdir("/proc/self/fd"))


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def closed_port() -> int:
    """A local port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Sampler:
    """Samples RSS and open fds every ``period_s`` while running (peaks only)."""

    def __init__(self, period_s: float = 0.02) -> None:
        self.period_s = period_s
        self.peak_rss = 0.0
        self.peak_fds = 0
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.period_s)

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, rss_mib())
        self.peak_fds = max(self.peak_fds, open_fds())

    async def __aenter__(self) -> Sampler:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sample()


def _db_url(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


async def count_rows_sqlite(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        status = conn.execute("select count(*) from integration_health_status").fetchone()[0]
        history = conn.execute("select count(*) from integration_health_history").fetchone()[0]
    return int(status), int(history)


async def count_rows_postgres(url: str) -> tuple[int, int]:
    import psycopg  # noqa: PLC0415 - only with --postgres

    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "select (select count(*) from public.integration_health_status), "
            "(select count(*) from public.integration_health_history)"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def run(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    refused = f"http://127.0.0.1:{closed_port()}"
    items = [
        HttpConfig(
            integration_id=uuid.uuid4(),
            org_id=ORG,
            name=f"load {i}",
            url=(
                f"{refused}/down/{i}"
                if args.refused_every and i % args.refused_every == 0
                else f"{base_url}/health/{i}"
            ),
        )
        for i in range(args.integrations)
    ]
    expected = {
        item.integration_id: (
            ("unreachable", "connection") if "/down/" in item.url else ("healthy", None)
        )
        for item in items
    }
    registry = default_registry(Settings(allow_private_networks=True))
    tmp = tempfile.TemporaryDirectory(prefix="ih-load-")
    admin_url: str = args.postgres
    db_name = f"ih_bench_load_{uuid.uuid4().hex[:10]}"
    store: Any
    if args.postgres:
        import psycopg  # noqa: PLC0415 - only with --postgres

        from integration_health.store.postgres import PostgresStore  # noqa: PLC0415

        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
            await conn.execute(f'create database "{db_name}"')
        url = _db_url(admin_url, db_name)
        store = await PostgresStore.open(url)
        await store.upgrade()
        kind = "PostgreSQL"
    else:
        from integration_health.store.sqlite import SQLiteStore  # noqa: PLC0415

        path = Path(tmp.name) / "load.db"
        store = await SQLiteStore.open(f"sqlite:///{path}")
        kind = "SQLite"
    try:
        await store.import_definitions([Organization(ORG, "Load")], [], to_records(items))
        del items
        gc.collect()
        rss_before, fds_before = rss_mib(), open_fds()
        async with Sampler() as sampler:
            cpu0, t0 = time.process_time(), time.monotonic()
            outcomes = await run_health_checks(
                ORG, store=store, registry=registry, concurrency=args.concurrency
            )
            elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
        rss_after_run, fds_after_run = rss_mib(), open_fds()
        statuses = await store.list_statuses(ORG)
        if args.postgres:
            rows = await count_rows_postgres(url)
        else:
            rows = await count_rows_sqlite(path)
    finally:
        await store.aclose()
        if args.postgres:
            import psycopg  # noqa: PLC0415

            async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
                await conn.execute(f'drop database if exists "{db_name}" with (force)')
        tmp.cleanup()
    got = Counter(
        f"{o.result.status.value}/{o.result.error_code.value if o.result.error_code else '-'}"
        for o in outcomes
    )
    wrong_results = sum(
        1
        for o in outcomes
        if (
            o.result.status.value,
            o.result.error_code.value if o.result.error_code else None,
        )
        != expected[o.integration.integration_id]
    )
    wrong_stored = sum(
        1
        for s in statuses
        if (s.status.value, s.error_code.value if s.error_code else None)
        != expected[s.integration_id]
    )
    missing = len(set(expected) - {s.integration_id for s in statuses})
    gc.collect()
    return {
        "store": kind,
        "checks": len(outcomes),
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "rss_before": rss_before,
        "rss_peak": sampler.peak_rss,
        "rss_after": rss_after_run,
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "fds_before": fds_before,
        "fds_peak": sampler.peak_fds,
        "fds_after": fds_after_run,
        "fds_closed": open_fds(),
        "status_rows": rows[0],
        "history_rows": rows[1],
        "outcomes": dict(got),
        "wrong_results": wrong_results,
        "wrong_stored": wrong_stored,
        "missing": missing,
        "healthy": sum(1 for s in statuses if s.status is HealthStatus.HEALTHY),
    }


async def amain(args: argparse.Namespace) -> int:
    soft, _ = raise_fd_limit()
    load_before = loadavg()
    print(
        f"# load_run: {args.integrations:,} http integrations of one org, concurrency "
        f"{args.concurrency}, store {'PostgreSQL' if args.postgres else 'SQLite'}, fake server "
        f"raw in its own process; Python {platform.python_version()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, fd limit {soft}, load average {load_before}",
        flush=True,
    )
    with ServerProcess("raw") as server:
        cpu_server0 = server.cpu_seconds()
        r = await run(args, server.url)
        cpu_server1 = server.cpu_seconds()
    load_after = loadavg()
    n = r["checks"]
    server_cpu = (
        f"{(cpu_server1 - cpu_server0) / r['elapsed_s'] * 100:.0f} %"
        if cpu_server0 is not None and cpu_server1 is not None
        else "n/a"
    )
    headers = [
        "store",
        "checks",
        "seconds",
        "checks/s",
        "client CPU",
        "server CPU ≤",
        "RSS MiB before / peak / after",
        "ru_maxrss MiB",
        "fds before / peak / after",
        "status rows",
        "history rows",
        "outcomes",
        "wrong statuses",
    ]
    row = [
        r["store"],
        f"{n:,}",
        f"{r['elapsed_s']:.2f}",
        f"{n / r['elapsed_s']:,.0f}",
        f"{r['cpu_s'] / r['elapsed_s'] * 100:.0f} %",
        server_cpu,
        f"{r['rss_before']:.0f} / {r['rss_peak']:.0f} / {r['rss_after']:.0f}",
        f"{r['maxrss']:.0f}",
        f"{r['fds_before']} / {r['fds_peak']} / {r['fds_after']}",
        f"{r['status_rows']:,}",
        f"{r['history_rows']:,}",
        ", ".join(f"{k} {v:,}" for k, v in sorted(r["outcomes"].items())),
        f"{r['wrong_results']} returned, {r['wrong_stored']} stored",
    ]
    print()
    print(markdown_table(headers, [row], left=1))
    print()
    written = r["status_rows"] == n == args.integrations and r["history_rows"] == n
    correct = r["wrong_results"] == 0 and r["wrong_stored"] == 0 and r["missing"] == 0
    fds_ok = r["fds_after"] - r["fds_before"] <= 2
    print(
        f"every result written: {'yes' if written else 'NO'} ({r['status_rows']:,} status, "
        f"{r['history_rows']:,} history rows for {n:,} checks)"
    )
    print(f"statuses correct: {'yes' if correct else 'NO'} ({r['missing']} missing)")
    print(
        f"fds back to the start after the run: {'yes' if fds_ok else 'NO'} "
        f"({r['fds_before']} → {r['fds_after']}; {r['fds_closed']} after closing the store)"
    )
    print(f"load average before {load_before}, after {load_after}")
    return 0 if written and correct and fds_ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--integrations", type=int, default=10_000, help="integrations (default: 10000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=100, help="checks in flight (default: 100)"
    )
    parser.add_argument(
        "--refused-every",
        type=int,
        default=100,
        help="every K-th integration points at a closed port (default: 100; 0: none)",
    )
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        default="",
        help="use a new PostgreSQL database on this server (a role that may create databases)",
    )
    args = parser.parse_args(argv)
    if args.integrations < 1 or args.concurrency < 1 or args.refused_every < 0:
        parser.error("--integrations and --concurrency must be positive, --refused-every ≥ 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except (RuntimeError, OSError) as exc:
        print(f"load_run: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a store error: one line, no traceback
        print(f"load_run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
