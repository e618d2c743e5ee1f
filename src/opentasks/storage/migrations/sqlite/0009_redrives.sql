-- A dead letter sent again as a new task ("redriven") stays kept, with the new task's ID and
-- when it was made, and is no longer a dead letter: the index of failed tasks gives way to one
-- of dead letters (the Failed tab, the counts, redrive all), which leaves redriven ones out, so
-- redriving every dead letter twice sends each once.
ALTER TABLE finished_tasks ADD COLUMN redriven_as TEXT;
ALTER TABLE finished_tasks ADD COLUMN redrive_us INTEGER;
DROP INDEX finished_tasks_failed;
CREATE INDEX finished_tasks_dead ON finished_tasks (qkey, seq)
    WHERE reason IN ('max_attempts', 'max_retry_duration') AND redriven_as IS NULL;
