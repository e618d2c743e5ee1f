-- Secrets every server of this database shares, created by the first server that needs one
-- (e.g. the key that signs ListTasks/ListQueues page tokens, so that any node reads any node's).
CREATE TABLE opentasks_secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);
