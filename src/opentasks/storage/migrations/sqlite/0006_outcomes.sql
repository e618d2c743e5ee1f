-- Attempts that ended, per queue and minute, as each node counted them (the dashboard's chart of
-- the last hour). Each node adds to its own rows every few seconds; rows whose minute started
-- more than an hour before the latest minute added are deleted then. Browsing a queue's tasks
-- needs no index of its own: tasks_due and tasks_leased serve every state.
CREATE TABLE outcomes (
    node_id   TEXT NOT NULL,
    parent    TEXT NOT NULL,
    queue_id  TEXT NOT NULL,
    minute_us INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    failed    INTEGER NOT NULL,
    PRIMARY KEY (parent, queue_id, minute_us, node_id)
) WITHOUT ROWID;
CREATE INDEX outcomes_minute ON outcomes (minute_us);
