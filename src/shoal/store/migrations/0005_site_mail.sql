-- 0005: messages for a site whose control channel is on another replica (decisions/0047).
-- A replica with a message for a site held by another writes it here, addressed to that
-- replica, and (PostgreSQL) wakes it with a NOTIFY; the addressee takes its rows (deleting
-- them) and sends each on the site's channel. The row, not the NOTIFY, is the message: a
-- NOTIFY nobody listened to is lost, a row is taken at the addressee's next poll.
CREATE TABLE site_mail (
    mail_id     INTEGER PRIMARY KEY,
    site        TEXT    NOT NULL,
    replica     TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    posted      REAL    NOT NULL
);
CREATE INDEX site_mail_by_replica ON site_mail (replica, mail_id);
