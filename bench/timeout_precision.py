"""How precisely the runner keeps a check's deadline when nothing ever answers.

``--checks`` generic ``http`` integrations point at a server (in a separate process) that
accepts every connection, reads the request and never answers. All of them run at once
(``concurrency`` ≥ ``--checks``) with ``timeout_s=--deadline``; every result must be
``unreachable``/``timeout``. Two variants, alternated, ``--repeats`` runs each:

- ``runner``: ``run_health_checks(org, integrations=…, store=None, timeout_s=…,
  concurrency=…)`` with the generic ``http`` adapter;
- ``bare``: the runner's deadline mechanism and nothing else — each ``HEAD`` request of one
  shared ``aiohttp`` session (fresh connections) runs as a task raced with
  ``asyncio.wait(timeout=…)`` and is cancelled when it loses. It is the floor for how late
  an asyncio loop on this machine notices 1,000 simultaneous deadlines.

The table shows, per run:

- overshoot p50 / p99 / max — the time waited minus the deadline (for ``runner``,
  ``latency_ms`` of the result, in whole milliseconds);
- last result — when the last result was delivered (``on_result``), after the start;
- wall — the whole ``run_health_checks`` call (for ``bare``: session opened to session
  closed), start-up and clean-up included;
- CPU — this process's CPU time during the run (building the configs included);
  preempted — involuntary context switches
  (the machine taking the CPU away: a sign of noise from other processes);
- warnings — warnings the runner logged about cancelled checks ("ignored cancellation", "slow
  to stop"; counted, not shown). Every check here honours cancellation, so any is false;
- stop lag max (``bare`` only) — the longest time between ``cancel()`` and the cancelled
  request's task actually ending: how late a burst of deadlines lets a well-behaved check stop
  (the runner's ``SLOW_STOP_WARN_S`` must stay well above it).

Targets: p99 overshoot ≤ 50 ms, and the whole run ≤ deadline + 0.5 s. The process's
file-descriptor limit must allow one socket per check: ``Settings()`` raises the soft limit
to the hard one (``settings.default_concurrency``); the bench reports both and refuses to
start when they are too low.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any
from uuid import UUID, uuid4

import aiohttp

from _servers import ServerProcess, markdown_table, percentile
from integration_health import (
    CheckOutcome,
    ErrorCode,
    Settings,
    default_registry,
    run_health_checks,
)
from integration_health import runner as runner_module
from integration_health.adapters.http import HttpConfig

ORG = UUID("00000000-0000-4000-8000-0000000071e0")
VARIANTS = ("runner", "bare")


class _CountWarnings(logging.Handler):
    """Counts the runner's warnings instead of printing a thousand of them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


async def _runner(
    url: str, args: argparse.Namespace, delivered: list[float], _stop_lags: list[float]
) -> tuple[list[float], float]:
    settings = Settings(allow_private_networks=True, concurrency=args.concurrency)
    items = [
        HttpConfig(integration_id=uuid4(), org_id=ORG, name=f"hang {i}", url=f"{url}/hang/{i}")
        for i in range(args.checks)
    ]
    registry = default_registry(settings)
    gc.collect()
    started = time.monotonic()

    def on_result(_outcome: CheckOutcome) -> None:
        delivered.append(time.monotonic() - started)

    outcomes = await run_health_checks(
        ORG,
        integrations=items,
        store=None,
        registry=registry,
        timeout_s=args.deadline,
        concurrency=args.concurrency,
        on_result=on_result,
    )
    wall = time.monotonic() - started
    waited = [
        o.result.latency_ms if o.result.error_code is ErrorCode.TIMEOUT else float("nan")
        for o in outcomes
    ]
    return waited, wall


async def _bare(
    url: str, args: argparse.Namespace, delivered: list[float], stop_lags: list[float]
) -> tuple[list[float], float]:
    urls = [f"{url}/hang/{i}" for i in range(args.checks)]
    waited: list[float] = []
    gc.collect()
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:

        async def head(target: str) -> int:
            async with session.head(target) as response:
                return response.status

        async def one(target: str) -> None:
            begun = time.monotonic()
            task = asyncio.ensure_future(head(target))
            done, _ = await asyncio.wait({task}, timeout=args.deadline)
            elapsed = time.monotonic() - begun
            if done:
                task.exception()  # an answer from a server that never answers: not a timeout
                waited.append(float("nan"))
            else:
                cancelled_at = time.monotonic()
                task.cancel()
                task.add_done_callback(lambda _t: stop_lags.append(time.monotonic() - cancelled_at))
                waited.append(elapsed * 1000)
            delivered.append(time.monotonic() - started)

        queue = iter(urls)

        async def worker() -> None:
            for target in queue:
                await one(target)

        await asyncio.gather(*(worker() for _ in range(min(args.concurrency, len(urls)))))
    return waited, time.monotonic() - started


async def one_run(variant: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run every check once with ``variant``; return the measurements."""
    counter = _CountWarnings()
    runner_log = logging.getLogger("integration_health.runner")
    runner_log.addHandler(counter)
    runner_log.propagate = False
    delivered: list[float] = []
    stop_lags: list[float] = []
    usage0, cpu0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    try:
        waited, wall = await (_runner if variant == "runner" else _bare)(
            url, args, delivered, stop_lags
        )
        cpu = time.process_time() - cpu0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(0.3)  # let cancelled probes finish closing their sockets
    finally:
        runner_log.removeHandler(counter)
        runner_log.propagate = True
    deadline_ms = args.deadline * 1000
    overshoot = [w - deadline_ms for w in waited if not math.isnan(w)]
    return {
        "variant": variant,
        "checks": len(waited),
        "timeouts": len(overshoot),
        "p50": percentile(overshoot, 50),
        "p99": percentile(overshoot, 99),
        "max": max(overshoot, default=0.0),
        "min": min(overshoot, default=0.0),
        "last": max(delivered, default=0.0),
        "wall": wall,
        "cpu": cpu,
        "preempted": usage1.ru_nivcsw - usage0.ru_nivcsw,
        "warnings": counter.count,
        "stop_lag_max": max(stop_lags) * 1000 if stop_lags else None,
        "abandoned": len(runner_module.ABANDONED),
    }


def _row(label: str, r: dict[str, Any]) -> list[str]:
    return [
        label,
        r["variant"],
        f"{r['checks']:,}",
        f"{r['timeouts']:,}",
        f"{r['min']:.0f}",
        f"{r['p50']:.0f}",
        f"{r['p99']:.0f}",
        f"{r['max']:.0f}",
        f"{r['last']:.3f}",
        f"{r['wall']:.3f}",
        f"{r['cpu']:.2f}",
        f"{r['preempted']:,}",
        f"{r['warnings']:,}",
        "—" if r["stop_lag_max"] is None else f"{r['stop_lag_max']:.0f}",
    ]


async def run(args: argparse.Namespace) -> int:
    settings = Settings(allow_private_networks=True)  # raises the soft fd limit if it can
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.checks + 256
    print(
        f"# timeout_precision: {args.checks:,} checks that never answer, deadline "
        f"{args.deadline:g} s, concurrency {args.concurrency:,}, {args.repeats} runs of each "
        f"variant (order alternated); Python {platform.python_version()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"# file descriptors: soft limit {soft:,} (hard {hard:,}) after Settings(); "
        f"default concurrency {settings.concurrency:,}; this run needs ≥ {need:,}"
    )
    if soft < need:
        print(
            f"the file-descriptor limit ({soft}) is below {need}: raise it (ulimit -n) "
            "or lower --checks",
            file=sys.stderr,
        )
        return 2
    runs: list[tuple[str, dict[str, Any]]] = []
    with ServerProcess("hang") as server:
        for index in range(args.repeats):
            order = VARIANTS if index % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                result = await one_run(variant, server.url, args)
                runs.append((f"run {index + 1}", result))
                print(
                    f"  run {index + 1} {variant:<6}: p99 overshoot {result['p99']:.0f} ms, "
                    f"wall {result['wall']:.3f} s",
                    flush=True,
                )
    rows = [_row(label, r) for label, r in runs]
    for variant in VARIANTS:
        mine = [r for _, r in runs if r["variant"] == variant]
        med = {k: statistics.median(float(r[k]) for r in mine) for k in ("p50", "p99", "wall")}
        med["max"] = statistics.median(float(r["max"]) for r in mine)
        rows.append(
            [
                "median",
                variant,
                *[""] * 3,
                f"{med['p50']:.0f}",
                f"{med['p99']:.0f}",
                f"{med['max']:.0f}",
                "",
                f"{med['wall']:.3f}",
                *[""] * 4,
            ]
        )
    headers = [
        "run",
        "variant",
        "checks",
        "timeouts",
        "overshoot min ms",
        "p50 ms",
        "p99 ms",
        "max ms",
        "last result s",
        "wall s",
        "CPU s",
        "preempted",
        "warnings",
        "stop lag max ms",
    ]
    print()
    print(markdown_table(headers, rows, left=2))
    print()
    mine = [r for _, r in runs if r["variant"] == "runner"]
    worst_p99 = max(float(r["p99"]) for r in mine)
    median_p99 = statistics.median(float(r["p99"]) for r in mine)
    worst_wall = max(float(r["wall"]) for r in mine)
    budget = args.deadline + 0.5
    print(
        f"runner p99 overshoot: median {median_p99:.0f} ms, worst {worst_p99:.0f} ms — "
        f"{'meets' if worst_p99 <= 50 else 'MISSES'} the ≤ 50 ms target"
    )
    print(
        f"runner wall time, worst run: {worst_wall:.3f} s — "
        f"{'meets' if worst_wall <= budget else 'MISSES'} the ≤ {budget:g} s target"
    )
    if any(r["timeouts"] != r["checks"] for _, r in runs):
        print("WARNING: some checks did not end as timeouts (see the table)")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults finish in about 20 seconds.",
    )
    parser.add_argument("--checks", type=int, default=1_000, help="checks per run (default: 1000)")
    parser.add_argument(
        "--deadline", type=float, default=2.0, help="timeout_s of every check (default: 2)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="checks in flight (default: --checks, i.e. all at once)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs (default: 3)")
    args = parser.parse_args(argv)
    if args.concurrency is None:
        args.concurrency = args.checks
    if args.checks < 1 or args.concurrency < 1 or args.repeats < 1:
        parser.error("--checks, --concurrency and --repeats must be positive")
    if not 0 < args.deadline <= 120:
        parser.error("--deadline must be between 0 and 120 seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the arguments, run, print the table."""
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except RuntimeError as exc:  # the server did not start: say so without a traceback
        print(f"{os.path.basename(__file__)}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
