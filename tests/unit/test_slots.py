"""The registry's slots: a semaphore that can be taken without awaiting when one is free."""

from __future__ import annotations

import asyncio

from integration_health.checks import Slots


async def test_take_and_release_count_like_a_semaphore() -> None:
    slots = Slots(2)
    assert slots.take() and slots.take()
    assert not slots.take()  # none left: nothing taken
    assert slots.locked()
    slots.release()
    assert not slots.locked()
    assert slots.take()
    slots.release()
    slots.release()
    assert slots.take() and slots.take() and not slots.take()


async def test_a_waiter_keeps_its_turn_over_take() -> None:
    """A slot released while someone waits goes to the waiter, not to a later take()."""
    slots = Slots(1)
    assert slots.take()
    order: list[str] = []

    async def waiter() -> None:
        await slots.acquire()
        order.append("waiter")

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter is queued
    slots.release()  # handed to the waiter
    assert not slots.take()  # the waiter's, even before it has run
    await task
    assert order == ["waiter"]
    assert not slots.take()  # still held by the waiter
    slots.release()
    assert slots.take()


async def test_cancelled_waiter_does_not_lose_a_slot() -> None:
    slots = Slots(1)
    assert slots.take()
    task = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    slots.release()
    assert slots.take()  # the one slot is free again
    assert not slots.take()
