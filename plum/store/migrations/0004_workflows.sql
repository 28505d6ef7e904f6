-- Workflows: the current version's normalised definition; every version is kept.
CREATE TABLE workflows (
    workflow_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    version     INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);

CREATE TABLE workflow_versions (
    workflow_id TEXT NOT NULL,
    version     INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

-- Runs record the version they ran.
CREATE TABLE workflow_runs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT NOT NULL UNIQUE,
    workflow_id     TEXT NOT NULL,
    workflow_name   TEXT NOT NULL DEFAULT '',
    version         INTEGER NOT NULL,
    state           TEXT NOT NULL,
    params          TEXT NOT NULL DEFAULT '{}',
    result          TEXT NOT NULL DEFAULT 'null',
    error           TEXT,
    trigger         TEXT NOT NULL DEFAULT 'manual',
    parent_run_id   TEXT,
    parent_node_key TEXT,
    created_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL,
    updated_at      REAL NOT NULL
);
CREATE INDEX workflow_runs_workflow ON workflow_runs(workflow_id, seq);
CREATE INDEX workflow_runs_state ON workflow_runs(state);

-- The state of every node of a run (loop iterations have their own keys: loop#2/child).
CREATE TABLE run_nodes (
    run_id      TEXT NOT NULL,
    node_key    TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    state       TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}',
    updated_at  REAL NOT NULL,
    PRIMARY KEY (run_id, node_key)
);
