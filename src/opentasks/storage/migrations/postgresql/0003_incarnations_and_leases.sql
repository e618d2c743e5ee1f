-- Which running process a node row belongs to: a second live process with the same node ID is
-- refused, and a new process of a node that died releases the old one's queues.
ALTER TABLE nodes ADD COLUMN incarnation text NOT NULL DEFAULT '';

-- Tasks whose attempt is in flight (due_us is the end of the lease, not the schedule time), for
-- counting a previous holder's attempts without walking the queue's scheduled backlog.
CREATE INDEX tasks_leased ON tasks (queue_pk, due_us) WHERE due_us <> schedule_us;
