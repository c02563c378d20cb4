"""The sftp adapter against real SSH/SFTP servers (asyncssh) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from pydantic import ValidationError

from integration_health import ErrorCode, HealthResult, HealthStatus, Settings, run_health_checks
from integration_health.checks import (
    BrokenIntegration,
    CheckRegistry,
    IntegrationRecord,
    default_registry,
)
from integration_health.testing.sftp_server import (
    HangingSshServer,
    SftpTestServer,
    generate_client_key,
)

PASSWORD = "canary-Sftp-Pass-9d2e71"
WRONG_PASSWORD = "canary-Wrong-Pass-44a0c3"
PASSPHRASE = "canary-Key-Phrase-61b7f5"
USER = "monitor"
PHASES = {"dns_ms", "connect_ms", "banner_ms", "kex_ms", "auth_ms", "sftp_ms", "stat_ms"}


@dataclass
class Sftp:
    """A running SFTP server and what a config needs to reach it."""

    server: SftpTestServer
    key_file: Path
    encrypted_key_file: Path
    key_text: str
    encrypted_key_text: str


@pytest.fixture(autouse=True)
def _canaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("SFTP_WRONG_PASSWORD", WRONG_PASSWORD)
    monkeypatch.setenv("SFTP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("SFTP_WRONG_PASSPHRASE", WRONG_PASSWORD)


@pytest.fixture(scope="module")
def client_keys() -> tuple[tuple[str, asyncssh.SSHKey], tuple[str, asyncssh.SSHKey]]:
    """A plain and a passphrase-protected client key, made once for the module."""
    return generate_client_key(), generate_client_key(passphrase=PASSPHRASE)


@pytest.fixture
async def sftp(
    tmp_path: Path,
    client_keys: tuple[tuple[str, asyncssh.SSHKey], tuple[str, asyncssh.SSHKey]],
) -> AsyncIterator[Sftp]:
    root = tmp_path / "root"
    (root / "inbox").mkdir(parents=True)
    (root / "report.csv").write_text("a,b\n")
    (key_text, key), (encrypted_text, encrypted) = client_keys
    key_file = tmp_path / "id_ed25519"
    key_file.write_text(key_text + "\n")
    encrypted_file = tmp_path / "id_encrypted"
    encrypted_file.write_text(encrypted_text)
    server = SftpTestServer(root, users={USER: PASSWORD}, authorized_keys={USER: [key, encrypted]})
    async with server:
        yield Sftp(server, key_file, encrypted_file, key_text, encrypted_text)


@pytest.fixture
def registry() -> CheckRegistry:
    return default_registry(Settings(allow_private_networks=True))


def fields(sftp: Sftp, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": sftp.server.port,
        "username": USER,
        "password": "${SFTP_PASSWORD}",
        "host_key_fingerprint": sftp.server.host_key_fingerprint,
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def record(**config: Any) -> dict[str, Any]:
    return {
        "integration_id": str(uuid.uuid4()),
        "org_id": str(uuid.uuid4()),
        "integration_type": "sftp",
        "name": "sftp probe",
        **config,
    }


async def probe(registry: CheckRegistry, *, timeout_s: float = 5.0, **config: Any) -> HealthResult:
    data = record(**config)
    parsed = registry.parse(data)
    [(_, result)] = await run_health_checks(
        parsed.org_id, integrations=[parsed], store=None, registry=registry, timeout_s=timeout_s
    )
    return result


def assert_no_secrets(result: HealthResult, caplog: pytest.LogCaptureFixture, *more: str) -> None:
    dumped = result.model_dump_json()
    for secret in (PASSWORD, WRONG_PASSWORD, PASSPHRASE, *more):
        assert secret not in dumped
        assert secret not in caplog.text


def key_body(key_text: str) -> str:
    """A line from the middle of a private key: what a leak would contain."""
    lines = [line for line in key_text.splitlines() if line and not line.startswith("-----")]
    return lines[len(lines) // 2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- logins -------------------------------------------------------------------------------


async def test_good_password_is_healthy_with_every_phase(
    sftp: Sftp, registry: CheckRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A good password and an existing directory are healthy; every rung's time is reported."""
    caplog.set_level(logging.DEBUG)
    result = await probe(registry, **fields(sftp))
    assert (result.status, result.error_code) == (HealthStatus.HEALTHY, None), result.error
    assert set(result.details) >= PHASES
    assert all(result.details[phase] >= 0 for phase in PHASES)
    assert result.details["server_version"].startswith("SSH-2.0-")
    assert result.details["host_key_algorithm"] == "ssh-ed25519"
    assert sftp.server.logins == 1
    assert_no_secrets(result, caplog)


async def test_good_private_key_from_a_file_reference_is_healthy(
    sftp: Sftp, registry: CheckRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A private key read through ${file:…} logs in; the key never shows in results or logs."""
    caplog.set_level(logging.DEBUG)
    result = await probe(
        registry, **fields(sftp, password=None, private_key=f"${{file:{sftp.key_file}}}")
    )
    assert result.status is HealthStatus.HEALTHY, result.error
    assert set(result.details) >= PHASES
    assert_no_secrets(result, caplog, key_body(sftp.key_text))


async def test_encrypted_private_key_with_its_passphrase_is_healthy(
    sftp: Sftp, registry: CheckRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """An encrypted key is decrypted with private_key_passphrase and logs in."""
    caplog.set_level(logging.DEBUG)
    result = await probe(
        registry,
        **fields(
            sftp,
            password=None,
            private_key=f"${{file:{sftp.encrypted_key_file}}}",
            private_key_passphrase="${SFTP_PASSPHRASE}",
        ),
    )
    assert result.status is HealthStatus.HEALTHY, result.error
    assert_no_secrets(result, caplog, key_body(sftp.encrypted_key_text))


async def test_wrong_passphrase_is_config_invalid_without_leaking(
    sftp: Sftp, registry: CheckRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A passphrase that does not decrypt the key is config_invalid; nothing is sent."""
    caplog.set_level(logging.DEBUG)
    result = await probe(
        registry,
        **fields(
            sftp,
            password=None,
            private_key=f"${{file:{sftp.encrypted_key_file}}}",
            private_key_passphrase="${SFTP_WRONG_PASSPHRASE}",
        ),
    )
    assert (result.status, result.error_code) == (
        HealthStatus.UNREACHABLE,
        ErrorCode.CONFIG_INVALID,
    )
    assert "passphrase" in (result.error or "")
    assert sftp.server.connections == 0
    assert_no_secrets(result, caplog, key_body(sftp.encrypted_key_text))


async def test_garbage_private_key_is_config_invalid(
    sftp: Sftp, registry: CheckRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A private_key that is not a key is config_invalid and its content is not echoed."""
    caplog.set_level(logging.DEBUG)
    junk = tmp_path / "junk"
    junk.write_text("canary-Not-A-Key-0b9c1d")
    result = await probe(registry, **fields(sftp, password=None, private_key=f"${{file:{junk}}}"))
    assert result.error_code is ErrorCode.CONFIG_INVALID
    assert_no_secrets(result, caplog, "canary-Not-A-Key-0b9c1d")


async def test_wrong_password_is_unreachable_auth_without_leaking(
    sftp: Sftp, registry: CheckRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A rejected password is unreachable/auth; neither password appears anywhere."""
    caplog.set_level(logging.DEBUG)
    result = await probe(registry, **fields(sftp, password="${SFTP_WRONG_PASSWORD}"))
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
    assert f"user {USER!r}" in (result.error or "")
    assert "host_key_mismatch" not in result.details
    assert {"dns_ms", "connect_ms", "banner_ms", "kex_ms"} <= set(result.details)
    assert sftp.server.logins == 0
    assert_no_secrets(result, caplog)


# -- the pinned host key ------------------------------------------------------------------


async def test_host_key_mismatch_is_auth_and_sends_no_credentials(
    sftp: Sftp, registry: CheckRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A host key other than the pinned one is unreachable/auth, flagged, and no login is tried."""
    caplog.set_level(logging.DEBUG)
    other = asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("sha256")
    result = await probe(registry, **fields(sftp, host_key_fingerprint=other))
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
    assert "host key does not match the pinned fingerprint" in (result.error or "")
    assert "man-in-the-middle or a rotated key" in (result.error or "")
    assert result.details["host_key_mismatch"] is True
    assert result.details["host_key_presented"] == sftp.server.host_key_fingerprint
    assert sftp.server.auth_attempts == 0
    assert_no_secrets(result, caplog)


async def test_md5_fingerprint_pin_is_accepted(sftp: Sftp, registry: CheckRegistry) -> None:
    """A legacy MD5:aa:bb:… pin of the right key logs in too."""
    md5 = sftp.server.host_key.get_fingerprint("md5").upper()  # the pin is case-insensitive
    result = await probe(registry, **fields(sftp, host_key_fingerprint=md5))
    assert result.status is HealthStatus.HEALTHY, result.error


async def test_no_common_host_key_algorithm_is_connection(
    sftp: Sftp, registry: CheckRegistry
) -> None:
    """Offering only ssh-rsa to an Ed25519-only server fails key exchange: connection."""
    result = await probe(registry, **fields(sftp, host_key_algorithms=["ssh-rsa"]))
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.CONNECTION)
    assert "host_key_algorithms" in (result.error or "")
    assert sftp.server.auth_attempts == 0


async def test_unknown_host_key_algorithm_is_config_invalid(
    sftp: Sftp, registry: CheckRegistry
) -> None:
    """An algorithm name asyncssh does not know is config_invalid, before any connection."""
    result = await probe(registry, **fields(sftp, host_key_algorithms=["ssh-nonsense"]))
    assert (result.status, result.error_code) == (
        HealthStatus.UNREACHABLE,
        ErrorCode.CONFIG_INVALID,
    ), result.error
    assert sftp.server.connections == 0


async def test_local_ssh_config_known_hosts_and_agent_are_ignored(
    sftp: Sftp, registry: CheckRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monitor's own ~/.ssh (config, known_hosts, keys) and SSH agent play no part."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    marker = tmp_path / "proxy-command-ran"
    (home / ".ssh" / "config").write_text(
        f"Host *\n  User intruder\n  PreferredAuthentications publickey\n"
        f"  ProxyCommand touch {marker}\n"
    )
    other = asyncssh.generate_private_key("ssh-ed25519")
    (home / ".ssh" / "known_hosts").write_text(
        f"[127.0.0.1]:{sftp.server.port} {other.export_public_key().decode()}"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "no-agent.sock"))
    result = await probe(registry, **fields(sftp))
    assert result.status is HealthStatus.HEALTHY, result.error
    assert not marker.exists()
    assert sftp.server.logins == 1


def test_missing_fingerprint_is_refused_at_validation(registry: CheckRegistry) -> None:
    """Without host_key_fingerprint the config does not validate, and the error says why."""
    data = record(host="sftp.example.com", username=USER, password="${SFTP_PASSWORD}")
    with pytest.raises(ValidationError) as caught:
        registry.parse(data)
    assert "host_key_fingerprint' is required" in str(caught.value)
    assert "ssh-keyscan" in str(caught.value)


async def test_stored_config_without_fingerprint_is_config_invalid(
    registry: CheckRegistry,
) -> None:
    """A stored sftp integration without a fingerprint is reported unreachable/config_invalid."""
    item = registry.from_record(
        IntegrationRecord(
            integration_id=uuid.uuid4(),
            org_id=uuid.uuid4(),
            integration_type="sftp",
            name="legacy",
            config={"host": "sftp.example.com", "username": USER, "password": "${SFTP_PASSWORD}"},
        )
    )
    assert isinstance(item, BrokenIntegration)
    [(_, result)] = await run_health_checks(
        item.org_id, integrations=[item], store=None, registry=registry
    )
    assert (result.status, result.error_code) == (
        HealthStatus.UNREACHABLE,
        ErrorCode.CONFIG_INVALID,
    )
    assert "host_key_fingerprint" in (result.error or "")


@pytest.mark.parametrize(
    "fingerprint",
    ["abc", "SHA256:short", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI", "MD5:zz:11"],
)
def test_malformed_fingerprint_is_refused(registry: CheckRegistry, fingerprint: str) -> None:
    """Fingerprints not in ssh-keygen's SHA256:/MD5: form are refused with a hint."""
    data = record(
        host="sftp.example.com",
        username=USER,
        password="${SFTP_PASSWORD}",
        host_key_fingerprint=fingerprint,
    )
    with pytest.raises(ValidationError, match="ssh-keygen"):
        registry.parse(data)


def test_credentials_are_required(registry: CheckRegistry) -> None:
    """A config with neither password nor private_key is refused."""
    data = record(
        host="sftp.example.com",
        username=USER,
        host_key_fingerprint="SHA256:" + "A" * 43,
    )
    with pytest.raises(ValidationError, match="password or a private_key"):
        registry.parse(data)


def test_literal_password_is_refused_for_storage(registry: CheckRegistry) -> None:
    """A literal password (not a ${…} reference) is refused before it could be stored."""
    from integration_health.errors import ConfigError

    data = record(
        host="sftp.example.com",
        username=USER,
        password=PASSWORD,
        host_key_fingerprint="SHA256:" + "A" * 43,
    )
    parsed = registry.parse(data)
    with pytest.raises(ConfigError) as caught:
        parsed.to_storage()
    assert PASSWORD not in str(caught.value)


# -- the directory ------------------------------------------------------------------------


async def test_missing_directory_is_not_found(sftp: Sftp, registry: CheckRegistry) -> None:
    """A path that does not exist is unreachable/not_found after a successful login."""
    result = await probe(registry, **fields(sftp, path="outbox"))
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.NOT_FOUND)
    assert "'outbox'" in (result.error or "")
    assert "auth_ms" in result.details
    assert sftp.server.logins == 1


async def test_existing_subdirectory_is_healthy(sftp: Sftp, registry: CheckRegistry) -> None:
    """A configured directory that exists is healthy."""
    result = await probe(registry, **fields(sftp, path="inbox"))
    assert result.status is HealthStatus.HEALTHY, result.error


async def test_a_file_instead_of_a_directory_is_not_found(
    sftp: Sftp, registry: CheckRegistry
) -> None:
    """A path naming a file, not a directory, is unreachable/not_found."""
    result = await probe(registry, **fields(sftp, path="report.csv"))
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.NOT_FOUND)
    assert "not a directory" in (result.error or "")


async def test_server_without_sftp_is_bad_response(tmp_path: Path, registry: CheckRegistry) -> None:
    """An SSH server that offers no SFTP subsystem is unreachable/bad_response."""
    async with SftpTestServer(tmp_path, users={USER: PASSWORD}, sftp=False) as server:
        result = await probe(
            registry,
            host="127.0.0.1",
            port=server.port,
            username=USER,
            password="${SFTP_PASSWORD}",
            host_key_fingerprint=server.host_key_fingerprint,
        )
    assert (result.status, result.error_code) == (
        HealthStatus.UNREACHABLE,
        ErrorCode.BAD_RESPONSE,
    ), result.error
    assert "SFTP" in (result.error or "")


# -- transport failures -------------------------------------------------------------------


@pytest.mark.parametrize("send_banner", [True, False], ids=["after-banner", "before-banner"])
async def test_server_that_hangs_times_out_at_the_deadline(
    registry: CheckRegistry, send_banner: bool
) -> None:
    """A server that stalls after (or before) its banner is unreachable/timeout, on time."""
    async with HangingSshServer(send_banner=send_banner) as server:
        started = time.monotonic()
        result = await probe(
            registry,
            timeout_s=0.5,
            host="127.0.0.1",
            port=server.port,
            username=USER,
            password="${SFTP_PASSWORD}",
            host_key_fingerprint="SHA256:" + "A" * 43,
        )
        elapsed = time.monotonic() - started
    assert elapsed < 1.0
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.TIMEOUT)
    assert 450 <= result.latency_ms < 1000
    assert server.connections == 1


async def test_non_ssh_server_that_hangs_up_is_bad_response(registry: CheckRegistry) -> None:
    """A port answering with something other than SSH, then closing, is bad_response."""

    async def greet(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mail.example ESMTP ready\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    async with server:
        result = await probe(
            registry,
            host="127.0.0.1",
            port=server.sockets[0].getsockname()[1],
            username=USER,
            password="${SFTP_PASSWORD}",
            host_key_fingerprint="SHA256:" + "A" * 43,
        )
    assert (result.status, result.error_code) == (
        HealthStatus.UNREACHABLE,
        ErrorCode.BAD_RESPONSE,
    ), result.error
    assert "220 mail.example" in (result.error or "")


async def test_connection_refused_is_unreachable_connection(registry: CheckRegistry) -> None:
    """Nothing listening on the port is unreachable/connection."""
    result = await probe(
        registry,
        host="127.0.0.1",
        port=free_port(),
        username=USER,
        password="${SFTP_PASSWORD}",
        host_key_fingerprint="SHA256:" + "A" * 43,
    )
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.CONNECTION)


async def test_unknown_host_name_is_unreachable_dns(registry: CheckRegistry) -> None:
    """A host name that does not resolve is unreachable/dns."""
    result = await probe(
        registry,
        host="no-such-sftp-host.invalid",
        username=USER,
        password="${SFTP_PASSWORD}",
        host_key_fingerprint="SHA256:" + "A" * 43,
    )
    assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.DNS)


async def test_event_loop_stays_responsive_during_a_probe(
    sftp: Sftp, registry: CheckRegistry
) -> None:
    """Key decryption and the SSH handshake never block the loop: a 10 ms ticker keeps ticking."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    result = await probe(
        registry,
        **fields(
            sftp,
            password=None,
            private_key=f"${{file:{sftp.encrypted_key_file}}}",
            private_key_passphrase="${SFTP_PASSPHRASE}",
        ),
    )
    stop.set()
    await task
    assert result.status is HealthStatus.HEALTHY, result.error
    assert gaps
    assert max(gaps) < 0.15, max(gaps)
