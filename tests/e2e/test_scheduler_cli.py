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


def _import_http(env: dict[str, str], tmp_path: Path, url: str, count: int, group: str) -> None:
    """Import ``count`` http integrations of ORG checking ``url`` (ids ending ``{group}0{i}``)."""
    rows = "".join(
        f"""
          - {{id: 0b1c0000-0000-4000-8000-00000000{group}0{i}, org_id: {ORG},
              integration_type: http, name: h{group}{i}, url: "{url}"}}"""
        for i in range(count)
    )
    path = tmp_path / "integrations.yaml"
    path.write_text("integrations:" + textwrap.dedent(rows) + "\n")
    assert cli(env, "integrations", "import", str(path)).returncode == 0, "import failed"


def test_budgets_from_the_environment_and_flags_hold_across_processes(
    tmp_path: Path, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """INTEGRATION_HEALTH_BUDGETS_PER_MINUTE sets a type's budget, --budget wins over it, and
    a second scheduler process in the same minute sees the first one's checks spent."""
    fake, url = endpoint_in_thread
    env = {**env_for(tmp_path), "INTEGRATION_HEALTH_BUDGETS_PER_MINUTE": "http=2"}
    _import_http(env, tmp_path, f"{url}/ok", 6, "01")
    first = cli(env, "scheduler", "--once")
    assert first.returncode == 0, first.stderr
    assert "2 check(s) run" in first.stdout and "deferred by budget http 4," in first.stdout
    second = cli(env, "scheduler", "--once", "--budget", "http=3")  # 2 of 3 already started
    assert second.returncode == 0, second.stderr
    assert "1 check(s) run" in second.stdout
    assert fake.count("/ok") == 3


def test_batch_bounds_the_checks_of_a_pass(
    tmp_path: Path, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """--batch N plans and runs at most N due checks per pass; out of range is a usage error."""
    fake, url = endpoint_in_thread
    env = env_for(tmp_path)
    _import_http(env, tmp_path, f"{url}/ok", 5, "02")
    first = cli(env, "scheduler", "--once", "--batch", "2")
    assert first.returncode == 0, first.stderr
    assert "2 check(s) run" in first.stdout
    second = cli(env, "scheduler", "--once", "--batch", "10")
    assert second.returncode == 0, second.stderr
    assert "3 check(s) run" in second.stdout
    assert fake.count("/ok") == 5
    bad = cli(env, "scheduler", "--batch", "0")
    assert bad.returncode == 2 and "--batch" in bad.stderr


@pytest.mark.parametrize(
    ("command", "extra_env", "message"),
    [
        (["scheduler", "--budget", "xledger=0"], {}, "at least 1 check per minute"),
        (
            ["scheduler", "--budget", "xleger=30"],
            {},
            "--budget: unknown integration type 'xleger'; known types: ",
        ),
        (
            [
                "--database-url",
                "postgresql://postgres@127.0.0.1:1/none",
                "worker",
                "--budget",
                "nosuch=5",
            ],
            {},
            "--budget: unknown integration type 'nosuch'",
        ),
        (["serve", "--budget", "nosuch=1"], {}, "--budget: unknown integration type 'nosuch'"),
        (
            ["scheduler"],
            {"INTEGRATION_HEALTH_BUDGETS_PER_MINUTE": "nosuch=5"},
            "INTEGRATION_HEALTH_BUDGETS_PER_MINUTE: unknown integration type 'nosuch'",
        ),
        (
            ["scheduler"],
            {"INTEGRATION_HEALTH_BUDGETS_PER_MINUTE": "xledger"},
            "invalid settings: ",
        ),
        (
            ["scheduler"],
            {"INTEGRATION_HEALTH_BUDGETS_PER_MINUTE": "xledger=0"},
            "at least 1 check per minute",
        ),
        (
            ["scheduler"],
            {"INTEGRATION_HEALTH_DEGRADED_LATENCY_MS": "htp=1500"},
            "INTEGRATION_HEALTH_DEGRADED_LATENCY_MS: unknown integration type 'htp'",
        ),
    ],
    ids=[
        "zero",
        "typo",
        "worker-typo",
        "serve-typo",
        "env-typo",
        "env-malformed",
        "env-zero",
        "latency-typo",
    ],
)
def test_bad_budgets_are_refused_before_anything_runs(
    tmp_path: Path, command: list[str], extra_env: dict[str, str], message: str
) -> None:
    """A budget of 0, an unknown type (a typo would leave the vendor unprotected, or the
    type's latency threshold unset) or a malformed setting stops the command with one line
    naming where it came from."""
    proc = cli({**env_for(tmp_path), **extra_env}, *command)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_rate_limit_pause_is_configured_from_the_environment(
    tmp_path: Path, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """Two rate-limited results do not pause a type at the default threshold (5); with
    INTEGRATION_HEALTH_RATE_LIMIT_THRESHOLD=2 they do, for the configured cool-down."""
    _fake, url = endpoint_in_thread
    rows = "".join(
        f"""
          - {{id: 0b1c0000-0000-4000-8000-00000000020{i}, org_id: {ORG},
              integration_type: http, name: limited{i}, url: "{url}/status/429"}}"""
        for i in range(2)
    )
    paused = "active checks paused for 10 min"
    for threshold, expect_pause in ((None, False), ("2", True)):
        env = env_for(tmp_path / str(threshold))
        (tmp_path / str(threshold)).mkdir()
        if threshold is not None:
            env["INTEGRATION_HEALTH_RATE_LIMIT_THRESHOLD"] = threshold
        env["INTEGRATION_HEALTH_RATE_LIMIT_COOLDOWN_S"] = "600"
        path = tmp_path / str(threshold) / "integrations.yaml"
        path.write_text("integrations:" + textwrap.dedent(rows) + "\n")
        assert cli(env, "integrations", "import", str(path)).returncode == 0
        once = cli(env, "scheduler", "--once")
        assert once.returncode == 0, once.stderr
        assert "2 check(s) run" in once.stdout
        assert (paused in once.stderr) is expect_pause, once.stderr
