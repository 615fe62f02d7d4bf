-- 0006: what a site said in its hello, kept with its session row (decisions/0048): the studies
-- its policy serves, the resources it declared and the jobs its agent ran, as one JSON object.
-- A replica that runs a job whose sites are connected to other replicas schedules them, and
-- notices an agent that restarted and lost a job, from this.
ALTER TABLE site_sessions ADD COLUMN said TEXT NOT NULL DEFAULT '{}';
