-- The PostgreSQL schema, shaped like SQLite's (migrations 0001-0003 there) for the dispatcher.
-- Times are microseconds since the epoch (bigint). Names compare byte-wise (COLLATE "C"), as in
-- SQLite and the memory store, so paging orders agree whatever the database's collation.

-- Queues: one row per live queue. config holds the encoded domain Queue; from_queue_yaml picks
-- the window of its finished task names inside a statement (see Windows.task_until).
CREATE TABLE queues (
    pk              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent          text COLLATE "C" NOT NULL,     -- projects/P/locations/L
    queue_id        text COLLATE "C" NOT NULL,
    state           smallint NOT NULL,
    from_queue_yaml boolean NOT NULL,
    config          text NOT NULL,
    UNIQUE (parent, queue_id)
);

-- Names of deleted queues, reserved until expire_us; expired rows are ignored and swept.
CREATE TABLE queue_tombstones (
    parent    text COLLATE "C" NOT NULL,
    queue_id  text COLLATE "C" NOT NULL,
    expire_us bigint NOT NULL,
    PRIMARY KEY (parent, queue_id)
);

-- Tasks. due_us is when the dispatcher may take the task next: its schedule time, or the end of
-- the visibility timeout while an attempt is in flight. The one index (queue_pk, due_us, seq)
-- serves due claims, scheduled tasks, retries and expired leases alike.
-- dispatch_count also fences attempt results; progress is the small JSON that changes with
-- each attempt, apart from the immutable spec. fillfactor leaves room on each page for the new
-- row versions that every claim and result writes, and autovacuum visits the table after a
-- small, fixed share of its rows died (docs/postgresql.md).
CREATE TABLE tasks (
    seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_pk       bigint NOT NULL REFERENCES queues (pk) ON DELETE CASCADE,
    task_id        text COLLATE "C" NOT NULL,
    named          boolean NOT NULL,
    schedule_us    bigint NOT NULL,
    due_us         bigint NOT NULL,
    enqueue_us     bigint NOT NULL,
    dispatch_count integer NOT NULL DEFAULT 0,
    spec           text NOT NULL,
    progress       text,
    body           bytea NOT NULL,
    UNIQUE (queue_pk, task_id)
) WITH (
    fillfactor = 75,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX tasks_due ON tasks (queue_pk, due_us, seq);
-- Insights without reading task rows: a queue's oldest task is one index lookup, and its tasks
-- (and those scheduled ahead) are counted on this index.
CREATE INDEX tasks_schedule ON tasks (queue_pk, schedule_us);

-- Names of finished or deleted named tasks, reserved until expire_us. Expired rows are ignored
-- by reads and deleted in small batches found through tombstones_expiry.
CREATE TABLE task_tombstones (
    queue_pk  bigint NOT NULL REFERENCES queues (pk) ON DELETE CASCADE,
    task_id   text COLLATE "C" NOT NULL,
    expire_us bigint NOT NULL,
    PRIMARY KEY (queue_pk, task_id)
) WITH (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05);
CREATE INDEX task_tombstones_expiry ON task_tombstones (expire_us);
