"""Real SSH/SFTP servers on 127.0.0.1, for testing the ``sftp`` adapter and for ``demo``.

- :class:`SftpTestServer` — an asyncssh server with a freshly generated Ed25519 host key,
  password and public-key users, and an SFTP subsystem chrooted to a local directory.
- :class:`HangingSshServer` — accepts TCP connections, optionally sends an SSH banner, and
  then says nothing more (a server stuck before or during key exchange).

Both run in the current event loop (``async with``) or in a thread with a loop of their own
(``with server.in_thread():``), like :class:`~integration_health.testing.LocalServer`::

    async with SftpTestServer(tmp_path, users={"monitor": "s3cret"}) as server:
        config = {"host": "127.0.0.1", "port": server.port, "username": "monitor",
                  "password": "${SFTP_PASSWORD}",
                  "host_key_fingerprint": server.host_key_fingerprint}

This module needs ``asyncssh`` (the ``sftp`` extra: ``pip install 'integration-health[sftp]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncssh

__all__ = ["HangingSshServer", "SftpTestServer", "generate_client_key"]


def generate_client_key(passphrase: str | None = None) -> tuple[str, asyncssh.SSHKey]:
    """A new Ed25519 key pair: the private key in OpenSSH format (encrypted with
    ``passphrase`` if given, with ssh-keygen's 16 bcrypt rounds), and the key to authorise
    on the server."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    private = key.export_private_key(
        "openssh", passphrase=passphrase, rounds=16, ignore_few_rounds=True
    )
    return private.decode("ascii"), key


class _Threaded:
    """``start()``/``stop()`` in the running loop, or in a thread of their own."""

    async def start(self) -> Self:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[Self]:
        """Serve from a daemon thread with its own event loop while the block runs."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=serve, name=type(self).__name__, daemon=True)
        thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)


class SftpTestServer(_Threaded):
    """An SSH server offering only SFTP, rooted at ``root``.

    ``users`` maps user names to passwords; ``authorized_keys`` maps user names to the public
    keys (``SSHKey`` objects or OpenSSH public-key lines) that may log in. With ``sftp=False``
    the server speaks SSH but offers no SFTP subsystem. ``connections`` counts accepted
    connections, ``auth_attempts`` passwords and keys offered, ``logins`` successful logins.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        users: Mapping[str, str] | None = None,
        authorized_keys: Mapping[str, Sequence[asyncssh.SSHKey | str]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        host_key: asyncssh.SSHKey | None = None,
        sftp: bool = True,
    ) -> None:
        self.root = Path(root)
        self.users = dict(users or {})
        self.authorized_keys = {
            name: [asyncssh.import_public_key(k) if isinstance(k, str) else k for k in keys]
            for name, keys in (authorized_keys or {}).items()
        }
        self.host = host
        self.port = port
        self.host_key = host_key or asyncssh.generate_private_key("ssh-ed25519")
        self.sftp = sftp
        self.connections = 0
        self.auth_attempts = 0
        self.logins = 0
        self._acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def host_key_fingerprint(self) -> str:
        """The host key's ``SHA256:…`` fingerprint, as ``ssh-keygen -l`` prints it."""
        return self.host_key.get_fingerprint("sha256")

    async def start(self) -> Self:
        """Start listening."""
        self._acceptor = await asyncssh.listen(
            self.host,
            self.port,
            server_host_keys=[self.host_key],
            server_factory=lambda: _SftpOnlyServer(self),
            sftp_factory=(
                (lambda chan: asyncssh.SFTPServer(chan, chroot=os.fsencode(self.root)))
                if self.sftp
                else None
            ),
            allow_scp=False,
            config=None,
        )
        self.port = self._acceptor.get_port()
        return self

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None


class _SftpOnlyServer(asyncssh.SSHServer):
    """Password and public-key authentication against :class:`SftpTestServer`'s tables."""

    def __init__(self, owner: SftpTestServer) -> None:
        self._owner = owner

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._owner.connections += 1

    def begin_auth(self, username: str) -> bool:
        return True  # always require authentication

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        self._owner.auth_attempts += 1
        expected = self._owner.users.get(username)
        return expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), password.encode("utf-8")
        )

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self._owner.auth_attempts += 1
        allowed = self._owner.authorized_keys.get(username, [])
        return any(key.public_data == known.public_data for known in allowed)

    def auth_completed(self) -> None:
        self._owner.logins += 1


class HangingSshServer(_Threaded):
    """Accepts TCP connections and then stalls: after sending a banner, or before it.

    With ``send_banner`` (default) a client sees ``SSH-2.0-…`` and then nothing — no key
    exchange — as with an overloaded or wedged daemon. ``connections`` counts accepted
    connections.
    """

    BANNER = b"SSH-2.0-IntegrationHealthHangingServer_1.0\r\n"

    def __init__(self, *, send_banner: bool = True, host: str = "127.0.0.1", port: int = 0) -> None:
        self.send_banner = send_banner
        self.host = host
        self.port = port
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Self:
        """Start listening."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        if self.send_banner:
            writer.write(self.BANNER)
            await writer.drain()
        # Read (and ignore) whatever the client sends until it goes away.
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
        self._writers.discard(writer)
        writer.close()
