"""The `store` fixture: every store implementation, for the shared contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from integration_health.store import MemoryStore, SQLiteStore, Store

STORE_KINDS = ["memory", "sqlite"]


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh, upgraded, empty store of each kind."""
    kind = request.param
    if kind == "memory":
        yield MemoryStore()
    elif kind == "sqlite":
        sqlite = await SQLiteStore.open(f"sqlite:///{tmp_path / 'contract.db'}")
        yield sqlite
        await sqlite.aclose()
    else:  # pragma: no cover - new kinds must be added here
        raise AssertionError(kind)
