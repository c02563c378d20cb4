"""A fake Tripletex API v2: session tokens, ``>whoAmI`` and accountant client companies.

Shapes follow ``shared/vendors.md`` §4: ``PUT /v2/token/session/:create`` (no auth; query
``consumerToken``, ``employeeToken``, ``expirationDate`` after today) answers
``{"value": {…, "token": …}}``; other calls need HTTP Basic ``<companyId or 0>:<session>``;
errors are Tripletex ``ApiError`` bodies; every answer carries ``x-tlx-request-id``. Numeric
``code`` values are placeholders, as in vendors.md.

Scenarios: the common ones, plus ``oversized`` (a 2 MiB answer). ``bad_credentials`` makes
the fake refuse the tokens at ``:create`` (404, or :attr:`TripletexFake.bad_token_status`)
and every session (401); ``not_found`` refuses the client company (403) and leaves it out of
``>withLoginAccess``; ``rate_limited`` answers 429 with ``Retry-After``; ``server_error`` 503
with ``Retry-After``.

Test hooks: :meth:`TripletexFake.expire_sessions` (Tripletex ends every session early),
:meth:`TripletexFake.revoke_employee_token` (the customer deletes the employee token).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import secrets
import uuid
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from aiohttp import web

from ._base import COMMON_SCENARIOS, VendorFake

__all__ = ["TripletexFake"]

OVERSIZED_BYTES = 2 * 1024 * 1024


class TripletexFake(VendorFake):
    """Serve with :class:`~integration_health.testing.LocalServer`; see the module docstring."""

    SCENARIOS: ClassVar[frozenset[str]] = COMMON_SCENARIOS | {"oversized"}
    retry_after_s: int = 30
    """``Retry-After`` sent with 429 and 503 answers."""

    def __init__(
        self,
        *,
        consumer_token: str,
        employee_token: str,
        company_id: int = 9_876_543,
        employee_id: int = 42,
        client_companies: dict[int, str] | None = None,
    ) -> None:
        super().__init__()
        self.consumer_token = consumer_token
        self.employee_token = employee_token
        self.company_id = company_id
        self.employee_id = employee_id
        self.client_companies: dict[int, str] = (
            {1_111_111: "Klient AS"} if client_companies is None else dict(client_companies)
        )
        """Client companies the employee token may log in to (accountant access)."""
        self.companies_without_rights: set[int] = set()
        """Listed client companies where the employee is nevertheless refused (403)."""
        self.bad_token_status = 404
        """How ``:create`` refuses unknown tokens (Tripletex uses 404 or 422)."""
        self.sessions: dict[str, date] = {}
        """Live session tokens and their expiration dates."""
        self.revoked = False
        self._ids = itertools.count(100)
        self.app.router.add_put("/v2/token/session/:create", self._create)
        self.app.router.add_get("/v2/token/session/>whoAmI", self._who_am_i)
        self.app.router.add_get("/v2/company/>withLoginAccess", self._with_login_access)

    # -- test hooks -------------------------------------------------------------------------

    def expire_sessions(self) -> None:
        """Tripletex ends every session now (later calls with them get 401)."""
        self.sessions.clear()

    def revoke_employee_token(self) -> None:
        """The customer deletes the employee token: sessions die, ``:create`` refuses it."""
        self.revoked = True
        self.sessions.clear()

    # -- helpers ----------------------------------------------------------------------------

    def _reply(
        self, status: int, body: Any, *, headers: dict[str, str] | None = None
    ) -> web.Response:
        request_id = str(uuid.uuid4())
        if isinstance(body, dict) and status >= 400:
            body = {
                "status": status,
                "link": "https://tripletex.no/v2-docs/",
                "developerMessage": None,
                "validationMessages": None,
                **body,
                "requestId": request_id,
            }
        return web.json_response(
            body, status=status, headers={"x-tlx-request-id": request_id, **(headers or {})}
        )

    async def generic_misbehaviour(self, request: web.Request) -> web.StreamResponse | None:
        """The common scenarios, in Tripletex's forms (5xx and 429 carry ``Retry-After``)."""
        if self.scenario == "server_error":
            return self._reply(
                503,
                {"code": 1000, "message": "Service temporarily unavailable"},
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.scenario == "rate_limited":
            return self._reply(
                429,
                {"code": 0, "message": "Too many requests"},
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.scenario == "garbage":
            return web.Response(
                text="<html><body>Tripletex is being upgraded</body></html>",
                content_type="text/html",
            )
        if self.scenario == "oversized":
            return web.Response(
                body=b'{"value":"' + b"x" * OVERSIZED_BYTES + b'"}',
                content_type="application/json",
            )
        return await super().generic_misbehaviour(request)

    def _session_of(self, request: web.Request) -> tuple[str, str] | None:
        """``(user, session)`` from a valid Basic header and a live session, else ``None``."""
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, session = decoded.partition(":")
        if not sep or session not in self.sessions or self.scenario == "bad_credentials":
            return None
        if self.sessions[session] <= datetime.now(UTC).date():
            return None
        return user, session

    def _unauthorized(self) -> web.Response:
        return self._reply(401, {"code": 3000, "message": "Unauthorized"})

    # -- routes -----------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        answer = await self.generic_misbehaviour(request)
        if answer is not None:
            return answer
        query = request.query
        missing = [
            name
            for name in ("consumerToken", "employeeToken", "expirationDate")
            if not query.get(name)
        ]
        if missing:
            return self._reply(
                422,
                {
                    "code": 15000,
                    "message": "Validation failed",
                    "validationMessages": [
                        {"field": name, "message": "Kan ikke være null."} for name in missing
                    ],
                },
            )
        try:
            expiration = date.fromisoformat(query["expirationDate"])
        except ValueError:
            expiration = None
        if expiration is None or expiration <= datetime.now(UTC).date():
            return self._reply(
                422,
                {
                    "code": 15000,
                    "message": "Validation failed",
                    "validationMessages": [
                        {"field": "expirationDate", "message": "Must be after today."}
                    ],
                },
            )
        if (
            self.scenario == "bad_credentials"
            or self.revoked
            or query["consumerToken"] != self.consumer_token
            or query["employeeToken"] != self.employee_token
        ):
            if self.bad_token_status == 422:
                return self._reply(
                    422,
                    {
                        "code": 15000,
                        "message": "Validation failed",
                        "validationMessages": [
                            {"field": "employeeToken", "message": "Invalid token."}
                        ],
                    },
                )
            return self._reply(self.bad_token_status, {"code": 6000, "message": "Object not found"})
        token = base64.b64encode(secrets.token_bytes(24)).decode()
        self.sessions[token] = expiration
        self.token_requests += 1
        return self._reply(
            200,
            {
                "value": {
                    "id": next(self._ids),
                    "version": 1,
                    "consumerToken": {"id": 1},
                    "employeeToken": {"id": 2},
                    "expirationDate": expiration.isoformat(),
                    "token": token,
                }
            },
        )

    async def _who_am_i(self, request: web.Request) -> web.StreamResponse:
        answer = await self.generic_misbehaviour(request)
        if answer is not None:
            return answer
        found = self._session_of(request)
        if found is None:
            return self._unauthorized()
        user, _session = found
        company = self.company_id
        if user not in ("", "0"):
            try:
                company = int(user)
            except ValueError:
                return self._unauthorized()
            if (
                self.scenario == "not_found"
                or company not in self.client_companies
                or company in self.companies_without_rights
            ):
                return self._reply(
                    403, {"code": 9000, "message": "You do not have access to this company"}
                )
        value: dict[str, Any] = {
            "employeeId": self.employee_id,
            "employee": {"id": self.employee_id},
            "companyId": company,
            "company": {"id": company},
            "language": "no",
        }
        fields = request.query.get("fields")
        if fields:
            wanted = {f.strip() for f in fields.split(",")}
            value = {k: v for k, v in value.items() if k in wanted}
        return self._reply(200, {"value": value})

    async def _with_login_access(self, request: web.Request) -> web.StreamResponse:
        answer = await self.generic_misbehaviour(request)
        if answer is not None:
            return answer
        found = self._session_of(request)
        if found is None or found[0] not in ("", "0"):
            return self._unauthorized()
        companies = {} if self.scenario == "not_found" else self.client_companies
        values = [{"id": cid, "name": name} for cid, name in companies.items()]
        return self._reply(
            200,
            {
                "fullResultSize": len(values),
                "from": 0,
                "count": len(values),
                "versionDigest": None,
                "values": values,
            },
        )
