-- Insights without scans: each queue keeps the number of its tasks (kept by triggers, so every
-- insert and delete, cascades included, is counted in the same transaction), and tasks are
-- indexed by schedule time, so the oldest task is one index lookup and the tasks scheduled
-- ahead are one index range. Trigger bodies stay on one line: statements split at ";\n".
ALTER TABLE queues ADD COLUMN task_count INTEGER NOT NULL DEFAULT 0;
UPDATE queues SET task_count = (SELECT COUNT(*) FROM tasks WHERE tasks.queue_pk = queues.pk);
CREATE INDEX tasks_schedule ON tasks (queue_pk, schedule_us);
CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN UPDATE queues SET task_count = task_count + 1 WHERE pk = NEW.queue_pk; END;
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN UPDATE queues SET task_count = task_count - 1 WHERE pk = OLD.queue_pk; END;
