-- Insights without scans of task rows: tasks are indexed by schedule time, so a queue's oldest
-- task is one index lookup, and its tasks (and those scheduled ahead) are counted on indexes
-- alone. No per-row triggers: they would cost every CreateTask and every finished attempt.
CREATE INDEX tasks_schedule ON tasks (queue_pk, schedule_us);
