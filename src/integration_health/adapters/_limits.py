"""Per-credential concurrency and request-rate limits, shared by every check of a registry.

Some vendors allow one request at a time per token (Fiken) or a few requests per second per
subscription key shared by all clients (PowerOffice). Adapters wrap their calls in
``async with context.limits.slot(key, concurrency=1):`` and/or
``async with context.limits.rate(key, max_rate=10, period=1):`` with ``key`` from
:func:`~integration_health.adapters._tokens.credential_key`.

Waiting for a slot counts against the check's deadline — a probe that cannot get a turn in
10 s is reported as a timeout rather than queueing forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiolimiter import AsyncLimiter

__all__ = ["CredentialLimits"]


class CredentialLimits:
    """Keyed semaphores and rate limiters (created on first use)."""

    def __init__(self) -> None:
        self._semaphores: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._rates: dict[tuple[str, float, float], AsyncLimiter] = {}

    @asynccontextmanager
    async def slot(self, key: str, *, concurrency: int = 1) -> AsyncIterator[None]:
        """At most ``concurrency`` holders per ``key`` at once."""
        semaphore = self._semaphores.get((key, concurrency))
        if semaphore is None:
            semaphore = self._semaphores[(key, concurrency)] = asyncio.Semaphore(concurrency)
        async with semaphore:
            yield

    @asynccontextmanager
    async def rate(self, key: str, *, max_rate: float, period: float = 1.0) -> AsyncIterator[None]:
        """At most ``max_rate`` entries per ``period`` seconds per ``key``."""
        limiter = self._rates.get((key, max_rate, period))
        if limiter is None:
            limiter = self._rates[(key, max_rate, period)] = AsyncLimiter(max_rate, period)
        async with limiter:
            yield
