"""Secret canaries across the whole test suite: fail any test after which a secret leaked.

Registered from ``tests/conftest.py``; ``IH_CANARY=0`` switches it off.

1. **Which values are secrets.** Every value the test process ever wraps in a pydantic
   ``SecretStr`` (settings, adapter configs, resolved ``${VAR}`` references …); the values of
   environment variables with secret-looking names set through ``monkeypatch.setenv`` or
   handed to a subprocess; and the tokens the fake vendors in ``integration_health.testing``
   issue (their ``secrets.token_*`` calls). Values shorter than :data:`MIN_LENGTH`, too
   common or too simple to mean anything (under 4 distinct characters, all digits) and
   unresolved ``${VAR}`` references are ignored; so are values drawn inside property-based
   (hypothesis) tests, which reuse random text across secret and plain fields.
2. **Where they must never appear.** Every log record of the process (root handler, root at
   DEBUG, formatted with its traceback); every response body and header our FastAPI app sends
   (any server, any client: ``FastAPI.__call__`` is wrapped); ``str()``/``repr()`` of every
   exception caught by ``pytest.raises`` (and its causes); the captured stdout/stderr of
   ``subprocess.run``/``Popen.communicate``; every row of every SQLite database the process
   opened during the test (and any ``*.db`` in the test's ``tmp_path``, e.g. written by a CLI
   subprocess); every row of every PostgreSQL database the tests drop (scanned just before
   ``drop database``).
3. **Whom to blame.** Findings are collected per test (setup, call and teardown) and, after
   the test's teardown, fail it with an error that names the place but never prints the
   secret (only its first characters and length). A module-scoped database is scanned when it
   is dropped, so its leak is reported on the module's last test.

Gaps (documented in docs/reliability.md, "## Security"): output a subprocess test reads
from a pipe itself (not through ``communicate``); secrets held only as plain ``str`` (never a
``SecretStr`` or a fake's issued token); bytes secrets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets as _secrets
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

MIN_LENGTH = 8
"""Shorter values are not canaries: they would match by chance."""
COMMON = frozenset(
    {"password", "secret123", "changeme", "12345678", "123456789", "localhost", "postgres"}
)
_SECRET_ENV = re.compile(r"(?i)(secret|token|passw|private|credential|api_?key|service_key)")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")

ENABLED = os.environ.get("IH_CANARY", "1").lower() not in ("0", "false", "no", "off")


class _State:
    """Canary values (whole session) and what the current test produced."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.canaries: set[str] = set()
        self.findings: list[str] = []
        self.logs: list[str] = []
        self.sqlite_paths: set[str] = set()
        self.scanning = False
        self.recording = True
        self.counts: Counter[str] = Counter()
        self.leaked_tests = 0

    def add(self, value: object) -> None:
        if (
            self.recording
            and isinstance(value, str)
            and len(value) >= MIN_LENGTH
            and value not in COMMON
            and len(set(value)) >= 4  # "aaaaaaaa", "00000000": found everywhere by chance
            and not value.isdigit()
            and "${" not in value  # a reference (resolved later), not a secret
        ):
            with self.lock:
                self.canaries.add(value)

    def leaks(self, text: str) -> list[str]:
        """The canaries found in ``text``."""
        if not text:
            return []
        with self.lock:
            canaries = list(self.canaries)
        return [c for c in canaries if c in text]

    def check(self, where: str, text: str, kind: str = "") -> None:
        if kind:
            with self.lock:
                self.counts[kind] += 1
        for canary in self.leaks(text):
            self.report(where, canary)

    def report(self, where: str, canary: str) -> None:
        shown = f"{canary[:4]}… ({len(canary)} chars)"
        with self.lock:
            self.findings.append(f"secret {shown} found in {where}")

    def take(self) -> tuple[list[str], list[str], set[str]]:
        with self.lock:
            taken = self.findings, self.logs, self.sqlite_paths
            self.findings, self.logs, self.sqlite_paths = [], [], set()
        return taken


STATE = _State()


# -- 1. recording secret values ----------------------------------------------------------------


def _record_secret_str() -> None:
    from pydantic import SecretStr

    original = SecretStr.__init__

    def init(self: SecretStr, secret_value: str) -> None:
        STATE.add(secret_value)
        original(self, secret_value)

    SecretStr.__init__ = init  # type: ignore[method-assign]


class _RecordingSecrets:
    """Stands in for the ``secrets`` module inside the fake vendors: issued tokens are canaries."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_secrets, name)

    def token_urlsafe(self, nbytes: int | None = None) -> str:
        value = _secrets.token_urlsafe(nbytes)
        STATE.add(value)
        return value

    def token_hex(self, nbytes: int | None = None) -> str:
        value = _secrets.token_hex(nbytes)
        STATE.add(value)
        return value


def _record_fake_vendor_tokens() -> None:
    import importlib
    import pkgutil

    import integration_health.testing as testing

    recording = _RecordingSecrets()
    for info in pkgutil.walk_packages(testing.__path__, f"{testing.__name__}."):
        module = importlib.import_module(info.name)
        if getattr(module, "secrets", None) is _secrets:
            module.secrets = recording  # type: ignore[attr-defined]


def _record_env() -> None:
    original = pytest.MonkeyPatch.setenv

    def setenv(self: pytest.MonkeyPatch, name: str, value: str, prepend: str | None = None) -> None:
        if _SECRET_ENV.search(name):
            STATE.add(value)
        original(self, name, value, prepend)

    pytest.MonkeyPatch.setenv = setenv  # type: ignore[method-assign]


# -- 2. places secrets must never appear -------------------------------------------------------


class _CanaryLogHandler(logging.Handler):
    """Keeps every record, formatted with its traceback, for the end-of-test scan."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a broken record is not ours to report
            return
        with STATE.lock:
            STATE.logs.append(text)


def _watch_responses() -> None:
    from fastapi import FastAPI

    original = FastAPI.__call__

    async def call(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not hasattr(self.state, "integration_health"):
            await original(self, scope, receive, send)
            return
        where = f"the API response to {scope.get('method')} {scope.get('path')}"

        async def watching(message: Any) -> None:
            if message.get("type") == "http.response.start":
                headers = b"\n".join(k + b": " + v for k, v in message.get("headers", []))
                STATE.check(f"{where} (headers)", headers.decode("latin-1"), "API responses")
            elif message.get("type") == "http.response.body":
                STATE.check(where, bytes(message.get("body", b"")).decode("utf-8", "replace"))
            await send(message)

        await original(self, scope, receive, watching)

    FastAPI.__call__ = call  # type: ignore[method-assign]


def _exception_text(exc: BaseException) -> str:
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), *getattr(current, "__notes__", [])]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def _watch_raises() -> None:
    from _pytest.raises import RaisesExc

    original = RaisesExc.__exit__

    def exit_(self: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
        if isinstance(exc_val, BaseException):
            STATE.check(
                f"the text of {type(exc_val).__name__} caught by pytest.raises",
                _exception_text(exc_val),
                "exceptions caught by pytest.raises",
            )
        return original(self, exc_type, exc_val, exc_tb)

    RaisesExc.__exit__ = exit_  # type: ignore[method-assign]


def _output_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def _watch_subprocesses() -> None:
    popen_init = subprocess.Popen.__init__
    communicate = subprocess.Popen.communicate

    def init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        for name, value in (kwargs.get("env") or {}).items():
            if _SECRET_ENV.search(str(name)):
                STATE.add(value)
        popen_init(self, *args, **kwargs)

    def communicate_(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
        out, err = communicate(self, *args, **kwargs)
        command = self.args if isinstance(self.args, str) else " ".join(map(str, self.args))
        what = f"the output of subprocess {command[:80]!r}"
        STATE.check(f"{what} (stdout)", _output_text(out), "subprocess outputs")
        STATE.check(f"{what} (stderr)", _output_text(err))
        return out, err

    subprocess.Popen.__init__ = init  # type: ignore[method-assign]
    subprocess.Popen.communicate = communicate_  # type: ignore[method-assign]


_sqlite_connect = sqlite3.connect


def _watch_sqlite() -> None:
    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if not STATE.scanning and isinstance(database, str | os.PathLike):
            path = os.fspath(database)
            if path and path != ":memory:" and not path.startswith("file:"):
                with STATE.lock:
                    STATE.sqlite_paths.add(str(Path(path).resolve()))
        return _sqlite_connect(database, *args, **kwargs)

    sqlite3.connect = connect  # type: ignore[assignment]


def _scan_sqlite(path: str) -> None:
    if not Path(path).is_file():
        return
    STATE.scanning = True
    try:
        conn = _sqlite_connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return
    finally:
        STATE.scanning = False
    try:
        tables = [
            row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")
        ]
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            rows = conn.execute(f"select * from {quoted}").fetchall()
            text = "\n".join("\t".join(map(str, row)) for row in rows)
            STATE.check(f"SQLite {Path(path).name}, table {table}", text, "SQLite tables")
    except sqlite3.Error:
        pass
    finally:
        conn.close()


_DROP = re.compile(r'(?i)^\s*drop\s+database\s+(?:if\s+exists\s+)?"?([A-Za-z0-9_]+)"?')


def _watch_postgres_drops() -> None:
    import psycopg

    original = psycopg.Connection.execute

    def execute(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(query, str):
            match = _DROP.match(query)
            if match and not match.group(1).startswith("ih_template"):
                _scan_postgres(self, match.group(1))
        return original(self, query, *args, **kwargs)

    psycopg.Connection.execute = execute  # type: ignore[method-assign]


def _scan_postgres(admin: Any, name: str) -> None:
    import psycopg
    from psycopg.conninfo import make_conninfo

    try:
        conn = psycopg.connect(
            make_conninfo(admin.info.dsn, dbname=name), autocommit=True, connect_timeout=5
        )
    except psycopg.Error:
        return  # already gone, or never created
    with conn:
        tables = conn.execute(
            "select format('%I.%I', schemaname, tablename) from pg_tables"
            " where schemaname not in ('pg_catalog', 'information_schema')"
        ).fetchall()
        for (table,) in tables:
            rows = conn.execute(f"select t::text from {table} t").fetchall()
            STATE.check(
                f"PostgreSQL database {name}, table {table}",
                "\n".join(r[0] for r in rows),
                "PostgreSQL tables",
            )


# -- 3. per-test bookkeeping -------------------------------------------------------------------


def _sqlite_files(directory: Path) -> Iterator[str]:
    with contextlib.suppress(OSError):
        for path in directory.rglob("*"):
            if path.suffix in _SQLITE_SUFFIXES and path.is_file():
                yield str(path.resolve())


def _finish(item: pytest.Item) -> list[str]:
    earlier, logs, paths = STATE.take()
    STATE.check("the log records", "\n".join(logs))
    with STATE.lock:
        STATE.counts["log records"] += len(logs)
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if isinstance(tmp_path, Path):
        paths |= set(_sqlite_files(tmp_path))
    for path in sorted(paths):
        _scan_sqlite(path)
    findings, _, _ = STATE.take()
    return sorted(set(earlier + findings))


def pytest_configure(config: pytest.Config) -> None:
    if not ENABLED:
        return
    _record_secret_str()
    _record_fake_vendor_tokens()
    _record_env()
    _watch_responses()
    _watch_raises()
    _watch_subprocesses()
    _watch_sqlite()
    _watch_postgres_drops()
    root = logging.getLogger()
    root.addHandler(_CanaryLogHandler())
    root.setLevel(logging.DEBUG)
    for noisy in ("asyncio", "aiosqlite", "hpack", "httpcore", "multipart", "filelock"):
        logging.getLogger(noisy).setLevel(logging.INFO)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    if ENABLED:
        STATE.take()  # what happened between tests belongs to no test
        # Property-based tests draw random values for secret and plain fields alike (and
        # reuse them): their "secrets" are not canaries. Their own asserts check leaks.
        STATE.recording = not hasattr(getattr(item, "obj", None), "hypothesis")
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    result = yield
    if ENABLED:
        findings = _finish(item)
        if findings:
            STATE.leaked_tests += 1
            pytest.fail("secret canary leaked:\n  " + "\n  ".join(findings), pytrace=False)
    return result


def canary_findings_for(texts: Iterable[str]) -> list[str]:
    """The canaries (masked) found in ``texts``: for tests of this plugin."""
    found: list[str] = []
    for text in texts:
        found += [f"{c[:4]}… ({len(c)} chars)" for c in STATE.leaks(text)]
    return found


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ENABLED:
        return
    scanned = ", ".join(f"{n:,} {kind}" for kind, n in sorted(STATE.counts.items()))
    terminalreporter.write_line(
        f"secret canaries: {len(STATE.canaries):,} values; scanned {scanned}; "
        f"tests that leaked: {STATE.leaked_tests}"
    )
