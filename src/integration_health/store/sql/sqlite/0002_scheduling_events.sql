-- Scheduling (idempotent slots), status-transition events and vendor-wide passive switches.

-- One row per (integration, scheduled slot): a check run is claimed before it starts and
-- completed in the same transaction that writes its result, so a late or duplicate run of
-- the same slot writes nothing, and a run whose worker died is claimed again after its lease.
CREATE TABLE integration_check_runs (
    integration_id  TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    slot_at         TEXT NOT NULL,
    org_id          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('claimed', 'done')),
    worker          TEXT NOT NULL,
    claimed_at      TEXT NOT NULL,
    finished_at     TEXT,
    drift_ms        INTEGER,
    PRIMARY KEY (integration_id, slot_at)
);
CREATE INDEX integration_check_runs_claimed_at_idx ON integration_check_runs (claimed_at);

-- Status transitions (from → to), written by triggers in the same transaction as the status.
CREATE TABLE integration_health_events (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id            TEXT NOT NULL,
    integration_id    TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    integration_type  TEXT NOT NULL,
    from_status       TEXT CHECK (from_status IN ('healthy', 'degraded', 'unreachable')),
    to_status         TEXT NOT NULL CHECK (to_status IN ('healthy', 'degraded', 'unreachable')),
    at                TEXT NOT NULL,
    error_code        TEXT,
    error             TEXT,
    source            TEXT NOT NULL DEFAULT 'active'
);
CREATE INDEX integration_health_events_org_idx ON integration_health_events (org_id, at DESC, id DESC);
CREATE INDEX integration_health_events_integration_idx
    ON integration_health_events (integration_id, at DESC, id DESC);

CREATE TRIGGER integration_health_status_event_insert
AFTER INSERT ON integration_health_status
BEGIN
    INSERT INTO integration_health_events (
        org_id, integration_id, integration_type, from_status, to_status, at, error_code,
        error, source
    ) VALUES (
        NEW.org_id, NEW.integration_id, NEW.integration_type, NULL, NEW.status, NEW.checked_at,
        NEW.error_code, NEW.error, NEW.source
    );
END;

CREATE TRIGGER integration_health_status_event_update
AFTER UPDATE OF status ON integration_health_status
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO integration_health_events (
        org_id, integration_id, integration_type, from_status, to_status, at, error_code,
        error, source
    ) VALUES (
        NEW.org_id, NEW.integration_id, NEW.integration_type, OLD.status, NEW.status,
        NEW.checked_at, NEW.error_code, NEW.error, NEW.source
    );
END;

-- Keep the newest 200 events per integration.
CREATE TRIGGER integration_health_events_prune
AFTER INSERT ON integration_health_events
BEGIN
    DELETE FROM integration_health_events
    WHERE integration_id = NEW.integration_id
      AND (at, id) < (
          SELECT at, id FROM integration_health_events
          WHERE integration_id = NEW.integration_id
          ORDER BY at DESC, id DESC
          LIMIT 1 OFFSET 199
      );
END;

-- A vendor that keeps rate-limiting us: active checks of the type pause until passive_until.
CREATE TABLE integration_type_modes (
    integration_type  TEXT PRIMARY KEY,
    passive_until     TEXT NOT NULL,
    reason            TEXT NOT NULL,
    switched_at       TEXT NOT NULL
);

-- Finding due checks: integrations never checked, or whose next_check_at has passed.
CREATE INDEX integrations_active_idx ON integrations (monitoring_mode, enabled);
