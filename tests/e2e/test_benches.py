"""The PostgreSQL benchmarks still run: each script, at a size that takes seconds.

The figures live in docs/benchmarks.md and come from full-size runs; these runs only prove
that a change to the store or the scheduler has not broken a script (it happened: a script
captured a private helper the store stopped calling, another child waited for 10,000 checks
whatever ``--integrations`` said). Each script creates and drops its own databases.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.store.conftest import PG_ADMIN_URL, admin_connect

ROOT = Path(__file__).resolve().parents[2]

_END_TO_END = [
    "end_to_end.py",
    "--integrations",
    "300",
    "--orgs",
    "3",
    "--rounds",
    "1",
    "--worker",
    "--postgres",
    PG_ADMIN_URL,
]

CASES = {
    "end_to_end": (
        # a vendor taking 20 ms: every check waits for its delayed answer, none lost
        [*_END_TO_END, "--checked", "--vendor-ms", "20"],
        ["300/300/300", "worker+pg / runner", "vendor latency 20 ms, not the target's"],
    ),
    "end_to_end --instant": (
        [*_END_TO_END, "--instant"],
        ["300/300/300", "worker+pg: CPU per check above the runner's median"],
    ),
    "planning_cost": (
        ["planning_cost.py", "--sizes", "2000", "--rounds", "1", "--admin-url", PG_ADMIN_URL],
        ["planning pass at 2,000: median"],
    ),
    "soak": (
        [
            "soak.py",
            "--integrations",
            "200",
            "--slots",
            "2",
            "--store",
            "postgres",
            "--postgres",
            PG_ADMIN_URL,
            "--loop",
            "run",
            "--prefill-history",
            "0",
        ],
        ["every integration checked and written once per slot: yes"],
    ),
    "store_write": (
        [
            "store_write.py",
            "--url",
            PG_ADMIN_URL,
            "--results",
            "200",
            "--batch",
            "100",
            "--rounds",
            "1",
            "--scale",
            "1000",
            "--parts",
            "writes,slots",
        ],
        ["store throughput / fastest raw", "200 results with slots, batches of 50"],
    ),
    "load_run": (
        ["load_run.py", "--integrations", "300", "--postgres", PG_ADMIN_URL],
        ["statuses correct: yes"],
    ),
}


@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_benchmark_runs_at_a_small_size(name: str) -> None:
    admin_connect().close()  # skips (or, under CI, fails) without PostgreSQL
    args, expected = CASES[name]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / args[0]), *args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    for words in expected:
        assert words in output, output[-3000:]
    assert "Traceback" not in output
