"""The garbage collector's settings for long-running processes (``scheduler``, ``worker``,
``serve``), applied once they have started.

Two things cost a monitor CPU for nothing. Every full collection walks again the objects that
live as long as the process (modules, configs, pools): :func:`gc.freeze` moves them out of the
collector's sight. And every check leaves reference cycles behind (aiohttp's requests,
exceptions with their tracebacks, finished tasks): with CPython's default thresholds
(700, 10, 10) a young collection runs every 700 net allocations, hundreds of times per 10,000
checks, and each older collection walks every result still held. Thresholds of
(50,000, 20, 100) cut the collector's time per check two- to fivefold and the CPU per check
by about 10-30 % (more at 1,000 checks in flight, where more results are alive at once); peak
RSS did not change, since the garbage a collection finds is bounded by the threshold
(docs/benchmarks.md, "End-to-end throughput", run R).
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "settle_heap"]

GC_THRESHOLDS = (50_000, 20, 100)
"""Generation 0 collects after this many net allocations of tracked objects; generation 1
after 20 collections of generation 0, generation 2 after 100 of generation 1."""


def settle_heap() -> None:
    """Collect what start-up left behind, freeze the survivors, raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
