-- Cron schedules that start workflow runs. next_run_at is NULL while disabled.
CREATE TABLE schedules (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id  TEXT NOT NULL UNIQUE,
    workflow_id  TEXT NOT NULL,
    cron         TEXT NOT NULL,
    timezone     TEXT NOT NULL DEFAULT 'UTC',
    params       TEXT NOT NULL DEFAULT '{}',
    enabled      INTEGER NOT NULL DEFAULT 1,
    catchup      INTEGER NOT NULL DEFAULT 0,
    next_run_at  REAL,
    last_run_at  REAL,
    last_run_id  TEXT,
    last_error   TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE INDEX schedules_workflow ON schedules(workflow_id, seq);
CREATE INDEX schedules_enabled ON schedules(enabled);
