"""aiohttp vs httpx under many requests in flight, against one local aiohttp server.

The question behind it: which async HTTP client should the probes use? Both clients run in
the same process, one after the other, against the same ``aiohttp.web`` server running in a
separate process (so the server never competes for this interpreter's GIL). For every
combination of client, connection mode and concurrency, ``--concurrency`` workers send
``GET /`` back to back for ``--duration`` seconds, and the table reports:

- req/s — completed requests per second of wall time;
- p50 / p99 / max — latency of one request, measured around the client call;
- over deadline — requests still unanswered after ``--deadline`` seconds (cancelled then);
  while the server is mostly idle these are *false timeouts*, caused by the client;
- errors — requests that raised;
- client CPU / server CPU — CPU used by this process and by the server during the cell, in
  % of one core (near 100 % marks the side that was the limit).

Modes: ``keep-alive`` (a pool sized to the concurrency, connections reused) and ``fresh`` (a
new TCP connection for each request, what the health checks do by default). Clients:
``aiohttp`` (``TCPConnector(limit=N)``, ``force_close`` in fresh mode), ``httpx`` (0.28,
``Limits(max_connections=N, max_keepalive_connections=N or 0)``, no client timeout) and
``httpx-defaults`` (``httpx.AsyncClient()`` as most code uses it: 100 connections, 20 kept
alive, 5 s timeouts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx

from _servers import ServerProcess, markdown_table, percentile, raise_fd_limit

CLIENTS = ("aiohttp", "httpx", "httpx-defaults")
MODES = ("keep-alive", "fresh")

Send = Callable[[], Awaitable[None]]


@dataclass
class Cell:
    """The measurements of one (client, mode, concurrency) combination."""

    client: str
    mode: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    over_deadline: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    server_cpu_s: float | None = None
    client_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed_s if self.elapsed_s else 0.0


def _client(
    name: str, mode: str, concurrency: int, url: str
) -> tuple[AbstractAsyncContextManager[Any], Callable[[Any], Send]]:
    """The client object (an async context manager) and a factory of its one-request call."""
    fresh = mode == "fresh"
    if name == "aiohttp":
        connector = aiohttp.TCPConnector(limit=concurrency, force_close=fresh)
        session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None)
        )

        def aiohttp_send(s: aiohttp.ClientSession) -> Send:
            async def send() -> None:
                async with s.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")

            return send

        return session, aiohttp_send
    if name == "httpx":
        limits = httpx.Limits(
            max_connections=concurrency,
            max_keepalive_connections=0 if fresh else concurrency,
        )
        # No client timeout: the same asyncio deadline applies to both clients.
        client = httpx.AsyncClient(limits=limits, timeout=None)  # noqa: S113
    elif name == "httpx-defaults":
        if fresh:  # the default pool size, but nothing kept alive
            client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=0)
            )
        else:
            client = httpx.AsyncClient()
    else:
        raise ValueError(f"unknown client {name!r}")

    def httpx_send(c: httpx.AsyncClient) -> Send:
        async def send() -> None:
            response = await c.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")

        return send

    return client, httpx_send


async def measure(
    cell: Cell, url: str, duration_s: float, deadline_s: float, server: ServerProcess
) -> Cell:
    """Run one cell: ``concurrency`` workers sending back to back for ``duration_s``."""
    client, make_send = _client(cell.client, cell.mode, cell.concurrency, url)
    async with client as opened:
        send = make_send(opened)
        for _ in range(3):  # warm up: imports, first connection, lazy setup
            await send()
        cpu_before = server.cpu_seconds()
        own_before = time.process_time()
        started = time.monotonic()
        stop_at = started + duration_s

        async def worker() -> None:
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                try:
                    await asyncio.wait_for(send(), deadline_s)
                except TimeoutError:
                    cell.over_deadline += 1
                    continue
                except Exception as exc:  # noqa: BLE001 - counted and reported by kind
                    cell.errors += 1
                    kind = type(exc).__name__
                    cell.error_kinds[kind] = cell.error_kinds.get(kind, 0) + 1
                    continue
                cell.latencies.append(time.monotonic() - t0)

        await asyncio.gather(*(worker() for _ in range(cell.concurrency)))
        cell.elapsed_s = time.monotonic() - started
        cell.client_cpu_s = time.process_time() - own_before
        cpu_after = server.cpu_seconds()
        if cpu_before is not None and cpu_after is not None:
            cell.server_cpu_s = cpu_after - cpu_before
    return cell


def _row(cell: Cell) -> list[str]:
    ms = [x * 1000 for x in cell.latencies]
    cpu = (
        f"{100 * cell.server_cpu_s / cell.elapsed_s:.0f} %"
        if cell.server_cpu_s is not None and cell.elapsed_s
        else "n/a"
    )
    errors = str(cell.errors)
    if cell.error_kinds:
        errors += " (" + ", ".join(f"{k} {v}" for k, v in sorted(cell.error_kinds.items())) + ")"
    return [
        cell.client,
        cell.mode,
        str(cell.concurrency),
        f"{len(cell.latencies):,}",
        f"{cell.rate:,.0f}",
        f"{percentile(ms, 50):.1f}",
        f"{percentile(ms, 99):.1f}",
        f"{max(ms, default=0.0):.1f}",
        str(cell.over_deadline),
        errors,
        f"{100 * cell.client_cpu_s / cell.elapsed_s:.0f} %" if cell.elapsed_s else "n/a",
        cpu,
    ]


async def run(args: argparse.Namespace) -> int:
    soft, _hard = raise_fd_limit()
    need = max(args.concurrency) * 2 + 64
    if soft < need:
        print(f"file-descriptor limit {soft} is below {need}; lower --concurrency", file=sys.stderr)
        return 2
    print(
        f"# http_clients: aiohttp {aiohttp.__version__}, httpx {httpx.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.2f}; "
        "server: aiohttp in its own process"
    )
    print(
        f"# {args.duration:g} s per cell, deadline {args.deadline:g} s, "
        f"concurrency {', '.join(map(str, args.concurrency))}, clients {', '.join(args.clients)}"
    )
    cells: list[Cell] = []
    with ServerProcess("aiohttp", workers=args.server_workers) as server:
        url = f"{server.url}/"
        for concurrency in args.concurrency:
            for mode in args.modes:
                for client in args.clients:
                    cell = await measure(
                        Cell(client, mode, concurrency), url, args.duration, args.deadline, server
                    )
                    cells.append(cell)
                    print(
                        f"  done: {client:<15} {mode:<10} {concurrency:>4}: {cell.rate:,.0f} req/s"
                    )
    headers = [
        "client",
        "mode",
        "in flight",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "over deadline",
        "errors",
        "client CPU",
        "server CPU",
    ]
    print()
    print(markdown_table(headers, [_row(c) for c in cells], left=2))
    print()
    by_key = {(c.client, c.mode, c.concurrency): c for c in cells}
    for concurrency in args.concurrency:
        for mode in args.modes:
            base = by_key.get(("aiohttp", mode, concurrency))
            for other in args.clients:
                if other == "aiohttp" or base is None:
                    continue
                cell = by_key[(other, mode, concurrency)]
                ratio = base.rate / cell.rate if cell.rate else float("inf")
                print(
                    f"aiohttp / {other}, {mode}, {concurrency} in flight: "
                    f"{ratio:.1f}× the throughput"
                )
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas: {text!r}"
        ) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults finish in about two minutes on 2 cores.",
    )
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=[100, 500],
        help="requests in flight, comma-separated (default: 100,500)",
    )
    parser.add_argument(
        "--clients",
        type=lambda s: s.split(","),
        default=list(CLIENTS),
        help=f"comma-separated subset of {', '.join(CLIENTS)} (default: all)",
    )
    parser.add_argument(
        "--modes",
        type=lambda s: s.split(","),
        default=list(MODES),
        help=f"comma-separated subset of {', '.join(MODES)} (default: both)",
    )
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per cell (default: 4)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=5.0,
        help="a request unanswered after this many seconds is cancelled and counted (default: 5)",
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="server processes sharing the port (default: 1)",
    )
    args = parser.parse_args(argv)
    for name in args.clients:
        if name not in CLIENTS:
            parser.error(f"unknown client {name!r}; choose from {', '.join(CLIENTS)}")
    for mode in args.modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if any(c < 1 for c in args.concurrency):
        parser.error("--concurrency must be positive")
    if args.duration <= 0 or args.deadline <= 0:
        parser.error("--duration and --deadline must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the arguments, run every cell, print the table."""
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except RuntimeError as exc:  # the server did not start: say so without a traceback
        print(f"{os.path.basename(__file__)}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
