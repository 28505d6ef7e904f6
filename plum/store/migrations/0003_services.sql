-- Service endpoints registered by instances: one row per (instance, service, port).
-- `seq` orders rows by first registration (a re-registration keeps its row).
CREATE TABLE service_endpoints (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id   TEXT NOT NULL,
    service_name  TEXT NOT NULL,
    port          INTEGER NOT NULL,
    node_id       TEXT NOT NULL DEFAULT '',
    ip            TEXT NOT NULL,
    protocol      TEXT NOT NULL,
    version       TEXT NOT NULL DEFAULT '',
    labels        TEXT NOT NULL DEFAULT '{}',
    healthy       INTEGER NOT NULL DEFAULT 1,
    last_seen     REAL NOT NULL,
    registered_at REAL NOT NULL,
    UNIQUE (instance_id, service_name, port)
);
CREATE INDEX service_endpoints_service ON service_endpoints(service_name);
