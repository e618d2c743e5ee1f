-- Tasks whose attempt is in flight (due_us is the end of the lease, not the schedule time), for
-- counting them at start without walking the queue's scheduled backlog.
CREATE INDEX tasks_leased ON tasks (queue_pk, due_us) WHERE due_us != schedule_us;
