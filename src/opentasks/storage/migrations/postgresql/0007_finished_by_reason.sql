-- The dashboard's Succeeded and Deleted tabs page through one queue's finished tasks of some
-- reasons, newest first. On finished_tasks_queue alone a rare reason means reading every kept row
-- of the queue (a purge of 1,000,000 tasks, then the Succeeded tab): each tab gets a partial
-- index like finished_tasks_failed. A finished row enters at most one of the three.
CREATE INDEX IF NOT EXISTS finished_tasks_succeeded ON finished_tasks (parent, queue_id, seq)
    WHERE reason = 'succeeded';
CREATE INDEX IF NOT EXISTS finished_tasks_removed ON finished_tasks (parent, queue_id, seq)
    WHERE reason IN ('deleted', 'purged');
