-- Alerting: hysteresis state per integration, alerts, vendor incidents, webhook deliveries
-- and their log. Mirrors store/sql/sqlite/0003_alerting.sql (same tables and columns).
--
-- Everything that must happen once, however many engines run, is guarded by the database:
-- the engine locks state rows (for update skip locked) and saves them with compare-and-set
-- on `version`; partial unique indexes allow one open alert per integration and one open
-- incident per integration type; `dedupe_key` allows one delivery per (alert or incident,
-- event, webhook); deliveries are claimed with a lease (for update skip locked).

-- What alerting remembers about each integration (internal: service_role only).
create table public.alert_integration_state (
    integration_id      uuid primary key,
    org_id              uuid not null,
    integration_type    text not null,
    version             integer not null default 0,
    evaluated_through   timestamptz,
    evaluated_id        bigint not null default 0,
    bad_streak          integer not null default 0,
    unreachable_streak  integer not null default 0,
    good_streak         integer not null default 0,
    bad_since           timestamptz,
    failing_since       timestamptz,
    vendor_failing      boolean not null default false,
    last_status         text check (last_status in ('healthy', 'degraded', 'unreachable')),
    last_checked_at     timestamptz,
    last_error_code     text,
    last_error          text,
    open_alert_id       uuid,
    open_severity       text check (open_severity in ('unreachable', 'degraded')),
    updated_at          timestamptz not null default now(),
    constraint alert_integration_state_integration_fkey
        foreign key (org_id, integration_id)
        references public.integrations (org_id, id) on delete cascade
);
create index alert_integration_state_type_idx
    on public.alert_integration_state (integration_type, vendor_failing);
create index alert_integration_state_org_integration_idx
    on public.alert_integration_state (org_id, integration_id);

-- One vendor-wide outage of an integration type (many organisations failing at once).
create table public.alert_incidents (
    id                    uuid primary key,
    integration_type      text not null,
    state                 text not null check (state in ('open', 'resolved')),
    opened_at             timestamptz not null,
    resolved_at           timestamptz,
    failing_orgs          integer not null,
    failing_integrations  integer not null,
    total_integrations    integer not null,
    peak_failing_orgs     integer not null,
    updated_at            timestamptz not null default now()
);
create unique index alert_incidents_one_open_idx
    on public.alert_incidents (integration_type) where state = 'open';
create index alert_incidents_opened_idx on public.alert_incidents (opened_at desc);

create table public.alerts (
    id                    uuid primary key,
    org_id                uuid not null,
    integration_id        uuid not null,
    integration_type      text not null,
    integration_name      text not null,
    severity              text not null check (severity in ('unreachable', 'degraded')),
    state                 text not null check (state in ('open', 'resolved')),
    opened_at             timestamptz not null,
    resolved_at           timestamptz,
    first_failure_at      timestamptz not null,
    consecutive_failures  integer not null,
    error_code            text,
    error                 text,
    incident_id           uuid references public.alert_incidents (id) on delete set null,
    suppressed            boolean not null default false,
    updated_at            timestamptz not null default now(),
    constraint alerts_integration_fkey
        foreign key (org_id, integration_id)
        references public.integrations (org_id, id) on delete cascade
);
-- At most one open alert per integration, whoever writes it.
create unique index alerts_one_open_idx on public.alerts (integration_id) where state = 'open';
-- An organisation's alerts (and the RLS filter); also serves the foreign key.
create index alerts_org_idx on public.alerts (org_id, integration_id, opened_at desc);
create index alerts_type_open_idx on public.alerts (integration_type) where state = 'open';
create index alerts_incident_idx on public.alerts (incident_id);

-- One notification to one webhook; the payload is fixed when enqueued and holds no secret.
create table public.alert_deliveries (
    id                uuid primary key,
    dedupe_key        text not null unique,
    org_id            uuid,
    alert_id          uuid references public.alerts (id) on delete cascade,
    incident_id       uuid references public.alert_incidents (id) on delete cascade,
    event             text not null,
    target            text not null,
    payload           jsonb not null,
    state             text not null
                      check (state in ('pending', 'delivering', 'delivered', 'failed', 'cancelled')),
    attempts          integer not null default 0,
    next_attempt_at   timestamptz,
    last_status_code  integer,
    last_error        text,
    lease_owner       text,
    lease_until       timestamptz,
    created_at        timestamptz not null default now(),
    delivered_at      timestamptz,
    updated_at        timestamptz not null default now()
);
create index alert_deliveries_due_idx on public.alert_deliveries (state, next_attempt_at);
create index alert_deliveries_org_idx on public.alert_deliveries (org_id, created_at desc);
create index alert_deliveries_alert_idx on public.alert_deliveries (alert_id, target);
create index alert_deliveries_incident_idx on public.alert_deliveries (incident_id, target);

-- The delivery log: one row per attempt.
create table public.alert_delivery_attempts (
    id               bigint generated always as identity primary key,
    delivery_id      uuid not null references public.alert_deliveries (id) on delete cascade,
    org_id           uuid,
    attempt          integer not null,
    at               timestamptz not null,
    outcome          text not null check (outcome in ('delivered', 'retrying', 'failed')),
    status_code      integer,
    error            text,
    duration_ms      integer not null,
    next_attempt_at  timestamptz,
    worker           text not null
);
create index alert_delivery_attempts_delivery_idx
    on public.alert_delivery_attempts (delivery_id, attempt);
create index alert_delivery_attempts_org_idx on public.alert_delivery_attempts (org_id);

-- Row-level security: members read their organisations' alerts, deliveries and delivery log,
-- and the vendor incidents their alerts are grouped under; only service_role (or the owner)
-- writes; anon gets nothing. Vendor-incident deliveries have no org_id: service_role only.
alter table public.alert_integration_state enable row level security;
alter table public.alert_incidents enable row level security;
alter table public.alerts enable row level security;
alter table public.alert_deliveries enable row level security;
alter table public.alert_delivery_attempts enable row level security;

revoke all on table
    public.alert_integration_state,
    public.alert_incidents,
    public.alerts,
    public.alert_deliveries,
    public.alert_delivery_attempts
from public, anon, authenticated, service_role;

grant select on table
    public.alert_incidents,
    public.alerts,
    public.alert_deliveries,
    public.alert_delivery_attempts
to authenticated;
grant select, insert, update, delete on table
    public.alert_integration_state,
    public.alert_incidents,
    public.alerts,
    public.alert_deliveries,
    public.alert_delivery_attempts
to service_role;

create policy alerts_select_member on public.alerts
    for select to authenticated
    using (org_id = any (array(select private.user_org_ids())));

create policy alert_deliveries_select_member on public.alert_deliveries
    for select to authenticated
    using (org_id = any (array(select private.user_org_ids())));

create policy alert_delivery_attempts_select_member on public.alert_delivery_attempts
    for select to authenticated
    using (org_id = any (array(select private.user_org_ids())));

-- An incident is visible to members of an organisation with an alert grouped under it
-- (the alerts policy above applies inside the subquery).
create policy alert_incidents_select_member on public.alert_incidents
    for select to authenticated
    using (exists (select 1 from public.alerts a where a.incident_id = alert_incidents.id));
