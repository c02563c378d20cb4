"""Checks per second of the runner, against a bare aiohttp loop doing the same requests.

``--integrations`` generic ``http`` integrations (``HttpConfig``, ``HEAD`` to a distinct path
each) are checked against a local fake server running in a separate process. Two variants,
at the same concurrency, each in a fresh Python process of its own (so that peak RSS is that
variant's alone and neither inherits the other's heap):

- ``runner``: ``integration_health.run_health_checks(org, integrations=…, store=None,
  registry=default_registry(Settings(allow_private_networks=True)), concurrency=N)`` — the
  full path: secret resolution, SSRF guard, phase tracing, deadline race, status rules,
  redaction, one ``HealthResult`` per check. Each probe opens its own connection (the
  client's default), so integrations never share a keep-alive connection;
- ``bare``: one ``aiohttp.ClientSession`` with ``TCPConnector(limit=0, force_close=True)``
  and ``N`` workers sending the same ``HEAD`` requests — a fresh connection per request,
  nothing else. It is the floor the runner's overhead is measured against.

The pair is repeated ``--repeats`` times with the order alternated; the table shows every run,
then per variant the median and the best run, and ``runner / bare`` by both. The best of N is
the figure to compare on a shared machine, for the reason ``timeit`` gives: other processes
only ever slow a run down, so the fastest run is the one they disturbed least (this machine's
runs of the same variant vary up to 2× between minutes). Optionally (``--sqlite``) a third variant,
``runner+sqlite``, stores the integrations in a fresh SQLite file first (not timed), then
times ``run_health_checks(org, store=store, …)``: loading the integrations from the store,
checking them and writing every status and history row.

Columns: ``client CPU`` is this side's CPU use (near 100 %: the client is the bottleneck),
``CPU µs/check`` its CPU time per check (the least noise-sensitive figure on a shared
machine), ``GC s (runs)`` the time spent in garbage collections during the run and their
number, ``server CPU ≤`` the server's CPU over the child's whole life (an upper bound),
``peak RSS`` the child's ``ru_maxrss`` and ``Δ RSS`` its growth during the timed run.

With ``--adapter``, a fourth variant, ``adapter``, calls the ``http`` adapter's ``check``
directly from ``N`` workers (same registry, configs and client as ``runner``; no runner: no
secret resolution, deadline race, status rules, redaction or result copies). It splits the
runner's cost over ``bare`` into the adapter's share and the runner's own.

The default fake server is ``raw`` (a minimal asyncio HTTP responder, see ``_servers.py``) so
that the server, which shares the 2 cores, stays cheap; ``--server aiohttp`` uses aiohttp.web.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any
from uuid import UUID, uuid4

from _servers import ServerProcess, markdown_table, raise_fd_limit

VARIANTS = ("runner", "bare", "runner+sqlite", "adapter")
ORG = UUID("00000000-0000-4000-8000-00000000b0b0")


def _rss_kib() -> int:
    """Current resident set size of this process, in KiB (0 off Linux)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _callgrind(switch: str) -> None:
    """Switch callgrind's instrumentation ``on``/``off`` when ``IH_BENCH_CALLGRIND`` is set.

    Run a child under ``valgrind --tool=callgrind --instr-atstart=no`` with that variable set
    and the instruction count covers the timed section alone (no imports, no set-up): the
    deterministic figure to compare variants by on a noisy machine (docs/benchmarks.md).
    """
    if os.environ.get("IH_BENCH_CALLGRIND"):
        subprocess.run(  # noqa: S603 - valgrind's own tool, fixed arguments
            ["callgrind_control", "--instr=" + switch, str(os.getpid())],  # noqa: S607
            check=True,
            capture_output=True,
        )


class _GcMeter:
    """Counts garbage collections and the time spent in them (installed in ``gc.callbacks``);
    the timed section of every variant (callgrind's instrumentation follows it, see
    :func:`_callgrind`)."""

    def __init__(self) -> None:
        self.collections = 0
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.collections += 1
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> _GcMeter:
        _callgrind("on")
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self)
        _callgrind("off")


_GC_FREEZE = False
"""``--gc-freeze``: freeze the set-up heap before the timed run (what a long-running command
would do once started), in every variant alike."""


def _settle_heap() -> None:
    """Collect what set-up left behind; with ``--gc-freeze``, also move the survivors (imported
    modules, the configs) to the permanent generation so that collections stop re-walking them."""
    gc.collect()
    if _GC_FREEZE:
        gc.freeze()


def _urls(base: str, count: int) -> list[str]:
    return [f"{base}/health/{i}" for i in range(count)]


# -- the variants (each runs in a child process) ----------------------------------------------


async def _bare(base: str, count: int, concurrency: int) -> dict[str, Any]:
    import aiohttp  # noqa: PLC0415 - the child imports only what its variant needs

    urls = _urls(base, count)
    statuses: Counter[str] = Counter()
    queue = iter(urls)
    _settle_heap()
    rss_before = _rss_kib()
    with _GcMeter() as gc_meter:
        cpu0, t0 = time.process_time(), time.monotonic()
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                for url in queue:
                    try:
                        async with session.head(url) as response:
                            statuses[str(response.status)] += 1
                    except Exception as exc:  # noqa: BLE001 - counted, shown in the table
                        statuses[type(exc).__name__] += 1

            await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
        elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return {
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "gc_collections": gc_meter.collections,
        "gc_s": gc_meter.seconds,
        "ok": statuses.get("200", 0),
        "outcomes": dict(statuses),
        "rss_before_kib": rss_before,
    }


async def _runner(base: str, count: int, concurrency: int, sqlite: bool) -> dict[str, Any]:
    # The child imports only what its variant needs.
    from integration_health import (  # noqa: PLC0415
        HealthStatus,
        Settings,
        default_registry,
        run_health_checks,
    )
    from integration_health.adapters.http import HttpConfig  # noqa: PLC0415

    settings = Settings(allow_private_networks=True)
    items = [
        HttpConfig(integration_id=uuid4(), org_id=ORG, name=f"bench {i}", url=url)
        for i, url in enumerate(_urls(base, count))
    ]
    registry = default_registry(settings)
    store: Any = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if sqlite:
        from integration_health.integrations_file import to_records  # noqa: PLC0415
        from integration_health.store.base import Organization  # noqa: PLC0415
        from integration_health.store.sqlite import SQLiteStore  # noqa: PLC0415

        tmp = tempfile.TemporaryDirectory(prefix="ih-bench-")
        store = await SQLiteStore.open(f"sqlite:///{tmp.name}/bench.db")
        await store.import_definitions([Organization(ORG, "Bench")], [], to_records(items))
    _settle_heap()
    rss_before = _rss_kib()
    try:
        with _GcMeter() as gc_meter:
            cpu0, t0 = time.process_time(), time.monotonic()
            outcomes = await run_health_checks(
                ORG,
                integrations=None if sqlite else items,
                store=store,
                registry=registry,
                concurrency=concurrency,
            )
            elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
        written = len(await store.list_statuses(ORG)) if sqlite else None
    finally:
        if store is not None:
            await store.aclose()
        if tmp is not None:
            tmp.cleanup()
    kinds: Counter[str] = Counter(
        o.result.status.value
        if o.result.status is HealthStatus.HEALTHY
        else f"{o.result.status.value}/{o.result.error_code}"
        for o in outcomes
    )
    return {
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "gc_collections": gc_meter.collections,
        "gc_s": gc_meter.seconds,
        "ok": kinds.get("healthy", 0),
        "outcomes": dict(kinds),
        "rss_before_kib": rss_before,
        "written": written,
    }


async def _adapter(base: str, count: int, concurrency: int) -> dict[str, Any]:
    # The child imports only what its variant needs.
    from integration_health import Settings, default_registry  # noqa: PLC0415
    from integration_health.adapters.http import HttpConfig  # noqa: PLC0415

    items = [
        HttpConfig(integration_id=uuid4(), org_id=ORG, name=f"bench {i}", url=url)
        for i, url in enumerate(_urls(base, count))
    ]
    registry = default_registry(Settings(allow_private_networks=True))
    kinds: Counter[str] = Counter()
    queue = iter(items)
    async with registry:
        check = registry.check_for("http")
        _settle_heap()
        rss_before = _rss_kib()
        with _GcMeter() as gc_meter:
            cpu0, t0 = time.process_time(), time.monotonic()

            async def worker() -> None:
                for item in queue:
                    result = await check.check(ORG, item)
                    kinds[
                        result.status.value
                        if result.error_code is None
                        else f"{result.status.value}/{result.error_code}"
                    ] += 1

            await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
            elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return {
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "gc_collections": gc_meter.collections,
        "gc_s": gc_meter.seconds,
        "ok": kinds.get("healthy", 0),
        "outcomes": dict(kinds),
        "rss_before_kib": rss_before,
    }


def child(args: argparse.Namespace) -> None:
    """Run one variant and print its measurements as one JSON line."""
    raise_fd_limit()
    global _GC_FREEZE  # set once, before the variant runs
    _GC_FREEZE = args.gc_freeze
    if args.child == "bare":
        result = asyncio.run(_bare(args.url, args.integrations, args.concurrency))
    elif args.child == "adapter":
        result = asyncio.run(_adapter(args.url, args.integrations, args.concurrency))
    else:
        result = asyncio.run(
            _runner(args.url, args.integrations, args.concurrency, args.child == "runner+sqlite")
        )
    result["variant"] = args.child
    result["checks"] = args.integrations
    # ru_maxrss is in KiB on Linux.
    result["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result), flush=True)


# -- the parent: servers, repetitions, the table ------------------------------------------------


def _spawn(variant: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        variant,
        "--url",
        url,
        "--integrations",
        str(args.integrations),
        "--concurrency",
        str(args.concurrency),
        "--gc-freeze" if args.gc_freeze else "--no-gc-freeze",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"the {variant} run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _row(run: dict[str, Any], label: str) -> list[str]:
    rate = run["checks"] / run["elapsed_s"]
    others = {k: v for k, v in run["outcomes"].items() if k not in ("healthy", "200")}
    return [
        label,
        run["variant"],
        f"{run['checks']:,}",
        f"{run['ok']:,}",
        ", ".join(f"{k} {v}" for k, v in sorted(others.items())) or "—",
        f"{run['elapsed_s']:.2f}",
        f"{rate:,.0f}",
        f"{100 * run['cpu_s'] / run['elapsed_s']:.0f} %",
        f"{run['cpu_s'] / run['checks'] * 1e6:.0f}",
        f"{run['gc_s']:.2f} ({run['gc_collections']})",
        f"{run['server_cpu_s'] / run['elapsed_s'] * 100:.0f} %" if run["server_cpu_s"] else "n/a",
        f"{run['maxrss_kib'] / 1024:.0f}",
        f"{(run['maxrss_kib'] - run['rss_before_kib']) / 1024:.0f}",
    ]


def parent(args: argparse.Namespace) -> int:
    soft, _hard = raise_fd_limit()
    if soft < args.concurrency * 2 + 64:
        print(f"file-descriptor limit {soft} is too low for --concurrency", file=sys.stderr)
        return 2
    variants = ["runner", "bare", *(["adapter"] if args.adapter else [])]
    print(
        f"# runner_throughput: {args.integrations:,} http integrations, concurrency "
        f"{args.concurrency}, {args.repeats} repeats (order alternated), server {args.server} "
        f"x{args.server_workers} in its own process, gc.freeze() "
        f"{'on' if args.gc_freeze else 'off'}; Python {platform.python_version()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    runs: list[tuple[str, dict[str, Any]]] = []
    with ServerProcess(args.server, workers=args.server_workers) as server:
        for rep in range(args.repeats):
            order = variants if rep % 2 == 0 else variants[::-1]
            if args.sqlite:
                order = [*order, "runner+sqlite"]
            for variant in order:
                cpu_before = server.cpu_seconds()
                run = _spawn(variant, server.url, args)
                cpu_after = server.cpu_seconds()
                # Server CPU over the child's whole life (start-up included): an upper bound.
                run["server_cpu_s"] = (
                    cpu_after - cpu_before
                    if cpu_before is not None and cpu_after is not None
                    else None
                )
                runs.append((f"run {rep + 1}", run))
                rate = run["checks"] / run["elapsed_s"]
                print(f"  run {rep + 1} {variant:<14} {rate:8,.0f} checks/s", flush=True)
    headers = [
        "run",
        "variant",
        "checks",
        "ok",
        "other outcomes",
        "seconds",
        "checks/s",
        "client CPU",
        "CPU µs/check",
        "GC s (runs)",
        "server CPU ≤",
        "peak RSS MiB",
        "Δ RSS MiB",
    ]
    rows = [_row(run, label) for label, run in runs]
    medians: dict[str, float] = {}
    cpu_medians: dict[str, float] = {}
    bests: dict[str, float] = {}
    cpu_bests: dict[str, float] = {}
    for variant in VARIANTS:
        mine = [run for _, run in runs if run["variant"] == variant]
        if not mine:
            continue
        rates = [r["checks"] / r["elapsed_s"] for r in mine]
        cpus = [r["cpu_s"] / r["checks"] * 1e6 for r in mine]
        medians[variant] = statistics.median(rates)
        cpu_medians[variant] = statistics.median(cpus)
        bests[variant] = max(rates)
        cpu_bests[variant] = min(cpus)
        rss = f"{statistics.median(r['maxrss_kib'] for r in mine) / 1024:.0f}"
        for label, rate, cpu in (
            ("median", medians[variant], cpu_medians[variant]),
            ("best", bests[variant], cpu_bests[variant]),
        ):
            rows.append(
                [label, variant, "", "", "", "", f"{rate:,.0f}", "", f"{cpu:.0f}", "", "", rss, ""]
            )
    print()
    print(markdown_table(headers, rows, left=2))
    print()
    for label, rates, cpus in (
        ("medians", medians, cpu_medians),
        (f"best of {args.repeats}", bests, cpu_bests),
    ):
        ratio = rates["runner"] / rates["bare"]
        verdict = "meets" if ratio >= 0.9 else "MISSES"
        print(
            f"runner / bare ({label}): {ratio:.2f}× — {verdict} the ≥ 0.9× target; by CPU time "
            f"per check (bare µs / runner µs): {cpus['bare'] / cpus['runner']:.2f}×"
        )
    if "adapter" in medians:
        print(
            f"adapter / bare (medians): {medians['adapter'] / medians['bare']:.2f}×; by CPU "
            f"time per check: {cpu_medians['bare'] / cpu_medians['adapter']:.2f}×"
        )
    if "runner+sqlite" in medians:
        print(
            f"runner+sqlite / runner (medians): {medians['runner+sqlite'] / medians['runner']:.2f}×"
        )
    failed = [run for _, run in runs if run["ok"] != run["checks"]]
    if failed:
        print(f"WARNING: {len(failed)} run(s) had checks that did not succeed (see the table)")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults finish in about three minutes on 2 cores.",
    )
    parser.add_argument(
        "--integrations", type=int, default=10_000, help="checks per run (default: 10000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=100, help="checks in flight (default: 100)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs of each variant (default: 5)")
    parser.add_argument(
        "--sqlite",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the runner writing to a SQLite store (default: on)",
    )
    parser.add_argument(
        "--server",
        choices=("raw", "aiohttp"),
        default="raw",
        help="fake server kind (default: raw, the cheapest)",
    )
    parser.add_argument(
        "--server-workers", type=int, default=1, help="server processes (default: 1)"
    )
    parser.add_argument(
        "--gc-freeze",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="gc.freeze() after set-up in every variant (default: off)",
    )
    parser.add_argument(
        "--adapter",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also time the http adapter called directly, without the runner (default: off)",
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.integrations < 1 or args.concurrency < 1 or args.repeats < 1:
        parser.error("--integrations, --concurrency and --repeats must be positive")
    if args.server_workers < 1:
        parser.error("--server-workers must be positive")
    if args.child and not args.url:
        parser.error("--child needs --url")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point (also the child-process entry point, with the hidden ``--child``)."""
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    try:
        return parent(args)
    except RuntimeError as exc:  # a server or a child run failed: say so without a traceback
        print(f"runner_throughput: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
