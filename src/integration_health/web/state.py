"""What the application holds for its whole life (opened and closed in the lifespan)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from ..checks import CheckRegistry
from ..scheduling import Scheduler
from ..settings import Settings
from ..store.base import Store
from .auth import Authenticator
from .cache import ResponseCache
from .ratelimit import RunNowLimiter

__all__ = ["AppState"]


@dataclass
class AppState:
    """The application's long-lived parts; ``store`` is set once the lifespan has opened it."""

    settings: Settings
    registry: CheckRegistry
    auth: Authenticator
    cache: ResponseCache
    limiter: RunNowLimiter
    store: Store | None = None
    scheduler: Scheduler | None = None
    scheduler_task: asyncio.Task[None] | None = None
    started_at: float = field(default_factory=time.monotonic)
    pages: dict[str, bytes] = field(default_factory=dict)
    """The dashboard's HTML pages, rendered once."""
