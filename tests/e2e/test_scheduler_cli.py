"""`integration-health scheduler` and `sync-outcome` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from integration_health.testing import HttpEndpointFake

ORG = "7d3f0000-0000-4000-8000-000000000001"
SLOW_ID = "0b1c0000-0000-4000-8000-000000000001"
PASSIVE_ID = "0b1c0000-0000-4000-8000-000000000002"


def env_for(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "INTEGRATION_HEALTH_DATABASE_URL": f"sqlite:///{tmp_path / 'health.db'}",
        "INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS": "true",
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "integration_health", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_scheduler_runs_due_checks_and_stops_gracefully_on_sigterm(
    tmp_path: Path, endpoint_in_thread: tuple[HttpEndpointFake, str], loop: str
) -> None:
    """SIGTERM with a check in flight: the check finishes, is written, and the exit code is 0
    — on either event loop."""
    fake, url = endpoint_in_thread
    env = env_for(tmp_path)
    path = tmp_path / "integrations.yaml"
    path.write_text(
        textwrap.dedent(f"""
        integrations:
          - {{id: {SLOW_ID}, org_id: {ORG}, integration_type: http, name: slow,
              url: "{url}/slow?ms=1500"}}
          - {{id: {PASSIVE_ID}, org_id: {ORG}, integration_type: http, name: passive,
              url: "{url}/ok", monitoring_mode: passive}}
    """)
    )
    assert cli(env, "integrations", "import", str(path)).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "integration_health", "scheduler", "--tick", "1", "--loop", loop],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while fake.count("/slow") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.count("/slow") == 1, "the scheduler did not start the check"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"({loop} event loop;" in err and "stopped" in err
    history = json.loads(cli(env, "history", "--integration", SLOW_ID, "--json").stdout)
    assert [h["status"] for h in history] == ["healthy"]
    assert fake.count("/ok") == 0  # the passive integration is never probed

    recorded = cli(
        env,
        "sync-outcome",
        "--integration",
        PASSIVE_ID,
        "--failed",
        "--error",
        "HTTP 401 from vendor",
        "--duration-ms",
        "800",
    )
    assert recorded.returncode == 0, recorded.stderr
    rows = {
        r["integration_id"]: r
        for r in json.loads(cli(env, "status", "--org", ORG, "--json").stdout)
    }
    assert rows[PASSIVE_ID]["status"] == "unreachable"
    assert rows[PASSIVE_ID]["error_code"] == "auth"


def test_scheduler_once_and_bad_budget(tmp_path: Path) -> None:
    """--once runs a single pass; a malformed --budget is a usage error."""
    env = env_for(tmp_path)
    once = cli(env, "scheduler", "--once")
    assert once.returncode == 0 and "0 check(s) run" in once.stdout
    bad = cli(env, "scheduler", "--budget", "xledger")
    assert bad.returncode == 2 and "TYPE=CHECKS_PER_MINUTE" in bad.stderr
    loop = cli(env, "scheduler", "--loop", "trio")
    assert loop.returncode == 2 and "--loop must be asyncio or uvloop, not 'trio'" in loop.stderr
    unknown = cli(env, "sync-outcome", "--integration", SLOW_ID, "--ok")
    assert unknown.returncode == 2 and "unknown integration" in unknown.stderr
