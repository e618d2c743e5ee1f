-- Servers sharing this database (nodes): each renews its row with a heartbeat; a node whose
-- expire_us has passed is gone, and its row is deleted an hour later.
CREATE TABLE nodes (
    node_id      text COLLATE "C" PRIMARY KEY,
    address      text NOT NULL,
    started_us   bigint NOT NULL,
    heartbeat_us bigint NOT NULL,
    expire_us    bigint NOT NULL
);

-- Which node dispatches each queue, until when (a lease renewed with the node's heartbeat), and
-- the epoch of that hold: it grows each time the queue changes hands and fences claims. A
-- released queue keeps its row with node_id NULL, so the next holder still counts up.
CREATE TABLE queue_owners (
    queue_pk  bigint PRIMARY KEY REFERENCES queues (pk) ON DELETE CASCADE,
    node_id   text COLLATE "C",
    epoch     bigint NOT NULL,
    expire_us bigint NOT NULL
);
CREATE INDEX queue_owners_node ON queue_owners (node_id);
