"""Fixtures of the security tests, re-exported from tests/store and tests/web."""

from __future__ import annotations

from tests.store.conftest import pg_database, pg_migrated, pg_template
from tests.web.conftest import keys, sqlite_url, world

__all__ = ["keys", "pg_database", "pg_migrated", "pg_template", "sqlite_url", "world"]
