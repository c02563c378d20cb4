"""What one caller may read: a view of the store limited to their organisations.

Three views, chosen per request by :meth:`Access.view`:

- :class:`RlsView` — PostgreSQL with a signed-in user. Every read runs inside one transaction
  as role ``authenticated`` with the JWT claims set exactly as PostgREST does
  (:meth:`~integration_health.store.postgres.PostgresStore.as_user`), so **row-level security
  decides** what is visible; this module adds no membership filter of its own.
- :class:`MemberView` — SQLite or memory with a signed-in user: no RLS there, so membership
  (``organization_members``) is checked here, in the application.
- :class:`TrustedView` — embedded single-user mode (no authentication, loopback only):
  every organisation is visible.

An organisation the caller may not see is reported exactly like one that does not exist
(``None``), so the API answers 404 without a hint that it exists.

A view holds one pooled connection on PostgreSQL: routes open it, read, and close it before
touching the store directly (never both at once, so a full pool cannot deadlock).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from ..checks import IntegrationRecord
from ..store.base import (
    HISTORY_LIMIT,
    HealthEvent,
    HealthRow,
    HistoryRecord,
    Organization,
    StatusRecord,
    Store,
)
from .auth import Principal

__all__ = [
    "Access",
    "MemberView",
    "OrgView",
    "RlsView",
    "TrustedView",
    "UserReader",
    "UserScopedStore",
]


class UserReader(Protocol):
    """Reads of a store running under a user's identity (RLS decides)."""

    async def list_organizations(self) -> list[Organization]: ...

    async def list_integrations(self, org_id: UUID | None = None) -> list[IntegrationRecord]: ...

    async def list_statuses(self, org_id: UUID | None = None) -> list[StatusRecord]: ...

    async def list_history(
        self, integration_id: UUID, limit: int = HISTORY_LIMIT
    ) -> list[HistoryRecord]: ...

    async def list_health_rows(self, org_id: UUID) -> list[HealthRow]: ...

    async def list_events(
        self, org_id: UUID, *, integration_id: UUID | None = None, limit: int = 100
    ) -> list[HealthEvent]: ...


@runtime_checkable
class UserScopedStore(Protocol):
    """A store that can read as a user under row-level security (PostgreSQL)."""

    def as_user(self, claims: Mapping[str, Any]) -> AbstractAsyncContextManager[UserReader]: ...


class OrgView(Protocol):
    """The reads the API needs, limited to what the caller may see."""

    async def organizations(self) -> list[Organization]:
        """Organisations the caller may see, by name."""
        ...

    async def organization(self, org_id: UUID) -> Organization | None:
        """The organisation, or ``None`` if it does not exist or is not visible."""
        ...

    async def integrations(self, org_id: UUID | None) -> list[IntegrationRecord]:
        """Integrations of one visible organisation (``None``: of all visible ones), by name."""
        ...

    async def statuses(self, org_id: UUID | None) -> list[StatusRecord]:
        """Current statuses of one visible organisation (``None``: of all visible ones)."""
        ...

    async def history(self, integration_id: UUID, limit: int) -> list[HistoryRecord]:
        """The newest ``limit`` results of a visible integration, newest first."""
        ...

    async def health_rows(self, org_id: UUID) -> list[HealthRow]:
        """Each integration of a visible organisation with its status, in one lean read."""
        ...

    async def events(
        self, org_id: UUID, *, integration_id: UUID | None, limit: int
    ) -> list[HealthEvent]:
        """Status transitions of a visible organisation, newest first."""
        ...


class TrustedView:
    """Everything in the store (embedded single-user mode)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def organizations(self) -> list[Organization]:
        return await self.store.list_organizations()

    async def organization(self, org_id: UUID) -> Organization | None:
        return await self.store.get_organization(org_id)

    async def integrations(self, org_id: UUID | None) -> list[IntegrationRecord]:
        return await self.store.list_integrations(org_id)

    async def statuses(self, org_id: UUID | None) -> list[StatusRecord]:
        return await self.store.list_statuses(org_id)

    async def history(self, integration_id: UUID, limit: int) -> list[HistoryRecord]:
        return await self.store.list_history(integration_id, limit=limit)

    async def health_rows(self, org_id: UUID) -> list[HealthRow]:
        return await self.store.list_health_rows(org_id)

    async def events(
        self, org_id: UUID, *, integration_id: UUID | None, limit: int
    ) -> list[HealthEvent]:
        return await self.store.list_events(org_id, integration_id=integration_id, limit=limit)


class MemberView(TrustedView):
    """The organisations a user is a member of (checked here: SQLite has no RLS)."""

    def __init__(self, store: Store, user_id: UUID) -> None:
        super().__init__(store)
        self.user_id = user_id
        self._verdicts: dict[UUID, bool] = {}

    async def _is_member(self, org_id: UUID) -> bool:
        verdict = self._verdicts.get(org_id)
        if verdict is None:
            members = await self.store.list_members(org_id)
            verdict = self._verdicts[org_id] = any(m.user_id == self.user_id for m in members)
        return verdict

    async def organizations(self) -> list[Organization]:
        return [o for o in await self.store.list_organizations() if await self._is_member(o.id)]

    async def organization(self, org_id: UUID) -> Organization | None:
        if not await self._is_member(org_id):
            return None
        return await self.store.get_organization(org_id)

    async def integrations(self, org_id: UUID | None) -> list[IntegrationRecord]:
        if org_id is None:
            visible = {o.id for o in await self.organizations()}
            return [i for i in await self.store.list_integrations() if i.org_id in visible]
        if not await self._is_member(org_id):
            return []
        return await self.store.list_integrations(org_id)

    async def statuses(self, org_id: UUID | None) -> list[StatusRecord]:
        if org_id is None:
            visible = {o.id for o in await self.organizations()}
            return [s for s in await self.store.list_statuses() if s.org_id in visible]
        if not await self._is_member(org_id):
            return []
        return await self.store.list_statuses(org_id)

    async def history(self, integration_id: UUID, limit: int) -> list[HistoryRecord]:
        record = await self.store.get_integration(integration_id)
        if record is None or not await self._is_member(record.org_id):
            return []
        return await self.store.list_history(integration_id, limit=limit)

    async def health_rows(self, org_id: UUID) -> list[HealthRow]:
        if not await self._is_member(org_id):
            return []
        return await self.store.list_health_rows(org_id)

    async def events(
        self, org_id: UUID, *, integration_id: UUID | None, limit: int
    ) -> list[HealthEvent]:
        if not await self._is_member(org_id):
            return []
        return await self.store.list_events(org_id, integration_id=integration_id, limit=limit)


class RlsView:
    """Reads as the user inside one transaction; PostgreSQL's row-level security decides."""

    def __init__(self, reader: UserReader, store: Store) -> None:
        self.reader = reader
        self.store = store

    async def organizations(self) -> list[Organization]:
        return await self.reader.list_organizations()

    async def organization(self, org_id: UUID) -> Organization | None:
        for org in await self.reader.list_organizations():
            if org.id == org_id:
                return org
        return None

    async def integrations(self, org_id: UUID | None) -> list[IntegrationRecord]:
        return await self.reader.list_integrations(org_id)

    async def statuses(self, org_id: UUID | None) -> list[StatusRecord]:
        return await self.reader.list_statuses(org_id)

    async def history(self, integration_id: UUID, limit: int) -> list[HistoryRecord]:
        return await self.reader.list_history(integration_id, limit)

    async def health_rows(self, org_id: UUID) -> list[HealthRow]:
        return await self.reader.list_health_rows(org_id)

    async def events(
        self, org_id: UUID, *, integration_id: UUID | None, limit: int
    ) -> list[HealthEvent]:
        return await self.reader.list_events(org_id, integration_id=integration_id, limit=limit)


class Access:
    """One request's caller and store; :meth:`view` opens what they may read."""

    def __init__(self, store: Store, principal: Principal) -> None:
        self.store = store
        self.principal = principal

    @asynccontextmanager
    async def view(self) -> AsyncIterator[OrgView]:
        """The caller's view; on PostgreSQL one transaction as ``authenticated`` while open."""
        if self.principal.local:
            yield TrustedView(self.store)
        elif isinstance(self.store, UserScopedStore):
            async with self.store.as_user(self.principal.claims) as reader:
                yield RlsView(reader, self.store)
        else:
            assert self.principal.user_id is not None
            yield MemberView(self.store, self.principal.user_id)
