CREATE TABLE handlers (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    priority BIGINT NOT NULL,
    event TEXT NOT NULL,
    stage TEXT NOT NULL,
    type TEXT NOT NULL,
    task TEXT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    on_failure TEXT NOT NULL,
    retry_schedule TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One row per (event, after handler), inserted in the event's transaction (the outbox).
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    event_seq BIGINT NOT NULL REFERENCES events(id),
    handlers_id BIGINT NOT NULL REFERENCES handlers(id),
    ordering_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(status, next_at);
CREATE INDEX deliveries_order ON deliveries(handlers_id, ordering_key, status, id);
CREATE INDEX deliveries_event ON deliveries(event_seq);

CREATE TABLE executions (
    id BIGSERIAL PRIMARY KEY,
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
CREATE INDEX executions_handler ON executions(handlers_id, id);
CREATE INDEX executions_event ON executions(event_uid);
CREATE INDEX executions_dt ON executions(dt);
