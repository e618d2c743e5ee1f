-- Kept history (outside the Cloud Tasks API): tasks that left their queue, with why and when,
-- and every attempt. Rows are named by queue path, not by queue_pk, so they outlive their queue;
-- each is kept until expire_us. A finished task keeps the columns of its last stored row.
CREATE TABLE finished_tasks (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent      text COLLATE "C" NOT NULL,
    queue_id    text COLLATE "C" NOT NULL,
    task_id     text COLLATE "C" NOT NULL,
    reason      text NOT NULL,
    finish_us   bigint NOT NULL,
    expire_us   bigint NOT NULL,
    schedule_us bigint NOT NULL,
    spec        text NOT NULL,
    progress    text,
    body        bytea NOT NULL
);
CREATE INDEX finished_tasks_queue ON finished_tasks (parent, queue_id, seq);
CREATE INDEX finished_tasks_failed ON finished_tasks (parent, queue_id, seq)
    WHERE reason IN ('max_attempts', 'max_retry_duration');
CREATE INDEX finished_tasks_name ON finished_tasks (parent, queue_id, task_id);
CREATE INDEX finished_tasks_expiry ON finished_tasks (expire_us);

CREATE TABLE attempts (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent      text COLLATE "C" NOT NULL,
    queue_id    text COLLATE "C" NOT NULL,
    task_id     text COLLATE "C" NOT NULL,
    created_us  bigint NOT NULL,
    attempt     integer NOT NULL,
    dispatch_us bigint NOT NULL,
    duration_us bigint NOT NULL,
    http_status integer NOT NULL,
    failure     smallint NOT NULL,
    detail      text NOT NULL,
    headers     text NOT NULL,    -- JSON array of [name, value]
    body        bytea NOT NULL,
    expire_us   bigint NOT NULL
);
CREATE INDEX attempts_task ON attempts (parent, queue_id, task_id);
CREATE INDEX attempts_expiry ON attempts (expire_us);
