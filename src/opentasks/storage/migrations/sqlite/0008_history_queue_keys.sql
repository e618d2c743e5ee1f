-- Kept history is indexed by a small number per queue name instead of the name's text. Every
-- dispatched task adds an entry to four of these indexes; keyed by (parent, queue_id, ...), each
-- insert compared some sixty equal leading bytes at every level and filled pages with copies of
-- the name, and writing history cost a third of a fast queue's dispatch rate. The rows keep
-- their parent and queue_id (what readers show); history_queues gives each queue name ever kept
-- its number, and keeps it (rows outlive their queue, and a queue made again reads them).
CREATE TABLE history_queues (
    qkey     INTEGER PRIMARY KEY,
    parent   TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    UNIQUE (parent, queue_id)
);
INSERT INTO history_queues (parent, queue_id)
    SELECT parent, queue_id FROM finished_tasks UNION SELECT parent, queue_id FROM attempts;
ALTER TABLE finished_tasks ADD COLUMN qkey INTEGER NOT NULL DEFAULT 0;
UPDATE finished_tasks SET qkey = (
    SELECT h.qkey FROM history_queues h
    WHERE h.parent = finished_tasks.parent AND h.queue_id = finished_tasks.queue_id
);
ALTER TABLE attempts ADD COLUMN qkey INTEGER NOT NULL DEFAULT 0;
UPDATE attempts SET qkey = (
    SELECT h.qkey FROM history_queues h WHERE h.parent = attempts.parent AND h.queue_id = attempts.queue_id
);
DROP INDEX finished_tasks_queue;
DROP INDEX finished_tasks_failed;
DROP INDEX finished_tasks_succeeded;
DROP INDEX finished_tasks_removed;
DROP INDEX finished_tasks_name;
DROP INDEX attempts_task;
CREATE INDEX finished_tasks_queue ON finished_tasks (qkey, seq);
CREATE INDEX finished_tasks_failed ON finished_tasks (qkey, seq)
    WHERE reason IN ('max_attempts', 'max_retry_duration');
CREATE INDEX finished_tasks_succeeded ON finished_tasks (qkey, seq)
    WHERE reason = 'succeeded';
CREATE INDEX finished_tasks_removed ON finished_tasks (qkey, seq)
    WHERE reason IN ('deleted', 'purged');
CREATE INDEX finished_tasks_name ON finished_tasks (qkey, task_id);
CREATE INDEX attempts_task ON attempts (qkey, task_id);
