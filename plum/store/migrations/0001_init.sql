-- Installation facts (controller start times, schema notes).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Nodes that run an agent, registered over the agent link or the HTTP heartbeat route.
CREATE TABLE nodes (
    node_id   TEXT PRIMARY KEY,
    ip        TEXT NOT NULL,
    labels    TEXT NOT NULL DEFAULT '{}',
    last_seen REAL NOT NULL,
    health    TEXT NOT NULL,
    capacity  INTEGER NOT NULL DEFAULT 0,
    usage     TEXT NOT NULL DEFAULT '{}',
    version   TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX nodes_last_seen ON nodes(last_seen DESC);
