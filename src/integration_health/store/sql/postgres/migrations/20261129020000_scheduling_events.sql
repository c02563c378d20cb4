-- Scheduling (idempotent slots), status-transition events and vendor-wide passive switches.
-- Mirrors store/sql/sqlite/0002_scheduling_events.sql (same tables and columns).

-- One row per (integration, scheduled slot): a check run is claimed before it starts and
-- completed in the same transaction that writes its result, so a late or duplicate run of
-- the same slot writes nothing, and a run whose worker died is claimed again after its lease.
create table public.integration_check_runs (
    integration_id  uuid not null,
    slot_at         timestamptz not null,
    org_id          uuid not null,
    state           text not null check (state in ('claimed', 'done')),
    worker          text not null,
    claimed_at      timestamptz not null,
    finished_at     timestamptz,
    drift_ms        integer,
    primary key (integration_id, slot_at),
    constraint integration_check_runs_integration_fkey
        foreign key (org_id, integration_id)
        references public.integrations (org_id, id) on delete cascade
);
create index integration_check_runs_claimed_at_idx on public.integration_check_runs (claimed_at);
create index integration_check_runs_org_integration_idx
    on public.integration_check_runs (org_id, integration_id);

-- Status transitions (from → to), written by triggers in the same transaction as the status.
create table public.integration_health_events (
    id                bigint generated always as identity primary key,
    org_id            uuid not null,
    integration_id    uuid not null,
    integration_type  text not null,
    from_status       text check (from_status in ('healthy', 'degraded', 'unreachable')),
    to_status         text not null check (to_status in ('healthy', 'degraded', 'unreachable')),
    at                timestamptz not null,
    error_code        text,
    error             text,
    source            text not null default 'active',
    constraint integration_health_events_integration_fkey
        foreign key (org_id, integration_id)
        references public.integrations (org_id, id) on delete cascade
);
create index integration_health_events_org_idx
    on public.integration_health_events (org_id, at desc, id desc);
-- "Newest N of one integration", the pruning trigger, and the foreign key.
create index integration_health_events_integration_idx
    on public.integration_health_events (org_id, integration_id, at desc, id desc);

-- Row-level triggers on the status table: a first status (insert) and a change of status
-- (update, filtered by WHEN before any function is called) each log one event. Statement-level
-- triggers joining the old and new transition tables were tried: their cached plan, made for a
-- small first batch, nested-looped 1,000 x 1,000 rows on later batches.
create function private.log_integration_health_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    insert into public.integration_health_events (
        org_id, integration_id, integration_type, from_status, to_status, at, error_code,
        error, source
    ) values (
        new.org_id, new.integration_id, new.integration_type,
        case when tg_op = 'UPDATE' then old.status end, new.status, new.checked_at,
        new.error_code, new.error, new.source
    );
    return null;
end;
$$;
revoke all on function private.log_integration_health_event() from public;

create trigger integration_health_status_event_insert
    after insert on public.integration_health_status
    for each row
    execute function private.log_integration_health_event();

create trigger integration_health_status_event_update
    after update of status on public.integration_health_status
    for each row
    when (old.status is distinct from new.status)
    execute function private.log_integration_health_event();

-- Keep the newest 200 events per integration. Events are written only under the status row
-- lock of their integration, so writers of one integration are already serialised.
create function private.prune_integration_health_events()
returns trigger
language plpgsql
security definer
set search_path = ''
set enable_seqscan = off
set enable_hashjoin = off
set enable_mergejoin = off
as $$
begin
    with keys as materialized (
        select distinct n.org_id, n.integration_id from new_rows n
    ),
    cutoff as materialized (
        select k.org_id, k.integration_id, c.at, c.id
        from keys k
        cross join lateral (
            select e.at, e.id
            from public.integration_health_events e
            where e.org_id = k.org_id and e.integration_id = k.integration_id
            order by e.at desc, e.id desc
            offset 199
            limit 1
        ) c
    )
    delete from public.integration_health_events e
    using cutoff c
    where e.org_id = c.org_id
      and e.integration_id = c.integration_id
      and (e.at, e.id) < (c.at, c.id);
    return null;
end;
$$;
revoke all on function private.prune_integration_health_events() from public;

create trigger integration_health_events_prune
    after insert on public.integration_health_events
    referencing new table as new_rows
    for each statement
    execute function private.prune_integration_health_events();

-- A vendor that keeps rate-limiting us: active checks of the type pause until passive_until.
create table public.integration_type_modes (
    integration_type  text primary key,
    passive_until     timestamptz not null,
    reason            text not null,
    switched_at       timestamptz not null
);

-- Finding due checks: integrations never checked, or whose next_check_at has passed.
create index integrations_active_idx on public.integrations (monitoring_mode, enabled);

-- Row-level security: members read their organisations' events; slots and type modes are the
-- scheduler's own (service_role or the owner only).
alter table public.integration_check_runs enable row level security;
alter table public.integration_health_events enable row level security;
alter table public.integration_type_modes enable row level security;

revoke all on table
    public.integration_check_runs,
    public.integration_health_events,
    public.integration_type_modes
from public, anon, authenticated, service_role;

grant select on table public.integration_health_events to authenticated;
grant select, insert, update, delete on table
    public.integration_check_runs,
    public.integration_health_events,
    public.integration_type_modes
to service_role;

create policy integration_health_events_select_member on public.integration_health_events
    for select to authenticated
    using (org_id = any (array(select private.user_org_ids())));
