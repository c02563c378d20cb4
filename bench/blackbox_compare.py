"""Peer comparison: our runner against Prometheus blackbox_exporter, probing the same targets.

``--targets`` distinct URLs (``http://127.0.0.1:PORT/health/<i>``) are served by one fake HTTP
server in a process of its own (``raw`` kind, see ``_servers.py``). Each round probes every
URL once with each of three variants, at the same concurrency ``--concurrency``, with the
order alternated from round to round:

- ``blackbox``: ``prometheus-blackbox-exporter`` (Debian package), started once with a module
  ``http_2xx`` (``prober: http``, ``timeout: 10s``, ``method`` as ``--method``). This script
  is the scraper: ``--concurrency`` workers on keep-alive connections send
  ``GET /probe?module=http_2xx&target=<url>`` back to back; a probe counts as ok when the
  answer holds ``probe_success 1``. The exporter builds a new HTTP client with keep-alives
  disabled for every probe (``prober/http.go``), so each probe is a new TCP connection — as
  ours are (verified at start-up, see below). Its CPU is read from ``/proc/<pid>/stat`` before
  and after the round: **the load generator's CPU is excluded** (shown apart, ``scraper CPU``);
- ``runner``: a fresh Python process runs ``run_health_checks(org, integrations=…,
  store=None, registry=default_registry(Settings(allow_private_networks=True)),
  concurrency=…)`` over the same URLs (``HttpConfig(method=…)``); CPU = the process's CPU
  time (all threads) during the call;
- ``runner+sqlite``: the same, but the integrations are first stored in a new SQLite file
  (not timed) and ``run_health_checks(org, store=store, …)`` loads them, checks them and
  writes every status and history row (``--no-sqlite`` drops this variant).

Before the rounds, a connection-counting server (in this process) receives 20 sequential
probes of one URL from each side: the table's preamble says how many TCP connections and
requests it saw, and whether the requests asked ``Connection: close``.

Columns: ``probes/s`` (wall time of the round), ``CPU s / 1k probes`` (the probing process
only), ``probes per CPU s`` (its inverse ×1000: work done per second of CPU), ``prober CPU``
(its CPU as a share of one core), ``scraper CPU`` (blackbox rounds only), ``server CPU``,
``peak RSS``. Ratios ours/theirs are of the medians.

Both sides share the machine's cores with the fake server; the blackbox rounds also with the
scraper, so **probes/s favours our runner** (it has no scraper to feed); CPU per probe does
not depend on that and is the fairer figure.

    .venv/bin/python bench/blackbox_compare.py          # 10,000 targets, concurrency 100, 3 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4

from _servers import ServerProcess, markdown_table, raise_fd_limit

ORG = UUID("00000000-0000-4000-8000-00000000bbe0")
EXPORTER = "prometheus-blackbox-exporter"
APT_HINT = "apt-get install -y prometheus-blackbox-exporter"
MODULE = "http_2xx"
VARIANTS = ("blackbox", "runner", "runner+sqlite")


def _proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_peak_rss_kib(pid: int) -> int:
    """Peak resident set size (``VmHWM``) of process ``pid``, in KiB (0 if unknown)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def _urls(base: str, count: int) -> list[str]:
    return [f"{base}/health/{i}" for i in range(count)]


# -- our runner (each variant runs in a child process) ----------------------------------------


async def _runner(
    base: str, count: int, concurrency: int, method: str, sqlite: bool
) -> dict[str, Any]:
    from integration_health import (  # noqa: PLC0415 - the child imports only what it needs
        HealthStatus,
        Settings,
        default_registry,
        run_health_checks,
    )
    from integration_health.adapters.http import HttpConfig  # noqa: PLC0415

    settings = Settings(allow_private_networks=True)
    items = [
        HttpConfig(integration_id=uuid4(), org_id=ORG, name=f"bench {i}", url=url, method=method)
        for i, url in enumerate(_urls(base, count))
    ]
    registry = default_registry(settings)
    store: Any = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if sqlite:
        from integration_health.integrations_file import to_records  # noqa: PLC0415
        from integration_health.store.base import Organization  # noqa: PLC0415
        from integration_health.store.sqlite import SQLiteStore  # noqa: PLC0415

        tmp = tempfile.TemporaryDirectory(prefix="ih-bbe-")
        store = await SQLiteStore.open(f"sqlite:///{tmp.name}/bench.db")
        await store.import_definitions([Organization(ORG, "Bench")], [], to_records(items))
    gc.collect()
    try:
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
        "ok"
        if o.result.status is HealthStatus.HEALTHY
        else f"{o.result.status.value}/{o.result.error_code}"
        for o in outcomes
    )
    return {
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "probes": len(outcomes),
        "ok": kinds.pop("ok", 0),
        "other": dict(kinds),
        "written": written,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def child(args: argparse.Namespace) -> None:
    """Run one of our variants and print its measurements as one JSON line."""
    raise_fd_limit()
    result = asyncio.run(
        _runner(
            args.url, args.targets, args.concurrency, args.method, args.child == "runner+sqlite"
        )
    )
    print(json.dumps(result), flush=True)


SCRIPT = str(Path(__file__).resolve())


async def _spawn_runner(variant: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        SCRIPT,
        "--child",
        variant,
        "--url",
        url,
        "--targets",
        str(args.targets),
        "--concurrency",
        str(args.concurrency),
        "--method",
        args.method,
    ]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"the {variant} run failed:\n{err.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# -- blackbox_exporter -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Exporter:
    """``prometheus-blackbox-exporter`` in a process of its own, on a free loopback port."""

    def __init__(self, binary: str, method: str, workdir: Path) -> None:
        self.binary = binary
        self.config = workdir / "blackbox.yml"
        self.config.write_text(
            "modules:\n"
            f"  {MODULE}:\n"
            "    prober: http\n"
            "    timeout: 10s\n"
            "    http:\n"
            f"      method: {method}\n"
            "      preferred_ip_protocol: ip4\n",
            encoding="utf-8",
        )
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def version(self) -> str:
        done = subprocess.run(  # noqa: S603 - the binary found on PATH (or given)
            [self.binary, "--version"], capture_output=True, text=True, check=False
        )
        text = (done.stdout or done.stderr).strip().splitlines()
        return text[0] if text else "unknown version"

    def spawn(self) -> None:
        """Start the process (see :meth:`wait_listening`)."""
        self.port = _free_port()
        self.proc = subprocess.Popen(  # noqa: S603 - the binary found on PATH (or given)
            [
                self.binary,
                f"--config.file={self.config}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    async def wait_listening(self) -> None:
        """Wait until the exporter accepts connections (or fail clearly)."""
        assert self.proc is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ""
                raise RuntimeError(f"{self.binary} exited at start-up:\n{err}")
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.binary} did not listen on 127.0.0.1:{self.port} within 15 s")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return _proc_cpu_seconds(self.proc.pid)

    def peak_rss_kib(self) -> int:
        assert self.proc is not None
        return _proc_peak_rss_kib(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


async def _scrape(
    exporter: Exporter, targets: list[str], concurrency: int, server: ServerProcess | None
) -> dict[str, Any]:
    """Probe every target once through the exporter; measure the exporter's CPU only."""
    import aiohttp  # noqa: PLC0415

    outcomes: Counter[str] = Counter()
    queue = iter(targets)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for target in queue:
                url = f"{exporter.base}/probe?module={MODULE}&target={quote(target, safe='')}"
                try:
                    async with session.get(url) as response:
                        body = await response.text()
                except Exception as exc:  # noqa: BLE001 - counted, shown in the table
                    outcomes[f"scrape {type(exc).__name__}"] += 1
                    continue
                if response.status != 200:
                    outcomes[f"scrape HTTP {response.status}"] += 1
                elif "\nprobe_success 1" in body:
                    outcomes["ok"] += 1
                else:
                    outcomes["probe_success 0"] += 1

        gc.collect()
        me0 = time.process_time()
        server0 = server.cpu_seconds() if server else None
        cpu0, t0 = exporter.cpu_seconds(), time.monotonic()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(targets)))))
        elapsed, cpu = time.monotonic() - t0, exporter.cpu_seconds() - cpu0
        server1 = server.cpu_seconds() if server else None
        scraper_cpu = time.process_time() - me0
    return {
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "probes": len(targets),
        "ok": outcomes.pop("ok", 0),
        "other": dict(outcomes),
        "scraper_cpu_s": scraper_cpu,
        "server_cpu_s": None if server0 is None or server1 is None else server1 - server0,
        "peak_rss_kib": exporter.peak_rss_kib(),
    }


# -- keep-alive check: who opens a connection per probe? -------------------------------------


_OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _CountingServer:
    """Counts TCP connections and requests; answers 200 and keeps the connection open
    unless the request says ``Connection: close`` (so a client that reuses would show it)."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.close_requested = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                if b"connection: close" in head.lower():
                    self.close_requested += 1
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    await writer.drain()
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/health/same"

    def reset(self) -> None:
        self.connections = self.requests = self.close_requested = 0

    def summary(self) -> str:
        return (
            f"{self.requests} requests on {self.connections} TCP connections, "
            f"{self.close_requested} asking Connection: close"
        )


async def _keep_alive_check(exporter: Exporter, probes: int, method: str) -> list[str]:
    import aiohttp  # noqa: PLC0415

    from integration_health import Settings, default_registry, run_health_checks  # noqa: PLC0415
    from integration_health.adapters.http import HttpConfig  # noqa: PLC0415

    counting = _CountingServer()
    url = await counting.start()
    lines = []
    async with aiohttp.ClientSession() as session:
        for _ in range(probes):
            probe = f"{exporter.base}/probe?module={MODULE}&target={quote(url, safe='')}"
            async with session.get(probe) as response:
                await response.read()
    lines.append(f"blackbox, {probes} sequential probes of one URL: {counting.summary()}")
    counting.reset()
    item = HttpConfig(integration_id=uuid4(), org_id=ORG, name="same", url=url, method=method)
    registry = default_registry(Settings(allow_private_networks=True))
    for _ in range(probes):
        await run_health_checks(ORG, integrations=[item], store=None, registry=registry)
    lines.append(f"runner,   {probes} sequential checks of one URL: {counting.summary()}")
    assert counting.server is not None
    counting.server.close()
    await counting.server.wait_closed()
    return lines


# -- the parent: rounds and the table -----------------------------------------------------------


def _row(label: str, run: dict[str, Any]) -> list[str]:
    rate = run["probes"] / run["elapsed_s"]
    others = ", ".join(f"{k} {v}" for k, v in sorted(run["other"].items())) or "—"
    scraper = run.get("scraper_cpu_s")
    server = run.get("server_cpu_s")
    return [
        label,
        run["variant"],
        f"{run['probes']:,}",
        f"{run['ok']:,}",
        others,
        f"{run['elapsed_s']:.2f}",
        f"{rate:,.0f}",
        f"{run['cpu_s'] / run['probes'] * 1000:.2f}",
        f"{run['probes'] / run['cpu_s']:,.0f}" if run["cpu_s"] else "n/a",
        f"{100 * run['cpu_s'] / run['elapsed_s']:.0f} %",
        f"{100 * scraper / run['elapsed_s']:.0f} %" if scraper is not None else "—",
        f"{100 * server / run['elapsed_s']:.0f} %" if server is not None else "n/a",
        f"{run['peak_rss_kib'] / 1024:.0f}",
        run["loadavg"],
    ]


async def parent(args: argparse.Namespace, binary: str) -> int:
    soft, _hard = raise_fd_limit()
    if soft < args.concurrency * 4 + 64:
        print(f"file-descriptor limit {soft} is too low for --concurrency", file=sys.stderr)
        return 2
    variants = ["blackbox", "runner"] + (["runner+sqlite"] if args.sqlite else [])
    with tempfile.TemporaryDirectory(prefix="ih-bbe-") as workdir:
        exporter = Exporter(binary, args.method, Path(workdir))
        print(
            f"# blackbox_compare: {args.targets:,} distinct URLs, concurrency {args.concurrency},"
            f" method {args.method}, {args.rounds} rounds (order alternated); {exporter.version()};"
            f" Python {platform.python_version()}, {len(os.sched_getaffinity(0))} CPUs,"
            f" loadavg {_loadavg()}"
        )
        runs: list[tuple[str, dict[str, Any]]] = []
        exporter.spawn()
        try:
            await exporter.wait_listening()
            for line in await _keep_alive_check(exporter, 20, args.method):
                print(f"  keep-alive check: {line}")
            with ServerProcess(args.server) as server:
                urls = _urls(server.url, args.targets)
                # Untimed warm-up of the exporter (the runner children start fresh each time).
                await _scrape(exporter, urls[: min(200, len(urls))], args.concurrency, None)
                for rnd in range(args.rounds):
                    order = variants if rnd % 2 == 0 else variants[::-1]
                    for variant in order:
                        load = _loadavg()
                        if variant == "blackbox":
                            run = await _scrape(exporter, urls, args.concurrency, server)
                        else:
                            before = server.cpu_seconds()
                            run = await _spawn_runner(variant, server.url, args)
                            after = server.cpu_seconds()
                            # Over the child's whole life (start-up included): an upper bound.
                            run["server_cpu_s"] = (
                                None if before is None or after is None else after - before
                            )
                        run["variant"] = variant
                        run["loadavg"] = load
                        runs.append((f"round {rnd + 1}", run))
                        print(
                            f"  round {rnd + 1} {variant:<14}"
                            f" {run['probes'] / run['elapsed_s']:8,.0f} probes/s"
                            f" {run['cpu_s'] / run['probes'] * 1000:6.2f} CPU s/1k",
                            flush=True,
                        )
        finally:
            exporter.stop()
    _report(runs, variants)
    return 0


def _report(runs: list[tuple[str, dict[str, Any]]], variants: list[str]) -> None:
    headers = [
        "round",
        "variant",
        "probes",
        "ok",
        "other outcomes",
        "seconds",
        "probes/s",
        "CPU s / 1k probes",
        "probes per CPU s",
        "prober CPU",
        "scraper CPU",
        "server CPU",
        "peak RSS MiB",
        "loadavg 1/5/15",
    ]
    rows = [_row(label, run) for label, run in runs]
    rate: dict[str, float] = {}
    cpu_k: dict[str, float] = {}
    for variant in variants:
        mine = [run for _, run in runs if run["variant"] == variant]
        rate[variant] = statistics.median(r["probes"] / r["elapsed_s"] for r in mine)
        cpu_k[variant] = statistics.median(r["cpu_s"] / r["probes"] * 1000 for r in mine)
        rows.append(
            [
                "median",
                variant,
                "",
                "",
                "",
                "",
                f"{rate[variant]:,.0f}",
                f"{cpu_k[variant]:.2f}",
                f"{1000 / cpu_k[variant]:,.0f}",
                "",
                "",
                "",
                "",
                "",
            ]
        )
    print()
    print(markdown_table(headers, rows, left=2))
    print()
    for ours in variants[1:]:
        throughput = rate[ours] / rate["blackbox"]
        efficiency = cpu_k["blackbox"] / cpu_k[ours]
        print(
            f"{ours} / blackbox (medians): throughput {throughput:.2f}×, probes per CPU second"
            f" {efficiency:.2f}× — {'meets' if efficiency >= 1.0 else 'MISSES'} the ≥ 1.0× target"
            " by CPU per probe"
        )
    failed = [run for _, run in runs if run["ok"] != run["probes"]]
    if failed:
        print(f"WARNING: {len(failed)} round(s) had probes that did not succeed (see the table)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults take about two minutes on 2 cores. Needs the Debian package "
        f"prometheus-blackbox-exporter ({APT_HINT}).",
    )
    parser.add_argument("--targets", type=int, default=10_000, help="distinct URLs (10000)")
    parser.add_argument("--concurrency", type=int, default=100, help="probes in flight (100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--method", choices=("GET", "HEAD"), default="GET", help="GET")
    parser.add_argument(
        "--sqlite",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run our runner writing to a SQLite store (default: on)",
    )
    parser.add_argument(
        "--server", choices=("raw", "aiohttp"), default="raw", help="fake target server (raw)"
    )
    parser.add_argument(
        "--exporter", default=EXPORTER, help=f"the exporter binary (default: {EXPORTER})"
    )
    parser.add_argument("--child", choices=VARIANTS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.targets < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--targets, --concurrency and --rounds must be positive")
    if args.child and not args.url:
        parser.error("--child needs --url")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point (also the child-process entry point, with the hidden ``--child``)."""
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    binary = shutil.which(args.exporter)
    if binary is None:
        print(
            f"blackbox_compare: {args.exporter!r} not found on PATH. Install it with:\n"
            f"    {APT_HINT}\n(or pass --exporter /path/to/blackbox_exporter)",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(parent(args, binary))
    except (RuntimeError, OSError) as exc:
        print(f"blackbox_compare: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
