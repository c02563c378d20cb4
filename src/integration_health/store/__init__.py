"""Where integrations, current statuses and history are kept.

:func:`open_store` picks the implementation from the URL:

- ``sqlite:///path.db`` — :class:`SQLiteStore`, the embedded default;
- ``postgresql://…`` (or ``postgres://…``) — ``PostgresStore`` (needs the ``postgres`` extra);
- ``memory://`` — :class:`MemoryStore`, for tests and scripts.
"""

from __future__ import annotations

import re

from ..errors import ConfigError
from .base import (
    HISTORY_LIMIT,
    INITIAL_SLOT,
    DueCheck,
    HealthEvent,
    HealthRow,
    HistoryRecord,
    ImportSummary,
    Member,
    Organization,
    ResultWrite,
    SlotClaim,
    StatusRecord,
    Store,
    TypeMode,
)
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = [
    "HISTORY_LIMIT",
    "INITIAL_SLOT",
    "DueCheck",
    "HealthEvent",
    "HealthRow",
    "HistoryRecord",
    "ImportSummary",
    "Member",
    "MemoryStore",
    "Organization",
    "ResultWrite",
    "SQLiteStore",
    "SlotClaim",
    "StatusRecord",
    "Store",
    "TypeMode",
    "mask_url",
    "open_store",
]


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^/:@\s]*:)[^@/\s]*@", r"\1***@", url)


async def open_store(url: str) -> Store:
    """Open the store at ``url`` (see the module docstring for the schemes)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return await SQLiteStore.open(url)
    if scheme == "memory":
        return MemoryStore(url)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigError(
                "PostgreSQL support is not installed: pip install 'integration-health[postgres]'"
                f" ({exc})"
            ) from None
        store: Store = await PostgresStore.open(url)
        return store
    raise ConfigError(
        f"unsupported database URL {mask_url(url)!r}: use sqlite:///path.db, "
        "postgresql://user@host/db or memory://"
    )
