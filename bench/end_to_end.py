"""Sustained end-to-end throughput: the scheduler with PostgreSQL, against the runner alone.

``--integrations`` generic ``http`` integrations, spread over ``--orgs`` organisations, each
with its own URL on one fake HTTP server (``raw`` kind, see ``_servers.py``; a process of its
own, real sockets on 127.0.0.1). The script creates a PostgreSQL template database on the
server at ``--postgres`` (a role that may create databases and roles), applies the schema with
the project's own ``PostgresStore.upgrade()`` and imports the integrations into it (not
timed); each timed run then gets a fresh clone of it (``create database … template …``), so
**every integration is due at once** (never checked), and every database is dropped at the
end. Variants, each in fresh Python processes, alternated over ``--rounds``:

- ``runner``: the integrations are loaded from the template database (not timed), then
  ``execute_checks(…)`` — the runner's core, which the scheduler itself calls — checks them
  all at ``--concurrency``, without any store: the ceiling;
- ``scheduler+pg``: one in-process ``Scheduler(PostgresStore, registry,
  options=SchedulerOptions(batch_size=--batch, tick_s=0.02))`` runs ``Scheduler.run`` (the
  loop of ``integration-health scheduler``, passes overlapping) until a pass finds nothing
  left to plan: per pass, list the due checks, plan, warm up, claim the slots, run the
  checks (``Settings.concurrency`` = ``--concurrency``), write the status and history rows
  completing each slot in the same transaction; the time is from the start of the loop to
  its end (every pass written);
- ``scheduler+pg×P`` (``--processes P`` > 1): P such schedulers in P processes on the same
  database, started together; throughput = all results written / (last end − first start);
- ``worker+pg`` (``--worker``): one distributed worker (``integration-health worker``'s
  procrastinate app, tick 1 s, ``default_jobs(concurrency)`` = 2 × concurrency / 200 + 1 jobs
  at once: batches of 200 checks plus the planner; the registry still keeps at most
  ``--concurrency`` checks in flight) in one process, from its start until the child sees
  every slot done (it polls the count every 50 ms); like ``integration-health worker`` it
  queues a plan as it starts (``plan_now``) instead of waiting for the first tick. With
  ``--processes P`` too, ``worker+pg×P``: P such workers on the same database.

``--checked`` starts every run from a running monitor's steady state instead of its first
pass: each integration has a healthy status row from a check 16 minutes ago, due again a minute
ago (written with ``record_results`` into the template; its history rows are then deleted, so
the counts stay one per check run), so due rows carry their status, slots are real times, and
writes update status rows instead of inserting them.

``--instant`` makes every check healthy at once, without I/O (the fake vendor sits idle): what
is left of a child's CPU is the runner's machinery and, for the others, the scheduling's own
work — due rows, planning, configs, claims, writes, metrics. The lines "CPU per check above the
runner's" then measure it; their minimum over rounds is the steadiest figure on a shared
machine (contention only adds), the one to compare two versions of the code with.

``--vendor-ms MS`` makes the fake vendor answer each request MS milliseconds after it arrives,
as a real vendor's API does (50–2,000 ms) — its CPU per request unchanged: checks then wait on
the network, and throughput is bounded by the checks in flight (``--concurrency``, 1,000 by
default in ``Settings``) divided by the latency, or by the CPU, whichever comes first. The
``≥ 0.8×`` verdict is meant for the default, a vendor answering at once, where every variant is
bound by its CPU.

``--hung F`` points every 1/F-th integration at a ``hang`` server (accepts, never answers),
so those checks end at the deadline (``--timeout``, default the Settings' 10 s).

Every child runs ``settle_heap()`` after set-up (collect, ``gc.freeze()``, the collector's
thresholds raised to (50,000, 20, 100)), as ``integration-health scheduler`` and ``worker`` do
once started; the runner child too, so that it is not the only one to pay CPython's default
thresholds. After each scheduler run the script counts, with SQL, the status rows,
history rows and completed slots, which must all equal the number of integrations.

Columns: ``checks/s`` (wall), ``CPU µs/check`` of the Python process(es), ``PG CPU µs/check``
(the PostgreSQL backends serving the run's connections, from ``/proc/<pid>/stat``; the WAL
writer and checkpointer are not included), ``vendor CPU µs/check`` (the fake servers'
processes, which share the machine's cores with the rest: a real vendor's cost is not on the
monitor's machine), ``process CPU`` (share of one core), ``passes``. The scheduler and worker
children load the TLS trust store before their time starts (warm-up loads it once per process,
~50 ms of start-up; the runner child, on plain http, never loads one). The 1M-per-15-min
target needs 1,111 checks/s per machine; the verdict lines say how far one process gets and
how many would be needed at the measured CPU cost, and the ceiling line what no split of the
work over processes could pass on this machine: its cores divided by the CPU per check of
every process involved.

    .venv/bin/python bench/end_to_end.py     # 10,000 integrations, 100 orgs, concurrency 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from _servers import ServerProcess, markdown_table, process_cpu_seconds, raise_fd_limit

SCRIPT = str(Path(__file__).resolve())
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_PER_S = 1_000_000 / (15 * 60)  # 1M checks per 15 min
CHILD_KINDS = ("runner", "scheduler", "worker")
COUNTED = ("status", "history", "slots done")


def _loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def _vendor_cpu(vendors: list[ServerProcess]) -> float | None:
    """CPU seconds the fake vendors' processes have used so far (``None`` off Linux)."""
    total = 0.0
    for vendor in vendors:
        used = vendor.cpu_seconds()
        if used is None:
            return None
        total += used
    return total


def _db_url(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


# -- children ----------------------------------------------------------------------------------


def _settings(concurrency: int, timeout_s: float | None) -> Any:
    from integration_health import Settings  # noqa: PLC0415

    extra = {} if timeout_s is None else {"timeout_s": timeout_s}
    return Settings(allow_private_networks=True, concurrency=concurrency, **extra)


def _registry(args: argparse.Namespace) -> Any:
    """The children's registry: the built-in adapters, or with ``--instant`` an ``http`` check
    that is healthy at once, without I/O (the runner's machinery, lanes and deadline, stays)."""
    from integration_health import HealthResult, default_registry  # noqa: PLC0415
    from integration_health.adapters.http import HttpConfig  # noqa: PLC0415
    from integration_health.checks import Adapter, CheckRegistry  # noqa: PLC0415

    settings = _settings(args.concurrency, args.timeout)
    if not args.instant:
        return default_registry(settings)

    class InstantCheck:
        integration_type = "http"

        async def check(self, org_id: UUID, config: HttpConfig) -> HealthResult:
            await asyncio.sleep(0)  # one trip through the event loop, as any awaited I/O
            return HealthResult.healthy(3)

    check = InstantCheck()
    return CheckRegistry([Adapter("http", HttpConfig, lambda _context: check)], settings=settings)


async def _wait_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


class _TimedStore:
    """Delegates to a store, adding up the wall time spent in each of its async methods.

    Only observes: the scheduler gets the same store behaviour, plus one ``perf_counter``
    pair per store call (a few per pass).
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.written = 0
        """Results this process wrote (``record_results``' answers added up)."""
        self.first_call: float | None = None
        """``time.monotonic()`` of the first call (a worker's first plan)."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def timed(*args: Any, **kwargs: Any) -> Any:
            if self.first_call is None:
                self.first_call = time.monotonic()
            t0 = time.perf_counter()
            try:
                answer = await attr(*args, **kwargs)
                if name == "record_results":
                    self.written += answer
                return answer
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed


def _kinds(outcomes: Any) -> Counter[str]:
    """Outcomes counted as ``ok`` (healthy) or ``status/error_code``."""
    from integration_health import HealthStatus  # noqa: PLC0415

    return Counter(
        "ok"
        if o.result.status is HealthStatus.HEALTHY
        else f"{o.result.status.value}/{o.result.error_code}"
        for o in outcomes
    )


class _InFlightWatch:
    """Watches a scheduler's checks in flight through a run, waking every 20 ms: the share
    of the run's time with no check in flight (the process was planning, writing or
    waiting, not checking), and how late each wake-up came (the event loop's latency: a
    store call waits about that long for each of its round trips). Each interval counts for
    the state seen at its end."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.total_s = self.idle_s = 0.0
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            self.total_s += now - last
            if self.scheduler.in_flight == 0:
                self.idle_s += now - last
            self.lags_ms.append(max(0.0, (now - last - 0.02) * 1000))
            last = now

    def __enter__(self) -> _InFlightWatch:
        self._task = asyncio.create_task(self._watch())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def figures(self) -> dict[str, float]:
        return {
            "no_check_share": self.idle_s / self.total_s if self.total_s else 0.0,
            "loop_lag_ms": statistics.median(self.lags_ms) if self.lags_ms else 0.0,
        }


def _freeze() -> None:
    """What ``integration-health scheduler|worker`` do once started (every child does it)."""
    from integration_health._heap import settle_heap  # noqa: PLC0415

    settle_heap()


async def _child_runner(args: argparse.Namespace) -> dict[str, Any]:
    from integration_health.policy import StatusRules  # noqa: PLC0415
    from integration_health.runner import execute_checks  # noqa: PLC0415
    from integration_health.store.postgres import PostgresStore  # noqa: PLC0415

    registry = _registry(args)
    settings = registry.settings
    store = await PostgresStore.open(args.db)
    try:
        records = await store.list_integrations()
    finally:
        await store.aclose()
    items = [registry.from_record(r) for r in records]
    _freeze()
    print("READY", flush=True)
    await _wait_line()
    async with registry:
        wall0, cpu0, t0 = time.time(), time.process_time(), time.monotonic()
        outcomes = await execute_checks(
            items,
            registry=registry,
            timeout_s=settings.timeout_s,
            concurrency=settings.concurrency,
            rules=StatusRules(settings.degraded_latency_ms),
        )
        elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    kinds = _kinds(outcomes)
    return {
        "start": wall0,
        "end": wall0 + elapsed,
        "cpu_s": cpu,
        "checks": len(outcomes),
        "ok": kinds.pop("ok", 0),
        "other": dict(kinds),
        "passes": 1,
    }


async def _child_scheduler(args: argparse.Namespace) -> dict[str, Any]:
    from integration_health.scheduling import Scheduler, SchedulerOptions  # noqa: PLC0415
    from integration_health.scheduling.scheduler import PassReport  # noqa: PLC0415
    from integration_health.store.postgres import PostgresStore  # noqa: PLC0415

    registry = _registry(args)
    store = await PostgresStore.open(args.db)
    kinds: Counter[str] = Counter()
    passes = idle = 0
    stop = asyncio.Event()

    async def count(report: PassReport) -> None:
        # `integration-health scheduler`'s loop (Scheduler.run, passes overlapping); the run
        # ends once a pass finds nothing left to plan (the passes still running finish).
        nonlocal passes, idle
        passes += 1
        kinds.update(_kinds(report.outcomes))
        report.outcomes.clear()
        if report.due == 0:
            stop.set()
        elif report.ran == 0:  # everything it planned was claimed by another scheduler
            idle += 1

    try:
        timed = _TimedStore(store)
        options = SchedulerOptions(batch_size=args.batch, tick_s=0.02)
        scheduler = Scheduler(timed, registry, options=options, after_pass=[count])
        await store.ping()
        async with registry:  # re-entrant: Scheduler.run's own entry then costs nothing
            # A started scheduler has loaded its TLS trust store (warm-up does, once per
            # process, ~50 ms): start-up, not sustained work — the runner's is not timed either.
            await registry.warm_up([])
            _freeze()
            print("READY", flush=True)
            await _wait_line()
            wall0, cpu0, t0 = time.time(), time.process_time(), time.monotonic()
            try:
                with _InFlightWatch(scheduler) as in_flight:
                    await asyncio.wait_for(scheduler.run(stop), timeout=args.max_seconds)
            except TimeoutError:
                raise RuntimeError(f"not finished after {args.max_seconds} s") from None
            elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
        print("DONE", flush=True)  # the parent reads the backends' CPU while they still exist
        await _wait_line()
    finally:
        await store.aclose()
    return {
        "start": wall0,
        "end": wall0 + elapsed,
        "cpu_s": cpu,
        "checks": sum(kinds.values()),
        "ok": kinds.pop("ok", 0),
        "other": dict(kinds),
        "passes": passes,
        "idle_passes": idle,
        **in_flight.figures(),
        "store_s": dict(timed.seconds),
        "store_calls": dict(timed.calls),
    }


async def _child_worker(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg  # noqa: PLC0415

    from integration_health.scheduling import SchedulerOptions  # noqa: PLC0415
    from integration_health.scheduling.distributed import (  # noqa: PLC0415
        QUEUE,
        build_app,
        default_jobs,
        ensure_procrastinate_schema,
        make_runtime,
        plan_now,
        set_runtime,
    )
    from integration_health.store.postgres import PostgresStore  # noqa: PLC0415

    registry = _registry(args)
    await ensure_procrastinate_schema(args.db)
    store = await PostgresStore.open(args.db)
    # ``--concurrency`` checks in flight (the registry's limit), in twice as many batches of
    # BATCH_SIZE as that fills, plus the planner: one batch writes while the next one runs.
    jobs = args.worker_jobs or default_jobs(args.concurrency)
    try:
        timed = _TimedStore(store)
        runtime = make_runtime(timed, registry, SchedulerOptions(batch_size=args.batch))
        set_runtime(runtime)
        app = build_app(args.db, tick_s=1)
        watch = await psycopg.AsyncConnection.connect(args.db, autocommit=True)
        _freeze()
        print("READY", flush=True)
        await _wait_line()
        async with registry, app.open_async():
            await registry.warm_up([])  # the TLS trust store, as for the scheduler child
            wall0, cpu0, t0 = time.time(), time.process_time(), time.monotonic()
            await plan_now(app)  # as `integration-health worker` does when it starts
            worker = asyncio.create_task(
                app.run_worker_async(
                    queues=[QUEUE], concurrency=jobs, install_signal_handlers=False
                )
            )
            with _InFlightWatch(runtime.scheduler) as in_flight:
                done, looked = 0, t0
                # The slots done, counted in the database once this worker has written them all
                # and otherwise every second — a count every 50 ms added its own load to the
                # PostgreSQL figures of the run it measured — or, when other workers write slots
                # too, every 50 ms after all (the end of the run is seen only there)
                every = 0.05 if args.processes > 1 else 1.0
                while done < args.integrations:
                    await asyncio.sleep(0.05)
                    now = time.monotonic()
                    if timed.written >= args.integrations or now - looked >= every:
                        looked = now
                        cursor = await watch.execute(
                            "select count(*) from public.integration_check_runs"
                            " where state = 'done'"
                        )
                        row = await cursor.fetchone()
                        done = int(row[0]) if row else 0
                    if worker.done():
                        await worker  # raises what stopped it
                        raise RuntimeError("the worker stopped before every check was written")
                    if time.monotonic() - t0 > args.max_seconds:
                        raise RuntimeError(f"not finished after {args.max_seconds} s")
                elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            await runtime.drain()
        cursor = await watch.execute(
            "select count(*) filter (where status = 'healthy'), count(*) "
            "from public.integration_health_status"
        )
        healthy, statuses = await cursor.fetchone() or (0, 0)
        await watch.close()
        print("DONE", flush=True)
        await _wait_line()
    finally:
        set_runtime(None)
        await store.aclose()
    return {
        "start": wall0,
        "end": wall0 + elapsed,
        "cpu_s": cpu,
        "checks": timed.written,  # this worker's share of the ``done`` slots
        # every status healthy: all this worker's results were; otherwise the table warns
        "ok": timed.written if healthy == statuses else min(healthy, timed.written),
        "other": {"not healthy": statuses - healthy} if statuses != healthy else {},
        "passes": timed.calls["list_due"],
        "first_plan_s": None if timed.first_call is None else timed.first_call - t0,
        **in_flight.figures(),
        "store_s": dict(timed.seconds),
        "store_calls": dict(timed.calls),
    }


def child(args: argparse.Namespace) -> None:
    """Run one child (``runner``, ``scheduler`` or ``worker``); print its figures as JSON."""
    raise_fd_limit()
    logging_off()
    runner = {
        "runner": _child_runner,
        "scheduler": _child_scheduler,
        "worker": _child_worker,
    }[args.child]
    if args.loop == "uvloop":  # as `integration-health scheduler|worker --loop uvloop` does
        import uvloop  # noqa: PLC0415

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = asyncio.run(runner(args))
    print("RESULT " + json.dumps(result), flush=True)


def logging_off() -> None:
    """Drift and cold-start lines are expected here (every slot is the initial one)."""
    import logging  # noqa: PLC0415

    logging.basicConfig(level=logging.ERROR)


# -- the parent --------------------------------------------------------------------------------


class Child:
    """One child process, driven line by line (READY → go → [DONE → go] → RESULT)."""

    def __init__(
        self, kind: str, db: str, args: argparse.Namespace, log_dir: str, processes: int
    ) -> None:
        self.kind = kind
        self.processes = processes
        self.db = db
        self.args = args
        self.log = Path(log_dir) / f"{kind}-{uuid.uuid4().hex[:8]}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        command = [
            sys.executable,
            SCRIPT,
            "--child",
            self.kind,
            "--db",
            self.db,
            "--integrations",  # the worker child waits until this many slots are done
            str(self.args.integrations),
            "--processes",  # of its kind in this run (a worker's peers write slots too)
            str(self.processes),
            "--concurrency",
            str(self.args.concurrency),
            "--batch",
            str(self.args.batch),
            "--max-seconds",
            str(self.args.max_seconds),
            "--worker-jobs",
            str(self.args.worker_jobs),
            "--loop",
            self.args.loop,
            *(["--timeout", str(self.args.timeout)] if self.args.timeout is not None else []),
            *(["--instant"] if self.args.instant else []),
        ]
        with self.log.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err
            )

    async def expect(self, word: str) -> str:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while True:
            line = (await self.proc.stdout.readline()).decode()
            if not line:
                await self.proc.wait()
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {self.kind} child exited before {word}:\n{tail}")
            if line.startswith(word):
                return line[len(word) :].strip()

    def go(self) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def finish(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(await self.expect("RESULT"))
        assert self.proc is not None
        await self.proc.wait()
        return result


class Postgres:
    """Admin connection: template and per-run databases, backend CPU, row counts."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def execute(self, sql: str, params: Any = None, *, db: str | None = None) -> list[Any]:
        import psycopg  # noqa: PLC0415

        url = self.admin_url if db is None else _db_url(self.admin_url, db)
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create(self, name: str, template: str | None = None) -> str:
        suffix = f' template "{template}"' if template else ""
        self.execute(f'create database "{name}"{suffix}')
        self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        self.execute(f'drop database if exists "{name}" with (force)')
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            with contextlib.suppress(Exception):
                self.drop(name)

    def backend_cpu(self, db: str) -> dict[int, float]:
        rows = self.execute("select pid from pg_stat_activity where datname = %s", (db,))
        cpu = {}
        for (pid,) in rows:
            used = process_cpu_seconds(pid)
            if used is not None:
                cpu[pid] = used
        return cpu

    def counts(self, db: str) -> dict[str, int]:
        queries = {
            "status": "select count(*) from public.integration_health_status",
            "history": "select count(*) from public.integration_health_history",
            "healthy": "select count(*) from public.integration_health_status"
            " where status = 'healthy'",
        }
        found = {key: int(self.execute(sql, db=db)[0][0]) for key, sql in queries.items()}
        slots = self.execute("select to_regclass('public.integration_check_runs')", db=db)[0][0]
        if slots is not None:
            found["slots done"] = int(
                self.execute(
                    "select count(*) from public.integration_check_runs where state = 'done'",
                    db=db,
                )[0][0]
            )
        return found


async def _prepare(
    pg: Postgres, server_url: str, args: argparse.Namespace, hang_url: str | None = None
) -> str:
    """Create the template database: schema via the project's store code, integrations."""
    from integration_health.adapters.http import HttpConfig  # noqa: PLC0415
    from integration_health.integrations_file import to_records  # noqa: PLC0415
    from integration_health.store.base import Organization  # noqa: PLC0415
    from integration_health.store.postgres import PostgresStore  # noqa: PLC0415

    name = pg.create(f"ih_bench_e2e_tpl_{uuid.uuid4().hex[:12]}")
    orgs = [
        Organization(UUID(int=0xE2E0_0000_0000_4000_8000_0000_0000_0000 + i), f"Org {i}")
        for i in range(args.orgs)
    ]
    every = max(1, round(1 / args.hung)) if args.hung else 0  # every k-th one hangs
    items = [
        HttpConfig(
            integration_id=uuid.uuid4(),
            org_id=orgs[i % len(orgs)].id,
            name=f"e2e {i}",
            url=f"{hang_url if hang_url and i % every == every // 2 else server_url}/health/{i}",
        )
        for i in range(args.integrations)
    ]
    store = await PostgresStore.open(_db_url(pg.admin_url, name))
    try:
        await store.upgrade()
        await store.import_definitions(orgs, [], to_records(items))
        if args.checked:
            await _check_once(store, items)
    finally:
        await store.aclose()
    if args.checked:  # the runs count the history rows they write: start from none
        pg.execute("delete from public.integration_health_history", db=name)
    return name


async def _check_once(store: Any, items: list[Any]) -> None:
    """A healthy status row for every integration, checked 16 minutes ago and due again a
    minute ago (the floor is 15 minutes): what a running monitor finds at each slot."""
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from integration_health import HealthResult  # noqa: PLC0415
    from integration_health.store.base import ResultWrite  # noqa: PLC0415

    now = datetime.now(UTC)
    result = HealthResult.healthy(12).model_copy(update={"checked_at": now - timedelta(minutes=16)})
    writes = [
        ResultWrite(
            org_id=item.org_id,
            integration_id=item.integration_id,
            integration_type=item.integration_type,
            result=result,
            next_check_at=now - timedelta(minutes=1),
        )
        for item in items
    ]
    for start in range(0, len(writes), 1_000):
        await store.record_results(writes[start : start + 1_000])


async def _run_variant(
    pg: Postgres,
    template: str,
    processes: int,
    kind: str,
    args: argparse.Namespace,
    logs: str,
    vendors: list[ServerProcess],
) -> dict[str, Any]:
    db = (
        template
        if kind == "runner"
        else pg.create(f"ih_bench_e2e_{uuid.uuid4().hex[:12]}", template)
    )
    try:
        url = _db_url(pg.admin_url, db)
        children = [Child(kind, url, args, logs, processes) for _ in range(processes)]
        for c in children:
            await c.start()
        for c in children:
            await c.expect("READY")
        pg_before = {} if kind == "runner" else pg.backend_cpu(db)
        vendor_before = _vendor_cpu(vendors)
        for c in children:
            c.go()
        pg_cpu = None
        if kind != "runner":
            for c in children:
                await c.expect("DONE")
            pg_after = pg.backend_cpu(db)
            pg_cpu = sum(cpu - pg_before.get(pid, 0.0) for pid, cpu in pg_after.items())
            for c in children:
                c.go()
        results = [await c.finish() for c in children]
        vendor_after = _vendor_cpu(vendors)
        for c in children:  # children log errors only: show any, they explain odd figures
            lines = c.log.read_text(errors="replace").splitlines()
            if lines:
                print(f"  {c.kind} child logged {len(lines)} line(s); the first ones:")
                for line in lines[:15]:
                    print(f"    {line[:300]}")
        counts = pg.counts(db) if kind != "runner" else {}
    finally:
        if db != template:
            pg.drop(db)
    other: Counter[str] = Counter()
    for r in results:
        other.update(r["other"])
    return {
        "checks": sum(r["checks"] for r in results),
        "ok": sum(r["ok"] for r in results),
        "other": dict(other),
        "elapsed_s": max(r["end"] for r in results) - min(r["start"] for r in results),
        "cpu_s": sum(r["cpu_s"] for r in results),
        "pg_cpu_s": pg_cpu,
        "vendor_cpu_s": None
        if vendor_before is None or vendor_after is None
        else vendor_after - vendor_before,
        "passes": "/".join(str(r["passes"]) for r in results),
        "idle": sum(r.get("idle_passes", 0) for r in results),
        "no_check_share": max((r.get("no_check_share", 0.0) for r in results), default=0.0),
        "loop_lag_ms": max((r.get("loop_lag_ms", 0.0) for r in results), default=0.0),
        "store_s": sum((Counter(r.get("store_s", {})) for r in results), Counter()),
        "store_calls": sum((Counter(r.get("store_calls", {})) for r in results), Counter()),
        # when a worker's first plan began (queued at its start: ``plan_now``)
        "first_plan_s": max(
            (r["first_plan_s"] for r in results if r.get("first_plan_s") is not None),
            default=None,
        ),
        "counts": counts,
    }


def _label(kind: str, processes: int) -> str:
    name = {"runner": "runner", "scheduler": "scheduler+pg", "worker": "worker+pg"}[kind]
    return name if processes == 1 else f"{name}×{processes}"


async def parent(args: argparse.Namespace) -> int:
    soft, _hard = raise_fd_limit()
    if soft < args.concurrency * 2 * max(1, args.processes) + 256:
        print(f"file-descriptor limit {soft} is too low for --concurrency", file=sys.stderr)
        return 2
    pg = Postgres(args.postgres)
    try:
        version = pg.execute("show server_version")[0][0]
    except Exception as exc:  # noqa: BLE001 - any driver error: one clear line, no traceback
        print(f"end_to_end: cannot reach PostgreSQL at --postgres: {exc}", file=sys.stderr)
        return 2
    variants: list[tuple[str, int]] = [("runner", 1)]
    if not args.no_scheduler:
        variants.append(("scheduler", 1))
        if args.processes > 1:
            variants.append(("scheduler", args.processes))
    if args.worker:
        variants.append(("worker", 1))
        if args.processes > 1:
            variants.append(("worker", args.processes))
    print(
        f"# end_to_end: {args.integrations:,} http integrations in {args.orgs} orgs, concurrency"
        f" {args.concurrency}, scheduler batch {args.batch}, {args.rounds} rounds (order"
        f" alternated){', every one checked before (steady state)' if args.checked else ''}"
        f"{', instant checks (no I/O)' if args.instant else ''}"
        f"{f', vendor answers after {args.vendor_ms:g} ms' if args.vendor_ms else ''};"
        f" {args.loop} event loop;"
        f" PostgreSQL {version}; Python {platform.python_version()},"
        f" {len(os.sched_getaffinity(0))} CPUs, loadavg {_loadavg()}"
    )
    runs: list[tuple[str, str, dict[str, Any]]] = []
    try:
        with (
            ServerProcess("raw", delay_ms=args.vendor_ms) as server,
            ServerProcess("hang") if args.hung else contextlib.nullcontext() as hang,
            tempfile.TemporaryDirectory() as logs,
        ):
            t0 = time.monotonic()
            template = await _prepare(pg, server.url, args, hang.url if hang else None)
            print(f"  template database ready in {time.monotonic() - t0:.1f} s", flush=True)
            for rnd in range(args.rounds):
                order = variants if rnd % 2 == 0 else variants[::-1]
                for kind, processes in order:
                    load = _loadavg()
                    vendors = [server, *([hang] if hang else [])]
                    run = await _run_variant(pg, template, processes, kind, args, logs, vendors)
                    run["loadavg"] = load
                    label = _label(kind, processes)
                    runs.append((f"round {rnd + 1}", label, run))
                    print(
                        f"  round {rnd + 1} {label:<16}"
                        f" {run['checks'] / run['elapsed_s']:8,.0f} checks/s {run['counts']}",
                        flush=True,
                    )
    finally:
        pg.drop_all()
    _report(runs, [_label(k, p) for k, p in variants], args)
    return 0


def _report(
    runs: list[tuple[str, str, dict[str, Any]]], labels: list[str], args: argparse.Namespace
) -> None:
    headers = [
        "round",
        "variant",
        "checks",
        "ok",
        "other",
        "seconds",
        "checks/s",
        "CPU µs/check",
        "PG CPU µs/check",
        "vendor CPU µs/check",
        "process CPU",
        "passes",
        "rows status/history/slots",
        "loadavg 1/5/15",
    ]
    rows = []
    for label, variant, run in runs:
        counts = run["counts"]
        rows.append(
            [
                label,
                variant,
                f"{run['checks']:,}",
                f"{run['ok']:,}",
                ", ".join(f"{k} {v}" for k, v in sorted(run["other"].items())) or "—",
                f"{run['elapsed_s']:.2f}",
                f"{run['checks'] / run['elapsed_s']:,.0f}",
                f"{run['cpu_s'] / run['checks'] * 1e6:,.0f}",
                f"{run['pg_cpu_s'] / run['checks'] * 1e6:,.0f}"
                if run["pg_cpu_s"] is not None
                else "—",
                f"{run['vendor_cpu_s'] / run['checks'] * 1e6:,.0f}"
                if run["vendor_cpu_s"] is not None
                else "—",
                f"{100 * run['cpu_s'] / run['elapsed_s']:.0f} %",
                run["passes"],
                "/".join(
                    f"{counts[k]:,}" for k in ("status", "history", "slots done") if k in counts
                )
                or "—",
                run["loadavg"],
            ]
        )
    rate: dict[str, float] = {}
    cpu: dict[str, float] = {}
    pg_cpu: dict[str, float] = {}
    vendor_cpu: dict[str, float] = {}
    for variant in labels:
        mine = [run for _, v, run in runs if v == variant]
        rate[variant] = statistics.median(r["checks"] / r["elapsed_s"] for r in mine)
        cpu[variant] = statistics.median(r["cpu_s"] / r["checks"] * 1e6 for r in mine)
        pgs = [r["pg_cpu_s"] / r["checks"] * 1e6 for r in mine if r["pg_cpu_s"] is not None]
        pg_cpu[variant] = statistics.median(pgs) if pgs else 0.0
        vendors = [r["vendor_cpu_s"] / r["checks"] * 1e6 for r in mine if r["vendor_cpu_s"]]
        vendor_cpu[variant] = statistics.median(vendors) if vendors else 0.0
        rows.append(
            [
                "median",
                variant,
                "",
                "",
                "",
                "",
                f"{rate[variant]:,.0f}",
                f"{cpu[variant]:,.0f}",
                f"{pg_cpu[variant]:,.0f}" if pgs else "—",
                f"{vendor_cpu[variant]:,.0f}" if vendors else "—",
                "",
                "",
                "",
                "",
            ]
        )
    print()
    print(markdown_table(headers, rows, left=2))
    print()
    _phases(runs)
    for variant in labels[1:]:  # with --instant: the scheduling's own CPU per check
        extra = [r["cpu_s"] / r["checks"] * 1e6 - cpu["runner"] for _, v, r in runs if v == variant]
        print(
            f"{variant}: CPU per check above the runner's median ({cpu['runner']:,.1f} µs):"
            f" median {statistics.median(extra):,.1f} µs, min {min(extra):,.1f} µs"
        )
    if "scheduler+pg" in rate:
        _scheduler_verdict(rate, cpu, pg_cpu, vendor_cpu, args)
    for variant in labels[1:]:
        if variant == "scheduler+pg":
            continue
        versus = (
            f"{variant} / scheduler+pg (medians): {rate[variant] / rate['scheduler+pg']:.2f}×; "
            if "scheduler+pg" in rate
            else ""
        )
        ratio = rate[variant] / rate["runner"]
        verdict = "" if args.vendor_ms else f" — {'meets' if ratio >= 0.8 else 'MISSES'} ≥ 0.8×"
        print(f"{versus}{variant} / runner: {ratio:.2f}× ({rate[variant]:,.0f} checks/s){verdict}")
    failed = [run for _, _, run in runs if run["ok"] != run["checks"]]
    wrong = [
        run
        for _, _, run in runs
        if run["counts"] and set(run["counts"].values()) != {args.integrations}
    ]
    if failed:
        print(f"WARNING: {len(failed)} run(s) had checks that did not succeed (see the table)")
    if wrong:
        print(
            f"WARNING: {len(wrong)} scheduler run(s) did not write one row of each kind per check"
        )


def _scheduler_verdict(
    rate: dict[str, float],
    cpu: dict[str, float],
    pg_cpu: dict[str, float],
    vendor_cpu: dict[str, float],
    args: argparse.Namespace,
) -> None:
    """The one-scheduler lines: the ratio to the runner, the target, the ceilings."""
    ratio = rate["scheduler+pg"] / rate["runner"]
    verdict = f"{'meets' if ratio >= 0.8 else 'MISSES'} the ≥ 0.8× target"
    if args.vendor_ms:  # the target's condition is a vendor answering at once
        verdict = f"vendor latency {args.vendor_ms:g} ms, not the target's condition (0 ms)"
    print(f"scheduler+pg / runner (medians): {ratio:.2f}× — {verdict}")
    one = rate["scheduler+pg"]
    print(
        f"one scheduler process: {one:,.0f} checks/s = {one * 900:,.0f} per 15 min — "
        f"{'reaches' if one >= TARGET_PER_S else 'does NOT reach'} {TARGET_PER_S:,.0f} checks/s"
    )
    per_core = 1e6 / (cpu["scheduler+pg"] + pg_cpu["scheduler+pg"])
    print(
        f"CPU cost per check (Python + PostgreSQL backends): "
        f"{cpu['scheduler+pg'] + pg_cpu['scheduler+pg']:,.0f} µs → at most {per_core:,.0f} "
        f"checks/s per fully used core; {TARGET_PER_S:,.0f} checks/s needs ≈ "
        f"{math.ceil(TARGET_PER_S / per_core)} such cores (plus the targets' and the network's "
        f"share), i.e. ≥ {math.ceil(TARGET_PER_S / one)} scheduler processes/workers at this "
        "process's measured rate"
    )
    # Every process of the run shares this machine's cores: the scheduler, its PostgreSQL
    # backends and the fake vendor. However the work were split over processes, the rate
    # cannot pass cores / (their CPU per check) — the ceiling of any one-machine design.
    cores = len(os.sched_getaffinity(0))
    whole = cpu["scheduler+pg"] + pg_cpu["scheduler+pg"] + vendor_cpu["scheduler+pg"]
    if vendor_cpu["scheduler+pg"]:
        ceiling = cores * 1e6 / whole
        print(
            "ceiling on this machine: the scheduler, PostgreSQL and the fake vendor use"
            f" {whole:,.0f} µs of CPU per check in all → with all {cores} cores busy all the"
            f" time at most {ceiling:,.0f} checks/s = {ceiling / rate['runner']:.2f}× the runner"
            f" (the runner alone: {cpu['runner']:,.0f} µs in its process,"
            f" {vendor_cpu['runner']:,.0f} µs in the vendor's)"
        )


def _phases(runs: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Wall time spent in the main store calls, per run.

    The calls overlap the checks (the scheduler's passes overlap, a worker's jobs run side by
    side), so they do not add up to the run's time; they show where a run waits on the store.
    "no check in flight": the share of the run's time with none (the start and the tail
    included); "loop lag ms": how late a 20 ms timer fires, median (see :class:`_InFlightWatch`)."""
    main_calls = ("list_due", "claim_slots", "record_results")
    headers = ["round", "variant", "seconds", *(f"{m} s (calls)" for m in main_calls)]
    headers += ["other store s", "first plan after s", "no check in flight", "loop lag ms"]
    rows = []
    for label, variant, run in runs:
        if not run["store_s"]:
            continue
        spent: Counter[str] = run["store_s"]  # of float seconds, summed with Counter
        calls: Counter[str] = run["store_calls"]
        processes = len(run["passes"].split("/"))
        total = run["elapsed_s"] * processes
        other = sum(v for k, v in spent.items() if k not in main_calls)
        rows.append(
            [
                label,
                variant,
                f"{total:.2f}"
                + (f" ({processes} × {run['elapsed_s']:.2f})" if processes > 1 else ""),
                *(f"{spent[m]:.2f} ({calls[m]})" for m in main_calls),
                f"{other:.2f}",
                "—" if run.get("first_plan_s") is None else f"{run['first_plan_s']:.2f}",
                f"{100 * run['no_check_share']:.0f} %",
                f"{run['loop_lag_ms']:.0f}",
            ]
        )
    if rows:
        print(markdown_table(headers, rows, left=2))
        print()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Defaults take about 3 minutes on 2 cores."
    )
    parser.add_argument("--integrations", type=int, default=10_000, help="checks per run (10000)")
    parser.add_argument("--orgs", type=int, default=100, help="organisations (100)")
    parser.add_argument("--concurrency", type=int, default=100, help="checks in flight (100)")
    parser.add_argument(
        "--batch", type=int, default=500, help="scheduler batch_size (500, as `scheduler`)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument(
        "--processes", type=int, default=1, help="also run P schedulers on one database (off)"
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="also run one `integration-health worker` (procrastinate, tick 1 s; batches of 200,"
        " 2 x concurrency/200 + 1 jobs at once) until every check is written",
    )
    parser.add_argument(
        "--no-scheduler",
        action="store_true",
        help="with --worker: leave the scheduler out (the runner and the worker only, to compare"
        " two versions of the worker in less time)",
    )
    parser.add_argument(
        "--worker-jobs",
        type=int,
        default=0,
        help="jobs the worker runs at once (default: 2 x concurrency/200 + 1)",
    )
    parser.add_argument(
        "--hung",
        type=float,
        default=0.0,
        help="share of the integrations whose host never answers (0; e.g. 0.005: 1 in 200)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="check deadline in seconds (Settings' 10)"
    )
    parser.add_argument(
        "--vendor-ms",
        type=float,
        default=0.0,
        help="the fake vendor answers each request this many ms after it arrives (0)",
    )
    parser.add_argument(
        "--checked",
        action="store_true",
        help="start from a monitor's steady state: every integration checked 16 min ago and"
        " due again (default: never checked, the first pass)",
    )
    parser.add_argument(
        "--instant",
        action="store_true",
        help="every check is healthy at once, without I/O (the vendor sits idle): the CPU left"
        " is the scheduling's own — steadier than the ratios for comparing two versions",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of every child, the runner's too (asyncio)",
    )
    parser.add_argument("--postgres", default=DEFAULT_PG, help=f"admin URL ({DEFAULT_PG})")
    parser.add_argument("--max-seconds", type=float, default=900, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=CHILD_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.no_scheduler and not args.worker:
        parser.error("--no-scheduler needs --worker (nothing would be compared)")
    if min(args.integrations, args.orgs, args.concurrency, args.batch, args.rounds) < 1:
        parser.error("--integrations, --orgs, --concurrency, --batch, --rounds must be positive")
    if args.processes < 1:
        parser.error("--processes must be positive")
    if not 0 <= args.hung < 1:
        parser.error("--hung must be at least 0 and below 1")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.vendor_ms < 0:
        parser.error("--vendor-ms must be at least 0")
    if args.vendor_ms and args.instant:
        parser.error("--vendor-ms and --instant exclude each other (instant checks send nothing)")
    if args.worker_jobs < 0:
        parser.error("--worker-jobs must be positive (0: 2 x concurrency/200 + 1)")
    if args.child and not args.db:
        parser.error("--child needs --db")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point (also the child-process entry point, with the hidden ``--child``)."""
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    try:
        return asyncio.run(parent(args))
    except (RuntimeError, OSError) as exc:
        print(f"end_to_end: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
