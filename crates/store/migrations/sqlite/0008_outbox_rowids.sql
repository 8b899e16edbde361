-- The outbox's tables without AUTOINCREMENT where no id can be reused, and deliveries
-- without foreign keys. Why: every event inserts an event, a delivery and (per batch)
-- execution rows, and AUTOINCREMENT makes each INSERT statement scan sqlite_sequence
-- and rewrite its row, about 1.5 µs here, a few per cent of the server under load;
-- the two foreign keys of a delivery cost two more index lookups per insert.
--
-- AUTOINCREMENT only differs from a plain rowid (the largest id plus one) once the row
-- with the largest id has been deleted. Events and executions are never deleted (the
-- outbox and the log are append-only), so their ids stay as they are: never reused.
-- Deliveries are deleted with their handler and keep AUTOINCREMENT, so that an
-- execution of a deleted handler never names another's delivery; their rows are only
-- ever inserted by the outbox, for an event and a handler it has just read in the same
-- transaction, and a handler's deliveries are deleted with it, which is what the
-- foreign keys checked. PostgreSQL keeps its sequences and keys.

CREATE TABLE deliveries_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq BIGINT NOT NULL,
    handlers_id BIGINT NOT NULL,
    ordering_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    head INTEGER NOT NULL DEFAULT 0
);
INSERT INTO deliveries_new (id, event_seq, handlers_id, ordering_key, status, attempts,
    next_at, lease_until, last_error, created_at, updated_at, head)
SELECT id, event_seq, handlers_id, ordering_key, status, attempts,
    next_at, lease_until, last_error, created_at, updated_at, head
FROM deliveries;
-- The ids of deliveries deleted with their handler stay used.
UPDATE sqlite_sequence
SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'), 0))
WHERE name = 'deliveries_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'deliveries_new', seq FROM sqlite_sequence
WHERE name = 'deliveries'
  AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'deliveries_new');
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_event ON deliveries(event_seq);
CREATE INDEX deliveries_pending ON deliveries(handlers_id, ordering_key, id) WHERE status = 'pending';
CREATE INDEX deliveries_failed ON deliveries(handlers_id, id) WHERE status = 'failed';
CREATE INDEX deliveries_handler ON deliveries(handlers_id, id);
CREATE INDEX deliveries_heads ON deliveries(max(next_at, lease_until))
  WHERE status = 'pending' AND head = 1;

CREATE TABLE events_new (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    events_id TEXT NOT NULL,
    object_id BIGINT,
    ordering_key TEXT NOT NULL,
    dt BIGINT NOT NULL,
    data TEXT NOT NULL,
    previous TEXT NOT NULL
);
INSERT INTO events_new (id, uid, events_id, object_id, ordering_key, dt, data, previous)
SELECT id, uid, events_id, object_id, ordering_key, dt, data, previous FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_type ON events(events_id, id);
CREATE INDEX events_object ON events(object_id, id);
CREATE INDEX events_dt ON events(dt);

CREATE TABLE executions_new (
    id INTEGER PRIMARY KEY,
    dt BIGINT NOT NULL,
    handlers_id BIGINT NOT NULL,
    handler TEXT NOT NULL,
    events_id TEXT NOT NULL,
    event_uid TEXT NOT NULL,
    object_id BIGINT,
    stage TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    status TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    request TEXT NOT NULL,
    response_status BIGINT,
    response_body TEXT,
    error TEXT,
    modified TEXT,
    deliveries_id BIGINT
);
INSERT INTO executions_new (id, dt, handlers_id, handler, events_id, event_uid, object_id,
    stage, attempt, status, duration_ms, request, response_status, response_body, error,
    modified, deliveries_id)
SELECT id, dt, handlers_id, handler, events_id, event_uid, object_id,
    stage, attempt, status, duration_ms, request, response_status, response_body, error,
    modified, deliveries_id
FROM executions;
DROP TABLE executions;
ALTER TABLE executions_new RENAME TO executions;
CREATE INDEX executions_handler ON executions(handlers_id, id);
CREATE INDEX executions_event ON executions(event_uid);
CREATE INDEX executions_dt ON executions(dt);
