-- Kept history (outside the Cloud Tasks API): tasks that left their queue, with why and when,
-- and every attempt. Rows are named by queue path, not by queue_pk, so they outlive their queue;
-- each is kept until expire_us. A finished task keeps the columns of its last stored row.
CREATE TABLE finished_tasks (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    parent      TEXT NOT NULL,
    queue_id    TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    finish_us   INTEGER NOT NULL,
    expire_us   INTEGER NOT NULL,
    schedule_us INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    progress    TEXT,
    body        BLOB NOT NULL
);
CREATE INDEX finished_tasks_queue ON finished_tasks (parent, queue_id, seq);
CREATE INDEX finished_tasks_failed ON finished_tasks (parent, queue_id, seq)
    WHERE reason IN ('max_attempts', 'max_retry_duration');
CREATE INDEX finished_tasks_name ON finished_tasks (parent, queue_id, task_id);
CREATE INDEX finished_tasks_expiry ON finished_tasks (expire_us);

CREATE TABLE attempts (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    parent      TEXT NOT NULL,
    queue_id    TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    created_us  INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    dispatch_us INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    http_status INTEGER NOT NULL,
    failure     INTEGER NOT NULL,
    detail      TEXT NOT NULL,
    headers     TEXT NOT NULL,       -- JSON array of [name, value]
    body        BLOB NOT NULL,
    expire_us   INTEGER NOT NULL
);
CREATE INDEX attempts_task ON attempts (parent, queue_id, task_id);
CREATE INDEX attempts_expiry ON attempts (expire_us);
