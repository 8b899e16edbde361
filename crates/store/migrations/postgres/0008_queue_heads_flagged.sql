-- PostgreSQL keeps the head flag now, as SQLite does (see deliveries::claim): the claim
-- and the next due time walk the flagged heads in due order instead of every queue, which
-- took 100 ms a claim with 8,000 clients' queues waiting behind a failing endpoint.
-- Until now the flag was only set where 0006 set it: flag every queue's head.
UPDATE deliveries SET head = 1
WHERE status = 'pending' AND head = 0 AND NOT EXISTS (
  SELECT 1 FROM deliveries e
  WHERE e.handlers_id = deliveries.handlers_id AND e.ordering_key = deliveries.ordering_key
    AND e.status = 'pending' AND e.id < deliveries.id);
-- Keyed by when each head can go (its due time, or the end of its lease): the heads in
-- flight and those waiting for a retry are outside the range a claim reads.
CREATE INDEX deliveries_heads ON deliveries((GREATEST(next_at, lease_until)))
  WHERE status = 'pending' AND head = 1;
