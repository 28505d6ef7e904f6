-- Registered workers: gRPC stream workers and HTTP workers, one row each.
-- What they hold in flight is not stored: it lives with the connection.
CREATE TABLE workers (
    worker_id     TEXT PRIMARY KEY,
    transport     TEXT NOT NULL,
    node_id       TEXT NOT NULL DEFAULT '',
    instance_id   TEXT NOT NULL DEFAULT '',
    app_name      TEXT NOT NULL DEFAULT '',
    app_version   TEXT NOT NULL DEFAULT '',
    url           TEXT NOT NULL DEFAULT '',
    tasks         TEXT NOT NULL DEFAULT '[]',
    labels        TEXT NOT NULL DEFAULT '{}',
    capacity      INTEGER NOT NULL DEFAULT 0,
    health        TEXT NOT NULL,
    last_seen     REAL NOT NULL,
    registered_at REAL NOT NULL
);
CREATE INDEX workers_registered ON workers(registered_at);
