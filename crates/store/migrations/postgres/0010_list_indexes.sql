-- The execution log and the delivery list read each page in order from an index, under
-- every filter the API has, instead of sorting what the filter matched.
-- With the log ordered by the time of the call (then the id) and a handler's index on
-- (handlers_id, id), a page of one handler's log sorted all its calls, growing with the
-- log.
DROP INDEX executions_handler;
DROP INDEX executions_dt;
CREATE INDEX executions_handler ON executions(handlers_id, dt, id);
CREATE INDEX executions_dt ON executions(dt, id);
-- Failures only: the calls that succeed, nearly all of them, cost these nothing. The
-- list writes `status = 'fail'` into its statement, which a partial index needs.
CREATE INDEX executions_failed ON executions(dt, id) WHERE status = 'fail';
CREATE INDEX executions_handler_failed ON executions(handlers_id, dt, id) WHERE status = 'fail';
-- Every failed delivery, newest first, without reading the ones that succeeded.
CREATE INDEX deliveries_failed_all ON deliveries(id) WHERE status = 'failed';
