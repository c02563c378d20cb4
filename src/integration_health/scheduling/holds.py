"""Which integrations a manual "check now" leaves alone: the vendor asked us to wait.

The scheduler never probes an integration type paused for rate limiting, nor an integration
before the ``Retry-After`` its vendor sent (DESIGN §8). "Check now" — the dashboard's button,
``POST /api/orgs/{org}/health/checks``, ``integration-health check`` — bypasses the schedule
(its interval and the 15-minute floor: that is what it is for), but not those two: a vendor
that is rate-limiting us would count each manual probe against the same quota, and
``Retry-After`` is the vendor's own word. Such integrations are listed as held, with the time
they may be probed again; the CLI's ``--force`` probes them anyway.

Request budgets per minute are not consulted: a manual run claims no slots, so it is not
counted in them either (docs/scheduling.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from ..policy import retry_after_hint
from ..store.base import StatusRecord, Store, TypeMode
from .planner import Candidate, Integration

__all__ = ["VendorHold", "find_vendor_holds", "vendor_holds"]


@dataclass(frozen=True)
class VendorHold:
    """Why one integration is not probed now, and until when."""

    reason: Literal["paused", "retry_after"]
    """``paused``: its type is paused (the vendor kept rate-limiting); ``retry_after``: its
    last answer carried a ``Retry-After`` that has not passed yet."""
    until: datetime
    """When it may be probed again."""

    @property
    def message(self) -> str:
        when = self.until.isoformat(timespec="seconds")
        if self.reason == "paused":
            return (
                f"not probed: checks of this type are paused until {when} because the vendor "
                "kept rate-limiting"
            )
        return f"not probed: the vendor asked to wait (Retry-After) until {when}"


def _retry_after_until(status: StatusRecord | None) -> datetime | None:
    """The end of the ``Retry-After`` the last result carried, if any."""
    hint = retry_after_hint(status.details) if status is not None else None
    if status is None or hint is None:
        return None
    try:
        return status.checked_at + timedelta(seconds=hint)
    except OverflowError:  # an absurd hint (years): hold for as long as we can say
        return datetime.max.replace(tzinfo=status.checked_at.tzinfo)


def vendor_holds(
    candidates: Sequence[Candidate],
    *,
    at: datetime,
    type_modes: Mapping[str, TypeMode] | None = None,
) -> dict[UUID, VendorHold]:
    """The actively checked integrations among ``candidates`` that must not be probed at
    ``at``, each with the reason and the time it ends (the later one when both apply).
    Pure: no I/O, no clock."""
    modes = type_modes or {}
    holds: dict[UUID, VendorHold] = {}
    for candidate in candidates:
        item = candidate.integration
        if not item.is_checked_actively:
            continue
        found: list[VendorHold] = []
        mode = modes.get(item.integration_type)
        if mode is not None and mode.passive_until > at:
            found.append(VendorHold("paused", mode.passive_until))
        until = _retry_after_until(candidate.status)
        if until is not None and until > at:
            found.append(VendorHold("retry_after", until))
        if found:
            holds[item.integration_id] = max(found, key=lambda hold: hold.until)
    return holds


async def find_vendor_holds(
    store: Store, org_id: UUID, integrations: Sequence[Integration], *, at: datetime
) -> dict[UUID, VendorHold]:
    """:func:`vendor_holds` for ``integrations`` of ``org_id``, from their stored statuses and
    the stored type pauses."""
    statuses = {s.integration_id: s for s in await store.list_statuses(org_id)}
    modes = {m.integration_type: m for m in await store.list_type_modes()}
    candidates = [Candidate(i, statuses.get(i.integration_id)) for i in integrations]
    return vendor_holds(candidates, at=at, type_modes=modes)
