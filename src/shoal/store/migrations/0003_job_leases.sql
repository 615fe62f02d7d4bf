-- 0003: which server replica runs a job, for how long, and under which epoch (decisions/0041).
-- One row per job a replica has started or taken over: the replica's id, the epoch (raised by
-- one each time another replica takes the job over: every write about the job is checked
-- against it, so a replica that lost the job can no longer write it), when the lease lapses
-- unless renewed (seconds since the epoch, the holder's clock), and the holder's last word on
-- the job's progress (JSON: its round, its last metrics; written with each renewal) for the
-- replicas that do not run it. The row goes when the job ends.
CREATE TABLE job_leases (
    job_id      INTEGER NOT NULL,
    replica     TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    expires_at  REAL    NOT NULL,
    progress    TEXT,
    PRIMARY KEY (job_id)
);
