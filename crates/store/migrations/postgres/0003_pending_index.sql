-- The claim groups the pending deliveries by queue: keep an index of just those.
CREATE INDEX deliveries_pending ON deliveries(handlers_id, ordering_key, id) WHERE status = 'pending';
