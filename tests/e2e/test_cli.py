"""The CLI end to end, as a user runs it: a real process, a real SQLite file, a real server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from integration_health.store import SQLiteStore, TypeMode
from integration_health.testing import HttpEndpointFake

ORG = "7d3f0000-0000-4000-8000-000000000001"
USER = "2a9e0000-0000-4000-8000-000000000009"
OK_ID = "0b1c0000-0000-4000-8000-000000000001"
DOWN_ID = "0b1c0000-0000-4000-8000-000000000002"


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "health.db"
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "INTEGRATION_HEALTH_DATABASE_URL": f"sqlite:///{self.db}",
            "INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS": "true",
            "HOOK_TOKEN": "fake-token",
            "COLUMNS": "200",
        }

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "integration_health", *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=60,
            check=False,
        )

    def write(self, text: str, name: str = "integrations.yaml") -> Path:
        path = self.tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    def json(self, *args: str) -> Any:
        proc = self(*args, "--json")
        assert proc.returncode in (0, 1), proc.stderr
        return json.loads(proc.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def good_file(cli: Cli, url: str) -> Path:
    return cli.write(
        f"""
        organizations:
          - id: {ORG}
            name: Acme AS
            members:
              - {{user_id: {USER}, role: admin}}
        integrations:
          - id: {OK_ID}
            org_id: {ORG}
            integration_type: http
            name: Order webhook receiver
            url: {url}/auth
            bearer_token: ${{HOOK_TOKEN}}
          - id: {DOWN_ID}
            org_id: {ORG}
            integration_type: http
            name: Broken endpoint
            url: {url}/status/503
        """
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_import_check_status_history(
    cli: Cli, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """Import → check (exit 1: one unreachable) → status → history, JSON and tables."""
    fake, url = endpoint_in_thread
    path = good_file(cli, url)
    proc = cli("integrations", "import", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "2 created" in proc.stdout

    proc = cli("check", "--org", ORG, "--json")
    assert proc.returncode == 1, proc.stderr  # one integration is unreachable
    rows = {row["integration_id"]: row for row in json.loads(proc.stdout)}
    assert rows[OK_ID]["status"] == "healthy"
    assert rows[DOWN_ID]["status"] == "unreachable"
    assert rows[DOWN_ID]["error_code"] == "server_error"
    for row in rows.values():
        assert {
            "integration_id",
            "integration_type",
            "name",
            "status",
            "latency_ms",
            "checked_at",
            "error",
            "error_code",
        } <= set(row)
    assert fake.count("/auth") == 1

    table = cli("check", "--org", "Acme AS")  # by name, as a table
    assert table.returncode == 1
    assert "Order webhook receiver" in table.stdout
    assert "unreachable" in table.stdout and "healthy" in table.stdout

    status = {row["integration_id"]: row for row in cli.json("status", "--org", ORG)}
    assert status[DOWN_ID]["consecutive_failures"] == 2
    assert status[OK_ID]["status"] == "healthy"
    assert status[OK_ID]["next_check_at"] is not None

    history = cli.json("history", "--integration", DOWN_ID)
    assert [h["status"] for h in history] == ["unreachable", "unreachable"]
    human = cli("history", "--integration", OK_ID)
    assert human.returncode == 0 and "Order webhook receiver" in human.stdout

    listed = cli.json("integrations", "list", "--org", ORG)
    assert {row["name"] for row in listed} == {"Order webhook receiver", "Broken endpoint"}
    assert "fake-token" not in json.dumps(listed)


def test_check_exit_code_zero_when_nothing_unreachable(
    cli: Cli, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """All healthy (or degraded) → exit 0."""
    _, url = endpoint_in_thread
    path = cli.write(
        f"""
        integrations:
          - {{org_id: {ORG}, integration_type: http, name: ok, url: "{url}/ok"}}
          - {{org_id: {ORG}, integration_type: http, name: limited, url: "{url}/status/429"}}
        """
    )
    assert cli("integrations", "import", str(path)).returncode == 0
    proc = cli("check", "--org", ORG, "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["status"] for r in json.loads(proc.stdout)) == ["degraded", "healthy"]


def test_check_leaves_alone_what_the_vendor_asked_to_wait_for_unless_forced(
    cli: Cli, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """A 429 with Retry-After: the next `check` does not probe that integration (listed on
    stderr with the time it ends; the JSON on stdout has the others only), `--force` does."""
    fake, url = endpoint_in_thread
    path = cli.write(
        f"""
        integrations:
          - {{org_id: {ORG}, integration_type: http, name: ok, url: "{url}/ok"}}
          - {{org_id: {ORG}, integration_type: http, name: limited,
              url: "{url}/status/429?retry_after=3600"}}
        """
    )
    assert cli("integrations", "import", str(path)).returncode == 0
    first = cli.json("check", "--org", ORG)
    assert sorted(r["name"] for r in first) == ["limited", "ok"]

    second = cli("check", "--org", ORG, "--json")
    assert second.returncode == 0, second.stderr
    assert [r["name"] for r in json.loads(second.stdout)] == ["ok"]
    assert "limited (http): not probed: the vendor asked to wait (Retry-After) until" in (
        second.stderr
    )
    assert "1 integration(s) not probed; --force probes them anyway." in second.stderr
    assert fake.count("/status/429") == 1 and fake.count("/ok") == 2

    table = cli("check", "--org", ORG)
    assert table.returncode == 0 and "1 checked" in table.stdout
    assert "not probed" in table.stderr and fake.count("/status/429") == 1

    forced = cli("check", "--org", ORG, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert sorted(r["name"] for r in json.loads(forced.stdout)) == ["limited", "ok"]
    assert "not probed" not in forced.stderr
    assert fake.count("/status/429") == 2


def test_status_names_a_paused_type_and_when_its_checks_resume(
    cli: Cli, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """While a type is paused for rate limiting, `status` shows the pause's end as the next
    check of its active integrations (``paused_until`` in JSON) and names the type, the end
    and the reason below the table; a passive integration is not marked."""
    _, url = endpoint_in_thread
    path = cli.write(
        f"""
        integrations:
          - {{org_id: {ORG}, integration_type: http, name: probed, url: "{url}/ok"}}
          - {{org_id: {ORG}, integration_type: http, name: told, url: "{url}/ok",
              monitoring_mode: passive}}
        """
    )
    assert cli("integrations", "import", str(path)).returncode == 0
    assert cli("check", "--org", ORG).returncode == 0
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=45)

    async def pause() -> None:
        store = await SQLiteStore.open(f"sqlite:///{cli.db}")
        try:
            mode = TypeMode("http", until, "7 rate-limited results within the window", until)
            await store.set_type_mode(mode, integration_type="http")
        finally:
            await store.aclose()

    asyncio.run(pause())
    rows = {row["name"]: row for row in cli.json("status", "--org", ORG)}
    assert rows["probed"]["paused_until"] == until.isoformat()
    assert rows["told"]["paused_until"] is None
    table = cli("status", "--org", ORG)
    assert table.returncode == 0, table.stderr
    assert "paused, in 45 min" in table.stdout or "paused, in 44 min" in table.stdout
    assert f"Active checks of http are paused until {until.isoformat()}" in " ".join(
        table.stdout.split()
    )
    assert "7 rate-limited results within the window" in " ".join(table.stdout.split())


def test_reimport_updates_instead_of_duplicating(
    cli: Cli, endpoint_in_thread: tuple[HttpEndpointFake, str]
) -> None:
    """The same file twice: the second import changes nothing; ids derive from org + name."""
    _, url = endpoint_in_thread
    path = cli.write(
        f"integrations:\n  - {{org_id: {ORG}, integration_type: http, name: a, url: '{url}/ok'}}\n"
    )
    assert "1 created" in cli("integrations", "import", str(path)).stdout
    assert "1 unchanged" in cli("integrations", "import", str(path)).stdout
    assert len(cli.json("integrations", "list")) == 1


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("integrations: [\n  {org_id: x\n", ["integrations.yaml:", "not valid YAML"]),
        (
            f"integrations:\n  - org_id: {ORG}\n    integration_type: soap\n    name: x\n",
            ["integrations.yaml:3", "integrations[0]", "unknown integration_type 'soap'", "http"],
        ),
        (
            f"integrations:\n  - org_id: {ORG}\n    integration_type: http\n    name: x\n",
            ["integrations.yaml:2", "field 'url': Field required"],
        ),
        (
            f"integrations:\n  - org_id: {ORG}\n    integration_type: http\n    name: x\n"
            "    url: https://e.com\n    bearer_token: ${SURELY_UNSET_VAR}\n",
            ["integrations.yaml:6", "SURELY_UNSET_VAR is not set"],
        ),
        (
            f"integrations:\n  - org_id: {ORG}\n    integration_type: http\n    name: x\n"
            "    url: https://e.com\n    bearer_token: literal-secret-123\n",
            ["literal secret"],
        ),
        (
            f"integrations:\n  - org_id: {ORG}\n    integration_type: http\n    name: x\n"
            "    url: https://e.com\n    check_interval_s: 60\n",
            ["integrations.yaml:6", "at least 900 seconds"],
        ),
        ("- just\n- a list\n", ["must be a mapping"]),
        ("organizations:\n  - {id: nope, name: x}\n", ["organizations[0]", "must be a UUID"]),
    ],
    ids=[
        "bad-yaml",
        "unknown-type",
        "missing-field",
        "unset-var",
        "literal-secret",
        "interval-floor",
        "not-a-mapping",
        "bad-org-id",
    ],
)
def test_bad_files_are_refused_with_position_and_nothing_stored(
    cli: Cli, content: str, needles: list[str]
) -> None:
    """Each bad input: exit 2, a one-line message naming where, no traceback, nothing stored."""
    path = cli.write(content)
    proc = cli("integrations", "import", str(path))
    assert_one_line_error(proc, *needles)
    assert "literal-secret-123" not in proc.stderr
    assert cli.json("integrations", "list") == []


def test_half_valid_file_stores_nothing(cli: Cli) -> None:
    """A file with one good and one bad entry imports neither."""
    path = cli.write(
        f"""
        integrations:
          - {{org_id: {ORG}, integration_type: http, name: good, url: "https://e.com"}}
          - {{org_id: {ORG}, integration_type: http, name: bad}}
        """
    )
    assert_one_line_error(cli("integrations", "import", str(path)), "integrations[1] ('bad')")
    assert cli.json("integrations", "list") == []


def test_unknown_org_and_integration(cli: Cli) -> None:
    """Unknown organisation or integration: exit 2 with a clear message."""
    assert_one_line_error(cli("check", "--org", str(uuid.uuid4())), "unknown organization")
    assert_one_line_error(cli("status", "--org", "Nobody Inc"), "unknown organization 'Nobody Inc'")
    assert_one_line_error(cli("history", "--integration", str(uuid.uuid4())), "unknown integration")
    assert_one_line_error(cli("history", "--integration", "abc"), "must be an integration id")
    assert_one_line_error(cli("integrations", "import", "/no/such/file.yaml"), "no such file")


def test_usage_errors_exit_2(cli: Cli) -> None:
    """A missing required option is a usage error (exit 2)."""
    proc = cli("check")
    assert proc.returncode == 2
    assert "--org" in proc.stderr
    bad_url = cli("db", "upgrade", env={"INTEGRATION_HEALTH_DATABASE_URL": "mysql://x"})
    assert_one_line_error(bad_url, "unsupported database URL")


def test_db_upgrade_twice_and_version(cli: Cli) -> None:
    """db upgrade creates the schema once; --version and --help work."""
    first = cli("db", "upgrade")
    assert first.returncode == 0 and "up to date" in first.stdout  # opening already applied it
    assert cli("--version").stdout.startswith("integration-health ")
    assert "check" in cli("--help").stdout


def test_dry_run_writes_nothing(cli: Cli) -> None:
    path = cli.write(
        f"integrations:\n  - {{org_id: {ORG}, integration_type: http, name: a, url: 'https://e.com'}}\n"
    )
    proc = cli("integrations", "import", str(path), "--dry-run")
    assert proc.returncode == 0 and "Nothing written" in proc.stdout
    assert cli.json("integrations", "list") == []
