"""A TLS server on a real 127.0.0.1 socket, for testing the ``tcp_tls`` adapter and for ``demo``.

:class:`TestCertificates` makes a private CA and one server certificate per scenario;
:class:`TlsTestServer` serves one scenario at a time (switchable with
:meth:`TlsTestServer.set_scenario`) from a daemon thread, so it works the same from async
tests, from synchronous code and next to a CLI subprocess::

    certs = TestCertificates()
    bundle = certs.write_ca_bundle(tmp_path / "ca.pem")      # trust it via ca_bundle
    with TlsTestServer(certs, scenario="expiring") as server:
        ...  # probe host 127.0.0.1 (or localhost), port server.port

Scenarios (:data:`TLS_SCENARIOS`):

=============  =====================================================================
``valid``      certificate for localhost/127.0.0.1/::1 from the private CA, 1 year
``expiring``   the same, expiring in ``expiring_in_days`` (5 by default)
``expired``    the same, expired yesterday
``untrusted``  a self-signed certificate (no CA vouches for it)
``wrong_host`` a certificate from the private CA for ``wrong-host.example`` only
``hang``       accepts the TCP connection and never answers the TLS ClientHello
=============  =====================================================================

Certificates are generated with ``cryptography`` (installed with the ``sftp`` extra and with
``dev``; imported only when certificates are first needed), using fast P-256 keys.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import shutil
import socket
import ssl
import tempfile
import threading
import weakref
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.x509 import Certificate

__all__ = ["TLS_SCENARIOS", "TestCertificates", "TlsScenario", "TlsTestServer"]

TlsScenario = Literal["valid", "expiring", "expired", "untrusted", "wrong_host", "hang"]
TLS_SCENARIOS: tuple[str, ...] = get_args(TlsScenario)
"""Every scenario :class:`TlsTestServer` can serve."""

DEFAULT_IDENTITIES = ("localhost", "127.0.0.1", "::1")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TestCertificates:
    """A private CA and a server certificate per scenario, generated on first use.

    ``identities`` are the names and IP addresses the good certificates are valid for.
    Files live in a private temporary directory removed by :meth:`cleanup` (or at exit).
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        identities: tuple[str, ...] = DEFAULT_IDENTITIES,
        *,
        expiring_in_days: float = 5,
        wrong_host: str = "wrong-host.example",
    ) -> None:
        self.identities = identities
        self.expiring_in_days = expiring_in_days
        self.wrong_host = wrong_host
        self._dir = Path(tempfile.mkdtemp(prefix="integration-health-tls-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._ca: tuple[EllipticCurvePrivateKey, Certificate] | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    # -- the CA ---------------------------------------------------------------------------

    @property
    def ca_pem(self) -> bytes:
        """The private CA's certificate, PEM-encoded (what a client must trust)."""
        from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415

        return self._ca_pair()[1].public_bytes(Encoding.PEM)

    def write_ca_bundle(self, path: str | Path) -> Path:
        """Write the CA certificate to ``path`` (for the ``ca_bundle`` config field)."""
        path = Path(path)
        path.write_bytes(self.ca_pem)
        return path

    def server_context(self, scenario: str) -> ssl.SSLContext:
        """The server-side SSL context presenting the certificate of ``scenario``."""
        if scenario not in TLS_SCENARIOS or scenario == "hang":
            raise ValueError(f"no certificate for scenario {scenario!r}")
        with self._lock:
            context = self._contexts.get(scenario)
            if context is None:
                certfile, keyfile = self._write_pair(scenario)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(certfile, keyfile)
                self._contexts[scenario] = context
            return context

    def cleanup(self) -> None:
        """Remove the temporary files (also done when the object is garbage-collected)."""
        self._finalizer()

    # -- generation -----------------------------------------------------------------------

    def _ca_pair(self) -> tuple[EllipticCurvePrivateKey, Certificate]:
        if self._ca is None:
            self._ca = _make_certificate(
                "Integration Health Test CA", (), _now() - dt.timedelta(days=1), days=3650, ca=None
            )
        return self._ca

    def _write_pair(self, scenario: str) -> tuple[Path, Path]:
        from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        now = _now()
        issuer: tuple[EllipticCurvePrivateKey, Certificate] | None = self._ca_pair()
        identities = self.identities
        not_before = now - dt.timedelta(days=1)
        days: float = 365
        if scenario == "expiring":
            # An hour of margin, so "days to expiry" reads expiring_in_days, not one less.
            days = 1 + self.expiring_in_days + 1 / 24
        elif scenario == "expired":
            not_before, days = now - dt.timedelta(days=30), 29
        elif scenario == "untrusted":
            issuer = None
        elif scenario == "wrong_host":
            identities = (self.wrong_host,)
        key, cert = _make_certificate(identities[0], identities, not_before, days=days, ca=issuer)
        certfile = self._dir / f"{scenario}.crt"
        keyfile = self._dir / f"{scenario}.key"
        certfile.write_bytes(cert.public_bytes(Encoding.PEM))
        keyfile.write_bytes(
            key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
        )
        keyfile.chmod(0o600)
        return certfile, keyfile


def _make_certificate(
    common_name: str,
    identities: tuple[str, ...],
    not_before: dt.datetime,
    *,
    days: float,
    ca: tuple[EllipticCurvePrivateKey, Certificate] | None,
) -> tuple[EllipticCurvePrivateKey, Certificate]:
    """A P-256 key and its certificate.

    With ``identities`` empty the certificate is a CA (self-signed); otherwise a server
    certificate for those names/addresses, signed by ``ca`` — or self-signed when ``ca`` is
    ``None``.
    """
    from cryptography import x509  # noqa: PLC0415 - optional dependency, see module docstring
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Integration Health tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    is_ca = not identities
    signer_key, issuer_name = (key, subject) if ca is None else (ca[0], ca[1].subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        names: list[x509.GeneralName] = []
        for identity in identities:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(identity)))
            except ValueError:
                names.append(x509.DNSName(identity))
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return key, builder.sign(signer_key, hashes.SHA256())


class TlsTestServer:
    """A TLS server on 127.0.0.1 (a free port unless one is given), served from threads.

    Each accepted connection is handled in a daemon thread: the TLS handshake with the
    current scenario's certificate, then it waits until the client closes. ``connections``
    counts accepted TCP connections and ``handshakes`` completed handshakes, so a test can
    prove that a refused target was never contacted.
    """

    def __init__(
        self,
        certificates: TestCertificates | None = None,
        *,
        scenario: str = "valid",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.certificates = certificates or TestCertificates()
        self.host = host
        self.port = port
        self.connections = 0
        self.handshakes = 0
        self._scenario = "valid"
        self.set_scenario(scenario)
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._accepting: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def scenario(self) -> str:
        """The scenario new connections get."""
        return self._scenario

    def set_scenario(self, scenario: str) -> None:
        """Serve ``scenario`` (one of :data:`TLS_SCENARIOS`) to the next connections."""
        if scenario not in TLS_SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(TLS_SCENARIOS)}")
        if scenario != "hang":
            self.certificates.server_context(scenario)  # generate now, not mid-handshake
        self._scenario = scenario

    def start(self) -> TlsTestServer:
        """Start listening and accepting."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.create_server((self.host, self.port), family=family, backlog=128)
        listener.settimeout(0.05)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._stopped.clear()
        self._accepting = threading.Thread(
            target=self._accept_loop, name="tls-test-server", daemon=True
        )
        self._accepting.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every open connection and wait for the threads."""
        self._stopped.set()
        if self._accepting is not None:
            self._accepting.join(5)
            self._accepting = None
        with self._lock:
            for conn in list(self._open):
                with contextlib.suppress(OSError):
                    conn.close()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> TlsTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- serving --------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        while not self._stopped.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.add(conn)
            thread = threading.Thread(
                target=self._serve, args=(conn, self._scenario), name="tls-test-conn", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket, scenario: str) -> None:
        try:
            if scenario == "hang":
                self._stopped.wait()
                return
            conn.settimeout(5)
            context = self.certificates.server_context(scenario)
            try:
                tls = context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                return  # the client refused our certificate: that is the test
            with self._lock:
                self.handshakes += 1
                self._open.add(tls)
            self._drain(tls)
        finally:
            with self._lock:
                self._open.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _drain(self, tls: ssl.SSLSocket) -> None:
        """Read until the client closes (or the server stops), then close."""
        try:
            while not self._stopped.is_set():
                try:
                    if not tls.recv(4096):
                        break
                except TimeoutError:
                    continue
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self._lock:
                self._open.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()
