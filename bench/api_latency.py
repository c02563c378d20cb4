"""API latency: ``GET /api/orgs/{org}/health`` (1,000 integrations) and a 96-point history.

Seeds one organisation with ``--integrations`` integrations (each with a current status) and
one integration with 96 history rows, in SQLite and in PostgreSQL; starts the real server
(``integration-health serve --no-scheduler`` in a subprocess, HS256 sign-in, so every
request verifies a JWT and — on PostgreSQL — reads as ``authenticated`` under RLS); then
drives each endpoint with ``hey`` (or ``--client wrk``; Debian packages ``hey``, ``wrk``) from
``--clients`` concurrent clients over loopback, with the answer cache on (default 1 s) and off
(``INTEGRATION_HEALTH_API_CACHE_TTL_S=0``). Prints p50/p99 latency, throughput and the CPU
seconds the load tool itself used (on 2 cores it competes with the server: hey inflates every
gzip answer, ~435 KB of JSON for 1,000 integrations; wrk inflates nothing).

    .venv/bin/python bench/api_latency.py
    .venv/bin/python bench/api_latency.py --requests 2000 --stores sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
import psycopg

from integration_health import HealthResult
from integration_health.checks import IntegrationRecord
from integration_health.model import ErrorCode
from integration_health.store import Member, Organization, ResultWrite, Store, open_store

SECRET = "bench-jwt-secret-of-at-least-thirty-two-bytes"  # noqa: S105 - a bench-only key
ORG = uuid.UUID("00000000-0000-4000-8000-0000000be4c0")
USER = uuid.UUID("00000000-0000-4000-8000-0000000be4c1")
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


@dataclass
class Row:
    store: str
    endpoint: str
    cache: str
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int
    client_cpu_s: float


async def seed(url: str, integrations: int) -> uuid.UUID:
    """One org with ``integrations`` integrations and statuses; returns the one with history."""
    store: Store = await open_store(url)
    try:
        await store.upgrade()
        ids = [uuid.uuid5(ORG, f"integration-{i}") for i in range(integrations)]
        records = [
            IntegrationRecord(
                integration_id=ids[i],
                org_id=ORG,
                integration_type=("http", "xledger", "fiken", "tripletex")[i % 4],
                name=f"Integration {i:04d}",
                config={"url": f"https://vendor-{i}.example/health"},
            )
            for i in range(integrations)
        ]
        await store.import_definitions(
            [Organization(ORG, "Bench AS")], [Member(ORG, USER, "admin")], records
        )
        writes = []
        for i, record in enumerate(records):
            result = (
                HealthResult.unreachable(ErrorCode.TIMEOUT, "No answer within 10 s.", 10_000)
                if i % 50 == 0
                else HealthResult.healthy(40 + i % 200)
            )
            writes.append(_write(record, result, T0))
        await store.record_results(writes)
        history = [
            _write(records[0], HealthResult.healthy(50 + n % 30), T0 + timedelta(minutes=15 * n))
            for n in range(1, 97)
        ]
        for chunk in range(0, 96, 24):
            await store.record_results(history[chunk : chunk + 24])
        return ids[0]
    finally:
        await store.aclose()


def _write(record: IntegrationRecord, result: HealthResult, at: datetime) -> ResultWrite:
    return ResultWrite(
        org_id=record.org_id,
        integration_id=record.integration_id,
        integration_type=record.integration_type,
        result=result.model_copy(update={"checked_at": at}),
        next_check_at=at + timedelta(minutes=15),
    )


def start_server(
    database_url: str, cache_ttl: float, loop: str
) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "INTEGRATION_HEALTH_DATABASE_URL": database_url,
        "INTEGRATION_HEALTH_JWT_SECRET": SECRET,
        "INTEGRATION_HEALTH_API_CACHE_TTL_S": str(cache_ttl),
    }
    proc = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [
            sys.executable,
            "-m",
            "integration_health",
            "serve",
            "--port",
            "0",
            "--no-scheduler",
            "--loop",
            loop,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if match := re.search(r"http://127\.0\.0\.1:\d+", line):
            return proc, match.group(0)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"the server did not start: {proc.stderr.read() if proc.stderr else ''}")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def hey(
    url: str, token: str, requests: int, clients: int, *, gzip: bool = True
) -> tuple[float, float, float, int, float]:
    """p50 ms, p99 ms, requests/s, non-200 answers, the load tool's CPU seconds."""
    command = ["hey", "-n", str(requests), "-c", str(clients)]
    if not gzip:
        command.append("-disable-compression")
    command += ["-H", f"Authorization: Bearer {token}", url]
    cpu0 = _children_cpu_s()
    out = subprocess.run(  # noqa: S603 - hey from PATH, arguments built here
        command,
        capture_output=True,
        text=True,
        check=True,
        timeout=1200,
    ).stdout
    cpu = _children_cpu_s() - cpu0

    def pct(p: int) -> float:
        match = re.search(rf"\s{p}%+ in ([0-9.]+) secs", out)
        if match is None:
            raise RuntimeError(f"unexpected hey output:\n{out}")
        return float(match.group(1)) * 1000

    rps_match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    ok = sum(int(n) for n in re.findall(r"\[200\]\s+(\d+) responses", out))
    return pct(50), pct(99), float(rps_match.group(1)) if rps_match else 0.0, requests - ok, cpu


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk(
    url: str, token: str, seconds: int, clients: int, *, gzip: bool = True
) -> tuple[float, float, float, int, float]:
    """Like :func:`hey`, with ``wrk`` for ``seconds``: wrk never decompresses, so with gzip the
    client's CPU is not spent inflating every answer on the cores the server uses."""
    command = ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency"]
    command += ["-H", f"Authorization: Bearer {token}"]
    if gzip:
        command += ["-H", "Accept-Encoding: gzip"]
    command.append(url)
    cpu0 = _children_cpu_s()
    out = subprocess.run(  # noqa: S603 - wrk from PATH, arguments built here
        command, capture_output=True, text=True, check=True, timeout=seconds + 120
    ).stdout
    cpu = _children_cpu_s() - cpu0

    def pct(p: int) -> float:
        match = re.search(rf"^\s+{p}%\s+([0-9.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return float(match.group(1)) * _WRK_UNITS[match.group(2)]

    rps_match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(bad.group(1)) if bad else 0) + (
        sum(int(n) for n in errors.groups()) if errors else 0
    )
    return pct(50), pct(99), float(rps_match.group(1)) if rps_match else 0.0, failed, cpu


def measure(
    name: str, database_url: str, history_id: uuid.UUID, args: argparse.Namespace
) -> list[Row]:
    now = int(time.time())
    token = jwt.encode(
        {"sub": str(USER), "aud": "authenticated", "role": "authenticated", "exp": now + 3600},
        SECRET,
        algorithm="HS256",
    )
    rows = []
    runs = [(1.0, "1 s"), (0.0, "off")]
    for cache_ttl, cache in [r for r in runs if cache_ttl_wanted(r[0], args)]:
        proc, base = start_server(database_url, cache_ttl, args.loop)
        try:
            endpoints = {
                f"health ({args.integrations:,} integrations)": f"{base}/api/orgs/{ORG}/health",
                "history (96 points)": (
                    f"{base}/api/orgs/{ORG}/integrations/{history_id}/health/history?limit=96"
                ),
            }
            for endpoint, url in endpoints.items():
                warm = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
                warm.raise_for_status()
                count = args.requests if cache_ttl else min(args.requests, args.uncached_requests)
                if args.client == "wrk":
                    p50, p99, rps, errors, cpu = wrk(
                        url, token, args.seconds, args.clients, gzip=args.gzip
                    )
                else:
                    p50, p99, rps, errors, cpu = hey(
                        url, token, count, args.clients, gzip=args.gzip
                    )
                rows.append(Row(name, endpoint, cache, p50, p99, rps, errors, cpu))
                print(
                    f"  {name:10} {endpoint:32} cache {cache:3}: p50 {p50:7.1f} ms  "
                    f"p99 {p99:7.1f} ms  {rps:8.0f} req/s  errors {errors}  "
                    f"{args.client} CPU {cpu:5.1f} s",
                    flush=True,
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return rows


def cache_ttl_wanted(ttl: float, args: argparse.Namespace) -> bool:
    return ("on" if ttl else "off") in args.cache.split(",")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--integrations", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--uncached-requests",
        type=int,
        default=1_000,
        help="requests per run with the answer cache off (those runs are slow)",
    )
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument(
        "--cache", default="on,off", help="answer cache runs: on (1 s TTL), off, or both"
    )
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument(
        "--no-gzip",
        dest="gzip",
        action="store_false",
        help="hey -disable-compression: plain JSON (hey asks for gzip by default, as browsers do)",
    )
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a role that may create databases (the bench makes and drops its own)",
    )
    parser.add_argument(
        "--client",
        default="hey",
        choices=["hey", "wrk"],
        help="load tool: hey (a count of requests; inflates gzip answers as a browser would) or "
        "wrk (--seconds per run; never inflates, so with gzip only the server's work is on "
        "these cores)",
    )
    parser.add_argument("--seconds", type=int, default=10, help="seconds per run with wrk")
    args = parser.parse_args()
    if shutil.which(args.client) is None:
        sys.exit(f"{args.client} is not installed: apt-get install -y {args.client}")
    load = f"{args.requests} requests" if args.client == "hey" else f"{args.seconds} s"
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{load} per run, {args.clients} concurrent clients ({args.client}), "
        f"{args.loop} event loop, {'gzip' if args.gzip else 'no gzip'}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    rows: list[Row] = []
    stores = args.stores.split(",")
    if "sqlite" in stores:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
            history_id = asyncio.run(seed(url, args.integrations))
            rows += measure("SQLite", url, history_id, args)
    if "postgres" in stores:
        name = f"ih_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(args.postgres_url, autocommit=True) as admin:
            admin.execute(f'create database "{name}"')
        url = urlunsplit(urlsplit(args.postgres_url)._replace(path=f"/{name}"))
        try:
            history_id = asyncio.run(seed(url, args.integrations))
            rows += measure("PostgreSQL", url, history_id, args)
        finally:
            with psycopg.connect(args.postgres_url, autocommit=True) as admin:
                admin.execute(f'drop database if exists "{name}" with (force)')
    print()
    columns = ["store", "endpoint", "answer cache", "p50 ms", "p99 ms", "req/s", "errors"]
    print("| " + " | ".join([*columns, f"{args.client} CPU s"]) + " |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.store} | {r.endpoint} | {r.cache} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{r.rps:,.0f} | {r.errors} | {r.client_cpu_s:.1f} |"
        )


if __name__ == "__main__":
    main()
