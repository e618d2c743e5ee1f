-- Attempts that ended, per queue and minute, as each node counted them (the dashboard's chart of
-- the last hour). Each node adds to its own rows every few seconds, so nodes never write the same
-- row; rows whose minute started more than an hour before the latest minute added are deleted
-- by that same statement (outcomes_minute finds them). Browsing a queue's tasks needs no index of
-- its own: tasks_due and tasks_leased serve every state.
CREATE TABLE outcomes (
    node_id   text COLLATE "C" NOT NULL,
    parent    text COLLATE "C" NOT NULL,
    queue_id  text COLLATE "C" NOT NULL,
    minute_us bigint NOT NULL,
    succeeded bigint NOT NULL,
    failed    bigint NOT NULL,
    PRIMARY KEY (parent, queue_id, minute_us, node_id)
);
CREATE INDEX outcomes_minute ON outcomes (minute_us);
