-- Planning without reading every integration on every pass, and first statuses without one
-- trigger call per row.
--
-- 1. The integrations never checked (no status row) are kept in their own small table, so a
--    planning pass reads them directly. Before, every pass (PostgresStore.list_due) found them
--    by merging the ids of all active integrations with those of all status rows: ~0.4 µs of
--    PostgreSQL per integration and pass even when none was left, and during a first pass
--    over 50,000 integrations ~115 ms per pass, because the merge read again the prefix that
--    earlier passes had checked (docs/benchmarks.md, run U).
--    Kept by statement-level triggers, in the transaction of the change: a new integration
--    enters it, its first status leaves it; a status deleted (or the status table truncated)
--    puts its integration back. Deleting an integration deletes its row (foreign key).
-- 2. A first status logs its event from a statement-level trigger: one insert per statement
--    instead of one trigger call, one insert and one pruning call per row (88 µs per first
--    status at 50,000 integrations). Changes of status keep their row-level trigger: filtered
--    by WHEN, it costs nothing when nothing changes.

create table public.integration_health_unchecked (
    integration_id  uuid primary key
                    references public.integrations (id) on delete cascade
);

alter table public.integration_health_unchecked enable row level security;
revoke all on table public.integration_health_unchecked
    from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.integration_health_unchecked
    to service_role;

insert into public.integration_health_unchecked (integration_id)
select i.id
from public.integrations i
where not exists (select 1 from public.integration_health_status s
                  where s.integration_id = i.id);

-- A new integration has no status yet (the status table's foreign key sees to it).
create function private.integration_unchecked_on_insert()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    insert into public.integration_health_unchecked (integration_id)
    select n.id from new_rows n
    on conflict do nothing;
    return null;
end;
$$;
revoke all on function private.integration_unchecked_on_insert() from public;

create trigger integrations_unchecked_insert
    after insert on public.integrations
    referencing new table as new_rows
    for each statement
    execute function private.integration_unchecked_on_insert();

-- First statuses: their integrations leave the table (one primary-key probe per row, whatever
-- the plan cached for an earlier statement's row count), and each logs its event.
create function private.status_first_insert()
returns trigger
language plpgsql
security definer
set search_path = ''
set enable_hashjoin = off
set enable_mergejoin = off
as $$
begin
    delete from public.integration_health_unchecked u
    using new_rows n
    where u.integration_id = n.integration_id;

    insert into public.integration_health_events (
        org_id, integration_id, integration_type, from_status, to_status, at, error_code,
        error, source
    )
    select n.org_id, n.integration_id, n.integration_type, null, n.status, n.checked_at,
           n.error_code, n.error, n.source
    from new_rows n
    order by n.integration_id;
    return null;
end;
$$;
revoke all on function private.status_first_insert() from public;

drop trigger integration_health_status_event_insert on public.integration_health_status;

create trigger integration_health_status_first_insert
    after insert on public.integration_health_status
    referencing new table as new_rows
    for each statement
    execute function private.status_first_insert();

-- A status deleted while its integration stays: the integration is never checked again.
create function private.status_deleted()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    insert into public.integration_health_unchecked (integration_id)
    select o.integration_id
    from old_rows o
    where exists (select 1 from public.integrations i where i.id = o.integration_id)
    on conflict do nothing;
    return null;
end;
$$;
revoke all on function private.status_deleted() from public;

create trigger integration_health_status_deleted
    after delete on public.integration_health_status
    referencing old table as old_rows
    for each statement
    execute function private.status_deleted();

create function private.status_truncated()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    insert into public.integration_health_unchecked (integration_id)
    select i.id from public.integrations i
    on conflict do nothing;
    return null;
end;
$$;
revoke all on function private.status_truncated() from public;

create trigger integration_health_status_truncated
    after truncate on public.integration_health_status
    for each statement
    execute function private.status_truncated();

-- The never-checked part of planning no longer merges the active integrations' ids.
drop index public.integrations_active_id_idx;
