-- Embedded store: the same tables and columns as the PostgreSQL schema
-- (supabase/migrations), without row-level security: the store filters by organisation.
-- Timestamps are ISO 8601 text in UTC with microseconds ("2026-11-28T10:15:00.000000+00:00"),
-- so text order is time order.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE organization_members (
    org_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL,
    role        TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX organization_members_user_id_idx ON organization_members (user_id);

CREATE TABLE integrations (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    integration_type  TEXT NOT NULL,
    name              TEXT NOT NULL,
    config            TEXT NOT NULL CHECK (json_valid(config)),
    enabled           INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    monitoring_mode   TEXT NOT NULL DEFAULT 'active'
                      CHECK (monitoring_mode IN ('active', 'passive', 'disabled')),
    check_interval_s  INTEGER NOT NULL DEFAULT 900 CHECK (check_interval_s >= 900),
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX integrations_org_id_idx ON integrations (org_id, name);

CREATE TABLE integration_health_status (
    integration_id        TEXT PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    org_id                TEXT NOT NULL,
    integration_type      TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('healthy', 'degraded', 'unreachable')),
    latency_ms            INTEGER NOT NULL CHECK (latency_ms >= 0),
    checked_at            TEXT NOT NULL,
    error                 TEXT,
    error_code            TEXT,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    last_healthy_at       TEXT,
    next_check_at         TEXT,
    details               TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details)),
    source                TEXT NOT NULL DEFAULT 'active' CHECK (source IN ('active', 'passive')),
    updated_at            TEXT NOT NULL
);
CREATE INDEX integration_health_status_org_id_idx ON integration_health_status (org_id);
CREATE INDEX integration_health_status_next_check_idx ON integration_health_status (next_check_at);

CREATE TABLE integration_health_history (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id          TEXT NOT NULL,
    integration_id  TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('healthy', 'degraded', 'unreachable')),
    latency_ms      INTEGER NOT NULL CHECK (latency_ms >= 0),
    checked_at      TEXT NOT NULL,
    error           TEXT,
    error_code      TEXT
);
-- Serves "newest N of one integration" and the pruning trigger's lookup.
CREATE INDEX integration_health_history_newest_idx
    ON integration_health_history (integration_id, checked_at DESC, id DESC);

-- Keep the newest 96 rows per integration (24 h at one check per 15 min), atomically with
-- the insert. (checked_at, id) is a total order, so ties are deterministic.
CREATE TRIGGER integration_health_history_prune
AFTER INSERT ON integration_health_history
BEGIN
    DELETE FROM integration_health_history
    WHERE integration_id = NEW.integration_id
      AND (checked_at, id) < (
          SELECT checked_at, id
          FROM integration_health_history
          WHERE integration_id = NEW.integration_id
          ORDER BY checked_at DESC, id DESC
          LIMIT 1 OFFSET 95
      );
END;
