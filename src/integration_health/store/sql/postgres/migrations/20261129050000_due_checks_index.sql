-- Planning (PostgresStore.list_due) without scanning every integration on every pass.
--
-- Due checks are read along two indexes: status rows in (next_check_at, integration_id) order,
-- stopping after the batch, each looked up among the active integrations by id; and the
-- integrations never checked, by merging the active ids with the status ids (both in id order).
-- At 1,000,000 integrations a pass went from a hash join of both whole tables (~1 s) to
-- reading what is due plus two id indexes (see docs/benchmarks.md, "Planning cost").

-- Active integrations by id (the anti join's outer side, read as an index-only scan).
create index integrations_active_id_idx
    on public.integrations (id)
    where enabled and monitoring_mode = 'active';

-- Due status rows in planning order; replaces the single-column index on next_check_at.
create index integration_health_status_due_idx
    on public.integration_health_status (next_check_at, integration_id);
drop index public.integration_health_status_next_check_idx;
