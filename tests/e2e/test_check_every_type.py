"""Issue 4's "done means": `integration-health check` on one organisation that mixes every
integration type, against the local fake vendors, in one run, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from integration_health.checks import default_registry
from integration_health.demo import DEMO_ORG_ID, DEMO_SECRETS, demo_definitions, demo_vendors


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "integration_health", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_check_runs_every_integration_type_in_one_run(tmp_path: Path) -> None:
    env = {
        **os.environ,
        **DEMO_SECRETS,
        "INTEGRATION_HEALTH_DATABASE_URL": f"sqlite:///{tmp_path / 'health.db'}",
        "INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS": "true",
    }
    with demo_vendors() as vendors:
        items = demo_definitions(vendors.targets)
        document = {
            "organizations": [{"id": str(DEMO_ORG_ID), "name": "Mixed Types AS"}],
            "integrations": items,
        }
        path = tmp_path / "integrations.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        imported = _cli(env, "integrations", "import", str(path))
        assert imported.returncode == 0, imported.stderr

        checked = _cli(env, "check", "--org", str(DEMO_ORG_ID), "--json", "--timeout", "8")

    # One sample integration has an expired token: the run reports it and exits 1.
    assert checked.returncode == 1, checked.stderr
    rows = json.loads(checked.stdout)
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {item["name"] for item in items}

    registered = set(default_registry().types)
    checked_types = {row["integration_type"] for row in rows}
    expected_types = registered if vendors.targets.sftp_port is not None else registered - {"sftp"}
    assert checked_types == expected_types, f"types not exercised: {expected_types - checked_types}"

    assert by_name["Invoice API (expired token)"]["status"] == "unreachable"
    assert by_name["Invoice API (expired token)"]["error_code"] == "auth"
    assert by_name["Reporting API (slow)"]["status"] == "degraded"
    others = [row for name, row in by_name.items() if "expired" not in name and "slow" not in name]
    assert others and all(row["status"] == "healthy" for row in others), [
        (row["name"], row["status"], row.get("error")) for row in others
    ]
    for row in rows:
        assert isinstance(row["latency_ms"], int) and row["latency_ms"] >= 0

    # The secrets of every sample integration stay out of what the user sees.
    for secret in DEMO_SECRETS.values():
        assert secret not in checked.stdout and secret not in checked.stderr
