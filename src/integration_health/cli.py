"""The ``integration-health`` command line.

Exit codes: 0 success (for ``check``: nothing unreachable), 1 ``check`` found an unreachable
integration, 2 usage or configuration error (one line per problem, never a traceback),
3 an internal error (a bug; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ._version import __version__
from .checks import BrokenIntegration, CheckRegistry, default_registry
from .config import describe_validation_error
from .errors import IntegrationHealthError, UnknownIntegration, UnknownOrganization
from .integrations_file import import_integrations, read_integrations_file
from .model import HealthStatus, utcnow
from .runner import CheckOutcome, run_health_checks
from .settings import Settings
from .store import Organization, Store, mask_url, open_store

__all__ = ["app", "main"]

T = TypeVar("T")

log = logging.getLogger("integration_health")

app = typer.Typer(
    name="integration-health",
    help=(
        "Check the external integrations (accounting/ERP APIs, HTTP, SFTP…) of every "
        "organisation, record their health and history, and show it.\n\n"
        "Settings come from flags or INTEGRATION_HEALTH_* environment variables."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Create or upgrade the database schema.", no_args_is_help=True)
integrations_app = typer.Typer(help="Load and list integrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(integrations_app, name="integrations")

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)

STATUS_STYLE = {
    HealthStatus.HEALTHY: "green",
    HealthStatus.DEGRADED: "yellow",
    HealthStatus.UNREACHABLE: "bold red",
}
STATUS_MARK = {
    HealthStatus.HEALTHY: "✔ healthy",
    HealthStatus.DEGRADED: "▲ degraded",
    HealthStatus.UNREACHABLE: "✖ unreachable",
}


@dataclass
class _State:
    database_url: str | None = None
    allow_private_networks: bool | None = None
    debug: bool = False

    def settings(self) -> Settings:
        overrides: dict[str, Any] = {}
        if self.database_url is not None:
            overrides["database_url"] = self.database_url
        if self.allow_private_networks is not None:
            overrides["allow_private_networks"] = self.allow_private_networks
        try:
            return Settings(**overrides)
        except ValidationError as exc:
            fail("invalid settings: " + "; ".join(describe_validation_error(exc)))


state = _State()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` (each line) to stderr and exit."""
    for line in message.splitlines() or [message]:
        err.print(Text(f"error: {line}" if line else ""), style="red")
    raise typer.Exit(code)


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body; turn our exceptions into one-line errors (exit 2)."""
    try:
        return asyncio.run(_call(coro_fn))
    except IntegrationHealthError as exc:
        if state.debug:
            raise
        fail(str(exc))
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug: say so in one line, keep the traceback for --debug
        if state.debug:
            raise
        fail(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            code=3,
        )


async def _call(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return await coro_fn()


@asynccontextmanager
async def _store() -> AsyncIterator[Store]:
    settings = state.settings()
    store = await open_store(settings.database_url)
    try:
        yield store
    finally:
        await store.aclose()


def _registry() -> CheckRegistry:
    return default_registry(state.settings())


def _version(value: bool) -> None:
    if value:
        out.print(f"integration-health {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="INTEGRATION_HEALTH_DATABASE_URL",
            help="sqlite:///path.db (default: sqlite:///integration-health.db) or "
            "postgresql://user@host/db.",
            show_default=False,
        ),
    ] = None,
    allow_private_networks: Annotated[
        bool | None,
        typer.Option(
            "--allow-private-networks/--deny-private-networks",
            envvar="INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS",
            help="Let checks reach loopback and private addresses (refused by default).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            envvar="INTEGRATION_HEALTH_LOG_LEVEL",
            help="debug, info, warning or error.",
        ),
    ] = "warning",
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        fail(f"unknown log level {log_level!r}: use debug, info, warning or error")
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    state.database_url = database_url
    state.allow_private_networks = allow_private_networks
    state.debug = debug


# -- db --------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the schema, or apply the migrations it lacks (a second run changes nothing)."""

    async def body() -> list[str]:
        async with _store() as store:
            return await store.upgrade()

    applied = _run(body)
    url = mask_url(state.settings().database_url)
    if applied:
        out.print(f"Applied {len(applied)} migration(s) to {url}: {', '.join(applied)}")
    else:
        out.print(f"The schema at {url} is up to date.")


# -- integrations ----------------------------------------------------------------------------


@integrations_app.command("import")
def integrations_import(
    file: Annotated[Path, typer.Argument(help="The integrations YAML file.", show_default=False)],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate only; write nothing.")
    ] = False,
) -> None:
    """Load organisations and integrations from a YAML file (all or nothing).

    Importing the same file again updates what changed instead of duplicating it. Secrets are
    written as ${VAR} references and read from the environment at check time.
    """
    registry = _registry()
    parsed = None

    def parse() -> None:
        nonlocal parsed
        parsed = read_integrations_file(file, registry)

    try:
        parse()
    except IntegrationHealthError as exc:
        fail(str(exc))
    assert parsed is not None
    if dry_run:
        out.print(
            f"{file}: valid — {len(parsed.organizations)} organization(s), "
            f"{len(parsed.integrations)} integration(s). Nothing written (--dry-run)."
        )
        return

    async def body() -> Any:
        async with _store() as store:
            return await import_integrations(parsed, store)

    summary = _run(body)
    out.print(
        f"Imported {file}: {summary.created} created, {summary.updated} updated, "
        f"{summary.unchanged} unchanged integration(s); {summary.organizations} organization(s), "
        f"{summary.members} member(s)."
    )


OrgOption = Annotated[
    str,
    typer.Option("--org", help="Organization id or exact name.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


async def _find_org(store: Store, ref: str) -> Organization:
    try:
        org = await store.get_organization(UUID(ref))
    except ValueError:
        matches = [o for o in await store.list_organizations() if o.name == ref]
        if len(matches) > 1:
            raise UnknownOrganization(
                f"{len(matches)} organizations are named {ref!r}; use the id instead"
            ) from None
        org = matches[0] if matches else None
    if org is None:
        raise UnknownOrganization(
            f"unknown organization {ref!r} (import it with `integration-health integrations "
            "import FILE`)"
        )
    return org


@integrations_app.command("list")
def integrations_list(
    org: Annotated[
        str | None,
        typer.Option(
            "--org", help="Only this organization (id or exact name).", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List stored integrations (never their secrets)."""
    registry = _registry()

    async def body() -> tuple[list[Organization], list[Any]]:
        async with _store() as store:
            orgs = [await _find_org(store, org)] if org else await store.list_organizations()
            records = []
            for o in orgs:
                records.extend(await store.list_integrations(o.id))
            return orgs, [registry.from_record(r) for r in records]

    orgs, items = _run(body)
    names = {o.id: o.name for o in orgs}
    rows = [
        {
            "integration_id": str(item.integration_id),
            "org_id": str(item.org_id),
            "organization": names.get(item.org_id),
            "integration_type": item.integration_type,
            "name": item.name,
            "enabled": item.enabled,
            "monitoring_mode": str(item.monitoring_mode),
            "check_interval_s": item.check_interval_s,
            "problem": item.problem if isinstance(item, BrokenIntegration) else None,
        }
        for item in items
    ]
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"{len(rows)} integration(s)", title_justify="left")
    for column in ("Organization", "Name", "Type", "Mode", "Interval", "Id"):
        table.add_column(column)
    for row in rows:
        mode = row["monitoring_mode"] if row["enabled"] else "disabled"
        if row["problem"]:
            mode = f"{mode} (invalid: {row['problem']})"
        table.add_row(
            row["organization"],
            row["name"],
            row["integration_type"],
            mode,
            f"{row['check_interval_s'] // 60} min",
            row["integration_id"],
        )
    out.print(table)


# -- check / status / history ------------------------------------------------------------------


def _result_row(outcome: CheckOutcome) -> dict[str, Any]:
    integration, result = outcome
    return {
        "integration_id": str(integration.integration_id),
        "integration_type": integration.integration_type,
        "name": integration.name,
        "status": result.status.value,
        "latency_ms": result.latency_ms,
        "checked_at": result.checked_at.isoformat(),
        "error": result.error,
        "error_code": result.error_code.value if result.error_code else None,
        "details": result.details,
    }


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _status_text(status: HealthStatus | None) -> Text:
    if status is None:
        return Text("– not checked yet", style="dim")
    return Text(STATUS_MARK[status], style=STATUS_STYLE[status])


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "–"
    seconds = (now - when).total_seconds()
    if seconds < 0:
        return f"in {_duration(-seconds)}"
    return f"{_duration(seconds)} ago"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[CheckOutcome], None] | None]:
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("checking"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("checks", total=total)
        yield lambda _outcome: progress.advance(task)


@app.command()
def check(
    org: OrgOption,
    as_json: JsonOption = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0.1,
            max=120.0,
            help="Deadline of each check in seconds (default 10).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run every active check of an organisation now, store the results and show them.

    Exit code 0 when nothing is unreachable, 1 when any integration is unreachable.
    """
    registry = _registry()
    show_progress = not as_json and err.is_terminal

    async def body() -> list[CheckOutcome]:
        async with _store() as store:
            found = await _find_org(store, org)
            records = await store.list_integrations(found.id)
            integrations = [registry.from_record(r) for r in records]
            due = sum(1 for i in integrations if i.is_checked_actively)
            with _progress(due, show_progress and due > 20) as on_result:
                return await run_health_checks(
                    found.id,
                    integrations=integrations,
                    store=store,
                    registry=registry,
                    timeout_s=timeout,
                    on_result=on_result,
                )

    outcomes = _run(body)
    if as_json:
        _print_json([_result_row(o) for o in outcomes])
    else:
        _print_outcomes(outcomes)
    if any(o.result.status is HealthStatus.UNREACHABLE for o in outcomes):
        raise typer.Exit(1)


def _print_outcomes(outcomes: Sequence[CheckOutcome]) -> None:
    if not outcomes:
        out.print("No active integrations to check.")
        return
    table = Table(title_justify="left")
    for column in ("Integration", "Type", "Status", "Latency", "Error"):
        table.add_column(column, justify="right" if column == "Latency" else "left")
    for integration, result in outcomes:
        table.add_row(
            integration.name,
            integration.integration_type,
            _status_text(result.status),
            f"{result.latency_ms:,} ms",
            Text(result.error or ""),
        )
    counts = {s: sum(1 for o in outcomes if o.result.status is s) for s in HealthStatus}
    table.title = (
        f"{len(outcomes)} checked: {counts[HealthStatus.HEALTHY]} healthy, "
        f"{counts[HealthStatus.DEGRADED]} degraded, {counts[HealthStatus.UNREACHABLE]} unreachable"
    )
    out.print(table)


@app.command()
def status(org: OrgOption, as_json: JsonOption = False) -> None:
    """Show the current status of every integration of an organisation."""
    registry = _registry()

    async def body() -> tuple[list[Any], dict[UUID, Any]]:
        async with _store() as store:
            found = await _find_org(store, org)
            records = await store.list_integrations(found.id)
            statuses = {s.integration_id: s for s in await store.list_statuses(found.id)}
            return [registry.from_record(r) for r in records], statuses

    integrations, statuses = _run(body)
    rows = []
    for item in integrations:
        row: dict[str, Any] = {
            "integration_id": str(item.integration_id),
            "integration_type": item.integration_type,
            "name": item.name,
            "enabled": item.enabled,
            "monitoring_mode": str(item.monitoring_mode),
            "status": None,
            "latency_ms": None,
            "checked_at": None,
            "error": None,
            "error_code": None,
            "consecutive_failures": 0,
            "last_healthy_at": None,
            "next_check_at": None,
        }
        current = statuses.get(item.integration_id)
        if current is not None:
            row.update(
                status=current.status.value,
                latency_ms=current.latency_ms,
                checked_at=current.checked_at.isoformat(),
                error=current.error,
                error_code=current.error_code.value if current.error_code else None,
                consecutive_failures=current.consecutive_failures,
                last_healthy_at=_iso(current.last_healthy_at),
                next_check_at=_iso(current.next_check_at),
            )
        rows.append(row)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("This organization has no integrations.")
        return

    now = utcnow()
    table = Table(title_justify="left")
    for column in ("Integration", "Type", "Status", "Latency", "Checked", "Next", "Error"):
        table.add_column(column, justify="right" if column == "Latency" else "left")
    for item in integrations:
        current = statuses.get(item.integration_id)
        table.add_row(
            item.name,
            item.integration_type,
            _status_text(current.status if current else None),
            f"{current.latency_ms:,} ms" if current else "–",
            _ago(current.checked_at if current else None, now),
            _ago(current.next_check_at if current else None, now),
            Text(current.error or "" if current else ""),
        )
    out.print(table)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@app.command()
def history(
    integration: Annotated[
        str, typer.Option("--integration", help="Integration id.", show_default=False)
    ],
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=96, help="How many rows, newest first.")
    ] = 96,
    as_json: JsonOption = False,
) -> None:
    """Show the recent results of one integration (the newest 96 are kept)."""
    try:
        integration_id = UUID(integration)
    except ValueError:
        fail(f"--integration must be an integration id (a UUID), not {integration!r}")

    async def body() -> tuple[Any, list[Any]]:
        async with _store() as store:
            record = await store.get_integration(integration_id)
            if record is None:
                raise UnknownIntegration(f"unknown integration {integration_id}")
            return record, await store.list_history(integration_id, limit=limit)

    record, rows = _run(body)
    data = [
        {
            "id": row.id,
            "integration_id": str(row.integration_id),
            "status": row.status.value,
            "latency_ms": row.latency_ms,
            "checked_at": row.checked_at.isoformat(),
            "error": row.error,
            "error_code": row.error_code.value if row.error_code else None,
        }
        for row in rows
    ]
    if as_json:
        _print_json(data)
        return
    table = Table(title=f"{record.name} ({record.integration_type}): {len(rows)} result(s)")
    for column in ("Checked at", "Status", "Latency", "Error"):
        table.add_column(column, justify="right" if column == "Latency" else "left")
    for row in rows:
        table.add_row(
            row.checked_at.strftime("%Y-%m-%d %H:%M:%S"),
            _status_text(row.status),
            f"{row.latency_ms:,} ms",
            Text(row.error or ""),
        )
    out.print(table)


def _parse_budgets(values: list[str]) -> dict[str, int]:
    budgets: dict[str, int] = {}
    for value in values:
        kind, sep, number = value.partition("=")
        if not sep or not number.isdigit() or not kind:
            fail(f"--budget expects TYPE=CHECKS_PER_MINUTE (e.g. xledger=30), not {value!r}")
        budgets[kind] = int(number)
    return budgets


@app.command()
def scheduler(
    tick: Annotated[
        float,
        typer.Option("--tick", min=0.5, max=300.0, help="Seconds between planning passes."),
    ] = 5.0,
    budget: Annotated[
        list[str] | None,
        typer.Option(
            "--budget",
            help="Most checks started per minute for a type, e.g. --budget xledger=30 "
            "(repeatable).",
            show_default=False,
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run one planning pass, print what it did, exit.")
    ] = False,
) -> None:
    """Plan and run every due check, continuously, on SQLite or PostgreSQL.

    A never-checked integration is due at once; then every check_interval_s, later while
    failing (backoff) or when the vendor asks (Retry-After). Several schedulers may share one
    database: every (integration, slot) runs once. SIGTERM or Ctrl-C stops it gracefully: the
    checks in flight finish (within their deadline), are written, and it exits 0.
    """
    import signal  # noqa: PLC0415

    from .scheduling import Scheduler, SchedulerOptions  # noqa: PLC0415

    options = SchedulerOptions(tick_s=tick, budgets_per_minute=_parse_budgets(budget or []))
    registry = _registry()

    async def body() -> None:
        async with _store() as store:
            runner = Scheduler(store, registry, options=options)
            if once:
                async with registry:
                    report = await runner.run_pass()
                out.print(
                    f"Pass at {report.at.isoformat()}: {report.ran} check(s) run, "
                    f"{report.written} written, {report.skipped_claims} skipped (claimed "
                    f"elsewhere), deferred by budget {report.deferred_budget or 'none'}, "
                    f"paused {report.paused or 'none'}."
                )
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            err.print(
                f"scheduler {runner.worker} running on {mask_url(state.settings().database_url)}"
                " (SIGTERM or Ctrl-C to stop)"
            )
            await runner.run(stop)
            err.print("scheduler stopped: in-flight checks finished and were written")

    _run(body)


@app.command()
def worker(
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", min=1, max=64, help="Batches of checks run at once."),
    ] = 4,
    tick: Annotated[
        int, typer.Option("--tick", min=1, max=59, help="Seconds between planning passes.")
    ] = 5,
    lease: Annotated[
        float,
        typer.Option(
            "--lease",
            min=15.0,
            max=3600.0,
            help="Seconds after which a dead worker's claimed checks are run by another.",
        ),
    ] = 120.0,
) -> None:
    """Share the due checks with every other worker (PostgreSQL only; start any number).

    Built on procrastinate: one worker plans each tick, batches are claimed and run by any
    worker, each (integration, slot) exactly once even if a worker dies mid-batch. SIGTERM or
    Ctrl-C stops it gracefully (in-flight batches finish). On SQLite use `scheduler`.
    """
    from .scheduling import SchedulerOptions  # noqa: PLC0415
    from .scheduling.distributed import (  # noqa: PLC0415 - optional dependency
        QUEUE,
        build_app,
        ensure_procrastinate_schema,
        make_runtime,
        set_runtime,
    )

    url = state.settings().database_url
    if not url.startswith(("postgresql:", "postgres:")):
        fail(
            "the worker needs PostgreSQL (--database-url postgresql://…); "
            "on SQLite run `integration-health scheduler` instead"
        )
    registry = _registry()

    async def body() -> None:
        async with _store() as store, registry:
            applied = await ensure_procrastinate_schema(url)
            if applied:
                err.print("applied the task queue schema (procrastinate) to the database")
            set_runtime(make_runtime(store, registry, SchedulerOptions(lease_s=lease)))
            app = build_app(url, tick_s=tick)
            try:
                async with app.open_async():
                    err.print(
                        f"worker running on {mask_url(url)} (concurrency {concurrency}; "
                        "SIGTERM or Ctrl-C to stop)"
                    )
                    await app.run_worker_async(queues=[QUEUE], concurrency=concurrency)
            finally:
                set_runtime(None)
        err.print("worker stopped")

    _run(body)


@app.command("sync-outcome")
def sync_outcome(
    integration: Annotated[
        str, typer.Option("--integration", help="Integration id.", show_default=False)
    ],
    ok: Annotated[
        bool,
        typer.Option("--ok/--failed", help="Whether the sync succeeded.", show_default=False),
    ],
    error: Annotated[
        str | None, typer.Option("--error", help="What went wrong (redacted before storing).")
    ] = None,
    duration_ms: Annotated[
        int, typer.Option("--duration-ms", min=0, help="How long the sync took.")
    ] = 0,
) -> None:
    """Record one outcome of the sync system (passive health) for an integration."""
    from .passive import record_sync_outcome  # noqa: PLC0415

    try:
        integration_id = UUID(integration)
    except ValueError:
        fail(f"--integration must be an integration id (a UUID), not {integration!r}")
    registry = _registry()

    async def body() -> Any:
        async with _store() as store:
            record = await store.get_integration(integration_id)
            if record is None:
                raise UnknownIntegration(f"unknown integration {integration_id}")
            return await record_sync_outcome(
                record.org_id,
                integration_id,
                ok,
                error,
                duration_ms,
                store=store,
                registry=registry,
            )

    result = _run(body)
    out.print(Text.assemble("Recorded: ", _status_text(result.status), f" {result.error or ''}"))


@app.command()
def demo(
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="How many rounds of checks to run.")
    ] = 1,
    every: Annotated[
        float, typer.Option("--every", min=1.0, help="Seconds between rounds.")
    ] = 15.0,
) -> None:
    """Try it with no network: simulated vendors, a sample organisation, real checks.

    Starts local fake vendor servers on 127.0.0.1, stores a sample organisation in an embedded
    SQLite database (default sqlite:///integration-health-demo.db, or --database-url), checks
    every integration and shows the results. Exit code 0.
    """
    from .demo import DEMO_ORG_ID, DEMO_TOKEN_ENV, DemoTargets, seed_demo  # noqa: PLC0415
    from .testing import HttpEndpointFake, LocalServer  # noqa: PLC0415

    if state.database_url is None and "INTEGRATION_HEALTH_DATABASE_URL" not in os.environ:
        state.database_url = "sqlite:///integration-health-demo.db"
    state.allow_private_networks = True  # the simulated vendors live on 127.0.0.1
    os.environ.setdefault(DEMO_TOKEN_ENV, "expired-demo-token")
    registry = _registry()
    fake = HttpEndpointFake(token="the-current-token")  # noqa: S106 - a demo value

    with LocalServer(fake.app).in_thread() as server:
        targets = DemoTargets(http=server.url)

        async def body() -> None:
            async with _store() as store:
                count = await seed_demo(store, registry, targets)
                out.print(
                    f"Demo organization 'Demo Company AS' ({DEMO_ORG_ID}) with {count} "
                    f"integrations, stored in {mask_url(state.settings().database_url)}; "
                    f"simulated vendors at {server.url}"
                )
                for round_number in range(1, rounds + 1):
                    if round_number > 1:
                        await asyncio.sleep(every)
                    outcomes = await run_health_checks(DEMO_ORG_ID, store=store, registry=registry)
                    _print_outcomes(outcomes)

        _run(body)
    out.print(
        "Next: `integration-health status --org 'Demo Company AS'` and "
        "`integration-health history --integration ID` (add --database-url "
        f"{state.settings().database_url} if you moved it)."
    )


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    app()
