-- Money is integer micro-units, times are integer microseconds since the epoch (UTC),
-- lists and maps are JSON text: the same column types work on both databases.
CREATE TABLE api_keys (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE clients (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    balance BIGINT NOT NULL DEFAULT 0,
    credit BIGINT NOT NULL DEFAULT 0,
    email TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    custom_fields TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE accounts (
    id BIGSERIAL PRIMARY KEY,
    clients_id BIGINT NOT NULL REFERENCES clients(id),
    name TEXT NOT NULL,
    auth_type TEXT NOT NULL,
    ips TEXT NOT NULL DEFAULT '[]',
    login TEXT,
    password TEXT,
    enabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX accounts_clients ON accounts(clients_id);

CREATE TABLE packages (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    period TEXT NOT NULL,
    fee BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE subscriptions (
    id BIGSERIAL PRIMARY KEY,
    clients_id BIGINT NOT NULL REFERENCES clients(id),
    packages_id BIGINT NOT NULL REFERENCES packages(id),
    status TEXT NOT NULL,
    start_dt BIGINT NOT NULL,
    period_start BIGINT,
    period_end BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subscriptions_clients ON subscriptions(clients_id);
CREATE INDEX subscriptions_due ON subscriptions(status, period_end);

CREATE TABLE dids (
    id BIGSERIAL PRIMARY KEY,
    number TEXT NOT NULL,
    status TEXT NOT NULL,
    clients_id BIGINT REFERENCES clients(id),
    accounts_id BIGINT REFERENCES accounts(id),
    hold_until BIGINT,
    status_after_hold TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX dids_number_live ON dids(number) WHERE status <> 'archived';
CREATE INDEX dids_clients ON dids(clients_id);
CREATE INDEX dids_hold ON dids(status, hold_until);

CREATE TABLE transactions (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    clients_id BIGINT NOT NULL REFERENCES clients(id),
    amount BIGINT NOT NULL,
    dt BIGINT NOT NULL,
    notes TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX transactions_clients ON transactions(clients_id);

-- The outbox: one row per event, written in the transaction of the change.
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    events_id TEXT NOT NULL,
    object_id BIGINT,
    ordering_key TEXT NOT NULL,
    dt BIGINT NOT NULL,
    data TEXT NOT NULL,
    previous TEXT NOT NULL
);
CREATE INDEX events_type ON events(events_id, id);
CREATE INDEX events_object ON events(object_id, id);
CREATE INDEX events_dt ON events(dt);
