-- Request budgets shared by every scheduler on the database: a claim of a budgeted type keeps
-- the type, and the planner counts a type's claims of the last minute along this index
-- (SQLiteStore.count_claims). Claims of other types leave it null and the index unchanged.
ALTER TABLE integration_check_runs ADD COLUMN integration_type TEXT;
CREATE INDEX integration_check_runs_budget_idx
    ON integration_check_runs (integration_type, claimed_at)
    WHERE integration_type IS NOT NULL;
