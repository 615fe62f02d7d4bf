-- 0001: jobs and submit-token records.
-- seq orders jobs by insertion (job ids are random, so they cannot break submit-time ties).
CREATE TABLE jobs (
    seq            INTEGER PRIMARY KEY,
    job_id         INTEGER NOT NULL UNIQUE CHECK (job_id >= 1 AND job_id < 9007199254740992),
    id_text        TEXT    NOT NULL,
    study          TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    name_fold      TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    status_reason  TEXT    NOT NULL DEFAULT '',
    submitter_name TEXT    NOT NULL,
    submitter_org  TEXT    NOT NULL,
    submitter_role TEXT    NOT NULL,
    submit_time    REAL    NOT NULL,
    start_time     REAL,
    end_time       REAL,
    meta           TEXT    NOT NULL,
    content_sha256 TEXT    NOT NULL,
    first_error    TEXT,
    cloned_from    INTEGER
);

CREATE INDEX jobs_study_time ON jobs (study, submit_time, seq);
CREATE INDEX jobs_time ON jobs (submit_time, seq);
CREATE INDEX jobs_study_name ON jobs (study, name_fold);
CREATE INDEX jobs_id_text ON jobs (id_text);
CREATE INDEX jobs_status ON jobs (status, submit_time, seq);

-- Kept after the job is deleted (no foreign key on purpose): a retry with the token must
-- learn that its job is gone rather than create a second one.
CREATE TABLE submit_tokens (
    study          TEXT    NOT NULL,
    submitter_name TEXT    NOT NULL,
    submitter_org  TEXT    NOT NULL,
    submitter_role TEXT    NOT NULL,
    token          TEXT    NOT NULL,
    job_id         INTEGER NOT NULL,
    content_hash   TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    job_name       TEXT    NOT NULL,
    submit_time    TEXT    NOT NULL,
    deleted_time   TEXT,
    deleted_by     TEXT,
    PRIMARY KEY (study, submitter_name, submitter_org, submitter_role, token)
);

CREATE INDEX submit_tokens_job ON submit_tokens (job_id);
