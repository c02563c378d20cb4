"""The HTTP side of the monitor: JSON API, dashboard, ``/healthz`` and ``/metrics``.

:func:`create_app` builds the FastAPI application; ``integration-health serve`` runs it with
uvicorn (see :mod:`integration_health.web.server`). Authentication: :mod:`.auth`; what each
caller may read: :mod:`.access`.
"""

from .app import create_app

__all__ = ["create_app"]
