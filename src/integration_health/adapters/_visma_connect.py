"""What the two Visma adapters share: the refresh-token grant, Visma error bodies, URL checks.

Visma.net ERP uses Visma Connect's client-credentials grant, which the shared
:mod:`~integration_health.adapters._oauth` helper does. Visma eAccounting does not: a server
integration holds a **refresh token** from an authorization-code flow (scope
``offline_access``), and Visma's identity server makes every refresh token **single use** —
each refresh returns a new one and cancels the old ("the same Refresh Token cannot be used
more than once", developer.vismaonline.com). ``_oauth`` only speaks client credentials and
does not keep the rotated refresh token, so this module adds the refresh-token grant on top
of the same :class:`~integration_health.adapters._http.HttpClient` and
:class:`~integration_health.adapters._tokens.TokenCache`, reporting failures with ``_oauth``'s
:class:`~integration_health.adapters._oauth.TokenRequestFailed`.

How the rotated refresh token is kept
-------------------------------------
- In memory, per grant (token URL + client id + the configured refresh token), for the life of
  the registry: the next refresh uses the newest token.
- Optionally in a file (``refresh_token_file``), written atomically with mode 0600 after each
  rotation, so a restart continues with the newest token. The file remembers which configured
  token it descends from: when an operator authorises again and changes ``refresh_token``, the
  stale file is ignored. If another process rotated the token first (``invalid_grant`` while
  the file holds a different token), the refresh is retried once with the file's token.
- A refresh runs in a task shielded from the check's cancellation: if the runner's deadline
  passes while Visma is answering, the rotated token is still stored, not lost.

The monitor must hold its **own** authorisation: sharing the sync system's refresh token
would invalidate the sync system's copy on the first refresh.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..model import ErrorCode
from ._http import HttpClient, HttpResponse, http_base_url
from ._oauth import TokenRequestFailed
from ._results import parse_retry_after
from ._tokens import Token, TokenCache, credential_key

__all__ = [
    "RefreshTokenClient",
    "RefreshTokenGrant",
    "Sent",
    "http_base_url",
    "retry_after_in_text",
    "visma_error",
]

log = logging.getLogger(__name__)

VENDOR_MESSAGE_MAX = 200
DEFAULT_EXPIRES_IN_S = 3600.0
_TRY_AGAIN = re.compile(r"(?i)try again in\s+(\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s)\b")


def retry_after_in_text(text: str) -> float | None:
    """Seconds from Visma's "… Try again in 55 seconds." (eAccounting's 429 body)."""
    match = _TRY_AGAIN.search(text)
    return parse_retry_after(match.group(1)) if match else None


def visma_error(response: HttpResponse) -> tuple[str, dict[str, Any]]:
    """The vendor's message (as `` Visma says: "…".``) and ids from a Visma error body.

    Understands eAccounting's ``{ErrorCode, DeveloperErrorMessage, ErrorId}``, Visma.net's
    ``{ExceptionType, ExceptionMessage, ExceptionFaultCode, ExceptionMessageID}`` and plain
    ``{message}`` bodies. Unknown bodies give an empty message.
    """
    info: dict[str, Any] = {}
    try:
        body = json.loads(response.body)
    except ValueError:
        return "", info
    if not isinstance(body, dict):
        return "", info
    for source, target in (
        ("ErrorCode", "vendor_code"),
        ("ExceptionFaultCode", "vendor_code"),
        ("ErrorId", "error_id"),
        ("ExceptionMessageID", "error_id"),
    ):
        value = body.get(source)
        if isinstance(value, str | int) and not isinstance(value, bool):
            info[target] = value if isinstance(value, int) else value[:100]
    text = ""
    for name in ("DeveloperErrorMessage", "ExceptionMessage", "message", "Message"):
        value = body.get(name)
        if isinstance(value, str) and value.strip():
            text = value.strip().splitlines()[0][:VENDOR_MESSAGE_MAX]
            break
    if text:
        info["vendor_message"] = text
    return (f' Visma says: "{text}".' if text else ""), info


# -- the refresh-token grant ---------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshTokenGrant:
    """One refresh-token grant: where to refresh and with what (secrets kept out of ``repr``)."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)
    """The refresh token as configured (the origin of every rotated successor)."""
    store_path: str | None = None
    """A file that keeps the newest refresh token across restarts (optional)."""
    provider: str = "Visma"

    @property
    def grant_key(self) -> str:
        """Identifies the grant (hash; secret-free): rotated tokens are kept under it."""
        return credential_key("refresh-grant", self.token_url, self.client_id, self.refresh_token)

    @property
    def cache_key(self) -> str:
        """The :class:`TokenCache` key of the grant's access token."""
        return credential_key("refresh-access", self.grant_key, self.client_secret)


class Sent(NamedTuple):
    """The API's answer to a call made with an access token."""

    response: HttpResponse
    token_renewed: bool
    """True when a cached access token was refused (401) and the call repeated with a new one."""


class RefreshTokenClient:
    """Access tokens from a refresh-token grant, cached, with the rotated refresh token kept."""

    def __init__(self, http: Callable[[], HttpClient], tokens: Callable[[], TokenCache]) -> None:
        self._http = http
        self._tokens = tokens
        self._current: dict[str, str] = {}
        self._background: set[asyncio.Task[Token]] = set()
        self.store_errors: dict[str, str] = {}
        """Per grant key, why the newest refresh token could not be saved (cleared on success)."""

    def current_refresh_token(self, grant: RefreshTokenGrant) -> str:
        """The newest refresh token known in memory (the configured one before any refresh)."""
        return self._current.get(grant.grant_key, grant.refresh_token)

    async def token(self, grant: RefreshTokenGrant) -> Token:
        """A valid access token: the cached one, or one from a refresh (single flight)."""
        return await self._tokens().get(grant.cache_key, lambda: self._refresh_shielded(grant))

    async def send(
        self, grant: RefreshTokenGrant, request: Callable[[Token], Awaitable[HttpResponse]]
    ) -> Sent:
        """Call an API; on 401 with a *cached* access token, refresh once and repeat."""
        tokens = self._tokens()
        was_cached = tokens.peek(grant.cache_key) is not None
        token = await self.token(grant)
        response = await request(token)
        if response.status != 401 or not was_cached:
            return Sent(response, token_renewed=False)
        current = tokens.peek(grant.cache_key)
        if current is not None and current.value == token.value:
            tokens.invalidate(grant.cache_key)
        token = await self.token(grant)
        return Sent(await request(token), token_renewed=True)

    async def _refresh_shielded(self, grant: RefreshTokenGrant) -> Token:
        # The exchange consumes the refresh token at Visma: let it finish (and store the
        # rotated token) even when the check is cancelled at its deadline.
        task = asyncio.ensure_future(self._refresh(grant))
        self._background.add(task)
        task.add_done_callback(self._settle)
        return await asyncio.shield(task)

    def _settle(self, task: asyncio.Task[Token]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failure reaches the awaiting check, if any

    async def _refresh(self, grant: RefreshTokenGrant) -> Token:
        refresh_token = self._current.get(grant.grant_key)
        if refresh_token is None:
            refresh_token = await self._read_store(grant) or grant.refresh_token
        response = await self._exchange(grant, refresh_token)
        if response.status == 400 and _oauth_error(response) == "invalid_grant":
            # Another process sharing the file may have rotated the token: try its successor.
            stored = await self._read_store(grant)
            if stored and stored != refresh_token:
                refresh_token = stored
                response = await self._exchange(grant, refresh_token)
        if response.status != 200:
            raise _refresh_failure(grant, response)
        try:
            body = json.loads(response.body)
        except ValueError:
            body = None
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access.strip():
            raise TokenRequestFailed(
                ErrorCode.BAD_RESPONSE,
                f"{grant.provider} answered the refresh (HTTP 200) without an access_token: "
                "check token_url.",
                details={"stage": "token", "http_status": 200},
            )
        assert isinstance(body, dict)
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated.strip() and rotated != refresh_token:
            self._current[grant.grant_key] = rotated.strip()
            await self._write_store(grant, rotated.strip())
        else:
            self._current[grant.grant_key] = refresh_token
        lifetime = body.get("expires_in")
        seconds = (
            float(lifetime)
            if isinstance(lifetime, int | float) and not isinstance(lifetime, bool) and lifetime > 0
            else DEFAULT_EXPIRES_IN_S
        )
        return Token.lasting(access.strip(), seconds)

    async def _exchange(self, grant: RefreshTokenGrant, refresh_token: str) -> HttpResponse:
        pair = f"{grant.client_id}:{grant.client_secret}".encode()
        return await self._http().request(
            "POST",
            grant.token_url,
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={
                "Authorization": "Basic " + base64.b64encode(pair).decode("ascii"),
                "Accept": "application/json",
            },
            follow_redirects=False,
        )

    # -- the optional file store -----------------------------------------------------------------

    async def _read_store(self, grant: RefreshTokenGrant) -> str | None:
        if not grant.store_path:
            return None
        return await asyncio.to_thread(_read_token_file, Path(grant.store_path), grant.grant_key)

    async def _write_store(self, grant: RefreshTokenGrant, refresh_token: str) -> None:
        if not grant.store_path:
            return
        try:
            await asyncio.to_thread(
                _write_token_file, Path(grant.store_path), grant.grant_key, refresh_token
            )
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            self.store_errors[grant.grant_key] = reason
            log.warning(
                "could not save the rotated refresh token to %s (%s); a restart will need a "
                "new authorisation",
                grant.store_path,
                reason,
            )
        else:
            self.store_errors.pop(grant.grant_key, None)


def _read_token_file(path: Path, origin: str) -> str | None:
    """The stored refresh token if the file descends from ``origin``, else ``None``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable refresh-token file %s (%s)", path, type(exc).__name__)
        return None
    if not isinstance(data, dict) or data.get("origin") != origin:
        return None
    token = data.get("refresh_token")
    return token if isinstance(token, str) and token else None


def _write_token_file(path: Path, origin: str, refresh_token: str) -> None:
    """Replace ``path`` atomically with the newest token (mode 0600)."""
    payload = json.dumps({"origin": origin, "refresh_token": refresh_token})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _oauth_error(response: HttpResponse) -> str:
    try:
        body = json.loads(response.body)
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return error.strip() if isinstance(error, str) else ""


def _refresh_failure(grant: RefreshTokenGrant, response: HttpResponse) -> TokenRequestFailed:
    """How a refused refresh is reported (the sentence says what to do)."""
    status = response.status
    error = _oauth_error(response)
    details: dict[str, Any] = {"stage": "token", "http_status": status}
    if error:
        details["oauth_error"] = error[:100]
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if retry_after is not None:
        details["retry_after_s"] = retry_after
    who = grant.provider
    if status == 429:
        return TokenRequestFailed(
            ErrorCode.RATE_LIMITED,
            f"{who} is rate limiting token refreshes (HTTP 429). Probes back off automatically.",
            details=details,
        )
    if error == "invalid_grant":
        return TokenRequestFailed(
            ErrorCode.AUTH,
            f"{who} refused the refresh token (invalid_grant): it was already used, revoked or "
            "has expired. Visma refresh tokens work once — authorise the monitor again (its "
            "own authorisation, not the sync system's) and update refresh_token; set "
            "refresh_token_file so rotated tokens survive restarts.",
            details=details,
        )
    if error in ("invalid_client", "unauthorized_client"):
        return TokenRequestFailed(
            ErrorCode.AUTH,
            f"{who} rejected the client id or secret ({error}): check client_id and client_secret.",
            details=details,
        )
    if error in ("unsupported_grant_type", "invalid_request"):
        return TokenRequestFailed(
            ErrorCode.CONFIG_INVALID,
            f"{who} refused the refresh request ({error}): check token_url.",
            details=details,
        )
    if status >= 500:
        return TokenRequestFailed(
            ErrorCode.SERVER_ERROR,
            f"{who} failed to refresh the token (HTTP {status}); usually on Visma's side.",
            details=details,
        )
    if status == 404:
        return TokenRequestFailed(
            ErrorCode.NOT_FOUND,
            f"The token URL does not exist (HTTP 404 from {who}): check token_url.",
            details=details,
        )
    if status in (400, 401, 403):
        return TokenRequestFailed(
            ErrorCode.AUTH,
            f"{who} refused the refresh (HTTP {status}): check client_id, client_secret and "
            "refresh_token.",
            details=details,
        )
    return TokenRequestFailed(
        ErrorCode.BAD_RESPONSE,
        f"Unexpected HTTP {status} from {who}'s token endpoint.",
        details=details,
    )
