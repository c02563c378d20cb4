"""``integration-health demo``: a newcomer's first run, with no network and no server.

It starts local simulated vendors (real servers on 127.0.0.1: a generic HTTP endpoint, a TLS
endpoint, an SFTP server when ``asyncssh`` is installed, and one fake per accounting/ERP API),
creates an embedded SQLite store with a sample organisation that uses every integration type
(most healthy, one degraded, one unreachable), checks them and serves the dashboard.

Every secret of the sample integrations is a ``${VAR}`` reference to :data:`DEMO_SECRETS`,
fake values the simulated vendors accept.
"""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import CheckRegistry
from .integrations_file import IntegrationsFile, import_integrations
from .store.base import Member, Organization, Store
from .testing import HttpEndpointFake, LocalServer
from .testing.tls_server import TestCertificates, TlsTestServer
from .testing.vendors.business_central import BusinessCentralFake
from .testing.vendors.dataverse import DataverseFake
from .testing.vendors.fiken import FikenFake
from .testing.vendors.poweroffice_go import PowerOfficeFake
from .testing.vendors.tripletex import TripletexFake
from .testing.vendors.visma_eaccounting import VismaEAccountingFake
from .testing.vendors.visma_net import VismaNetFake
from .testing.vendors.xledger import XledgerFake

__all__ = [
    "DEMO_ORG_ID",
    "DEMO_SECRETS",
    "DEMO_USER_ID",
    "DemoTargets",
    "DemoVendors",
    "demo_definitions",
    "demo_vendors",
    "seed_demo",
]

DEMO_ORG_ID = uuid.UUID("00000000-0000-4000-8000-00000000d3e0")
DEMO_USER_ID = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
DEMO_TOKEN_ENV = "INTEGRATION_HEALTH_DEMO_TOKEN"  # noqa: S105 - a variable name, not a value

_BC_TENANT = "3f5e1a2b-1111-4c3d-9e8f-0a1b2c3d4e5f"
_BC_CLIENT = "9b2c7d4e-2222-4f00-8a1b-123456789abc"
_DATAVERSE_TENANT = "demo.onmicrosoft.com"
_DATAVERSE_CLIENT = "51f81489-12ee-4a9e-aaae-a2591f45987d"
_VISMA_NET_COMPANY = "1234567"
_FIKEN_SLUG = "demo-company-as"
_SFTP_USER = "demo"

DEMO_SECRETS: dict[str, str] = {
    DEMO_TOKEN_ENV: "expired-demo-token",
    "DEMO_XLEDGER_TOKEN": "demo-xledger-token",
    "DEMO_BC_CLIENT_SECRET": "demo-business-central-secret",
    "DEMO_DATAVERSE_CLIENT_SECRET": "demo-dataverse-secret",
    "DEMO_FIKEN_TOKEN": "demo-fiken-token",
    "DEMO_POWEROFFICE_APPLICATION_KEY": "demo-poweroffice-application-key",
    "DEMO_POWEROFFICE_CLIENT_KEY": "demo-poweroffice-client-key",
    "DEMO_POWEROFFICE_SUBSCRIPTION_KEY": "demo-poweroffice-subscription-key",
    "DEMO_TRIPLETEX_CONSUMER_TOKEN": "demo-tripletex-consumer-token",
    "DEMO_TRIPLETEX_EMPLOYEE_TOKEN": "demo-tripletex-employee-token",
    "DEMO_VISMA_EACCOUNTING_SECRET": "demo-visma-eaccounting-secret",
    "DEMO_VISMA_EACCOUNTING_REFRESH_TOKEN": "demo-visma-eaccounting-refresh-token",
    "DEMO_VISMA_NET_SECRET": "demo-visma-net-secret",
    "DEMO_SFTP_PASSWORD": "demo-sftp-password",
}
"""Environment variables the sample integrations' ``${VAR}`` references read (fake values)."""


def _ref(name: str) -> str:
    return "${" + name + "}"


@dataclass(frozen=True)
class DemoTargets:
    """Where the simulated vendors listen."""

    http: str
    """Base URL of the generic HTTP endpoint (:class:`HttpEndpointFake`)."""
    vendors: dict[str, str]
    """Base URL of each accounting/ERP fake, by integration type."""
    tls_port: int
    tls_ca_bundle: str
    """A PEM file with the private CA that signed the TLS endpoint's certificate."""
    sftp_port: int | None = None
    """``None`` when ``asyncssh`` (the ``sftp`` extra) is not installed."""
    sftp_fingerprint: str | None = None


@dataclass(frozen=True)
class DemoVendors:
    """The running simulated vendors (flip their behaviour to see statuses change)."""

    targets: DemoTargets
    http: HttpEndpointFake
    fakes: dict[str, Any]
    """The vendor fakes by integration type (``set_scenario("server_error")``, …)."""
    tls: TlsTestServer


def _vendor_fakes() -> dict[str, Any]:
    secrets = DEMO_SECRETS
    return {
        "xledger": XledgerFake(token=secrets["DEMO_XLEDGER_TOKEN"]),
        "business_central": BusinessCentralFake(
            tenant_id=_BC_TENANT,
            client_id=_BC_CLIENT,
            client_secret=secrets["DEMO_BC_CLIENT_SECRET"],
        ),
        "dataverse": DataverseFake(
            tenant_id=_DATAVERSE_TENANT,
            client_id=_DATAVERSE_CLIENT,
            client_secret=secrets["DEMO_DATAVERSE_CLIENT_SECRET"],
        ),
        "fiken": FikenFake(token=secrets["DEMO_FIKEN_TOKEN"], company_slug=_FIKEN_SLUG),
        "poweroffice_go": PowerOfficeFake(
            application_key=secrets["DEMO_POWEROFFICE_APPLICATION_KEY"],
            client_key=secrets["DEMO_POWEROFFICE_CLIENT_KEY"],
            subscription_key=secrets["DEMO_POWEROFFICE_SUBSCRIPTION_KEY"],
            client_name="Demo Company AS",
        ),
        "tripletex": TripletexFake(
            consumer_token=secrets["DEMO_TRIPLETEX_CONSUMER_TOKEN"],
            employee_token=secrets["DEMO_TRIPLETEX_EMPLOYEE_TOKEN"],
        ),
        "visma_eaccounting": VismaEAccountingFake(
            client_secret=secrets["DEMO_VISMA_EACCOUNTING_SECRET"],
            refresh_token=secrets["DEMO_VISMA_EACCOUNTING_REFRESH_TOKEN"],
        ),
        "visma_net": VismaNetFake(
            client_secret=secrets["DEMO_VISMA_NET_SECRET"], companies={_VISMA_NET_COMPANY}
        ),
    }


@contextlib.contextmanager
def demo_vendors() -> Iterator[DemoVendors]:
    """Start every simulated vendor the demo uses, each on its own 127.0.0.1 port."""
    http = HttpEndpointFake(token="the-current-token")  # noqa: S106 - a demo value
    fakes = _vendor_fakes()
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ih-demo-")))
        http_url = stack.enter_context(LocalServer(http.app).in_thread()).url
        urls = {
            kind: stack.enter_context(LocalServer(fake.app).in_thread()).url
            for kind, fake in fakes.items()
        }
        certificates = TestCertificates()
        stack.callback(certificates.cleanup)
        bundle = certificates.write_ca_bundle(folder / "demo-ca.pem")
        tls = stack.enter_context(TlsTestServer(certificates))
        sftp_port = sftp_fingerprint = None
        if importlib.util.find_spec("asyncssh") is not None:
            from .testing.sftp_server import SftpTestServer  # noqa: PLC0415 - optional extra

            root = folder / "sftp"
            (root / "outgoing").mkdir(parents=True)
            sftp = stack.enter_context(
                SftpTestServer(
                    root, users={_SFTP_USER: DEMO_SECRETS["DEMO_SFTP_PASSWORD"]}
                ).in_thread()
            )
            sftp_port, sftp_fingerprint = sftp.port, sftp.host_key_fingerprint
        targets = DemoTargets(
            http=http_url,
            vendors=urls,
            tls_port=tls.port,
            tls_ca_bundle=str(bundle),
            sftp_port=sftp_port,
            sftp_fingerprint=sftp_fingerprint,
        )
        yield DemoVendors(targets=targets, http=http, fakes=fakes, tls=tls)


def demo_definitions(targets: DemoTargets) -> list[dict[str, Any]]:
    """The sample organisation's integrations (as integrations-file items)."""
    org = str(DEMO_ORG_ID)
    base = targets.http
    vendor = targets.vendors

    def item(name: str, integration_type: str, **fields: Any) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid5(DEMO_ORG_ID, name)),
            "org_id": org,
            "integration_type": integration_type,
            "name": name,
            **fields,
        }

    items = [
        item("Order webhook receiver", "http", url=f"{base}/health"),
        item("Reporting API (slow)", "http", url=f"{base}/slow?ms=2300"),
        item(
            "Invoice API (expired token)",
            "http",
            url=f"{base}/auth",
            bearer_token=_ref(DEMO_TOKEN_ENV),
        ),
        item(
            "Xledger",
            "xledger",
            base_url=vendor["xledger"],
            api_token=_ref("DEMO_XLEDGER_TOKEN"),
        ),
        item(
            "Business Central",
            "business_central",
            tenant_id=_BC_TENANT,
            environment="Production",
            client_id=_BC_CLIENT,
            client_secret=_ref("DEMO_BC_CLIENT_SECRET"),
            base_url=vendor["business_central"],
            authority_url=vendor["business_central"],
        ),
        item(
            "Dataverse (Dynamics 365)",
            "dataverse",
            environment_url=vendor["dataverse"],
            tenant_id=_DATAVERSE_TENANT,
            client_id=_DATAVERSE_CLIENT,
            client_secret=_ref("DEMO_DATAVERSE_CLIENT_SECRET"),
            authority_url=vendor["dataverse"],
        ),
        item(
            "Fiken",
            "fiken",
            base_url=vendor["fiken"],
            api_token=_ref("DEMO_FIKEN_TOKEN"),
            company_slug=_FIKEN_SLUG,
        ),
        item(
            "PowerOffice Go",
            "poweroffice_go",
            base_url=vendor["poweroffice_go"],
            application_key=_ref("DEMO_POWEROFFICE_APPLICATION_KEY"),
            client_key=_ref("DEMO_POWEROFFICE_CLIENT_KEY"),
            subscription_key=_ref("DEMO_POWEROFFICE_SUBSCRIPTION_KEY"),
        ),
        item(
            "Tripletex",
            "tripletex",
            base_url=vendor["tripletex"],
            consumer_token=_ref("DEMO_TRIPLETEX_CONSUMER_TOKEN"),
            employee_token=_ref("DEMO_TRIPLETEX_EMPLOYEE_TOKEN"),
        ),
        item(
            "Visma eAccounting",
            "visma_eaccounting",
            client_id="monitor-client",
            client_secret=_ref("DEMO_VISMA_EACCOUNTING_SECRET"),
            refresh_token=_ref("DEMO_VISMA_EACCOUNTING_REFRESH_TOKEN"),
            base_url=vendor["visma_eaccounting"],
            token_url=f"{vendor['visma_eaccounting']}/connect/token",
        ),
        item(
            "Visma.net ERP",
            "visma_net",
            client_id="monitor-client",
            client_secret=_ref("DEMO_VISMA_NET_SECRET"),
            tenant_id="af1140c1-52e0-46c7-b684-df894d4b8a5a",
            company_id=_VISMA_NET_COMPANY,
            base_url=vendor["visma_net"],
            token_url=f"{vendor['visma_net']}/connect/token",
        ),
        item(
            "Bank file gateway (TLS)",
            "tcp_tls",
            host="127.0.0.1",
            port=targets.tls_port,
            server_name="localhost",
            ca_bundle=targets.tls_ca_bundle,
        ),
    ]
    if targets.sftp_port is not None:
        items.append(
            item(
                "Payroll export (SFTP)",
                "sftp",
                host="127.0.0.1",
                port=targets.sftp_port,
                username=_SFTP_USER,
                password=_ref("DEMO_SFTP_PASSWORD"),
                host_key_fingerprint=targets.sftp_fingerprint,
                path="outgoing",
            )
        )
    return items


async def seed_demo(store: Store, registry: CheckRegistry, targets: DemoTargets) -> int:
    """Create (or refresh) the sample organisation; returns how many integrations it has."""
    parsed = IntegrationsFile(
        organizations=[Organization(DEMO_ORG_ID, "Demo Company AS")],
        members=[Member(DEMO_ORG_ID, DEMO_USER_ID, "admin")],
        integrations=[registry.parse(item) for item in demo_definitions(targets)],
    )
    await import_integrations(parsed, store)
    return len(parsed.integrations)
