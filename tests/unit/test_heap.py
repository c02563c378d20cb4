"""The collector settings of long-running commands."""

from __future__ import annotations

import gc

from integration_health._heap import GC_THRESHOLDS, settle_heap


def test_settle_heap_freezes_the_start_up_heap_and_raises_the_thresholds() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    try:
        settle_heap()
        assert gc.get_freeze_count() > 1_000
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > 700
    finally:
        gc.unfreeze()  # the thresholds are restored by the autouse fixture (tests/conftest.py)
