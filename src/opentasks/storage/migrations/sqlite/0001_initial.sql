-- Queues: one row per live queue. config holds the encoded domain Queue.
CREATE TABLE queues (
    pk        INTEGER PRIMARY KEY,
    parent    TEXT NOT NULL,            -- projects/P/locations/L
    queue_id  TEXT NOT NULL,
    state     INTEGER NOT NULL,
    config    TEXT NOT NULL,
    UNIQUE (parent, queue_id)
);

-- Names of deleted queues, reserved until expire_us.
CREATE TABLE queue_tombstones (
    parent    TEXT NOT NULL,
    queue_id  TEXT NOT NULL,
    expire_us INTEGER NOT NULL,
    PRIMARY KEY (parent, queue_id)
);

-- Tasks. due_us is when the dispatcher may take the task next: its schedule_time, or the end
-- of the visibility timeout while an attempt is in flight. (queue_pk, due_us, seq) makes
-- "due tasks of queue Q in schedule order" a range scan.
CREATE TABLE tasks (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_pk     INTEGER NOT NULL REFERENCES queues (pk) ON DELETE CASCADE,
    task_id      TEXT NOT NULL,
    named        INTEGER NOT NULL,
    schedule_us  INTEGER NOT NULL,
    due_us       INTEGER NOT NULL,
    enqueue_us   INTEGER NOT NULL,
    spec         TEXT NOT NULL,         -- encoded target (without body), deadline, retry config, attempts
    body         BLOB NOT NULL,
    UNIQUE (queue_pk, task_id)
);
CREATE INDEX tasks_due ON tasks (queue_pk, due_us, seq);

-- Names of finished or deleted named tasks, reserved until expire_us.
CREATE TABLE task_tombstones (
    queue_pk  INTEGER NOT NULL REFERENCES queues (pk) ON DELETE CASCADE,
    task_id   TEXT NOT NULL,
    expire_us INTEGER NOT NULL,
    PRIMARY KEY (queue_pk, task_id)
);
