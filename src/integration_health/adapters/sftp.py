"""SFTP server (bank and ERP file drops): connect, pinned host key, log in, ``stat`` a directory.

Probe, one rung at a time (each rung's time is in ``details``):

1. ``dns_ms`` — resolve ``host``; the SSRF guard refuses names that resolve only to loopback,
   private, link-local or metadata addresses, and such IP literals, unless
   ``INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS=true``;
2. ``connect_ms`` — TCP connect to the first vetted address that accepts;
3. ``banner_ms`` — the server's ``SSH-2.0-…`` identification line (kept as
   ``server_version``): proof that an SSH daemon answers, not just an open port;
4. ``kex_ms`` — key exchange, and the host key checked against ``host_key_fingerprint``. The
   key is **never** accepted unseen: the fingerprint is a required field;
5. ``auth_ms`` — log in with the password and/or private key;
6. ``sftp_ms`` and ``stat_ms`` — open the SFTP subsystem and ``stat`` ``path`` (default ``.``,
   the login directory), which must be a directory. Nothing is written or listed.

Cost: one SSH login per check. Many SFTP servers ban an address after a few failed logins
(fail2ban): a wrong password probed every 15 minutes can get the monitor's address banned, so
fix ``auth`` failures promptly (the scheduler already backs off after repeated failures).

===============================================================  ===========  ==============
observation                                                       status       error_code
===============================================================  ===========  ==============
logged in, directory present                                      healthy      —
host key does not match the pinned fingerprint                    unreachable  auth
password or key rejected; directory not readable (permission)     unreachable  auth
directory missing, or not a directory                             unreachable  not_found
no common algorithm (key exchange failed)                         unreachable  connection
connection refused / closed before or during the SSH handshake    unreachable  connection
something other than SSH answers; no SFTP subsystem               unreachable  bad_response
name does not resolve                                             unreachable  dns
no banner / no key exchange / no answer before the deadline       unreachable  timeout
no fingerprint or credentials, unreadable key, private target     unreachable  config_invalid
===============================================================  ===========  ==============

Why a host-key mismatch is ``auth``: it is the *server* failing to authenticate itself, so the
credentials were (rightly) never sent. ``tls`` would be wrong — there is no TLS in SSH, and
dashboards read ``tls`` as "certificate problem". The result says so in words ("host key does
not match the pinned fingerprint — possible man-in-the-middle or a rotated key") and sets
``details.host_key_mismatch = true`` with the fingerprint the server presented, so alerts can
tell it apart from rejected credentials.

``asyncssh`` is imported only when a check runs (install the ``sftp`` extra:
``pip install 'integration-health[sftp]'``); without it the check reports ``config_invalid``.
The check sets no timeout of its own: the runner's deadline ends a stalled handshake.
"""

from __future__ import annotations

import asyncio
import re
import socket
import stat
import sys
import time
from typing import TYPE_CHECKING, Any, Literal, Self
from uuid import UUID

from pydantic import Field, SecretStr, field_validator, model_validator

from .._version import __version__
from ..checks import Adapter, CheckContext
from ..config import IntegrationConfigBase
from ..errors import ConfigError
from ..model import ErrorCode, HealthResult
from ..transport_errors import ProbeFailure, classify_exception
from ._network import connect_first, normalize_host, resolve_target

if TYPE_CHECKING:
    import asyncssh

__all__ = ["ADAPTER", "SftpCheck", "SftpConfig"]

_SHA256 = re.compile(r"(?i:SHA256):([A-Za-z0-9+/]{43})=?")
_MD5 = re.compile(r"(?i:MD5):((?:[0-9A-Fa-f]{2}:){15}[0-9A-Fa-f]{2})")
_BANNER_LIMIT = 8_192
"""RFC 4253 §4.2 lets a server send other lines before ``SSH-2.0-…``; this many bytes at most."""
_DIRECTORY = 2  # FILEXFER_TYPE_DIRECTORY
_UNKNOWN_TYPE = 5  # FILEXFER_TYPE_UNKNOWN
_CLIENT_VERSION = f"IntegrationHealth_{__version__}"
_FINGERPRINT_HINT = (
    "get it with `ssh-keyscan -p PORT HOST | ssh-keygen -lf -` and confirm it with the "
    "server's owner"
)


class SftpConfig(IntegrationConfigBase):
    """An SFTP server, its pinned host key, a login and a directory that must exist."""

    integration_type: Literal["sftp"] = "sftp"
    host: str = Field(min_length=1, max_length=253)
    """Host name or IP address of the SSH server (no scheme, no port)."""
    port: int = Field(default=22, ge=1, le=65_535)
    """TCP port (default 22)."""
    username: str = Field(min_length=1, max_length=256)
    """The login name."""
    password: SecretStr | None = None
    """Password (a ``${VAR}`` or ``${file:/path}`` reference)."""
    private_key: SecretStr | None = None
    """Private key in OpenSSH, PEM or PuTTY format — usually ``${file:/run/secrets/id}``."""
    private_key_passphrase: SecretStr | None = None
    """Passphrase of an encrypted ``private_key`` (a reference)."""
    host_key_fingerprint: str = Field(min_length=1, max_length=200)
    """The server's host key as ``ssh-keygen -l`` prints it: ``SHA256:…`` (or ``MD5:aa:bb:…``).
    Required: an unknown host key is never accepted."""
    host_key_algorithms: list[str] | None = Field(default=None, min_length=1)
    """Host key algorithms to offer, e.g. ``["ssh-rsa"]`` for a legacy server or to select
    the key the fingerprint belongs to (default: every modern non-certificate algorithm)."""
    path: str = Field(default=".", min_length=1, max_length=4_096)
    """Directory to ``stat`` after login (default ``.``, the login directory)."""

    @model_validator(mode="before")
    @classmethod
    def _fingerprint_is_required(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("host_key_fingerprint"):
            raise ValueError(
                "field 'host_key_fingerprint' is required: the server's host key is never "
                f"accepted unseen; {_FINGERPRINT_HINT}"
            )
        return data

    @field_validator("host")
    @classmethod
    def _host_shape(cls, value: str) -> str:
        return normalize_host(value)

    @field_validator("host_key_fingerprint")
    @classmethod
    def _fingerprint_shape(cls, value: str) -> str:
        value = value.strip()
        if "${" in value:
            return value
        if match := _SHA256.fullmatch(value):
            return f"SHA256:{match.group(1)}"
        if match := _MD5.fullmatch(value):
            return f"MD5:{match.group(1).lower()}"
        raise ValueError(
            "must be a host key fingerprint like SHA256:<43 base64 characters> (or "
            f"MD5:aa:bb:…); {_FINGERPRINT_HINT}"
        )

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.password is None and self.private_key is None:
            raise ValueError("give a password or a private_key (or both) to log in with")
        if self.private_key_passphrase is not None and self.private_key is None:
            raise ValueError("private_key_passphrase is set but private_key is not")
        return self


class SftpCheck:
    """Connects, verifies the pinned host key, logs in and stats the directory."""

    integration_type = "sftp"

    def __init__(self, context: CheckContext) -> None:
        self._settings = context.settings

    async def check(self, org_id: UUID, config: SftpConfig) -> HealthResult:
        """One SSH login and one SFTP ``stat``; the first rung that fails decides."""
        details: dict[str, Any] = {"port": config.port, "path": config.path}
        started = time.monotonic()
        sock: socket.socket | None = None
        probe: _Probe | None = None
        try:
            ssh = _import_asyncssh()
            key = await _load_private_key(config)
            probe = _Probe(config.host_key_fingerprint)
            options = await _options(config, key, probe)
            target = await resolve_target(
                config.host, config.port, allow_private=self._settings.allow_private_networks
            )
            details["dns_ms"] = round(target.dns_ms, 2)
            mark = time.monotonic()
            sock, details["address"] = await connect_first(target)
            details["connect_ms"] = _ms_since(mark)
            mark = time.monotonic()
            details["server_version"] = await _read_banner(sock)
            details["banner_ms"] = _ms_since(mark)
            probe.kex_started = time.monotonic()
            connected, sock = sock, None  # asyncssh owns the socket from here
            conn = await ssh.connect(
                target.host, config.port, sock=connected, options=options, config=None
            )
            details.update(probe.phases())
            async with conn:
                mark = time.monotonic()
                async with conn.start_sftp_client() as sftp:
                    details["sftp_ms"] = _ms_since(mark)
                    mark = time.monotonic()
                    attrs = await sftp.stat(config.path)
                    details["stat_ms"] = _ms_since(mark)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a result
            if probe is not None:
                details.update(probe.phases())
            code, message = _classify(exc, config, probe, details)
            return HealthResult.unreachable(code, message, _ms_since(started), details=details)
        finally:
            if sock is not None:
                sock.close()
        latency_ms = _ms_since(started)
        if not _is_directory(attrs):
            return HealthResult.unreachable(
                ErrorCode.NOT_FOUND,
                f"{config.path!r} exists on the server but is not a directory.",
                latency_ms,
                details=details,
            )
        return HealthResult.healthy(latency_ms, details=details)


class _Probe:
    """Timestamps and the host key seen, filled in by asyncssh's client callbacks."""

    def __init__(self, pinned: str) -> None:
        self.pinned = pinned
        self.kex_started = 0.0
        self.host_key_checked: float | None = None
        self.authenticated: float | None = None
        self.presented: str | None = None
        self.algorithm: str | None = None
        self.mismatch = False

    def check_host_key(self, key: asyncssh.SSHKey) -> bool:
        """True when ``key`` is the pinned one; remembers what was presented."""
        self.host_key_checked = time.monotonic()
        self.algorithm = key.get_algorithm()
        if self.pinned.startswith("MD5:"):
            self.presented = key.get_fingerprint("md5")
            matches = self.presented.lower() == self.pinned.lower()
        else:
            self.presented = key.get_fingerprint("sha256").rstrip("=")
            matches = self.presented == self.pinned
        self.mismatch = not matches
        return matches

    def phases(self) -> dict[str, Any]:
        """``kex_ms``/``auth_ms`` as far as they got, and the host key's algorithm."""
        phases: dict[str, Any] = {}
        if self.host_key_checked is not None:
            phases["kex_ms"] = round((self.host_key_checked - self.kex_started) * 1000, 2)
            phases["host_key_algorithm"] = self.algorithm
            if self.authenticated is not None:
                phases["auth_ms"] = round((self.authenticated - self.host_key_checked) * 1000, 2)
        return phases


def _import_asyncssh() -> Any:
    """The ``asyncssh`` module, or :class:`ConfigError` saying which extra to install."""
    try:
        import asyncssh  # noqa: PLC0415 - optional dependency (the sftp extra)
    except ImportError:
        raise ConfigError(
            "the sftp check needs asyncssh: pip install 'integration-health[sftp]'"
        ) from None
    return asyncssh


async def _load_private_key(config: SftpConfig) -> asyncssh.SSHKey | None:
    """Parse the private key in a thread (decrypting can take a while); errors name no data."""
    import asyncssh  # noqa: PLC0415 - optional dependency (the sftp extra)

    if config.private_key is None:
        return None
    data = config.private_key.get_secret_value()
    passphrase = (
        config.private_key_passphrase.get_secret_value()
        if config.private_key_passphrase is not None
        else None
    )
    try:
        key = await asyncio.to_thread(asyncssh.import_private_key, data, passphrase)
    except asyncssh.KeyEncryptionError:
        raise ConfigError(
            "private_key could not be decrypted: private_key_passphrase is wrong"
        ) from None
    except asyncssh.KeyImportError as exc:
        hint = str(exc) if "passphrase" in str(exc).lower() else "not a supported format"
        raise ConfigError(
            f"private_key is not a private key the sftp check can read ({hint}); expected "
            "OpenSSH, PEM (PKCS#1/PKCS#8) or PuTTY format"
        ) from None
    return key


async def _options(
    config: SftpConfig, key: asyncssh.SSHKey | None, probe: _Probe
) -> asyncssh.SSHClientConnectionOptions:
    """Connection options that read nothing from ``~/.ssh`` or an agent, and pin the key.

    Built in a thread, as asyncssh does itself (preparing options touches the file system),
    and before any connection, so an invalid option never reaches the server.
    """
    import asyncssh  # noqa: PLC0415 - optional dependency (the sftp extra)
    from asyncssh.public_key import get_default_public_key_algs  # noqa: PLC0415

    class ProbeClient(asyncssh.SSHClient):
        def validate_host_public_key(
            self, host: str, addr: str, port: int, key: asyncssh.SSHKey
        ) -> bool:
            return probe.check_host_key(key)

        def auth_completed(self) -> None:
            probe.authenticated = time.monotonic()

    algorithms = config.host_key_algorithms or [
        alg.decode("ascii") for alg in get_default_public_key_algs()
    ]
    try:
        options = await asyncio.to_thread(
            asyncssh.SSHClientConnectionOptions,
            config=None,  # no ~/.ssh/config (ProxyCommand & co. are not ours to follow)
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            client_keys=[key] if key is not None else None,
            agent_path=None,
            agent_forwarding=False,
            known_hosts=_no_known_hosts,  # every key goes through validate_host_public_key
            x509_trusted_certs=None,
            x509_trusted_cert_paths=[],
            server_host_key_algs=algorithms,
            gss_host=None,
            client_version=_CLIENT_VERSION,
            client_factory=ProbeClient,
        )
    except ValueError as exc:
        raise ConfigError(f"the SSH options are invalid: {exc}") from None
    return options


def _no_known_hosts(_host: str, _addr: str, _port: int | None) -> tuple[list[Any], ...]:
    return [], [], []


async def _read_banner(sock: socket.socket) -> str:
    """Wait for the server's ``SSH-…`` identification line and return it.

    The line itself is only peeked at (asyncssh reads it again). Lines a server sends before
    it (RFC 4253 §4.2 allows them; asyncssh would skip them too) are consumed, so that a
    server which sends something else and hangs up is seen closing, not waited on.
    """
    first_other: bytes | None = None
    skipped = 0
    while True:
        await _readable(sock)
        try:
            data = sock.recv(_BANNER_LIMIT, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        if not data:
            if first_other is None:
                raise ProbeFailure(
                    ErrorCode.CONNECTION,
                    "The server closed the connection before sending its SSH banner.",
                )
            sample = first_other.strip()[:60].decode("ascii", "replace")
            raise ProbeFailure(
                ErrorCode.BAD_RESPONSE,
                f"No SSH banner: the server sent {sample!r} and closed the connection "
                "(is this an SSH port?).",
            )
        if data.startswith(b"SSH-") or b"SSH-".startswith(data):
            line, newline, _rest = data.partition(b"\n")
            if newline:
                return line.rstrip(b"\r").decode("ascii", "replace")
            if len(data) >= _BANNER_LIMIT:
                raise ProbeFailure(ErrorCode.BAD_RESPONSE, "The SSH banner is far too long.")
            await asyncio.sleep(0.01)  # a partial line: let the rest arrive
            continue
        end = data.find(b"\n")
        chunk = data if end < 0 else data[: end + 1]
        sock.recv(len(chunk))  # already buffered: this does not block
        first_other = first_other if first_other is not None else chunk
        skipped += len(chunk)
        if skipped > _BANNER_LIMIT:
            sample = first_other.strip()[:60].decode("ascii", "replace")
            raise ProbeFailure(
                ErrorCode.BAD_RESPONSE,
                f"No SSH banner: something else answers on that port (it sent {sample!r}).",
            )


async def _readable(sock: socket.socket) -> None:
    """Wait until ``sock`` has data (or EOF) to read."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


def _classify(
    exc: Exception, config: SftpConfig, probe: _Probe | None, details: dict[str, Any]
) -> tuple[ErrorCode, str]:
    """The error code and sentence for anything raised while probing."""
    if isinstance(exc, ConfigError | ProbeFailure) or "asyncssh" not in sys.modules:
        return classify_exception(exc)
    import asyncssh as ssh  # noqa: PLC0415 - already imported by the check

    if isinstance(exc, ssh.HostKeyNotVerifiable):
        if probe is not None and probe.mismatch:
            details.update(host_key_mismatch=True, host_key_presented=probe.presented)
            return ErrorCode.AUTH, (
                "The server's host key does not match the pinned fingerprint — possible "
                f"man-in-the-middle or a rotated key. It presented {probe.algorithm} "
                f"{probe.presented}, not {config.host_key_fingerprint}. Credentials were not "
                "sent. If the key was rotated on purpose, confirm the new fingerprint with the "
                "server's owner and update host_key_fingerprint."
            )
        return ErrorCode.AUTH, f"The server's host key could not be verified ({exc.reason})."
    if isinstance(exc, ssh.PermissionDenied):
        tried = " and ".join(
            name
            for name, value in (("password", config.password), ("key", config.private_key))
            if value is not None
        )
        return ErrorCode.AUTH, (
            f"The server rejected the login of user {config.username!r} ({tried}): correct "
            "the credentials before the server's ban list (fail2ban) catches the monitor."
        )
    if isinstance(exc, ssh.KeyExchangeFailed):
        return ErrorCode.CONNECTION, (
            f"SSH key exchange failed ({exc.reason}): the server and the monitor share no "
            "algorithm; for a legacy server, set host_key_algorithms."
        )
    if isinstance(exc, ssh.ProtocolError | ssh.ProtocolNotSupported):
        return ErrorCode.BAD_RESPONSE, f"The server broke the SSH protocol ({exc.reason})."
    if isinstance(exc, ssh.DisconnectError):
        return ErrorCode.CONNECTION, f"The server closed the SSH connection ({exc.reason})."
    if isinstance(exc, ssh.ChannelOpenError):
        return ErrorCode.BAD_RESPONSE, (
            f"The server refused to open an SFTP session ({exc.reason}): is SFTP enabled?"
        )
    if isinstance(exc, ssh.SFTPNoSuchFile | ssh.SFTPNoSuchPath):
        return ErrorCode.NOT_FOUND, f"The directory {config.path!r} does not exist on the server."
    if isinstance(exc, ssh.SFTPPermissionDenied):
        return ErrorCode.AUTH, (
            f"User {config.username!r} logged in but may not read {config.path!r} "
            "(permission denied)."
        )
    if isinstance(exc, ssh.SFTPError):
        return ErrorCode.BAD_RESPONSE, f"The SFTP server refused the request ({exc.reason})."
    return classify_exception(exc)


def _is_directory(attrs: Any) -> bool:
    kind = getattr(attrs, "type", _UNKNOWN_TYPE)
    if kind not in (None, _UNKNOWN_TYPE):
        return bool(kind == _DIRECTORY)
    permissions = getattr(attrs, "permissions", None)
    return permissions is None or stat.S_ISDIR(permissions)


def _ms_since(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 2)


ADAPTER = Adapter(
    "sftp",
    SftpConfig,
    SftpCheck,
    description="SFTP: banner, pinned host key, login and stat of a directory.",
)
