-- Dispatch state that changes with every attempt lives apart from the task's immutable spec,
-- so recording an attempt rewrites a few dozen bytes, not the whole task.
-- dispatch_count also fences attempt results (a result of an older claim is dropped).
ALTER TABLE tasks ADD COLUMN dispatch_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN progress TEXT;
