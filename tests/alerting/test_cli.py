"""`integration-health alerts …` end to end: real processes, a real SQLite file, a receiver."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from integration_health import HealthStatus
from integration_health.store import SQLiteStore

from .conftest import SECRET_ENV, Receiver, Timeline, closed_port_url, record, seed

CANARY = f"cli-canary-{uuid.uuid4().hex}"


class Cli:
    """Runs the CLI in a subprocess against one database and one alerting file."""

    def __init__(self, tmp_path: Path, hook_url: str) -> None:
        self.db = tmp_path / "cli.db"
        self.config = tmp_path / "alerting.yaml"
        self.write_config(hook_url)
        self.env = {
            **os.environ,
            "INTEGRATION_HEALTH_DATABASE_URL": f"sqlite:///{self.db}",
            "INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS": "true",
            "INTEGRATION_HEALTH_ALERTING_FILE": str(self.config),
            SECRET_ENV: CANARY,
            "COLUMNS": "200",
        }

    def write_config(self, *urls: str) -> None:
        hooks = "".join(
            f"  - {{name: hook{i}, url: '{url}', secret: '${{{SECRET_ENV}}}'}}\n"
            for i, url in enumerate(urls)
        )
        self.config.write_text(f"webhooks:\n{hooks}retry: {{jitter: 0}}\n")

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "integration_health", *args]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        assert CANARY not in proc.stdout + proc.stderr
        return proc

    def json(self, *args: str) -> Any:
        proc = self(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


async def failing_world(db: Path, *, orgs: int) -> None:
    """``orgs`` organisations whose http integration failed three times."""
    store = await SQLiteStore.open(f"sqlite:///{db}")
    try:
        items = await seed(store, orgs=orgs)
        timeline = Timeline()
        for _ in range(3):
            await record(store, items, HealthStatus.UNREACHABLE, timeline.next())
    finally:
        await store.aclose()


def test_two_processes_evaluate_once(
    tmp_path: Path, receiver_in_thread: tuple[Receiver, str]
) -> None:
    """Two `alerts evaluate` processes started together open each alert once and deliver
    each notification once; `alerts list` and `alerts deliveries` show them."""
    fake, url = receiver_in_thread
    cli = Cli(tmp_path, url)
    asyncio.run(failing_world(cli.db, orgs=8))
    procs = [
        subprocess.Popen(
            cli.command("alerts", "evaluate"),
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    for _stdout, stderr in outputs:
        print(stderr)  # whole, should a process fail (the assertion below shortens it)
    assert [p.returncode for p in procs] == [0, 0], outputs
    for stdout, stderr in outputs:
        assert CANARY not in stdout + stderr
    opened = sum(int(out.split(": ")[1].split(" ")[0]) for out, _ in outputs)
    assert opened == 8
    assert len(fake.requests) == 8
    assert set(Counter(r.headers["Idempotency-Key"] for r in fake.requests).values()) == {1}

    alerts = cli.json("alerts", "list")
    assert len(alerts) == 8
    assert {a["state"] for a in alerts} == {"open"}
    deliveries = cli.json("alerts", "deliveries")
    assert len(deliveries) == 8
    assert {d["state"] for d in deliveries} == {"delivered"}
    assert all(len(d["log"]) == 1 and d["log"][0]["status_code"] == 200 for d in deliveries)
    table = cli("alerts", "list", "--org", "Org 3")
    assert table.returncode == 0
    assert "1 alert(s)" in table.stdout
    assert "unreachable" in table.stdout


def test_deliver_retries_and_the_log_shows_it(
    tmp_path: Path, receiver_in_thread: tuple[Receiver, str]
) -> None:
    """A delivery to a receiver that is down is logged with its error and next attempt."""
    _, url = receiver_in_thread
    cli = Cli(tmp_path, url)
    cli.write_config(closed_port_url())
    asyncio.run(failing_world(cli.db, orgs=1))
    proc = cli("alerts", "evaluate")
    assert proc.returncode == 0, proc.stderr
    assert "0 delivered, 1 to retry" in proc.stdout
    [delivery] = cli.json("alerts", "deliveries")
    assert delivery["state"] == "pending"
    [attempt] = delivery["log"]
    assert attempt["outcome"] == "retrying"
    assert attempt["error"].startswith("connection:")
    assert attempt["next_attempt_at"] is not None
    proc = cli("alerts", "deliver")
    assert proc.returncode == 0
    assert "(of 0 due)" in proc.stdout  # its backoff has not passed yet
    assert "connection" in cli("alerts", "deliveries").stdout


def test_test_webhook_reports_each_target(
    tmp_path: Path, receiver_in_thread: tuple[Receiver, str]
) -> None:
    """`alerts test-webhook` exits 0 when every webhook answers 2xx, 1 when one fails."""
    fake, url = receiver_in_thread
    cli = Cli(tmp_path, url)
    ok = cli("alerts", "test-webhook")
    assert ok.returncode == 0, ok.stderr
    assert "hook0: delivered (HTTP 200" in ok.stdout
    assert fake.events() == ["test"]
    cli.write_config(url, closed_port_url())
    bad = cli("alerts", "test-webhook")
    assert bad.returncode == 1
    assert "hook1: failed — connection" in bad.stdout
    assert cli("alerts", "test-webhook", "--target", "nope").returncode == 2


def test_bad_config_is_a_one_line_error(
    tmp_path: Path, receiver_in_thread: tuple[Receiver, str]
) -> None:
    """An invalid alerting file exits 2 with one line naming the problem, no traceback."""
    _, url = receiver_in_thread
    cli = Cli(tmp_path, url)
    cli.config.write_text(
        "failure_threshold: zero\n"
        "webhooks:\n  - {name: a, url: 'https://x.example', secret: plain-value}\n"
    )
    proc = cli("alerts", "list")
    assert proc.returncode == 2
    line = " ".join(proc.stderr.split())  # one message (the console may wrap it)
    assert line.startswith("error: invalid alerting config")
    assert line.count("error:") == 1
    assert "Traceback" not in line
    assert "failure_threshold" in line
    assert "must be a reference" in line
    assert "plain-value" not in line
