-- Regions, bridges and rooms. Bodies are JSON so both SQLite and PostgreSQL share one schema.
CREATE TABLE regions (
    id         TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    managed_by TEXT NOT NULL,
    position   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE bridges (
    id          TEXT PRIMARY KEY,
    region      TEXT NOT NULL,
    body        TEXT NOT NULL,
    admin_state TEXT NOT NULL,
    managed_by  TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX bridges_by_region ON bridges (region);

CREATE TABLE rooms (
    name       TEXT PRIMARY KEY,
    shard      TEXT NOT NULL,
    region     TEXT NOT NULL,
    host_id    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX rooms_by_expiry ON rooms (expires_at);

-- Bumped by every registry change, so instances notice changes with one cheap read.
CREATE TABLE registry_version (
    id      BIGINT PRIMARY KEY,
    version BIGINT NOT NULL
);

INSERT INTO registry_version (id, version) VALUES (1, 0);
