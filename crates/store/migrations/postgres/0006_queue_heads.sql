-- The head flag of SQLite's migration 0006, kept in the same way here so that both
-- schemas stay one. PostgreSQL's claim does not rely on it: concurrent transactions
-- can leave a head unflagged there (see deliveries::claim).
ALTER TABLE deliveries ADD COLUMN head INTEGER NOT NULL DEFAULT 0;
UPDATE deliveries SET head = 1
WHERE status = 'pending' AND NOT EXISTS (
  SELECT 1 FROM deliveries e
  WHERE e.handlers_id = deliveries.handlers_id AND e.ordering_key = deliveries.ordering_key
    AND e.status = 'pending' AND e.id < deliveries.id);
