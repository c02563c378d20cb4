"""Dependency-injection aliases: the only place request handlers get their collaborators.

``StateDep``, ``StoreDep``, ``PrincipalDep`` and ``AccessDep`` are ``Annotated`` aliases used
in route signatures (the FastAPI full-stack template's ``deps.py`` habit); nothing below the
HTTP edge knows about FastAPI.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from ..store.base import Store
from .access import Access
from .auth import Principal
from .errors import ApiError
from .state import AppState

__all__ = [
    "AccessDep",
    "PrincipalDep",
    "StateDep",
    "StoreDep",
    "client_host",
    "get_access",
    "get_principal",
    "get_state",
    "get_store",
]


async def get_state(request: Request) -> AppState:
    """The application's state."""
    return cast("AppState", request.app.state.integration_health)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_store(state: StateDep) -> Store:
    """The store (503 while the application is starting or stopping)."""
    if state.store is None:
        raise ApiError(503, "starting", "The monitor is starting; try again in a moment.")
    return state.store


StoreDep = Annotated[Store, Depends(get_store)]


def client_host(request: Request) -> str | None:
    """The peer address of the request."""
    return request.client.host if request.client else None


async def get_principal(request: Request, state: StateDep) -> Principal:
    """Who is asking (raises ``AuthError`` → 401/403)."""
    return await state.auth.authenticate(request.headers.get("authorization"), client_host(request))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_access(request: Request) -> Access:
    """The caller's access to the store (one dependency: this runs on every API request)."""
    state = await get_state(request)
    store = await get_store(state)
    principal = await state.auth.authenticate(
        request.headers.get("authorization"), client_host(request)
    )
    return Access(store, principal)


AccessDep = Annotated[Access, Depends(get_access)]
