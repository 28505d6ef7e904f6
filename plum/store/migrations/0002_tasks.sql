-- Task definitions: reusable named tasks. Builtins are rows too (builtin = 1).
CREATE TABLE task_defs (
    def_id          TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    executor        TEXT NOT NULL,
    target_kind     TEXT NOT NULL DEFAULT '',
    target_ref      TEXT NOT NULL DEFAULT '',
    labels          TEXT NOT NULL DEFAULT '{}',
    default_payload TEXT NOT NULL DEFAULT 'null',
    timeout_sec     REAL,
    max_retries     INTEGER NOT NULL DEFAULT 0,
    retry_backoff_sec REAL NOT NULL DEFAULT 1,
    description     TEXT NOT NULL DEFAULT '',
    builtin         INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL
);

-- Task runs. One row per run; attempts are in task_attempts.
CREATE TABLE tasks (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id         TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    executor        TEXT NOT NULL,
    target_kind     TEXT NOT NULL DEFAULT '',
    target_ref      TEXT NOT NULL DEFAULT '',
    state           TEXT NOT NULL,
    payload         TEXT NOT NULL DEFAULT 'null',
    result          TEXT NOT NULL DEFAULT 'null',
    error           TEXT,
    reason          TEXT NOT NULL DEFAULT '',
    timeout_sec     REAL NOT NULL,
    max_retries     INTEGER NOT NULL DEFAULT 0,
    retry_backoff_sec REAL NOT NULL DEFAULT 1,
    attempt         INTEGER NOT NULL DEFAULT 0,
    labels          TEXT NOT NULL DEFAULT '{}',
    def_id          TEXT,
    origin_task_id  TEXT,
    workflow_run_id TEXT,
    dag_node_id     TEXT,
    scheduled_on    TEXT NOT NULL DEFAULT '',
    created_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL,
    updated_at      REAL NOT NULL
);
CREATE INDEX tasks_state ON tasks(state);
CREATE INDEX tasks_def ON tasks(def_id);
CREATE INDEX tasks_run ON tasks(workflow_run_id);
CREATE INDEX tasks_name ON tasks(name);

-- One row per attempt: when it ran, how it ended, and why.
CREATE TABLE task_attempts (
    task_id     TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    error       TEXT,
    scheduled_on TEXT NOT NULL DEFAULT '',
    started_at  REAL,
    finished_at REAL,
    PRIMARY KEY (task_id, attempt)
);
