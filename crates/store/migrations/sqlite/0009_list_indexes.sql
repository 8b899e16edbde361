-- The execution log and the delivery list read each page in order from an index, under
-- every filter the API has, instead of sorting what the filter matched.
-- With the log ordered by the time of the call and a handler's index on (handlers_id,
-- id), a page of one handler's log sorted all its calls (0.14 s for 330,000 of them,
-- growing with the log). SQLite appends the rowid (the id) to every index: it orders
-- ties.
DROP INDEX executions_handler;
CREATE INDEX executions_handler ON executions(handlers_id, dt);
-- Failures only: the calls that succeed, nearly all of them, cost these nothing. The
-- list writes `status = 'fail'` into its statement, which a partial index needs.
CREATE INDEX executions_failed ON executions(dt) WHERE status = 'fail';
CREATE INDEX executions_handler_failed ON executions(handlers_id, dt) WHERE status = 'fail';
-- Every failed delivery, newest first, without reading the ones that succeeded.
CREATE INDEX deliveries_failed_all ON deliveries(id) WHERE status = 'failed';
-- A handler's failed deliveries: made again, after deliveries_handler. Without
-- statistics, SQLite takes the index made last of two that serve a query as well as
-- each other, and took deliveries_handler, reading every delivery of the handler.
DROP INDEX deliveries_failed;
CREATE INDEX deliveries_failed ON deliveries(handlers_id, id) WHERE status = 'failed';
