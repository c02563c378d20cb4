"""Fault-injection fixtures: a private PostgreSQL server the test may stop and start, and
helpers to run the CLI as real processes.

The private server is initialised in a temporary directory (``initdb`` + ``pg_ctl`` from
``INTEGRATION_HEALTH_TEST_PG_BIN``, default ``/usr/lib/postgresql/15/bin``) on a free port, so
stopping it never touches the shared server the other tests use. As root it runs as user
``postgres`` (PostgreSQL refuses to run as root). Where the binaries are missing the tests
are skipped — unless ``CI`` is set, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.store.conftest import pg_migrated, pg_template  # noqa: F401 - fixtures reused here

PG_BIN = Path(os.environ.get("INTEGRATION_HEALTH_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """A throw-away PostgreSQL server: ``start()``, ``stop(mode)``, ``start()`` again (same
    port and data), ``destroy()``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ih-private-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._pg(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _pg(self, *argv: str) -> None:
        command = ["runuser", "-u", "postgres", "--", *argv] if self._as_postgres else list(argv)
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {done.stderr}{done.stdout}{log}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=50"
        )
        self._pg(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
            str(self.root / "log"), "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        try:
            psycopg.connect(self.admin_url, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server, started; stopped and deleted after the test."""
    if not (PG_BIN / "initdb").exists() or (os.geteuid() == 0 and not shutil.which("runuser")):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"no PostgreSQL binaries at {PG_BIN} and CI is set")
        pytest.skip(f"no PostgreSQL binaries at {PG_BIN} (set INTEGRATION_HEALTH_TEST_PG_BIN)")
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI process on ``database_url`` that may reach 127.0.0.1."""
    return {
        **os.environ,
        "INTEGRATION_HEALTH_DATABASE_URL": database_url,
        "INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS": "true",
        **extra,
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``integration-health ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "integration_health", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def count(url: str, query: str, params: Any = None) -> int:
    """The single integer ``query`` returns (a fresh connection each time)."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(query, params).fetchone()
        return int(row[0]) if row else 0


def wait_for(predicate: Any, timeout: float, what: str, *, every: float = 0.2) -> None:
    """Poll ``predicate`` until it is true, or fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def terminate(proc: subprocess.Popen[str]) -> None:
    """SIGTERM ``proc`` and wait for it (30 s); kill it if it does not stop."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def integrations_without_one_history_row(url: str) -> int:
    """How many integrations with history have other than exactly one history row."""
    return count(
        url,
        "select count(*) from (select integration_id from integration_health_history "
        "group by integration_id having count(*) <> 1) wrong",
    )
