-- No query reads this index any more: the claim and the next due time read each queue's
-- head by its id (found through deliveries_pending), and the pending count of /metrics
-- has deliveries_pending too. It cost a write with every pending change. SQLite dropped
-- its own in 0006.
DROP INDEX deliveries_due;
