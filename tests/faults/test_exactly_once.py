"""`integration-health scheduler` SIGKILLed mid-slot and restarted: every slot exactly once.

Distributed workers (``integration-health worker``) killed mid-slot are covered by
``tests/scheduling/test_distributed.py::test_three_worker_processes_and_a_sigkill``; this file
covers the single-process scheduler, on PostgreSQL and on SQLite, across two slots, with a
restarted process that must neither run a slot still claimed by the dead one (its lease is
valid) nor leave one undone once the lease has run out.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from integration_health.testing import HttpEndpointFake
from tests.faults.conftest import cli, cli_env, wait_for

ORG = "7d3f0000-0000-4000-8000-0000000000bb"
N = 15
SLOW_MS = 4000


class Database:
    """Counts rows in, and ages claims of, the store a scheduler process writes to."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url

    def scalar(self, query: str) -> int:
        if self.kind == "postgres":
            with psycopg.connect(self.url) as conn:
                row = conn.execute(query).fetchone()
        else:
            with sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=10) as conn:
                row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0

    def execute(self, query: str) -> None:
        if self.kind == "postgres":
            with psycopg.connect(self.url) as conn:
                conn.execute(query)
        else:
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=10)
            try:
                with conn:
                    conn.execute(query)
            finally:
                conn.close()

    def history(self) -> int:
        return self.scalar("select count(*) from integration_health_history")

    def runs(self, state: str) -> int:
        return self.scalar(f"select count(*) from integration_check_runs where state = '{state}'")

    def expire_claims(self) -> None:
        """As if the dead scheduler's lease (120 s) had run out."""
        old = (
            "now() - interval '1 hour'"
            if self.kind == "postgres"
            else "'2000-01-01T00:00:00.000000+00:00'"
        )
        self.execute(
            f"update integration_check_runs set claimed_at = {old} where state = 'claimed'"
        )

    def make_next_slot_due(self) -> None:
        """As if 15 minutes had passed: every integration's next slot is due now."""
        if self.kind == "postgres":
            self.execute(
                "update integration_health_status set "
                "checked_at = checked_at - interval '16 minutes', "
                "next_check_at = now() - interval '1 second'"
            )
        else:
            stamp = "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', '{}')"
            self.execute(
                "update integration_health_status set "
                f"checked_at = {stamp.format('-16 minutes')}, "
                f"next_check_at = {stamp.format('-1 second')}"
            )


def _scheduler(env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "integration_health", "scheduler", "--tick", "0.5"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return Database("sqlite", f"sqlite:///{tmp_path / 'health.db'}")
    return Database("postgres", request.getfixturevalue("pg_migrated"))


@pytest.mark.slow
def test_a_scheduler_killed_mid_slot_and_restarted_writes_every_slot_once(
    database: Database, endpoint_in_thread: tuple[HttpEndpointFake, str], tmp_path: Path
) -> None:
    """SIGKILL while a slot's checks are in flight, twice: the restarted scheduler leaves the
    dead one's claimed slots alone while their lease holds, runs them once it has run out, and
    every (integration, slot) ends with exactly one run row (done) and one history row."""
    fake, url = endpoint_in_thread
    env = cli_env(database.url)
    lines = [f"organizations:\n  - {{id: {ORG}, name: Kill AS}}\nintegrations:"]
    for i in range(N):
        lines.append(
            f"  - {{id: 0b1c0000-0000-4000-8000-{i:012d}, org_id: {ORG}, "
            f'integration_type: http, name: slow {i:02d}, url: "{url}/slow?ms={SLOW_MS}"}}'
        )
    path = tmp_path / "integrations.yaml"
    path.write_text("\n".join(lines) + "\n")
    imported = cli(env, "integrations", "import", str(path))
    assert imported.returncode == 0, imported.stderr
    log = tmp_path / "scheduler.log"
    procs: list[subprocess.Popen[str]] = []
    try:
        for slot in (1, 2):
            if slot == 2:
                database.make_next_slot_due()
            started = fake.count("/slow")
            victim = _scheduler(env, log)
            procs.append(victim)
            wait_for(lambda s=started: fake.count("/slow") >= s + N, 30, f"slot {slot} in flight")
            _kill(victim)  # every check of the slot is in flight, none written
            assert database.history() == N * (slot - 1)
            assert database.runs("claimed") == N

            survivor = _scheduler(env, log)
            procs.append(survivor)
            time.sleep(3)  # the dead scheduler's claims still hold: nothing may run
            assert fake.count("/slow") == started + N
            assert database.runs("claimed") == N
            database.expire_claims()
            wait_for(lambda s=slot: database.history() >= N * s, 30, f"slot {slot} written")
            wait_for(lambda s=slot: database.runs("done") >= N * s, 10, f"slot {slot} done")
            time.sleep(1)  # a duplicate run, if any, would start now
            assert fake.count("/slow") == started + 2 * N  # the killed attempt, then one more
            survivor.send_signal(signal.SIGTERM)
            assert survivor.wait(30) == 0, log.read_text()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert database.history() == 2 * N
    per_integration = database.scalar(
        "select count(*) from (select integration_id from integration_health_history "
        "group by integration_id having count(*) <> 2) wrong"
    )
    assert per_integration == 0
    assert database.runs("done") == 2 * N and database.runs("claimed") == 0
    assert database.scalar("select count(distinct slot_at) from integration_check_runs") >= 2
    assert "Traceback" not in log.read_text()
