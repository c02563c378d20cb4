"""The secret-canary plugin catches each kind of leak it promises to, and only those.

A generated test file (one test per leak channel, plus clean controls) runs in a pytest
subprocess with the plugin; each leaking test must end with a teardown error naming the
channel, each control must pass, and no error may print the secret itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.store.conftest import PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]

GENERATED = """
import logging, sqlite3, subprocess, sys, uuid

import psycopg
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.testclient import TestClient

PG = {pg!r}


def secret(tag):
    return SecretStr(f"canary-{{tag}}-{{uuid.uuid4().hex}}").get_secret_value()


def test_leak_log():
    logging.getLogger("leaky").info("connecting with %s", secret("log"))


def test_leak_log_traceback():
    value = secret("tb")
    try:
        raise RuntimeError("boom " + value)
    except RuntimeError:
        logging.getLogger("leaky").exception("failed")


def test_leak_response():
    value = secret("api")
    app = FastAPI()
    app.state.integration_health = object()

    @app.get("/x")
    def x():
        return {{"echo": value}}

    assert TestClient(app).get("/x").status_code == 200


def test_leak_exception():
    value = secret("exc")
    with pytest.raises(ValueError):
        raise ValueError(f"bad token {{value}}")


def test_leak_sqlite(tmp_path):
    conn = sqlite3.connect(tmp_path / "leak.db")
    conn.execute("create table t (v text)")
    conn.execute("insert into t values (?)", (secret("sqlite"),))
    conn.commit()
    conn.close()


def test_leak_subprocess():
    value = secret("proc")
    subprocess.run([sys.executable, "-c", f"print({{value!r}})"], capture_output=True, check=True)


def test_leak_fake_vendor_token():
    from integration_health.testing.vendors import visma_connect

    token = visma_connect.secrets.token_urlsafe(24)
    logging.getLogger("leaky").warning("token %s", token)


def test_leak_postgres():
    try:
        admin = psycopg.connect(PG, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL")
    name = f"ih_canary_{{uuid.uuid4().hex[:12]}}"
    with admin:
        admin.execute(f'create database "{{name}}"')
        from psycopg.conninfo import make_conninfo

        with psycopg.connect(make_conninfo(PG, dbname=name), autocommit=True) as db:
            db.execute("create table t (v jsonb)")
            db.execute("insert into t values (%s)", (f'{{{{"k": "{{secret("pg")}}"}}}}',))
        admin.execute(f'drop database if exists "{{name}}" with (force)')


def test_clean_secret_used_properly():
    value = SecretStr(f"canary-clean-{{uuid.uuid4().hex}}")
    logging.getLogger("fine").info("connecting with %s", value)  # prints **********
    with pytest.raises(ValueError):
        raise ValueError("no secret here")


def test_clean_short_and_reference_values():
    logging.getLogger("fine").info(SecretStr("short7!").get_secret_value())
    reference = SecretStr("${{SOME_LONG_VARIABLE_NAME}}").get_secret_value()
    logging.getLogger("fine").info("unresolved %s", reference)
"""

LEAKS = {
    "test_leak_log": "the log records",
    "test_leak_log_traceback": "the log records",
    "test_leak_response": "the API response to GET /x",
    "test_leak_exception": "the text of ValueError caught by pytest.raises",
    "test_leak_sqlite": "SQLite leak.db, table t",
    "test_leak_subprocess": "the output of subprocess",
    "test_leak_fake_vendor_token": "the log records",
    "test_leak_postgres": "PostgreSQL database ih_canary_",
}
CLEAN = ["test_clean_secret_used_properly", "test_clean_short_and_reference_values"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    directory = tmp_path_factory.mktemp("canary")
    (directory / "test_generated.py").write_text(textwrap.dedent(GENERATED.format(pg=PG_ADMIN_URL)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IH_CANARY": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.canary_plugin",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "-rA",
            "-q",
            "--rootdir",
            str(directory),
            str(directory),
        ],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize("test", list(LEAKS))
def test_each_leak_fails_its_test_at_teardown(
    run: subprocess.CompletedProcess[str], test: str
) -> None:
    """A leak through each channel is an error at the leaking test's teardown, naming where."""
    out = run.stdout
    if test == "test_leak_postgres" and re.search(rf"SKIPPED .*{test}", out):
        pytest.skip("no PostgreSQL server")
    assert re.search(rf"ERROR .*::{test} - ", out), out[-3000:]
    section = out.split(f"ERROR at teardown of {test} ", 1)[1].split("\n_", 1)[0]
    # The plugin's own report (pytest's "Captured log" sections below it show the leak itself).
    report = section.split("secret canary leaked:", 1)[1].split("\n---", 1)[0]
    assert LEAKS[test] in report, section
    assert not re.search(r"canary-[a-z]+-[0-9a-f]{32}", report), "the report printed the secret"


def test_clean_tests_pass(run: subprocess.CompletedProcess[str]) -> None:
    """Masked secrets, values under 8 characters and unresolved ${VAR} references are fine."""
    for test in CLEAN:
        assert re.search(rf"PASSED .*::{test}\b", run.stdout), run.stdout[-3000:]


def test_the_summary_counts_what_was_scanned(run: subprocess.CompletedProcess[str]) -> None:
    """The run ends with the canary summary (values known, places scanned, tests that leaked)."""
    summary = re.search(r"secret canaries: (\d+) values; scanned (.*); tests that leaked: (\d+)",
                        run.stdout)  # fmt: skip
    assert summary, run.stdout[-2000:]
    assert int(summary.group(1)) >= len(LEAKS)
    assert int(summary.group(3)) >= len(LEAKS) - 1  # PostgreSQL may be absent
