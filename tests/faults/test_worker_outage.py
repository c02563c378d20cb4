"""``integration-health worker`` across a PostgreSQL outage: it keeps running and goes on.

procrastinate stops its worker when one of its queries fails, and the process used to exit
with status 0 as if asked to — a worker gone after every database restart, unnoticed by a
supervisor that restarts only failed processes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from integration_health.testing import HttpEndpointFake
from tests.faults.conftest import (
    PrivatePostgres,
    cli,
    cli_env,
    count,
    integrations_without_one_history_row,
    terminate,
    wait_for,
)

ORG = "7d3f0000-0000-4000-8000-0000000000bb"
SLOW_MS = 3000


def _integrations(tmp_path: Path, url: str, first: int, n: int) -> Path:
    lines = [f"organizations:\n  - {{id: {ORG}, name: Outage AS}}\nintegrations:"]
    for i in range(first, first + n):
        lines.append(
            f"  - {{id: 0b1c0000-0000-4000-8000-{i:012d}, org_id: {ORG}, "
            f'integration_type: http, name: slow {i:02d}, url: "{url}/slow?ms={SLOW_MS}"}}'
        )
    path = tmp_path / f"integrations-{first}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_a_worker_rides_out_a_postgresql_outage(
    private_pg: PrivatePostgres, endpoint_in_thread: tuple[HttpEndpointFake, str], tmp_path: Path
) -> None:
    """PostgreSQL stops while a worker's checks are in flight and starts again: the worker
    keeps running, logs the outage once (no traceback), checks integrations added after it,
    every slot has exactly one result, and SIGTERM still stops it with status 0."""
    fake, fake_url = endpoint_in_thread
    with psycopg.connect(private_pg.admin_url, autocommit=True) as conn:
        conn.execute("create database outage")
    url = private_pg.url("outage")
    env = cli_env(url, INTEGRATION_HEALTH_LOG_LEVEL="warning")
    assert cli(env, "db", "upgrade").returncode == 0
    imported = cli(env, "integrations", "import", str(_integrations(tmp_path, fake_url, 0, 8)))
    assert imported.returncode == 0, imported.stderr
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "integration_health", "worker", "--tick", "1", "--lease", "15"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_for(lambda: fake.count("/slow") >= 8, 30, "every check to be in flight")
        private_pg.stop("immediate")
        time.sleep(5)  # the checks end meanwhile; procrastinate's queries fail
        assert proc.poll() is None, log_path.read_text()
        private_pg.start()
        more = cli(env, "integrations", "import", str(_integrations(tmp_path, fake_url, 8, 8)))
        assert more.returncode == 0, more.stderr

        def all_written() -> bool:
            done = "select count(*) from integration_check_runs where state = 'done'"
            return count(url, done) == 16

        wait_for(all_written, 90, "the worker to check every integration after the outage")
        wait_for(
            lambda: "worker running again" in log_path.read_text(),
            30,
            "the worker to log that it runs again",
        )
        assert proc.poll() is None, log_path.read_text()
    finally:
        terminate(proc)
    output = log_path.read_text()
    assert proc.returncode == 0, output
    assert output.count("worker lost PostgreSQL") == 1, output
    assert output.count("worker running again") == 1, output
    assert "Traceback" not in output and "Database error" not in output, output
    assert count(url, "select count(*) from integration_health_status") == 16
    assert integrations_without_one_history_row(url) == 0
    assert count(url, "select count(*) from integration_health_history") == 16
