"""The dashboard: two HTML pages and their static files, served by the API's own app.

Everything is in the package (``web/templates``, ``web/static``): no CDN, works offline. The
pages are shells; ``static/dashboard.js`` renders them from the JSON API and polls it every
``INTEGRATION_HEALTH_DASHBOARD_POLL_S`` seconds, sending the token kept in ``sessionStorage``
(signed-in deployments) as ``Authorization: Bearer``.
"""

from __future__ import annotations

import functools
import html
from importlib import resources
from pathlib import Path
from uuid import UUID

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from ..settings import Settings
from .deps import StateDep

__all__ = ["STATIC_DIR", "render_page", "router"]

STATIC_DIR = Path(str(resources.files("integration_health.web").joinpath("static")))
"""Where the dashboard's CSS and JavaScript live."""

router = APIRouter(include_in_schema=False)


@functools.cache
def _template() -> str:
    return (
        resources.files("integration_health.web")
        .joinpath("templates", "page.html")
        .read_text(encoding="utf-8")
    )


def render_page(settings: Settings, *, page: str, title: str, org_id: str = "") -> bytes:
    """One dashboard page (the shell the script fills in)."""
    poll_ms = round(settings.dashboard_poll_s * 1000)
    values = {
        "__PAGE__": page,
        "__TITLE__": title,
        "__ORG_ID__": org_id,
        "__POLL_MS__": str(poll_ms),
        "__POLL_S__": f"{settings.dashboard_poll_s:g}",
    }
    text = _template()
    for placeholder, value in values.items():
        text = text.replace(placeholder, html.escape(value, quote=True))
    return text.encode("utf-8")


@router.get("/", response_class=HTMLResponse)
async def index_page(state: StateDep) -> HTMLResponse:
    """The organisations you can see (or the only one)."""
    body = state.pages.get("index")
    if body is None:
        body = state.pages["index"] = render_page(
            state.settings, page="index", title="Organizations"
        )
    return HTMLResponse(body)


@router.get("/orgs/{org_id}", response_class=HTMLResponse)
async def org_page(org_id: str, state: StateDep) -> HTMLResponse:
    """One organisation's integrations: tiles, trends, status changes."""
    try:
        parsed = UUID(org_id)
    except ValueError:
        body = render_page(state.settings, page="missing", title="Not found")
        return HTMLResponse(body, status_code=404)
    return HTMLResponse(
        render_page(state.settings, page="org", title="Organization", org_id=str(parsed))
    )
