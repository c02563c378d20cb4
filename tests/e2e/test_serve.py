"""`integration-health serve` and `integration-health demo` as a user runs them."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from integration_health.demo import DEMO_ORG_ID

URL = re.compile(r"http://127\.0\.0\.1:\d+")


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("INTEGRATION_HEALTH_JWT") and key != "INTEGRATION_HEALTH_JWKS_URL"
    }
    return {
        **env,
        "INTEGRATION_HEALTH_DATABASE_URL": f"sqlite:///{tmp_path / 'health.db'}",
        "INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS": "true",
        **extra,
    }


@contextmanager
def running(env: dict[str, str], *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start the CLI, wait for it to print its URL; kill it if the test did not stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "integration_health", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        url = None
        seen = []
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(line)
            if match := URL.search(line):
                url = match.group(0)
        assert url is not None, f"no URL printed: {''.join(seen)!r}"
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def test_serve_answers_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`serve --port 0` prints its URL, answers /healthz (with the scheduler, or without it
    under --no-scheduler), serves the dashboard, and exits 0 on SIGTERM."""
    env = env_for(tmp_path)
    with (
        running(env, "serve", "--port", "0", "--tick", "0.5") as (proc, url),
        running(env, "serve", "--port", "0", "--no-scheduler") as (plain, plain_url),
    ):
        health = httpx.get(f"{url}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["checks"]["store"]["ok"] is True
        assert health.json()["checks"]["scheduler"]["running"] is True
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and "Integration health" in page.text
        plain_health = httpx.get(f"{plain_url}/healthz", timeout=10).json()
        assert set(plain_health["checks"]) == {"store"}
        code, err = stop(proc)
        plain_code, plain_err = stop(plain)
    assert code == 0, err
    assert plain_code == 0, plain_err
    assert "Traceback" not in err + plain_err


def test_serve_refuses_a_public_host_without_auth(tmp_path: Path) -> None:
    """Without a JWT secret or JWKS URL, `serve --host 0.0.0.0` exits 2 with one clear line."""
    proc = subprocess.run(
        [sys.executable, "-m", "integration_health", "serve", "--host", "0.0.0.0"],  # noqa: S104
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "without authentication" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_serves_the_sample_org_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`demo --port 0` checks the sample org, serves it, answers /healthz, exits 0 on SIGTERM."""
    with running(env_for(tmp_path), "demo", "--port", "0") as (proc, url):
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        health = httpx.get(f"{url}/api/orgs/{DEMO_ORG_ID}/health", timeout=10).json()
        statuses = [i["status"] for i in health["integrations"]]
        assert statuses.count("degraded") == 1
        assert statuses.count("unreachable") == 1
        assert statuses.count("healthy") == len(statuses) - 2
        code, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err


def test_demo_once_checks_and_exits(tmp_path: Path) -> None:
    """`demo --once` checks the sample organisation, prints the table and exits 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "integration_health", "demo", "--once"],
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Demo Company AS" in proc.stdout
    assert re.search(r"\d+ checked: \d+ healthy, 1 degraded, 1 unreachable", proc.stdout)


def test_serve_scheduler_opens_alerts_after_each_pass(tmp_path: Path) -> None:
    """`serve`'s in-process scheduler evaluates alerting after its passes: an integration
    that cannot be reached opens an alert (threshold 1 here), listed by `alerts list`."""
    org = "7d3f0000-0000-4000-8000-0000000000a1"
    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    (tmp_path / "integrations.yaml").write_text(
        "organizations: [{id: " + org + ", name: Alerting AS}]\n"
        "integrations:\n"
        f"  - {{org_id: {org}, integration_type: http, name: down,"
        f" url: 'http://127.0.0.1:{closed_port}/health'}}\n"
    )
    (tmp_path / "alerting.yaml").write_text("failure_threshold: 1\n")
    env = env_for(tmp_path, INTEGRATION_HEALTH_ALERTING_FILE=str(tmp_path / "alerting.yaml"))
    cli = [sys.executable, "-m", "integration_health"]
    imported = subprocess.run(
        [*cli, "integrations", "import", str(tmp_path / "integrations.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    alerts: list[dict[str, object]] = []
    with running(env, "serve", "--port", "0", "--tick", "0.5") as (proc, _url):
        deadline = time.monotonic() + 30
        while not alerts and time.monotonic() < deadline:
            listed = subprocess.run(
                [*cli, "alerts", "list", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert listed.returncode == 0, listed.stderr
            alerts = json.loads(listed.stdout)
            time.sleep(0.5)
        code, err = stop(proc)
    assert code == 0, err
    assert len(alerts) == 1, alerts
    assert alerts[0]["state"] == "open"
    assert "Traceback" not in err
