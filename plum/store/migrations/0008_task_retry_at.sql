-- When a retry's backoff ends, so that a restart waits out the rest of it.
ALTER TABLE tasks ADD COLUMN retry_at REAL;
