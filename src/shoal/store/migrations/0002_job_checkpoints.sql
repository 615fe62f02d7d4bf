-- 0002: a running job's checkpoint, so it outlives the server process that ran it.
-- One row per running job: the sites it was deployed to (site -> app, JSON), whether its
-- workflow said it can resume, the last round it finished, the workflow's own state then
-- (JSON, never code) and the global model of that round (a blob id). The row goes when the
-- job ends.
CREATE TABLE job_checkpoints (
    job_id        INTEGER NOT NULL,
    sites         TEXT    NOT NULL,
    min_clients   INTEGER NOT NULL,
    resumable     INTEGER NOT NULL DEFAULT 0,
    workflow      TEXT    NOT NULL DEFAULT '',
    last_round    INTEGER,
    state         TEXT,
    model_sha256  TEXT,
    restarts      INTEGER NOT NULL DEFAULT 0,
    updated       REAL    NOT NULL,
    PRIMARY KEY (job_id)
);
