"""A fake Visma eAccounting API v2 (with its identity server on the same port).

``GET /v2/companysettings`` with ``Authorization: Bearer <token from /connect/token>`` answers
the connected company (``{"Name", "CorporateIdentityNumber", "CurrencyCode", …}``). Errors use
eAccounting's envelope ``{"ErrorCode", "DeveloperErrorMessage", "ErrorId"}``; the 429 is the
verified one (``ErrorCode`` 4010, "… Try again in N seconds.", no ``Retry-After``), and the fake
really counts requests: more than :attr:`VismaEAccountingFake.quota_per_minute` in a minute
get it, with the true seconds left. Other codes/texts are placeholders.

Scenarios: the common ones (``not_found`` is not expressible — the company is fixed by the
authorisation, there is no company parameter to get wrong) plus ``oversized``.
``server_error`` is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import time
import uuid
from typing import ClassVar

from aiohttp import web

from ._base import COMMON_SCENARIOS
from .visma_connect import VismaConnectFake

__all__ = ["VismaEAccountingFake"]

OVERSIZED_BYTES = 2 * 1024 * 1024


class VismaEAccountingFake(VismaConnectFake):
    """Identity server + eAccounting API (serve with ``LocalServer``)."""

    SCENARIOS: ClassVar[frozenset[str]] = (COMMON_SCENARIOS - {"not_found"}) | {"oversized"}

    def __init__(
        self, *, client_id: str = "monitor-client", client_secret: str, refresh_token: str
    ):
        super().__init__(
            client_id=client_id, client_secret=client_secret, refresh_token=refresh_token
        )
        self.quota_per_minute = 600
        """Requests per client and endpoint per minute before the 429."""
        self._window: tuple[int, int] = (0, 0)
        self.app.router.add_get("/v2/companysettings", self._company_settings)

    @staticmethod
    def _error(status: int, code: int, message: str, **headers: str) -> web.Response:
        return web.json_response(
            {"ErrorCode": code, "DeveloperErrorMessage": message, "ErrorId": str(uuid.uuid4())},
            status=status,
            headers=headers,
            content_type="application/json",
        )

    def _quota_exceeded(self, seconds_left: int) -> web.Response:
        return self._error(
            429,
            4010,
            f"API calls quota exceeded! maximum admitted {self.quota_per_minute} per Minute. "
            f"Try again in {seconds_left} seconds.",
        )

    async def generic_misbehaviour(self, request: web.Request) -> web.StreamResponse | None:
        """The common scenarios, in eAccounting's forms."""
        if self.scenario == "server_error":
            return self._error(
                503, 5000, "Service Unavailable", **{"Retry-After": str(self.retry_after_s)}
            )
        if self.scenario == "rate_limited":
            return self._quota_exceeded(55)
        if self.scenario == "garbage":
            return web.Response(text="<html><body>Visma</body></html>", content_type="text/html")
        if self.scenario == "oversized":
            return web.Response(
                body=b'{"Name":"' + b"x" * OVERSIZED_BYTES + b'"}',
                content_type="application/json",
            )
        return await super().generic_misbehaviour(request)

    async def _company_settings(self, request: web.Request) -> web.StreamResponse:
        answer = await self.generic_misbehaviour(request)
        if answer is not None:
            return answer
        issued = self.access_of(request)
        if issued is None or "ea:api" not in issued.scopes:
            return self._error(401, 4001, "Unauthorized")
        now = time.time()
        minute = int(now // 60)
        start, count = self._window
        count = count + 1 if start == minute else 1
        self._window = (minute, count)
        if count > self.quota_per_minute:
            return self._quota_exceeded(max(1, 60 - int(now % 60)))
        return web.json_response(
            {
                "Name": "Test AB",
                "CorporateIdentityNumber": "5561234567",
                "CurrencyCode": "NOK",
                "CountryCode": "NO",
            }
        )
