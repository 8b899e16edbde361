-- Indexes over pending and failed deliveries only: the claim, the order probe and the
-- due-time scan touch the few unfinished rows, and a delivery that succeeds leaves
-- these indexes instead of being rewritten in them (the old (status, …) indexes held
-- every delivery ever made and were updated on every outcome).
DROP INDEX deliveries_due;
DROP INDEX deliveries_order;
CREATE INDEX deliveries_due ON deliveries(next_at) WHERE status = 'pending';
CREATE INDEX deliveries_failed ON deliveries(handlers_id, id) WHERE status = 'failed';
CREATE INDEX deliveries_handler ON deliveries(handlers_id, id);
