"""The RLS matrix: every role x every public table x select/insert/update/delete, as a table.

Each cell runs inside a transaction that switches identity exactly as PostgREST does
(``set_config('role', …, true)`` plus ``request.jwt.claims``), each operation in a savepoint
that is rolled back, on a database seeded (as the owner) with rows of organisation A, of
organisation B and rows that belong to no organisation (vendor incidents, type modes). The
outcome of a cell is one of:

- ``denied``: the role has no privilege on the table (``permission denied``);
- ``rls``: the privilege exists but a policy refused every new row (``WITH CHECK``);
- ``none``: the statement ran and saw/changed zero rows;
- ``A``, ``B``, ``N``, ``A+B``, …: the owners of the rows seen (select), changed
  (update/delete) or created (insert of one row for A and one for B). ``N`` = no organisation.

A select must see *all* rows of the organisations it sees (compared with the owner's counts).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

pytestmark = pytest.mark.postgres

Conn = psycopg.Connection[tuple[Any, ...]]

OPS = ("select", "insert", "update", "delete")

# --- the roles ---------------------------------------------------------------------------------
# role name -> (database role, whose JWT claims: a user key of Ids, "" = role-only claims)
ROLES: dict[str, tuple[str, str]] = {
    "anon": ("anon", ""),
    "authenticator": ("authenticator", ""),
    "member_a": ("authenticated", "member_a"),
    "admin_a": ("authenticated", "admin_a"),
    "member_b": ("authenticated", "member_b"),
    "stranger": ("authenticated", "stranger"),  # signed in, member of nothing
    "no_sub": ("authenticated", ""),  # authenticated claims without a subject
    "service_role": ("service_role", ""),
}

D = "denied"
_READ_ONLY = {"insert": D, "update": D, "delete": D}
_NOTHING = {"select": D, **_READ_ONLY}


def _member(org: str) -> dict[str, dict[str, str]]:
    """What an authenticated user sees when a member (not admin) of ``org`` ("none": of none)."""
    read = {"select": org, **_READ_ONLY}
    return {
        "organizations": read,
        "organization_members": read,
        "integrations": {"select": org, "insert": "rls", "update": "none", "delete": "none"},
        "integration_health_status": read,
        "integration_health_history": read,
        "integration_check_runs": _NOTHING,
        "integration_health_unchecked": _NOTHING,
        "integration_health_events": read,
        "integration_type_modes": _NOTHING,
        "alert_integration_state": _NOTHING,
        "alert_incidents": read,
        "alerts": read,
        "alert_deliveries": read,
        "alert_delivery_attempts": read,
    }


TABLES = tuple(_member("A"))

_ADMIN_A = {
    **_member("A"),
    "integrations": {"select": "A", "insert": "A", "update": "A", "delete": "A"},
}
_EVERYTHING = {t: dict.fromkeys(OPS, "A+B+N") for t in TABLES}
for _table in TABLES:
    _EVERYTHING[_table]["insert"] = "A+B"
for _table in ("organizations", "organization_members", "integrations",
               "integration_health_status", "integration_health_history",
               "integration_check_runs", "integration_health_unchecked",
               "integration_health_events", "alert_integration_state",
               "alerts"):  # fmt: skip
    _EVERYTHING[_table].update(select="A+B", update="A+B", delete="A+B")
_EVERYTHING["integration_type_modes"].update(select="N", update="N", delete="N")

MATRIX: dict[str, dict[str, dict[str, str]]] = {
    "anon": dict.fromkeys(TABLES, _NOTHING),
    "authenticator": dict.fromkeys(TABLES, _NOTHING),
    "member_a": _member("A"),
    "admin_a": _ADMIN_A,
    "member_b": _member("B"),
    "stranger": _member("none"),
    "no_sub": _member("none"),
    "service_role": _EVERYTHING,
}
"""role -> table -> operation -> expected outcome (see the module docstring)."""


# --- the seeded world --------------------------------------------------------------------------


@dataclass
class Ids:
    """Every id of the seeded world; ``labels`` maps an owner key to A, B or N."""

    values: dict[str, uuid.UUID] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> uuid.UUID:
        return self.values.setdefault(name, uuid.uuid4())

    def label(self, owner: object) -> str:
        return self.labels.get(str(owner), "N")


def _seed(conn: Conn, ids: Ids) -> None:
    """Rows of A, of B and of no organisation in every table (as the owner: no RLS)."""
    for org in "AB":
        o, i, i2 = ids[f"org{org}"], ids[f"int{org}"], ids[f"int{org}2"]
        conn.execute("insert into public.organizations (id, name) values (%s, %s)", (o, org))
        for user, role in ((f"member_{org.lower()}", "member"), (f"admin_{org.lower()}", "admin")):
            conn.execute(
                "insert into public.organization_members (org_id, user_id, role)"
                " values (%s, %s, %s)",
                (o, ids[user], role),
            )
        for integration in (i, i2):
            conn.execute(
                "insert into public.integrations (id, org_id, integration_type, name, config)"
                " values (%s, %s, 'http', 'n', '{\"url\": \"https://example.com\"}')",
                (integration, o),
            )
        conn.execute(
            "insert into public.integration_health_status"
            " (integration_id, org_id, integration_type, status, latency_ms, checked_at)"
            " values (%s, %s, 'http', 'healthy', 5, now())",  # the trigger logs one event
            (i, o),
        )
        conn.execute(
            "insert into public.integration_health_history"
            " (org_id, integration_id, status, latency_ms, checked_at)"
            " values (%s, %s, 'healthy', 5, now())",
            (o, i),
        )
        conn.execute(
            "insert into public.integration_check_runs"
            " (integration_id, slot_at, org_id, state, worker, claimed_at)"
            " values (%s, now(), %s, 'done', 'w', now())",
            (i, o),
        )
        conn.execute(
            "insert into public.alert_integration_state (integration_id, org_id, integration_type)"
            " values (%s, %s, 'http')",
            (i, o),
        )
        conn.execute(
            "insert into public.alert_incidents (id, integration_type, state, opened_at,"
            " failing_orgs, failing_integrations, total_integrations, peak_failing_orgs)"
            " values (%s, %s, 'resolved', now(), 1, 1, 1, 1)",
            (ids[f"inc{org}"], f"type-{org}"),
        )
        conn.execute(
            "insert into public.alerts (id, org_id, integration_id, integration_type,"
            " integration_name, severity, state, opened_at, first_failure_at,"
            " consecutive_failures, incident_id)"
            " values (%s, %s, %s, 'http', 'n', 'unreachable', 'open', now(), now(), 3, %s)",
            (ids[f"alert{org}"], o, i, ids[f"inc{org}"]),
        )
        _seed_delivery(conn, ids, org, o, alert=ids[f"alert{org}"], incident=None)
        ids.labels.update({str(o): org, str(ids[f"inc{org}"]): org})
    # Rows of no organisation: a vendor incident nobody's alert points at, its delivery, a
    # vendor-wide passive switch.
    conn.execute(
        "insert into public.alert_incidents (id, integration_type, state, opened_at,"
        " failing_orgs, failing_integrations, total_integrations, peak_failing_orgs)"
        " values (%s, 'type-N', 'open', now(), 3, 3, 3, 3)",
        (ids["incN"],),
    )
    _seed_delivery(conn, ids, "N", None, alert=None, incident=ids["incN"])
    conn.execute(
        "insert into public.integration_type_modes"
        " (integration_type, passive_until, reason, switched_at)"
        " values ('xledger', now() + interval '1 hour', 'rate limited', now())"
    )


def _seed_delivery(
    conn: Conn,
    ids: Ids,
    label: str,
    org: uuid.UUID | None,
    *,
    alert: uuid.UUID | None,
    incident: uuid.UUID | None,
) -> None:
    delivery = ids[f"delivery{label}"]
    conn.execute(
        "insert into public.alert_deliveries (id, dedupe_key, org_id, alert_id, incident_id,"
        " event, target, payload, state) values (%s, %s, %s, %s, %s, 'opened', 'hook', '{}',"
        " 'delivered')",
        (delivery, f"dedupe-{label}", org, alert, incident),
    )
    conn.execute(
        "insert into public.alert_delivery_attempts (delivery_id, org_id, attempt, at, outcome,"
        " duration_ms, worker) values (%s, %s, 1, now(), 'delivered', 5, 'w')",
        (delivery, org),
    )


# --- the operations ----------------------------------------------------------------------------

# table -> SQL expression naming the row's owner (an organisation or incident id)
OWNER = dict.fromkeys(TABLES, "org_id") | {
    "organizations": "id",
    "alert_incidents": "id",
    "integration_type_modes": "null::uuid",
    "integration_health_unchecked": "(select i.org_id from public.integrations i"
    " where i.id = integration_id)",
}
# table -> a column to "update" to itself (needs the privilege and passes the policy's USING)
TOUCH = {
    "organizations": "name",
    "organization_members": "role",
    "integrations": "name",
    "integration_health_status": "latency_ms",
    "integration_health_history": "latency_ms",
    "integration_check_runs": "worker",
    "integration_health_unchecked": "integration_id",
    "integration_health_events": "error",
    "integration_type_modes": "reason",
    "alert_integration_state": "bad_streak",
    "alert_incidents": "failing_orgs",
    "alerts": "error",
    "alert_deliveries": "attempts",
    "alert_delivery_attempts": "error",
}


def _insert_sql(table: str, org: str, ids: Ids) -> tuple[str, tuple[Any, ...]]:
    """One new row of ``table`` belonging to ``org`` (valid: it succeeds as the owner)."""
    o, i, i2 = ids[f"org{org}"], ids[f"int{org}"], ids[f"int{org}2"]
    new = uuid.uuid4()
    statements: dict[str, tuple[str, tuple[Any, ...]]] = {
        "organizations": ("insert into public.organizations (id, name) values (%s, 'x')", (new,)),
        "organization_members": (
            "insert into public.organization_members (org_id, user_id) values (%s, %s)",
            (o, new),
        ),
        "integrations": (
            "insert into public.integrations (id, org_id, integration_type, name, config)"
            " values (%s, %s, 'http', 'x', '{}')",
            (new, o),
        ),
        "integration_health_status": (
            "insert into public.integration_health_status"
            " (integration_id, org_id, integration_type, status, latency_ms, checked_at)"
            " values (%s, %s, 'http', 'healthy', 1, now())",
            (i2, o),
        ),
        "integration_health_history": (
            "insert into public.integration_health_history"
            " (org_id, integration_id, status, latency_ms, checked_at)"
            " values (%s, %s, 'healthy', 1, now())",
            (o, i),
        ),
        "integration_check_runs": (
            "insert into public.integration_check_runs"
            " (integration_id, slot_at, org_id, state, worker, claimed_at)"
            " values (%s, now() + interval '1 day', %s, 'claimed', 'w', now())",
            (i, o),
        ),
        "integration_health_unchecked": (  # a checked integration (the other one is there)
            "insert into public.integration_health_unchecked (integration_id) values (%s)",
            (i,),
        ),
        "integration_health_events": (
            "insert into public.integration_health_events"
            " (org_id, integration_id, integration_type, to_status, at)"
            " values (%s, %s, 'http', 'healthy', now())",
            (o, i),
        ),
        "integration_type_modes": (
            "insert into public.integration_type_modes"
            " (integration_type, passive_until, reason, switched_at)"
            " values (%s, now(), 'x', now())",
            (f"type-{new}",),
        ),
        "alert_integration_state": (
            "insert into public.alert_integration_state"
            " (integration_id, org_id, integration_type) values (%s, %s, 'http')",
            (i2, o),
        ),
        "alert_incidents": (
            "insert into public.alert_incidents (id, integration_type, state, opened_at,"
            " failing_orgs, failing_integrations, total_integrations, peak_failing_orgs)"
            " values (%s, 'x', 'resolved', now(), 0, 0, 0, 0)",
            (new,),
        ),
        "alerts": (
            "insert into public.alerts (id, org_id, integration_id, integration_type,"
            " integration_name, severity, state, opened_at, first_failure_at,"
            " consecutive_failures) values (%s, %s, %s, 'http', 'x', 'degraded', 'resolved',"
            " now(), now(), 1)",
            (new, o, i2),
        ),
        "alert_deliveries": (
            "insert into public.alert_deliveries (id, dedupe_key, org_id, alert_id, event,"
            " target, payload, state) values (%s, %s, %s, %s, 'opened', 'hook', '{}',"
            " 'pending')",
            (new, str(new), o, ids[f"alert{org}"]),
        ),
        "alert_delivery_attempts": (
            "insert into public.alert_delivery_attempts (delivery_id, org_id, attempt, at,"
            " outcome, duration_ms, worker) values (%s, %s, 2, now(), 'failed', 1, 'w')",
            (ids[f"delivery{org}"], o),
        ),
    }
    return statements[table]


class Refused(Exception):
    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


@contextmanager
def _savepoint(conn: Conn) -> Iterator[None]:
    """Run a statement in a savepoint that is always rolled back; map refusals to outcomes."""
    conn.execute("savepoint cell")
    try:
        yield
    except pg_errors.InsufficientPrivilege as exc:
        conn.execute("rollback to savepoint cell")
        text = str(exc)
        if "row-level security" in text:
            raise Refused("rls") from None
        if "permission denied" in text:
            raise Refused("denied") from None
        raise
    else:
        conn.execute("rollback to savepoint cell")


def _labels(owners: list[object], ids: Ids) -> str:
    found = sorted({ids.label(owner) for owner in owners})
    return "+".join(found) if found else "none"


def _run(conn: Conn, table: str, op: str, ids: Ids) -> tuple[str, list[object]]:
    """The outcome of ``op`` on ``table`` for the connection's current role, and the owners."""
    owner = OWNER[table]
    try:
        if op == "insert":
            created: list[object] = []
            refusals: list[str] = []
            for org in "AB":
                try:
                    with _savepoint(conn):
                        conn.execute(*_insert_sql(table, org, ids))
                        created.append(ids[f"org{org}"])
                except Refused as refused:
                    refusals.append(refused.outcome)
            if created:
                return _labels(created, ids), created
            return ("denied" if "denied" in refusals else "rls"), []
        with _savepoint(conn):
            if op == "select":
                sql = f"select {owner} from public.{table}"
            elif op == "update":
                column = TOUCH[table]
                sql = f"update public.{table} set {column} = {column} returning {owner}"
            else:
                sql = f"delete from public.{table} returning {owner}"
            owners = [row[0] for row in conn.execute(sql).fetchall()]
        return _labels(owners, ids), owners
    except Refused as refused:
        return refused.outcome, []


def _claims(role: str, user: str, ids: Ids) -> dict[str, Any]:
    claims: dict[str, Any] = {"role": role}
    if user:
        claims |= {"sub": str(ids[user]), "aud": "authenticated"}
    return claims


@pytest.fixture
def seeded(pg_migrated: str) -> tuple[str, Ids, dict[str, Counter[str]]]:
    """The migrated database, seeded; the owner's row count per table and label."""
    ids = Ids()
    with psycopg.connect(pg_migrated, autocommit=True) as conn:
        with conn.transaction():
            _seed(conn, ids)
        owner_counts = {
            table: Counter(
                ids.label(row[0])
                for row in conn.execute(f"select {OWNER[table]} from public.{table}").fetchall()
            )
            for table in TABLES
        }
    return pg_migrated, ids, owner_counts


def test_every_role_table_and_operation_has_its_expected_outcome(
    seeded: tuple[str, Ids, dict[str, Counter[str]]],
) -> None:
    """Every cell of the matrix (role x table x operation) behaves as the literal table says."""
    url, ids, owner_counts = seeded
    for table in TABLES:  # the owner's world has every label the matrix expects
        expected_all = set(MATRIX["service_role"][table]["select"].split("+"))
        assert set(owner_counts[table]) == expected_all, (table, owner_counts[table])
    mismatches: list[str] = []
    for name, (role, user) in ROLES.items():
        with psycopg.connect(url) as conn:  # autocommit off: one transaction, rolled back
            conn.execute(
                "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                (role, json.dumps(_claims(role, user, ids))),
            )
            current = conn.execute("select current_user").fetchone()
            assert current is not None and current[0] == role
            for table in TABLES:
                for op in OPS:
                    got, owners = _run(conn, table, op, ids)
                    want = MATRIX[name][table][op]
                    if got != want:
                        mismatches.append(
                            f"{name:<14} {table:<28} {op:<7} got {got!r}, want {want!r}"
                        )
                    elif op == "select" and owners:
                        # Seeing an organisation means seeing all of its rows.
                        seen = Counter(ids.label(o) for o in owners)
                        full = {label: owner_counts[table][label] for label in seen}
                        if seen != full:
                            mismatches.append(f"{name} {table} select: {seen} of {full}")
            conn.rollback()
    assert not mismatches, "RLS matrix mismatches:\n" + "\n".join(mismatches)


def test_the_matrix_covers_every_table_and_every_role(pg_migrated: str) -> None:
    """A new table (in any schema the migrations create) or role fails until it is in the matrix."""
    with psycopg.connect(pg_migrated, autocommit=True) as conn:
        public = {
            row[0]
            for row in conn.execute(
                "select tablename from pg_tables where schemaname = 'public'"
            ).fetchall()
        }
        elsewhere = {
            f"{row[0]}.{row[1]}"
            for row in conn.execute(
                "select schemaname, tablename from pg_tables"
                " where schemaname not in ('public', 'pg_catalog', 'information_schema')"
            ).fetchall()
        }
        no_rls = {
            row[0]
            for row in conn.execute(
                "select tablename from pg_tables where schemaname = 'public' and not rowsecurity"
            ).fetchall()
        }
        roles = {
            row[0]
            for row in conn.execute(
                "select rolname from pg_roles where rolname in"
                " ('anon', 'authenticated', 'service_role', 'authenticator')"
                " or (not rolsuper and rolname !~ '^pg_' and rolname <> current_user"
                "     and exists (select 1 from pg_class c"
                "                 where c.relnamespace = 'public'::regnamespace"
                "                 and has_table_privilege(pg_roles.oid, c.oid, 'select')))"
            ).fetchall()
        }
    assert public == set(TABLES), (
        f"add to the matrix: {public - set(TABLES)}; gone: {set(TABLES) - public}"
    )
    assert not no_rls, f"tables without row-level security: {no_rls}"
    # Outside public: only the migration bookkeeping, which no API role may touch (checked below).
    assert elsewhere <= {"integration_health.schema_migrations"}, elsewhere
    matrix_roles = {role for role, _ in ROLES.values()}
    assert roles <= matrix_roles, (
        f"roles with access missing from the matrix: {roles - matrix_roles}"
    )
    for name in MATRIX:
        assert set(MATRIX[name]) == set(TABLES), name
        assert all(set(cells) == set(OPS) for cells in MATRIX[name].values()), name


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role", "authenticator"])
def test_api_roles_cannot_reach_the_helper_and_bookkeeping_schemas(
    pg_migrated: str, role: str
) -> None:
    """No API role reads the migration bookkeeping; anon cannot call the membership helpers."""
    with psycopg.connect(pg_migrated, autocommit=True) as conn:
        row = conn.execute(
            "select has_schema_privilege(%s, 'integration_health', 'usage'),"
            " has_table_privilege(%s, 'integration_health.schema_migrations', 'select'),"
            " has_function_privilege(%s, 'private.user_org_ids()', 'execute'),"
            " has_function_privilege(%s, 'private.prune_integration_health_history()',"
            "   'execute')",
            (role, role, role, role),
        ).fetchone()
    assert row is not None
    schema_usage, bookkeeping, helper, trigger_fn = row
    assert not bookkeeping
    assert not schema_usage
    assert not trigger_fn
    assert helper == (role in ("authenticated", "service_role"))
