-- Integration Health Monitor: tables, indexes, history pruning, grants and row-level security.
--
-- Canonical copy: supabase/migrations/ (the Supabase CLI applies it unchanged). The package
-- ships an identical copy in src/integration_health/store/sql/postgres/migrations/ that
-- `integration-health db upgrade` applies; a test proves the two are byte-for-byte equal.
--
-- Needs what Supabase provides: roles anon, authenticated, service_role (BYPASSRLS) and
-- auth.uid(). On plain PostgreSQL, `integration-health db upgrade` first applies the package's
-- bootstrap.sql, which recreates them.
--
-- Columns mirror the embedded SQLite schema (store/sql/sqlite/0001_initial.sql).

-- ---------------------------------------------------------------------------------------------
-- Organisations and their members (a deployment may already have these tables).
-- ---------------------------------------------------------------------------------------------

create table if not exists public.organizations (
    id          uuid primary key default gen_random_uuid(),
    name        text not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

create table if not exists public.organization_members (
    org_id      uuid not null references public.organizations (id) on delete cascade,
    user_id     uuid not null,
    role        text not null default 'member' check (role in ('admin', 'member')),
    created_at  timestamptz not null default now(),
    primary key (org_id, user_id)
);
-- The primary key does not serve lookups by user_id (every RLS check does one).
create index if not exists organization_members_user_id_idx
    on public.organization_members (user_id);

-- ---------------------------------------------------------------------------------------------
-- Integrations: config holds ${VAR} / ${file:…} references, never secret values.
-- ---------------------------------------------------------------------------------------------

create table public.integrations (
    id                uuid primary key default gen_random_uuid(),
    org_id            uuid not null references public.organizations (id) on delete cascade,
    integration_type  text not null,
    name              text not null,
    config            jsonb not null check (jsonb_typeof(config) = 'object'),
    enabled           boolean not null default true,
    monitoring_mode   text not null default 'active'
                      check (monitoring_mode in ('active', 'passive', 'disabled')),
    check_interval_s  integer not null default 900 check (check_interval_s >= 900),
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    -- Target of the (org_id, integration_id) foreign keys below: a status or history row
    -- cannot claim an organisation its integration does not belong to (RLS relies on it).
    constraint integrations_org_id_id_key unique (org_id, id)
);
create index integrations_org_id_idx on public.integrations (org_id, name);

-- ---------------------------------------------------------------------------------------------
-- Current status: one row per integration, upserted on every check.
-- ---------------------------------------------------------------------------------------------

create table public.integration_health_status (
    integration_id        uuid primary key,
    org_id                uuid not null,
    integration_type      text not null,
    status                text not null check (status in ('healthy', 'degraded', 'unreachable')),
    latency_ms            integer not null check (latency_ms >= 0),
    checked_at            timestamptz not null,
    error                 text,
    error_code            text,
    consecutive_failures  integer not null default 0 check (consecutive_failures >= 0),
    last_healthy_at       timestamptz,
    next_check_at         timestamptz,
    details               jsonb not null default '{}'::jsonb,
    source                text not null default 'active' check (source in ('active', 'passive')),
    updated_at            timestamptz not null default now(),
    constraint integration_health_status_integration_fkey
        foreign key (org_id, integration_id)
        references public.integrations (org_id, id) on delete cascade
);
-- An organisation's dashboard (and the RLS filter); also serves the foreign key.
create index integration_health_status_org_id_idx
    on public.integration_health_status (org_id, integration_id);
create index integration_health_status_next_check_idx
    on public.integration_health_status (next_check_at);

-- ---------------------------------------------------------------------------------------------
-- History: the newest 96 results per integration (24 h at one check per 15 min).
-- ---------------------------------------------------------------------------------------------

create table public.integration_health_history (
    id              bigint generated always as identity primary key,
    org_id          uuid not null,
    integration_id  uuid not null,
    status          text not null check (status in ('healthy', 'degraded', 'unreachable')),
    latency_ms      integer not null check (latency_ms >= 0),
    checked_at      timestamptz not null,
    error           text,
    error_code      text,
    constraint integration_health_history_integration_fkey
        foreign key (org_id, integration_id)
        references public.integrations (org_id, id) on delete cascade
);
-- One index serves the RLS filter (org_id), "newest N of one integration", the pruning
-- trigger's lookup and delete (a row comparison on (checked_at, id) becomes an index
-- condition), and the foreign key. (checked_at, id) is a total order: ties are deterministic.
create index integration_health_history_newest_idx
    on public.integration_health_history (org_id, integration_id, checked_at desc, id desc);
-- Every pruned insert leaves a dead tuple: vacuum this table early.
alter table public.integration_health_history set (autovacuum_vacuum_scale_factor = 0.02);

-- Helpers live in a schema the API does not expose.
create schema if not exists private;
revoke all on schema private from public;

-- Keep the newest 96 rows per integration, in the same transaction as the insert.
--
-- A statement-level trigger: one pass per INSERT statement, however many rows it adds.
-- Writers of the same integration are serialised by locking its integrations row (in id
-- order, so two batches cannot deadlock); the prune query then runs on a fresh snapshot that
-- sees the other writer's committed rows, so exactly 96 survive concurrent inserts.
-- Both CTEs are MATERIALIZED: inlined, the planner picks a nested loop 25x slower.
-- The queries have no parameters, so each session plans them once and keeps the plan; a plan
-- made while the table was small (a seq scan and a hash join) stays in a pooled connection
-- as the table grows to millions of rows (measured: 3-4x slower writes at 960k rows). Seq
-- scans and hash/merge joins are therefore switched off inside the function: per-key index
-- lookups, bounded by 96 rows each, are the right plan at every size.
-- SECURITY DEFINER, so the delete is not filtered by the inserting role's RLS.
create function private.prune_integration_health_history()
returns trigger
language plpgsql
security definer
set search_path = ''
set enable_seqscan = off
set enable_hashjoin = off
set enable_mergejoin = off
as $$
begin
    perform 1
    from public.integrations i
    where i.id in (select n.integration_id from new_rows n)
    order by i.id
    for no key update;

    with keys as materialized (
        select distinct n.org_id, n.integration_id from new_rows n
    ),
    cutoff as materialized (
        select k.org_id, k.integration_id, c.checked_at, c.id
        from keys k
        cross join lateral (
            select h.checked_at, h.id
            from public.integration_health_history h
            where h.org_id = k.org_id and h.integration_id = k.integration_id
            order by h.checked_at desc, h.id desc
            offset 95
            limit 1
        ) c
    )
    delete from public.integration_health_history h
    using cutoff c
    where h.org_id = c.org_id
      and h.integration_id = c.integration_id
      and (h.checked_at, h.id) < (c.checked_at, c.id);
    return null;
end;
$$;
revoke all on function private.prune_integration_health_history() from public;

create trigger integration_health_history_prune
    after insert on public.integration_health_history
    referencing new table as new_rows
    for each statement
    execute function private.prune_integration_health_history();

-- ---------------------------------------------------------------------------------------------
-- Row-level security: members read their organisations' rows; admins manage integrations;
-- only service_role (BYPASSRLS) or the owner writes statuses and history; anon gets nothing.
-- ---------------------------------------------------------------------------------------------

grant usage on schema private to authenticated, service_role;

-- The caller's organisations. SECURITY DEFINER: a policy on organization_members that read
-- organization_members itself would recurse forever.
create or replace function private.user_org_ids()
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
    select m.org_id
    from public.organization_members m
    where m.user_id = (select auth.uid())
$$;

-- The organisations where the caller is an admin.
create or replace function private.user_admin_org_ids()
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
    select m.org_id
    from public.organization_members m
    where m.user_id = (select auth.uid()) and m.role = 'admin'
$$;

revoke all on function private.user_org_ids() from public, anon;
revoke all on function private.user_admin_org_ids() from public, anon;
grant execute on function private.user_org_ids() to authenticated, service_role;
grant execute on function private.user_admin_org_ids() to authenticated, service_role;

alter table public.organizations enable row level security;
alter table public.organization_members enable row level security;
alter table public.integrations enable row level security;
alter table public.integration_health_status enable row level security;
alter table public.integration_health_history enable row level security;

-- Explicit grants per role, whatever the database's default privileges are.
revoke all on table
    public.organizations,
    public.organization_members,
    public.integrations,
    public.integration_health_status,
    public.integration_health_history
from public, anon, authenticated, service_role;

grant select on table
    public.organizations,
    public.organization_members,
    public.integrations,
    public.integration_health_status,
    public.integration_health_history
to authenticated;
grant insert, update, delete on table public.integrations to authenticated;

grant select, insert, update, delete on table
    public.organizations,
    public.organization_members,
    public.integrations,
    public.integration_health_status,
    public.integration_health_history
to service_role;

-- `x = any (array(select …))` runs the helper once (an InitPlan) and uses the indexes;
-- `x in (select …)` or a per-row function call are 13x to 400x slower on large tables.
drop policy if exists organizations_select_member on public.organizations;
create policy organizations_select_member on public.organizations
    for select to authenticated
    using (id = any (array(select private.user_org_ids())));

drop policy if exists organization_members_select_member on public.organization_members;
create policy organization_members_select_member on public.organization_members
    for select to authenticated
    using (org_id = any (array(select private.user_org_ids())));

create policy integrations_select_member on public.integrations
    for select to authenticated
    using (org_id = any (array(select private.user_org_ids())));

create policy integrations_insert_admin on public.integrations
    for insert to authenticated
    with check (org_id = any (array(select private.user_admin_org_ids())));

create policy integrations_update_admin on public.integrations
    for update to authenticated
    using (org_id = any (array(select private.user_admin_org_ids())))
    with check (org_id = any (array(select private.user_admin_org_ids())));

create policy integrations_delete_admin on public.integrations
    for delete to authenticated
    using (org_id = any (array(select private.user_admin_org_ids())));

create policy integration_health_status_select_member on public.integration_health_status
    for select to authenticated
    using (org_id = any (array(select private.user_org_ids())));

create policy integration_health_history_select_member on public.integration_health_history
    for select to authenticated
    using (org_id = any (array(select private.user_org_ids())));
