"""The ``integration-health`` command line.

Exit codes: 0 success (for ``check``: nothing unreachable), 1 ``check`` found an unreachable
integration, 2 usage or configuration error (one line per problem, never a traceback),
3 an internal error (a bug; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ._heap import settle_heap
from ._version import __version__
from .checks import BrokenIntegration, CheckRegistry, default_registry
from .config import describe_validation_error
from .errors import IntegrationHealthError, UnknownIntegration, UnknownOrganization
from .integrations_file import import_integrations, read_integrations_file
from .model import HealthStatus, utcnow
from .runner import CheckOutcome, run_health_checks
from .settings import Settings
from .store import Organization, Store, TypeMode, mask_url, open_store

if TYPE_CHECKING:
    from .scheduling import SchedulerOptions

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
        err.print(Text(f"error: {line}" if line else ""), style="red", soft_wrap=True)
    raise typer.Exit(code)


LoopOption = Annotated[
    str,
    typer.Option(
        "--loop",
        help="Event loop: asyncio, or uvloop (~10-20 % more checks per second of CPU here; "
        "see docs/benchmarks.md).",
    ),
]


def _use_loop(loop: str) -> None:
    """Make ``loop`` (``asyncio`` or ``uvloop``) the event loop of the command's ``_run``."""
    if loop not in ("asyncio", "uvloop"):
        fail(f"--loop must be asyncio or uvloop, not {loop!r}")
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415 - installed with uvicorn[standard]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


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
async def _store(*, current: bool = True) -> AsyncIterator[Store]:
    """The store of ``--database-url``. ``current``: refuse a PostgreSQL schema that lacks
    migrations of this version (SQLite upgrades itself on open) — a newer version's queries
    against an older schema would fail one by one, mid-run."""
    settings = state.settings()
    store = await open_store(settings.database_url)
    try:
        require = getattr(store, "require_current_schema", None)  # PostgreSQL's
        if current and require is not None:
            await require()
        yield store
    finally:
        await store.aclose()


def _registry() -> CheckRegistry:
    registry = default_registry(state.settings())
    for kind in registry.settings.degraded_latency_ms:
        if kind not in registry.types:  # a typo would leave the type's threshold unset
            fail(
                f"INTEGRATION_HEALTH_DEGRADED_LATENCY_MS: unknown integration type {kind!r}; "
                "known types: " + ", ".join(registry.types)
            )
    return registry


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
            help="debug, info, warning or error (the task queue's per-job lines only at debug).",
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
    # procrastinate logs each job it defers, starts and ends at info: three lines per planning
    # tick (every 5 s) and two per batch of 200 checks — tens of thousands an hour. They are
    # kept for debug; at info the worker's own lines say what it planned and ran.
    logging.getLogger("procrastinate").setLevel(logging.WARNING if level == logging.INFO else level)
    state.database_url = database_url
    state.allow_private_networks = allow_private_networks
    state.debug = debug


# -- db --------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the schema, or apply the migrations it lacks (a second run changes nothing)."""

    async def body() -> list[str]:
        async with _store(current=False) as store:
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
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Probe also the integrations whose vendor asked us to wait (a type paused "
            "for rate limiting, a Retry-After not passed yet); by default they are listed "
            "as not probed.",
        ),
    ] = False,
) -> None:
    """Run every active check of an organisation now, store the results and show them.

    Integrations whose vendor asked us to wait are not probed (see --force); they are
    listed on stderr with the time they may be probed again. Exit code 0 when nothing is
    unreachable, 1 when any integration is unreachable.
    """
    from .scheduling.holds import VendorHold, find_vendor_holds  # noqa: PLC0415

    registry = _registry()
    show_progress = not as_json and err.is_terminal

    async def body() -> tuple[list[CheckOutcome], list[tuple[Any, VendorHold]]]:
        async with _store() as store:
            found = await _find_org(store, org)
            records = await store.list_integrations(found.id)
            integrations = [registry.from_record(r) for r in records]
            holds = (
                {} if force else await find_vendor_holds(store, found.id, integrations, at=utcnow())
            )
            held = [(i, holds[i.integration_id]) for i in integrations if i.integration_id in holds]
            probed = [i for i in integrations if i.integration_id not in holds]
            due = sum(1 for i in probed if i.is_checked_actively)
            with _progress(due, show_progress and due > 20) as on_result:
                outcomes = await run_health_checks(
                    found.id,
                    integrations=probed,
                    store=store,
                    registry=registry,
                    timeout_s=timeout,
                    on_result=on_result,
                )
            return outcomes, held

    outcomes, held = _run(body)
    if as_json:
        _print_json([_result_row(o) for o in outcomes])
    else:
        _print_outcomes(outcomes, held=len(held))
    for integration, hold in held:
        err.print(
            Text(f"{integration.name} ({integration.integration_type}): {hold.message}"),
            style="yellow",
        )
    if held:
        err.print(f"{len(held)} integration(s) not probed; --force probes them anyway.")
    if any(o.result.status is HealthStatus.UNREACHABLE for o in outcomes):
        raise typer.Exit(1)


def _print_outcomes(outcomes: Sequence[CheckOutcome], *, held: int = 0) -> None:
    if not outcomes:
        out.print("No integration probed." if held else "No active integrations to check.")
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
    """Show the current status of every integration of an organisation.

    Integration types whose active checks are paused (the vendor kept rate-limiting) are
    named below the table; their integrations show the pause's end as their next check
    (``paused_until`` in JSON).
    """
    registry = _registry()
    now = utcnow()

    async def body() -> tuple[list[Any], dict[UUID, Any], dict[str, TypeMode]]:
        async with _store() as store:
            found = await _find_org(store, org)
            records = await store.list_integrations(found.id)
            statuses = {s.integration_id: s for s in await store.list_statuses(found.id)}
            paused = {
                m.integration_type: m
                for m in await store.list_type_modes()
                if m.passive_until > now
            }
            return [registry.from_record(r) for r in records], statuses, paused

    integrations, statuses, paused = _run(body)

    def pause_of(item: Any) -> TypeMode | None:
        return paused.get(item.integration_type) if item.is_checked_actively else None

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
            "paused_until": _iso(pause.passive_until) if (pause := pause_of(item)) else None,
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

    table = Table(title_justify="left")
    for column in ("Integration", "Type", "Status", "Latency", "Checked", "Next", "Error"):
        table.add_column(column, justify="right" if column == "Latency" else "left")
    for item in integrations:
        current = statuses.get(item.integration_id)
        pause = pause_of(item)
        next_at = current.next_check_at if current else None
        if pause is not None and (next_at is None or next_at < pause.passive_until):
            following = f"paused, {_ago(pause.passive_until, now)}"
        else:
            following = _ago(next_at, now)
        table.add_row(
            item.name,
            item.integration_type,
            _status_text(current.status if current else None),
            f"{current.latency_ms:,} ms" if current else "–",
            _ago(current.checked_at if current else None, now),
            following,
            Text(current.error or "" if current else ""),
        )
    out.print(table)
    for kind, mode in sorted(paused.items()):
        if any(pause_of(item) is mode for item in integrations):
            out.print(
                Text(
                    f"Active checks of {kind} are paused until "
                    f"{mode.passive_until.isoformat(timespec='seconds')} "
                    f"({_ago(mode.passive_until, now)}): {mode.reason}",
                    style="yellow",
                )
            )


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


BudgetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--budget",
        help="Most checks of a type started per minute by every scheduler and worker on the"
        " database together, e.g. --budget xledger=30 (repeatable; adds to and wins over"
        " INTEGRATION_HEALTH_BUDGETS_PER_MINUTE).",
        show_default=False,
    ),
]


def _scheduler_options(
    registry: CheckRegistry, budget: list[str] | None, **options: Any
) -> SchedulerOptions:
    """The scheduling options of ``scheduler``, ``worker`` and ``serve``: their flags
    (``options``, ``--budget``) and the settings' budgets and rate-limit pause."""
    from .scheduling import SchedulerOptions  # noqa: PLC0415

    settings = registry.settings
    return SchedulerOptions(
        budgets_per_minute=_budgets(budget or [], registry),
        rate_limit_threshold=settings.rate_limit_threshold,
        rate_limit_window=timedelta(seconds=settings.rate_limit_window_s),
        rate_limit_cooldown=timedelta(seconds=settings.rate_limit_cooldown_s),
        **options,
    )


def _per_type(counts: dict[str, int]) -> str:
    """``{"xledger": 4}`` as ``xledger 4`` (``none`` when empty), for one-line reports."""
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()) if n) or "none"


def _budgets(values: list[str], registry: CheckRegistry) -> dict[str, int]:
    """The per-minute budgets: the setting's, then ``--budget`` flags; each type known."""
    budgets = dict(registry.settings.budgets_per_minute)
    from_setting = set(budgets)
    for value in values:
        kind, sep, number = value.partition("=")
        if not sep or not number.isdigit() or not kind:
            fail(f"--budget expects TYPE=CHECKS_PER_MINUTE (e.g. xledger=30), not {value!r}")
        if int(number) < 1:
            fail(
                f"--budget {value}: a budget is at least 1 check per minute (to stop probing "
                "a type, make its integrations passive)"
            )
        budgets[kind] = int(number)
        from_setting.discard(kind)
    for kind in budgets:
        if kind not in registry.types:
            where = "INTEGRATION_HEALTH_BUDGETS_PER_MINUTE" if kind in from_setting else "--budget"
            fail(
                f"{where}: unknown integration type {kind!r}; known types: "
                + ", ".join(registry.types)
            )
    return budgets


@app.command()
def scheduler(
    tick: Annotated[
        float,
        typer.Option("--tick", min=0.5, max=300.0, help="Seconds between planning passes."),
    ] = 5.0,
    budget: BudgetOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run one planning pass, print what it did, exit.")
    ] = False,
    lease: Annotated[
        float,
        typer.Option(
            "--lease",
            min=10.0,
            max=3600.0,
            help="Seconds after which the checks a dead scheduler had claimed are run by another.",
        ),
    ] = 120.0,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            min=1,
            max=10_000,
            help="Most due checks planned and claimed per pass. Smaller batches keep the lanes"
            " busier against vendors that answer fast (at a concurrency of 1,000, 500 ran"
            " 5-15 % more checks/s than 1,000: docs/benchmarks.md, run U); on PostgreSQL a pass"
            " costs what its batch holds, whatever the number of integrations.",
        ),
    ] = 500,
    loop: LoopOption = "asyncio",
) -> None:
    """Plan and run every due check, continuously, on SQLite or PostgreSQL.

    A never-checked integration is due at once; then every check_interval_s, later while
    failing (backoff) or when the vendor asks (Retry-After). Several schedulers may share one
    database: every (integration, slot) runs once. SIGTERM or Ctrl-C stops it gracefully: the
    checks in flight finish (within their deadline), are written, and it exits 0.
    """
    import signal  # noqa: PLC0415

    from .alerting.config import load_alerting_config  # noqa: PLC0415
    from .alerting.service import AlertingService, build_after_pass_hook  # noqa: PLC0415
    from .scheduling import Scheduler  # noqa: PLC0415

    _use_loop(loop)
    registry = _registry()
    options = _scheduler_options(registry, budget, tick_s=tick, lease_s=lease, batch_size=batch)

    async def body() -> None:
        settings = state.settings()
        alerting_config = load_alerting_config(settings.alerting_file)
        async with _store() as store:
            alerting = await AlertingService.open(
                settings.database_url, alerting_config, settings=settings, main_store=store
            )
            try:
                runner = Scheduler(
                    store, registry, options=options, after_pass=[build_after_pass_hook(alerting)]
                )
                if once:
                    async with registry:
                        report = await runner.run_pass()
                        runner.close_lanes()
                    await alerting.drain()
                    out.print(
                        f"Pass at {report.at.isoformat()}: {report.ran} check(s) run, "
                        f"{report.written} written, {report.skipped_claims} skipped (claimed "
                        f"elsewhere), deferred by budget {_per_type(report.deferred_budget)}, "
                        f"paused {_per_type(report.paused)}."
                    )
                    return
                stop = asyncio.Event()
                running = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    running.add_signal_handler(sig, stop.set)
                err.print(
                    f"scheduler {runner.worker} running on {mask_url(settings.database_url)}"
                    f" ({loop} event loop; SIGTERM or Ctrl-C to stop)"
                )
                settle_heap()  # gc.freeze + thresholds, once started
                await runner.run(stop)
            finally:
                await alerting.aclose()
        err.print("scheduler stopped: in-flight checks finished and were written")

    _run(body)


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            min=1,
            max=64,
            help="Jobs run at once: batches of 200 checks, and the planner while it runs here"
            " (checks in flight stay within the concurrency setting). Default: two batches"
            " per 200 checks of the concurrency setting, plus one, at most 64 — one batch"
            " writes while the next one's checks run.",
            show_default=False,
        ),
    ] = None,
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
    budget: BudgetOption = None,
    loop: LoopOption = "asyncio",
) -> None:
    """Share the due checks with every other worker (PostgreSQL only; start any number).

    Built on procrastinate: each tick one worker plans (a worker that starts plans at once),
    keeping the queue of batches as deep as the workers' measured pace needs for most of the
    tick; batches are claimed and run by any worker, each (integration, slot) exactly once
    even if a worker dies mid-batch.
    When PostgreSQL becomes unreachable the worker waits for it and goes on (logged once).
    SIGTERM or Ctrl-C stops it gracefully (in-flight batches finish). On SQLite use
    `scheduler`.
    """
    import signal  # noqa: PLC0415

    from .scheduling.distributed import (  # noqa: PLC0415 - optional dependency
        build_app,
        default_jobs,
        ensure_procrastinate_schema,
        make_runtime,
        run_worker,
        set_runtime,
    )

    url = state.settings().database_url
    if not url.startswith(("postgresql:", "postgres:")):
        fail(
            "the worker needs PostgreSQL (--database-url postgresql://…); "
            "on SQLite run `integration-health scheduler` instead"
        )
    _use_loop(loop)
    registry = _registry()
    options = _scheduler_options(registry, budget, lease_s=lease)
    jobs = concurrency or default_jobs(registry.settings.concurrency)

    async def body() -> None:
        async with _store() as store, registry:
            applied = await ensure_procrastinate_schema(url)
            if applied:
                err.print("applied the task queue schema (procrastinate) to the database")
            runtime = make_runtime(store, registry, options)
            set_runtime(runtime)
            app = build_app(url, tick_s=tick)
            try:
                async with app.open_async():
                    err.print(
                        f"worker running on {mask_url(url)} ({jobs} jobs at once, at most "
                        f"{registry.settings.concurrency} checks in flight; {loop} event loop;"
                        " SIGTERM or Ctrl-C to stop)"
                    )
                    settle_heap()  # gc.freeze + thresholds, once started
                    stop = asyncio.Event()
                    running = asyncio.get_running_loop()
                    signals = (signal.SIGTERM, signal.SIGINT)

                    def stopping() -> None:  # a second signal stops at once, as before
                        stop.set()
                        for sig in signals:
                            running.remove_signal_handler(sig)

                    for sig in signals:
                        running.add_signal_handler(sig, stopping)
                    # runs until SIGTERM/Ctrl-C, riding out PostgreSQL outages
                    await run_worker(app, jobs=jobs, stop=stop)
                    # batches whose job ended first finish here (bounded by the deadline)
                    await runtime.drain()
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
    """Record one outcome of the sync system (passive health) for an integration.

    For an active integration it also counts as a check: the next probe comes no sooner than
    the type's minimum interval after it.
    """
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


class _LazyAlerting:
    """Alerting for a scheduler whose store only opens inside the web app's lifespan.

    The after-pass hook opens :class:`~integration_health.alerting.service.AlertingService`
    on the first pass (on the same database as the monitor) and evaluates after each pass;
    :meth:`aclose` releases it once the server has stopped.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: Any = None
        self._opening = asyncio.Lock()

    def hook(self, store: Store) -> Callable[[Any], Awaitable[None]]:
        async def after_pass(report: Any) -> None:
            from .alerting.config import load_alerting_config  # noqa: PLC0415
            from .alerting.service import AlertingService  # noqa: PLC0415

            async with self._opening:
                if self.service is None:
                    self.service = await AlertingService.open(
                        self.settings.database_url,
                        load_alerting_config(self.settings.alerting_file),
                        settings=self.settings,
                        main_store=store,
                    )
            await self.service.after_pass(report)

        return after_pass

    async def aclose(self) -> None:
        if self.service is not None:
            await self.service.aclose()
            self.service = None


@app.command()
def serve(
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Without INTEGRATION_HEALTH_JWT_SECRET or "
            "INTEGRATION_HEALTH_JWKS_URL only loopback (127.0.0.1, ::1, localhost) is allowed.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one).")
    ] = 8080,
    no_scheduler: Annotated[
        bool,
        typer.Option(
            "--no-scheduler",
            help="Serve only; checks run elsewhere (`scheduler` or `worker` processes).",
        ),
    ] = False,
    tick: Annotated[
        float,
        typer.Option("--tick", min=0.5, max=300.0, help="Seconds between scheduler passes."),
    ] = 5.0,
    budget: BudgetOption = None,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every HTTP request to stderr.")
    ] = False,
    loop: LoopOption = "asyncio",
) -> None:
    """Serve the JSON API, the dashboard, /healthz and /metrics (and run the scheduler).

    Users authenticate with Supabase JWTs (INTEGRATION_HEALTH_JWT_SECRET or
    INTEGRATION_HEALTH_JWKS_URL); without either, the server is single-user and answers on
    loopback only. The in-process scheduler runs the due checks unless --no-scheduler.
    SIGTERM or Ctrl-C stops it gracefully (requests and checks in flight finish) with exit 0.
    """
    from .alerting.config import load_alerting_config  # noqa: PLC0415
    from .scheduling import Scheduler  # noqa: PLC0415
    from .web.app import create_app  # noqa: PLC0415
    from .web.server import WebServer, bind_socket, ensure_bind_allowed  # noqa: PLC0415

    settings = state.settings()
    try:
        ensure_bind_allowed(settings, host)
    except IntegrationHealthError as exc:
        fail(str(exc))
    _use_loop(loop)
    registry = _registry()
    options = _scheduler_options(registry, budget, tick_s=tick)
    alerting = _LazyAlerting(settings)

    def scheduler_for(store: Store, registry: CheckRegistry) -> Scheduler:
        return Scheduler(
            store,
            registry,
            options=options,
            after_pass=[alerting.hook(store)],
        )

    async def body() -> None:
        async with _store() as store:  # fail early, in one line, if the store is unusable
            await store.ping()
        load_alerting_config(settings.alerting_file)  # a bad alerting file fails here, clearly
        sock = bind_socket(host, port)
        # The app opens its own store (and pools) in its lifespan and closes them on exit.
        web_app = create_app(
            settings, registry=registry, scheduler=None if no_scheduler else scheduler_for
        )
        server = WebServer(web_app, sock, access_log=access_log)
        started = asyncio.Event()

        async def announce() -> None:
            await started.wait()
            out.print(
                f"Serving the API and dashboard on {server.url} "
                f"({'without' if no_scheduler else 'with'} the scheduler; store "
                f"{mask_url(settings.database_url)}). SIGTERM or Ctrl-C to stop.",
                soft_wrap=True,
            )

        announcer = asyncio.create_task(announce())  # WebServer freezes the heap once started
        try:
            await server.serve(started)
        finally:
            announcer.cancel()
            await alerting.aclose()
        err.print("stopped: requests and checks in flight finished")

    _run(body)


@app.command()
def demo(
    host: Annotated[
        str, typer.Option("--host", help="Address of the dashboard (loopback only).")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port", min=0, max=65535, help="Dashboard port (a free one if 8080 is taken)."
        ),
    ] = 8080,
    rounds: Annotated[
        int | None,
        typer.Option(
            "--rounds",
            min=1,
            help="Run this many rounds of checks, then exit (default: until Ctrl-C).",
            show_default=False,
        ),
    ] = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="Check everything once, print the results, exit (no server)."),
    ] = False,
    every: Annotated[
        float, typer.Option("--every", min=1.0, help="Seconds between demo rounds of checks.")
    ] = 10.0,
) -> None:
    """Try it with no network: simulated vendors, a sample organisation, the dashboard.

    Starts local fake vendor servers on 127.0.0.1, stores a sample organisation in an embedded
    SQLite database (default sqlite:///integration-health-demo.db, or --database-url), checks
    every integration, then serves the dashboard with the scheduler running and re-checks the
    sample organisation every --every seconds (demo pace; real integrations are checked at
    most every 15 minutes) until Ctrl-C. --once or --rounds N end by themselves. Exit code 0.
    """
    from .demo import DEMO_ORG_ID, DEMO_SECRETS, demo_vendors, seed_demo  # noqa: PLC0415
    from .scheduling import Scheduler, SchedulerOptions  # noqa: PLC0415
    from .web.app import create_app  # noqa: PLC0415
    from .web.server import WebServer, bind_socket, ensure_bind_allowed  # noqa: PLC0415

    if state.database_url is None and "INTEGRATION_HEALTH_DATABASE_URL" not in os.environ:
        state.database_url = "sqlite:///integration-health-demo.db"
    state.allow_private_networks = True  # the simulated vendors live on 127.0.0.1
    for name, value in DEMO_SECRETS.items():
        os.environ.setdefault(name, value)
    # The demo is single-user on loopback, whatever the environment says about sign-in.
    settings = state.settings().model_copy(
        update={
            "jwt_secret": None,
            "jwks_url": None,
            "dashboard_poll_s": 2.0,
            "run_now_interval_s": 5.0,
        }
    )
    try:
        ensure_bind_allowed(settings, host)
    except IntegrationHealthError as exc:
        fail(str(exc))
    total = 1 if once else rounds
    registry = default_registry(settings)
    alerting = _LazyAlerting(settings)

    async def check_round(store: Store) -> list[CheckOutcome]:
        return await run_health_checks(DEMO_ORG_ID, store=store, registry=registry)

    with demo_vendors() as vendors:

        async def body() -> None:
            async with _store() as store:
                count = await seed_demo(store, registry, vendors.targets)
                out.print(
                    f"Demo organization 'Demo Company AS' ({DEMO_ORG_ID}) with {count} "
                    f"integrations, stored in {mask_url(settings.database_url)}; simulated "
                    f"vendors on 127.0.0.1"
                )
                _print_outcomes(await check_round(store))
                if total == 1:
                    return
                try:
                    sock = bind_socket(host, port)
                except IntegrationHealthError:
                    if port != 8080:
                        raise
                    sock = bind_socket(host, 0)  # 8080 is taken: any free port will do
                web_app = create_app(
                    settings,
                    store=store,
                    registry=registry,
                    scheduler=lambda store, registry: Scheduler(
                        store,
                        registry,
                        options=SchedulerOptions(),
                        after_pass=[alerting.hook(store)],
                    ),
                )
                server = WebServer(web_app, sock)
                started = asyncio.Event()

                async def pace() -> None:
                    await started.wait()
                    until = "Ctrl-C to stop" if total is None else f"{total} rounds"
                    out.print(
                        f"Dashboard: {server.url}/orgs/{DEMO_ORG_ID} ({until})", soft_wrap=True
                    )
                    done = 1
                    while total is None or done < total:
                        await asyncio.sleep(every)
                        try:
                            await check_round(store)
                        except IntegrationHealthError as exc:
                            log.error("demo round failed: %s", exc)
                        done += 1
                    server.stop()

                pacer = asyncio.create_task(pace())
                try:
                    await server.serve(started)
                finally:
                    pacer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pacer
                    await alerting.aclose()

        _run(body)
    out.print(
        "Next: `integration-health status --org 'Demo Company AS'` and "
        "`integration-health history --integration ID` (add --database-url "
        f"{settings.database_url} if you moved it)."
    )


# -- alerts (integration_health.alerting; see docs/alerting.md) ----------------------------------

alerts_app = typer.Typer(
    help="Alerts, vendor-wide incidents and their webhook deliveries.", no_args_is_help=True
)
app.add_typer(alerts_app, name="alerts")

AlertsOrgOption = Annotated[
    str | None,
    typer.Option("--org", help="Only this organization (id or exact name).", show_default=False),
]
AlertingConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Alerting YAML file (thresholds, webhooks). Default: "
        "INTEGRATION_HEALTH_ALERTING_FILE, else built-in thresholds and no webhook.",
        show_default=False,
    ),
]


def _alerting_config(path: Path | None) -> Any:
    from .alerting import load_alerting_config  # noqa: PLC0415

    try:
        return load_alerting_config(path or state.settings().alerting_file)
    except IntegrationHealthError as exc:
        fail(str(exc))


@asynccontextmanager
async def _alerting(config: Any) -> AsyncIterator[tuple[Store, Any]]:
    """The monitor's store (opening it upgrades an embedded schema) and alerting beside it."""
    from .alerting import AlertingService  # noqa: PLC0415

    settings = state.settings()
    async with _store() as store:
        service = await AlertingService.open(
            settings.database_url, config, settings=settings, main_store=store
        )
        try:
            yield store, service
        finally:
            await service.aclose()


def _alert_row(alert: Any) -> dict[str, Any]:
    return {
        "id": str(alert.id),
        "org_id": str(alert.org_id),
        "integration_id": str(alert.integration_id),
        "integration_type": alert.integration_type,
        "integration_name": alert.integration_name,
        "severity": alert.severity.value,
        "state": alert.state.value,
        "opened_at": _iso(alert.opened_at),
        "resolved_at": _iso(alert.resolved_at),
        "first_failure_at": _iso(alert.first_failure_at),
        "consecutive_failures": alert.consecutive_failures,
        "error_code": alert.error_code,
        "error": alert.error,
        "incident_id": str(alert.incident_id) if alert.incident_id else None,
        "suppressed": alert.suppressed,
    }


@alerts_app.command("list")
def alerts_list(
    org: AlertsOrgOption = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only alerts still open.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    config: AlertingConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List alerts (open first, newest first), of one organization or all."""
    settings_config = _alerting_config(config)

    async def body() -> list[Any]:
        async with _alerting(settings_config) as (store, alerting):
            org_id = (await _find_org(store, org)).id if org else None
            alerts: list[Any] = await alerting.store.list_alerts(
                org_id, open_only=open_only, limit=limit
            )
            return alerts

    alerts = _run(body)
    rows = [_alert_row(a) for a in alerts]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("No alerts.")
        return
    table = Table(title=f"{len(rows)} alert(s)", title_justify="left")
    for column in ("Integration", "Type", "Severity", "State", "Opened", "Resolved", "Error"):
        table.add_column(column)
    now = utcnow()
    for alert in alerts:
        state_text = alert.state.value + (" (grouped: vendor incident)" if alert.suppressed else "")
        table.add_row(
            alert.integration_name,
            alert.integration_type,
            _status_text(HealthStatus(alert.severity.value)),
            state_text,
            _ago(alert.opened_at, now),
            _ago(alert.resolved_at, now),
            Text(alert.error or ""),
        )
    out.print(table)


@alerts_app.command("incidents")
def alerts_incidents(
    open_only: Annotated[bool, typer.Option("--open", help="Only incidents still open.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    config: AlertingConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List vendor-wide incidents (one integration type failing in many organizations)."""
    settings_config = _alerting_config(config)

    async def body() -> list[Any]:
        async with _alerting(settings_config) as (_, alerting):
            incidents: list[Any] = await alerting.store.list_incidents(
                open_only=open_only, limit=limit
            )
            return incidents

    incidents = _run(body)
    rows = [
        {
            "id": str(i.id),
            "integration_type": i.integration_type,
            "state": i.state.value,
            "opened_at": _iso(i.opened_at),
            "resolved_at": _iso(i.resolved_at),
            "failing_orgs": i.failing_orgs,
            "failing_integrations": i.failing_integrations,
            "total_integrations": i.total_integrations,
            "peak_failing_orgs": i.peak_failing_orgs,
        }
        for i in incidents
    ]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("No vendor incidents.")
        return
    table = Table(title=f"{len(rows)} incident(s)", title_justify="left")
    for column in ("Type", "State", "Opened", "Resolved", "Failing orgs", "Failing / total"):
        table.add_column(column)
    now = utcnow()
    for i in incidents:
        table.add_row(
            i.integration_type,
            i.state.value,
            _ago(i.opened_at, now),
            _ago(i.resolved_at, now),
            f"{i.failing_orgs} (peak {i.peak_failing_orgs})",
            f"{i.failing_integrations} / {i.total_integrations}",
        )
    out.print(table)


@alerts_app.command("deliveries")
def alerts_deliveries(
    org: AlertsOrgOption = None,
    alert: Annotated[
        str | None, typer.Option("--alert", help="Only this alert (id).", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    config: AlertingConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show webhook deliveries and their log (attempt, status code, error, next attempt)."""
    alert_id = None
    if alert is not None:
        try:
            alert_id = UUID(alert)
        except ValueError:
            fail(f"--alert must be an alert id (a UUID), not {alert!r}")
    settings_config = _alerting_config(config)

    async def body() -> list[tuple[Any, list[Any]]]:
        async with _alerting(settings_config) as (store, alerting):
            org_id = (await _find_org(store, org)).id if org else None
            found = await alerting.store.list_deliveries(
                org_id=org_id, alert_id=alert_id, limit=limit
            )
            return [(d, await alerting.store.list_attempts(d.id)) for d in found]

    found = _run(body)
    rows = [
        {
            "id": str(d.id),
            "event": d.event,
            "target": d.target,
            "state": d.state.value,
            "attempts": d.attempts,
            "next_attempt_at": _iso(d.next_attempt_at),
            "last_status_code": d.last_status_code,
            "last_error": d.last_error,
            "created_at": _iso(d.created_at),
            "delivered_at": _iso(d.delivered_at),
            "org_id": str(d.org_id) if d.org_id else None,
            "alert_id": str(d.alert_id) if d.alert_id else None,
            "incident_id": str(d.incident_id) if d.incident_id else None,
            "payload": d.payload,
            "log": [
                {
                    "attempt": a.attempt,
                    "at": _iso(a.at),
                    "outcome": a.outcome.value,
                    "status_code": a.status_code,
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                    "next_attempt_at": _iso(a.next_attempt_at),
                }
                for a in attempts
            ],
        }
        for d, attempts in found
    ]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("No deliveries.")
        return
    table = Table(title=f"{len(rows)} deliveries", title_justify="left")
    for column in ("Event", "Webhook", "State", "Attempt", "At", "Status", "Error", "Next"):
        table.add_column(column)
    for d, attempts in found:
        if not attempts:
            table.add_row(
                d.event, d.target, d.state.value, "–", "–", "–", "", _iso(d.next_attempt_at) or "–"
            )
        for a in attempts:
            table.add_row(
                d.event,
                d.target,
                d.state.value,
                str(a.attempt),
                a.at.strftime("%Y-%m-%d %H:%M:%S"),
                str(a.status_code or "–"),
                Text(a.error or ""),
                _iso(a.next_attempt_at) or "–",
            )
    out.print(table)


@alerts_app.command("evaluate")
def alerts_evaluate(
    deliver: Annotated[
        bool, typer.Option("--deliver/--no-deliver", help="Also send what is due.")
    ] = True,
    config: AlertingConfigOption = None,
) -> None:
    """Count new results into alerts and incidents once (idempotent), then send what is due."""
    settings_config = _alerting_config(config)

    async def body() -> tuple[Any, Any]:
        async with _alerting(settings_config) as (_, alerting):
            result: tuple[Any, Any] = await alerting.run_once(deliver=deliver)
            return result

    evaluation, sent = _run(body)
    out.print(
        f"Evaluated {evaluation.evaluated} integration(s): {evaluation.opened} alert(s) opened, "
        f"{evaluation.escalated} escalated, {evaluation.resolved} resolved, "
        f"{evaluation.suppressed} grouped under vendor incidents; incidents "
        f"{evaluation.incidents_opened} opened, {evaluation.incidents_resolved} resolved; "
        f"{evaluation.enqueued} deliveries queued."
    )
    if sent is not None:
        _print_delivery_report(sent)


def _print_delivery_report(sent: Any) -> None:
    out.print(
        f"Deliveries: {sent.delivered} delivered, {sent.retrying} to retry, "
        f"{sent.failed} failed (of {sent.claimed} due)."
    )


@alerts_app.command("deliver")
def alerts_deliver(config: AlertingConfigOption = None) -> None:
    """Send the deliveries that are due now, once (retries keep their backoff schedule)."""
    settings_config = _alerting_config(config)

    async def body() -> Any:
        async with _alerting(settings_config) as (_, alerting):
            return await alerting.deliverer.deliver_pending()

    _print_delivery_report(_run(body))


@alerts_app.command("run")
def alerts_run(
    tick: Annotated[
        float, typer.Option("--tick", min=1.0, max=600.0, help="Seconds between rounds.")
    ] = 15.0,
    config: AlertingConfigOption = None,
) -> None:
    """Evaluate and deliver every --tick seconds (any number may run: work is shared).

    For deployments whose checks run in `worker` processes or elsewhere. SIGTERM or Ctrl-C
    stops it after the current round.
    """
    import signal  # noqa: PLC0415

    settings_config = _alerting_config(config)

    async def body() -> None:
        async with _alerting(settings_config) as (_, alerting):
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            err.print(
                f"alerting running on {mask_url(state.settings().database_url)} every "
                f"{tick:g} s (SIGTERM or Ctrl-C to stop)"
            )
            await alerting.run(stop, tick_s=tick)
        err.print("alerting stopped")

    _run(body)


@alerts_app.command("test-webhook")
def alerts_test_webhook(
    target: Annotated[
        str | None,
        typer.Option("--target", help="Only this webhook (its name).", show_default=False),
    ] = None,
    config: AlertingConfigOption = None,
) -> None:
    """Send a signed `test` event to each configured webhook now (nothing is stored).

    Exit code 0 when every webhook answered 2xx, 1 otherwise.
    """
    from .adapters._http import HttpClient  # noqa: PLC0415
    from .alerting.delivery import send_test  # noqa: PLC0415

    settings_config = _alerting_config(config)
    targets = [t for t in settings_config.webhooks if target is None or t.name == target]
    if not targets:
        fail(
            f"no webhook named {target!r} in the alerting config"
            if target
            else "no webhook is configured (add `webhooks:` to the alerting config)"
        )

    async def body() -> list[Any]:
        http = HttpClient(state.settings())
        try:
            return [await send_test(http, t) for t in targets]
        finally:
            await http.aclose()

    results = _run(body)
    failed = False
    for t, result in zip(targets, results, strict=True):
        if result.ok:
            out.print(f"{t.name}: delivered (HTTP {result.status_code}, {result.duration_ms} ms)")
        else:
            failed = True
            out.print(Text(f"{t.name}: failed — {result.error}", style="red"))
    if failed:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    app()
