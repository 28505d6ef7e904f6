-- Apps: uploaded zips (the file is <data_dir>/artifacts/<sha256>.zip) and container images.
CREATE TABLE apps (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    artifact_id      TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    version          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    url              TEXT NOT NULL DEFAULT '',
    sha256           TEXT NOT NULL DEFAULT '',
    size_bytes       INTEGER NOT NULL DEFAULT 0,
    services         TEXT NOT NULL DEFAULT '[]',
    image_repository TEXT NOT NULL DEFAULT '',
    image_tag        TEXT NOT NULL DEFAULT '',
    port_mappings    TEXT NOT NULL DEFAULT '[]',
    created_at       REAL NOT NULL,
    UNIQUE (name, version)
);
CREATE INDEX apps_sha256 ON apps(sha256);

-- Deployments: entries (app, start command, replicas per node) are one JSON array.
CREATE TABLE deployments (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    state         TEXT NOT NULL,
    labels        TEXT NOT NULL DEFAULT '{}',
    node_selector TEXT NOT NULL DEFAULT '{}',
    entries       TEXT NOT NULL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);

-- Which apps each deployment uses: an app cannot be deleted while one does.
CREATE TABLE deployment_apps (
    deployment_id TEXT NOT NULL,
    artifact_id   TEXT NOT NULL,
    PRIMARY KEY (deployment_id, artifact_id)
);
CREATE INDEX deployment_apps_app ON deployment_apps(artifact_id);

-- One row per replica: what the controller wants (desired) and what its agent reported.
CREATE TABLE instances (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id    TEXT NOT NULL UNIQUE,
    deployment_id  TEXT NOT NULL,
    entry          INTEGER NOT NULL DEFAULT 0,
    node_id        TEXT NOT NULL,
    desired        TEXT NOT NULL,
    phase          TEXT NOT NULL,
    restarts       INTEGER NOT NULL DEFAULT 0,
    exit_code      INTEGER,
    pid            INTEGER,
    healthy        INTEGER NOT NULL DEFAULT 0,
    message        TEXT NOT NULL DEFAULT '',
    last_report_at REAL,
    replaced_by    TEXT NOT NULL DEFAULT '',
    created_at     REAL NOT NULL
);
CREATE INDEX instances_deployment ON instances(deployment_id);
CREATE INDEX instances_node ON instances(node_id);
