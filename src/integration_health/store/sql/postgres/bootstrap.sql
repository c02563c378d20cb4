-- What Supabase already provides, recreated on plain PostgreSQL (>= 15) so the migrations in
-- supabase/migrations/ run unchanged: the API roles and the auth schema's identity functions.
--
-- `integration-health db upgrade` applies this file only when the database has no `auth`
-- schema (i.e. it is not a Supabase database). It is idempotent and safe to run while another
-- database of the same cluster runs it (roles are cluster-wide). It is deliberately NOT a
-- migration: on Supabase these objects exist and belong to Supabase.
--
-- Creating a BYPASSRLS role needs a superuser: run the first upgrade as one, or create the
-- four roles beforehand.

do $bootstrap$
declare
    spec text[];
    specs text[][] := array[
        -- role, attributes (as Supabase has them)
        array['anon', 'nologin'],
        array['authenticated', 'nologin'],
        array['service_role', 'nologin bypassrls'],
        array['authenticator', 'login noinherit']
    ];
    api_role text;
begin
    foreach spec slice 1 in array specs loop
        if not exists (select from pg_catalog.pg_roles where rolname = spec[1]) then
            begin
                execute format('create role %I %s', spec[1], spec[2]);
            exception when duplicate_object or unique_violation then
                null;  -- created meanwhile by an upgrade of another database
            end;
        end if;
    end loop;

    -- authenticator switches to the API roles (as PostgREST does); so may the role running
    -- the upgrade, which the store uses to run reads as a user under RLS.
    foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
        if not pg_catalog.pg_has_role('authenticator', api_role, 'member') then
            begin
                execute format('grant %I to authenticator', api_role);
            exception when duplicate_object or unique_violation then
                null;
            end;
        end if;
        if not pg_catalog.pg_has_role(current_user, api_role, 'member') then
            begin
                execute format('grant %I to %I', api_role, current_user);
            exception when duplicate_object or unique_violation then
                null;
            end;
        end if;
    end loop;
end
$bootstrap$;

grant usage on schema public to anon, authenticated, service_role;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

-- Identity of the current request, from the settings PostgREST makes per transaction:
-- set_config('request.jwt.claims', '<claims json>', true). After a transaction ends the
-- settings read '' rather than NULL, hence the nullif. Legacy request.jwt.claim.* first.
create or replace function auth.jwt()
returns jsonb
language sql
stable
set search_path = ''
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

create or replace function auth.uid()
returns uuid
language sql
stable
set search_path = ''
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;

create or replace function auth.role()
returns text
language sql
stable
set search_path = ''
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;

create or replace function auth.email()
returns text
language sql
stable
set search_path = ''
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
    )::text
$$;

grant execute on function auth.jwt(), auth.uid(), auth.role(), auth.email()
    to anon, authenticated, service_role;
