-- A dead letter sent again as a new task ("redriven") stays kept, with the new task's ID and
-- when it was made, and is no longer a dead letter: the index of failed tasks gives way to one
-- of dead letters (the Failed tab, the counts, redrive all), which leaves redriven ones out, so
-- redriving every dead letter twice sends each once. Adding the columns rewrites no row; the
-- index reads the table once (it may be built beforehand with CREATE INDEX CONCURRENTLY, see
-- docs/postgresql.md).
ALTER TABLE finished_tasks ADD COLUMN IF NOT EXISTS redriven_as text COLLATE "C",
                           ADD COLUMN IF NOT EXISTS redrive_us bigint;
CREATE INDEX IF NOT EXISTS finished_tasks_dead ON finished_tasks (parent, queue_id, seq)
    WHERE reason IN ('max_attempts', 'max_retry_duration') AND redriven_as IS NULL;
DROP INDEX IF EXISTS finished_tasks_failed;
