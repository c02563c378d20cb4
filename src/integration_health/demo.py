"""``integration-health demo``: a newcomer's first run, with no network and no server.

It starts local simulated vendors (real HTTP servers on 127.0.0.1), creates an embedded
SQLite store with a sample organisation whose integrations cover the interesting cases (healthy,
slow, rate limited, down, rejected credentials), and checks them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from .checks import CheckRegistry
from .integrations_file import IntegrationsFile, import_integrations
from .store.base import Member, Organization, Store

__all__ = ["DEMO_ORG_ID", "DEMO_USER_ID", "DemoTargets", "demo_definitions", "seed_demo"]

DEMO_ORG_ID = uuid.UUID("00000000-0000-4000-8000-00000000d3e0")
DEMO_USER_ID = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
DEMO_TOKEN_ENV = "INTEGRATION_HEALTH_DEMO_TOKEN"  # noqa: S105 - a variable name, not a value


@dataclass(frozen=True)
class DemoTargets:
    """Base URLs of the simulated vendors."""

    http: str


def demo_definitions(targets: DemoTargets) -> list[dict[str, Any]]:
    """The sample organisation's integrations (as integrations-file items)."""
    org = str(DEMO_ORG_ID)
    base = targets.http

    def item(name: str, **fields: Any) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid5(DEMO_ORG_ID, name)),
            "org_id": org,
            "integration_type": "http",
            "name": name,
            **fields,
        }

    return [
        item("Order webhook receiver", url=f"{base}/health"),
        item("Status page", url=f"{base}/ok"),
        item("Reporting API (slow)", url=f"{base}/slow?ms=2300"),
        item("Partner API (rate limited)", url=f"{base}/status/429?retry_after=300"),
        item("Legacy export endpoint (down)", url=f"{base}/status/503"),
        item(
            "Invoice API (expired token)",
            url=f"{base}/auth",
            bearer_token="${" + DEMO_TOKEN_ENV + "}",
        ),
    ]


async def seed_demo(store: Store, registry: CheckRegistry, targets: DemoTargets) -> int:
    """Create (or refresh) the sample organisation; returns how many integrations it has."""
    parsed = IntegrationsFile(
        organizations=[Organization(DEMO_ORG_ID, "Demo Company AS")],
        members=[Member(DEMO_ORG_ID, DEMO_USER_ID, "admin")],
        integrations=[registry.parse(item) for item in demo_definitions(targets)],
    )
    await import_integrations(parsed, store)
    return len(parsed.integrations)
