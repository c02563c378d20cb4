"""The scheduler's own CPU per check, without the checks: what scheduling and persistence add.

``end_to_end.py`` measures the scheduler with real HTTP checks against a fake vendor, on the
same cores as PostgreSQL and the vendor; its ratios move by ±10 % between runs on this shared
machine, which hides any change worth a few per cent. Here every check is **instant** (the
``http`` type's check is replaced by one that returns a healthy result at once, without I/O),
so what is left of the scheduler's CPU is its own work: reading due rows, planning, parsing
configs, claiming slots, building and writing results, metrics. Set-up as ``end_to_end.py``
(``--integrations`` ``http`` integrations in ``--orgs`` organisations, a PostgreSQL template
database, a fresh clone per scheduler run; ``--checked``: the steady state, every integration
checked 16 minutes ago and due again). Variants, in fresh processes, alternated over
``--rounds``:

- ``runner``: ``execute_checks(…)`` over the integrations loaded beforehand (not timed);
- ``scheduler``: ``Scheduler.run`` on ``PostgresStore`` until a pass finds nothing left to plan
  (as ``end_to_end.py``'s scheduler child, TLS trust store loaded beforehand);
- ``worker`` (``--worker``): one ``integration-health worker`` (procrastinate, tick 1 s, batches
  of 50) until every slot is done, as ``end_to_end.py``'s worker child.

Columns: process CPU per check (the figure to compare), wall time, and the scheduler's
**overhead**: its CPU per check minus the runner's median. The minimum over the rounds is the
steadiest estimate of the work itself on a shared machine (contention only adds); compare two
versions of the code by running this script with each, one after the other.

    .venv/bin/python bench/scheduling_overhead.py --checked
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import end_to_end as e2e
from _servers import markdown_table

SCRIPT = str(Path(__file__).resolve())
KINDS = ("runner", "scheduler", "worker")


def _registry(concurrency: int) -> Any:
    from integration_health import HealthResult, Settings  # noqa: PLC0415
    from integration_health.adapters.http import HttpConfig  # noqa: PLC0415
    from integration_health.checks import Adapter, CheckRegistry  # noqa: PLC0415

    class InstantCheck:
        """Healthy at once: the runner's machinery (lanes, deadline, result) without I/O."""

        integration_type = "http"

        async def check(self, org_id: uuid.UUID, config: HttpConfig) -> HealthResult:
            await asyncio.sleep(0)  # one trip through the event loop, as any awaited I/O
            return HealthResult.healthy(3)

    check = InstantCheck()
    settings = Settings(allow_private_networks=True, concurrency=concurrency)
    return CheckRegistry([Adapter("http", HttpConfig, lambda _context: check)], settings=settings)


async def _child_runner(db: str, concurrency: int) -> dict[str, Any]:
    from integration_health.policy import StatusRules  # noqa: PLC0415
    from integration_health.runner import execute_checks  # noqa: PLC0415
    from integration_health.store.postgres import PostgresStore  # noqa: PLC0415

    registry = _registry(concurrency)
    store = await PostgresStore.open(db)
    try:
        records = await store.list_integrations()
    finally:
        await store.aclose()
    items = [registry.from_record(r) for r in records]
    async with registry:
        gc.collect()
        gc.freeze()
        cpu0, t0 = time.process_time(), time.monotonic()
        outcomes = await execute_checks(
            items,
            registry=registry,
            timeout_s=10,
            concurrency=concurrency,
            rules=StatusRules(registry.settings.degraded_latency_ms),
        )
        return {
            "checks": len(outcomes),
            "cpu_s": time.process_time() - cpu0,
            "wall_s": time.monotonic() - t0,
        }


async def _child_scheduler(db: str, concurrency: int, batch: int) -> dict[str, Any]:
    from integration_health.scheduling import Scheduler, SchedulerOptions  # noqa: PLC0415
    from integration_health.scheduling.scheduler import PassReport  # noqa: PLC0415
    from integration_health.store.postgres import PostgresStore  # noqa: PLC0415

    registry = _registry(concurrency)
    store = await PostgresStore.open(db)
    ran = 0
    stop = asyncio.Event()

    async def count(report: PassReport) -> None:
        nonlocal ran
        ran += report.ran
        report.outcomes.clear()
        if report.due == 0:
            stop.set()

    options = SchedulerOptions(batch_size=batch, tick_s=0.02)
    scheduler = Scheduler(store, registry, options=options, after_pass=[count])
    try:
        await store.ping()
        async with registry:
            await registry.warm_up([])  # start-up, not per-check work (see end_to_end.py)
            gc.collect()
            gc.freeze()
            cpu0, t0 = time.process_time(), time.monotonic()
            await asyncio.wait_for(scheduler.run(stop), timeout=600)
            return {
                "checks": ran,
                "cpu_s": time.process_time() - cpu0,
                "wall_s": time.monotonic() - t0,
            }
    finally:
        await store.aclose()


async def _child_worker(db: str, concurrency: int, batch: int, expected: int) -> dict[str, Any]:
    import psycopg  # noqa: PLC0415

    from integration_health.scheduling import SchedulerOptions  # noqa: PLC0415
    from integration_health.scheduling.distributed import (  # noqa: PLC0415
        QUEUE,
        build_app,
        default_jobs,
        ensure_procrastinate_schema,
        make_runtime,
        set_runtime,
    )
    from integration_health.store.postgres import PostgresStore  # noqa: PLC0415

    registry = _registry(concurrency)
    await ensure_procrastinate_schema(db)
    store = await PostgresStore.open(db)
    runtime = make_runtime(store, registry, SchedulerOptions(batch_size=batch))
    set_runtime(runtime)
    app = build_app(db, tick_s=1)
    try:
        async with (
            await psycopg.AsyncConnection.connect(db, autocommit=True) as watch,
            registry,
            app.open_async(),
        ):
            await registry.warm_up([])
            gc.collect()
            gc.freeze()
            cpu0, t0 = time.process_time(), time.monotonic()
            worker = asyncio.create_task(
                app.run_worker_async(
                    queues=[QUEUE],
                    concurrency=default_jobs(concurrency),
                    install_signal_handlers=False,
                )
            )
            done = 0
            while done < expected:  # as end_to_end.py's worker child: until every slot is done
                await asyncio.sleep(0.05)
                cursor = await watch.execute(
                    "select count(*) from public.integration_check_runs where state = 'done'"
                )
                row = await cursor.fetchone()
                done = int(row[0]) if row else 0
                if worker.done():
                    await worker
                    raise RuntimeError("the worker stopped before every check was written")
                if time.monotonic() - t0 > 600:
                    raise RuntimeError("not finished after 600 s")
            cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            await runtime.drain()
    finally:
        set_runtime(None)
        await store.aclose()
    return {"checks": done, "cpu_s": cpu, "wall_s": wall}


def child(args: argparse.Namespace) -> None:
    e2e.logging_off()
    if args.child == "runner":
        result = asyncio.run(_child_runner(args.db, args.concurrency))
    elif args.child == "worker":
        result = asyncio.run(
            _child_worker(args.db, args.concurrency, args.batch, args.integrations)
        )
    else:
        result = asyncio.run(_child_scheduler(args.db, args.concurrency, args.batch))
    print("RESULT " + json.dumps(result), flush=True)


async def _run_child(kind: str, db: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        SCRIPT,
        "--child",
        kind,
        "--db",
        db,
        "--concurrency",
        str(args.concurrency),
        "--batch",
        str(args.batch),
        "--integrations",
        str(args.integrations),
    ]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    for line in out.decode().splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise RuntimeError(f"the {kind} child failed:\n{err.decode(errors='replace')[-3000:]}")


async def parent(args: argparse.Namespace) -> int:
    pg = e2e.Postgres(args.postgres)
    version = pg.execute("show server_version")[0][0]
    print(
        f"# scheduling_overhead: {args.integrations:,} instant http checks in {args.orgs} orgs,"
        f" concurrency {args.concurrency}, scheduler batch {args.batch}, {args.rounds} rounds"
        f"{', steady state (every integration checked before)' if args.checked else ''};"
        f" PostgreSQL {version}; loadavg {e2e._loadavg()}",
        flush=True,
    )
    setup = argparse.Namespace(
        orgs=args.orgs, integrations=args.integrations, hung=0, checked=args.checked
    )
    kinds = KINDS if args.worker else KINDS[:2]
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    rows = []
    try:
        template = await e2e._prepare(pg, "http://127.0.0.1:9", setup)  # never contacted
        for rnd in range(args.rounds):
            for kind in kinds if rnd % 2 == 0 else kinds[::-1]:
                db = template
                if kind != "runner":
                    db = pg.create(f"ih_bench_overhead_{uuid.uuid4().hex[:12]}", template)
                try:
                    result = await _run_child(kind, e2e._db_url(pg.admin_url, db), args)
                    if kind != "runner":
                        counts = pg.counts(db)
                        if set(counts.values()) != {args.integrations}:
                            raise RuntimeError(f"the {kind} child wrote {counts}")
                finally:
                    if db != template:
                        pg.drop(db)
                if result["checks"] != args.integrations:
                    raise RuntimeError(f"the {kind} child ran {result['checks']} checks")
                per_check = result["cpu_s"] / result["checks"] * 1e6
                cpu[kind].append(per_check)
                rows.append(
                    [
                        f"round {rnd + 1}",
                        kind,
                        f"{per_check:,.1f}",
                        f"{result['wall_s']:.2f}",
                        e2e._loadavg(),
                    ]
                )
                print(f"  round {rnd + 1} {kind:<9} {per_check:8,.1f} µs/check", flush=True)
    finally:
        pg.drop_all()
    base = statistics.median(cpu["runner"])
    for kind in kinds:
        rows.append(["median", kind, f"{statistics.median(cpu[kind]):,.1f}", "", ""])
        rows.append(["min", kind, f"{min(cpu[kind]):,.1f}", "", ""])
    print()
    print(markdown_table(["round", "variant", "CPU µs/check", "seconds", "loadavg"], rows, left=2))
    print()
    for kind in kinds[1:]:
        print(
            f"scheduling overhead ({kind} − runner median): median"
            f" {statistics.median(cpu[kind]) - base:,.1f} µs/check, min"
            f" {min(cpu[kind]) - base:,.1f} µs/check"
        )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--integrations", type=int, default=10_000, help="checks per run (10000)")
    parser.add_argument("--orgs", type=int, default=100, help="organisations (100)")
    parser.add_argument("--concurrency", type=int, default=100, help="checks in flight (100)")
    parser.add_argument("--batch", type=int, default=1_000, help="scheduler batch_size (1000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    parser.add_argument(
        "--checked",
        action="store_true",
        help="the steady state: every integration checked 16 min ago and due again",
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="also one `integration-health worker` (procrastinate, tick 1 s), from its start"
        " until every slot is done: its time includes waiting for the first tick",
    )
    parser.add_argument("--postgres", default=e2e.DEFAULT_PG, help=f"admin URL ({e2e.DEFAULT_PG})")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.integrations, args.orgs, args.concurrency, args.batch, args.rounds) < 1:
        parser.error("--integrations, --orgs, --concurrency, --batch, --rounds must be positive")
    if args.child and not args.db:
        parser.error("--child needs --db")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    try:
        return asyncio.run(parent(args))
    except (RuntimeError, OSError) as exc:
        print(f"scheduling_overhead: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
