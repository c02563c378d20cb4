"""How often one organisation may ask for a "check now" run through the API.

Each run probes every integration of the organisation, and some vendors charge per call or
allow one request at a time, so a run is refused (429 with ``Retry-After``) when the previous
one of the same organisation started less than ``INTEGRATION_HEALTH_RUN_NOW_INTERVAL_S``
(default 60 s) ago. The window is per process: behind several API processes, each keeps its
own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from uuid import UUID

__all__ = ["RunNowLimiter"]


class RunNowLimiter:
    """At most one run per organisation per ``interval_s``."""

    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[UUID, float] = {}

    def acquire(self, org_id: UUID) -> int | None:
        """Start a run now (``None``), or the whole seconds to wait before the next one."""
        now = self._clock()
        self._forget_before(now - self.interval_s)
        last = self._last.get(org_id)
        if last is not None:
            return max(1, math.ceil(last + self.interval_s - now))
        self._last[org_id] = now
        return None

    def _forget_before(self, cutoff: float) -> None:
        for org_id in [o for o, at in self._last.items() if at <= cutoff]:
            del self._last[org_id]
