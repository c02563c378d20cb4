-- Request budgets shared by every worker and scheduler on the database.
--
-- A claim of a type with a per-minute request budget keeps the type, and the planner counts
-- that type's claims of the last minute along this index (PostgresStore.count_claims), so a
-- budget holds across processes — before, each planning process counted only its own starts.
-- Claims of other types leave the column null: the partial index stays as small as the
-- budgets, and claiming an unbudgeted check costs what it did.
alter table public.integration_check_runs add column integration_type text;
create index integration_check_runs_budget_idx
    on public.integration_check_runs (integration_type, claimed_at)
    where integration_type is not null;
