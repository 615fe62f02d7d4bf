-- 0004: which server replica holds each site's control channel, and which replicas are alive
-- (decisions/0047). One row per replica, its heartbeat: renewed with its leases every second,
-- it says until when the replica counts as alive (seconds since the epoch, its own clock). One
-- row per connected site: the replica whose channel it is on, since when, and what the site
-- said in its hello (its organisation, its agent's version). A replica writes a site's row when
-- the channel opens and removes it (only if still its own) when it closes; rows of a replica
-- whose heartbeat lapsed (it died without closing them) are not read, and go when it starts again.
CREATE TABLE replicas (
    replica     TEXT    NOT NULL,
    alive_until REAL    NOT NULL,
    PRIMARY KEY (replica)
);
CREATE TABLE site_sessions (
    site        TEXT    NOT NULL,
    replica     TEXT    NOT NULL,
    since       REAL    NOT NULL,
    org         TEXT    NOT NULL DEFAULT '',
    version     TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (site)
);
CREATE INDEX site_sessions_by_replica ON site_sessions (replica);
