-- The head of each (handler, ordering key) queue — its oldest pending delivery — is
-- flagged, and only flagged pending deliveries are in the index the claim walks in due
-- order. Before, the claim found heads by grouping every pending delivery: behind one
-- client's failing endpoint its whole backlog was grouped again on every claim (50 ms
-- per claim with 100,000 waiting).
ALTER TABLE deliveries ADD COLUMN head INTEGER NOT NULL DEFAULT 0;
UPDATE deliveries SET head = 1
WHERE status = 'pending' AND NOT EXISTS (
  SELECT 1 FROM deliveries e
  WHERE e.handlers_id = deliveries.handlers_id AND e.ordering_key = deliveries.ordering_key
    AND e.status = 'pending' AND e.id < deliveries.id);
DROP INDEX deliveries_due;
CREATE INDEX deliveries_heads ON deliveries(next_at) WHERE status = 'pending' AND head = 1;
