-- Alerting: hysteresis state per integration, alerts, vendor incidents, webhook deliveries
-- and their log. Mirrors supabase/migrations/*_alerting.sql (same tables and columns).
-- Everything that must happen once, however many engines run, is guarded here: one open
-- alert per integration, one open incident per type, one delivery per dedupe key.

-- What alerting remembers about each integration; the engine locks the row, counts the new
-- results since evaluated_through, and saves it with compare-and-set on version.
CREATE TABLE alert_integration_state (
    integration_id      TEXT PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    org_id              TEXT NOT NULL,
    integration_type    TEXT NOT NULL,
    version             INTEGER NOT NULL DEFAULT 0,
    evaluated_through   TEXT,
    evaluated_id        INTEGER NOT NULL DEFAULT 0,
    bad_streak          INTEGER NOT NULL DEFAULT 0,
    unreachable_streak  INTEGER NOT NULL DEFAULT 0,
    good_streak         INTEGER NOT NULL DEFAULT 0,
    bad_since           TEXT,
    failing_since       TEXT,
    vendor_failing      INTEGER NOT NULL DEFAULT 0 CHECK (vendor_failing IN (0, 1)),
    last_status         TEXT CHECK (last_status IN ('healthy', 'degraded', 'unreachable')),
    last_checked_at     TEXT,
    last_error_code     TEXT,
    last_error          TEXT,
    open_alert_id       TEXT,
    open_severity       TEXT CHECK (open_severity IN ('unreachable', 'degraded')),
    updated_at          TEXT NOT NULL
);
CREATE INDEX alert_integration_state_type_idx
    ON alert_integration_state (integration_type, vendor_failing);

-- One vendor-wide outage of an integration type (many organisations failing at once).
CREATE TABLE alert_incidents (
    id                    TEXT PRIMARY KEY,
    integration_type      TEXT NOT NULL,
    state                 TEXT NOT NULL CHECK (state IN ('open', 'resolved')),
    opened_at             TEXT NOT NULL,
    resolved_at           TEXT,
    failing_orgs          INTEGER NOT NULL,
    failing_integrations  INTEGER NOT NULL,
    total_integrations    INTEGER NOT NULL,
    peak_failing_orgs     INTEGER NOT NULL,
    updated_at            TEXT NOT NULL
);
CREATE UNIQUE INDEX alert_incidents_one_open_idx
    ON alert_incidents (integration_type) WHERE state = 'open';
CREATE INDEX alert_incidents_opened_idx ON alert_incidents (opened_at DESC);

CREATE TABLE alerts (
    id                    TEXT PRIMARY KEY,
    org_id                TEXT NOT NULL,
    integration_id        TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    integration_type      TEXT NOT NULL,
    integration_name      TEXT NOT NULL,
    severity              TEXT NOT NULL CHECK (severity IN ('unreachable', 'degraded')),
    state                 TEXT NOT NULL CHECK (state IN ('open', 'resolved')),
    opened_at             TEXT NOT NULL,
    resolved_at           TEXT,
    first_failure_at      TEXT NOT NULL,
    consecutive_failures  INTEGER NOT NULL,
    error_code            TEXT,
    error                 TEXT,
    incident_id           TEXT REFERENCES alert_incidents (id) ON DELETE SET NULL,
    suppressed            INTEGER NOT NULL DEFAULT 0 CHECK (suppressed IN (0, 1)),
    updated_at            TEXT NOT NULL
);
-- At most one open alert per integration, whoever writes it.
CREATE UNIQUE INDEX alerts_one_open_idx ON alerts (integration_id) WHERE state = 'open';
CREATE INDEX alerts_org_idx ON alerts (org_id, opened_at DESC);
CREATE INDEX alerts_type_open_idx ON alerts (integration_type) WHERE state = 'open';
CREATE INDEX alerts_incident_idx ON alerts (incident_id);

-- One notification to one webhook; payload fixed when enqueued (no secrets in it).
CREATE TABLE alert_deliveries (
    id                TEXT PRIMARY KEY,
    dedupe_key        TEXT NOT NULL UNIQUE,
    org_id            TEXT,
    alert_id          TEXT REFERENCES alerts (id) ON DELETE CASCADE,
    incident_id       TEXT REFERENCES alert_incidents (id) ON DELETE CASCADE,
    event             TEXT NOT NULL,
    target            TEXT NOT NULL,
    payload           TEXT NOT NULL CHECK (json_valid(payload)),
    state             TEXT NOT NULL
                      CHECK (state IN ('pending', 'delivering', 'delivered', 'failed', 'cancelled')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TEXT,
    last_status_code  INTEGER,
    last_error        TEXT,
    lease_owner       TEXT,
    lease_until       TEXT,
    created_at        TEXT NOT NULL,
    delivered_at      TEXT,
    updated_at        TEXT NOT NULL
);
CREATE INDEX alert_deliveries_due_idx ON alert_deliveries (state, next_attempt_at);
CREATE INDEX alert_deliveries_org_idx ON alert_deliveries (org_id, created_at DESC);
CREATE INDEX alert_deliveries_alert_idx ON alert_deliveries (alert_id, target);
CREATE INDEX alert_deliveries_incident_idx ON alert_deliveries (incident_id, target);

-- The delivery log: one row per attempt.
CREATE TABLE alert_delivery_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      TEXT NOT NULL REFERENCES alert_deliveries (id) ON DELETE CASCADE,
    org_id           TEXT,
    attempt          INTEGER NOT NULL,
    at               TEXT NOT NULL,
    outcome          TEXT NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'failed')),
    status_code      INTEGER,
    error            TEXT,
    duration_ms      INTEGER NOT NULL,
    next_attempt_at  TEXT,
    worker           TEXT NOT NULL
);
CREATE INDEX alert_delivery_attempts_delivery_idx
    ON alert_delivery_attempts (delivery_id, attempt);
