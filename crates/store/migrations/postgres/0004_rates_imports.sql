-- Rate tables, their rates, import jobs and the messages the email rates manager took.
CREATE TABLE rate_tables (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    email_sender TEXT,
    email_subject TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One price per (table, prefix, start): a later deck with the same start replaces it.
CREATE TABLE rates (
    id BIGSERIAL PRIMARY KEY,
    rate_tables_id BIGINT NOT NULL REFERENCES rate_tables(id),
    prefix TEXT NOT NULL,
    rate BIGINT NOT NULL,
    effective_from BIGINT NOT NULL,
    imports_id BIGINT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX rates_key ON rates(rate_tables_id, prefix, effective_from);

-- An import job. `node` names the server whose disk holds the uploaded file: only it
-- runs the job, and it resumes it after a restart.
CREATE TABLE imports (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    file_name TEXT NOT NULL,
    rate_tables_id BIGINT REFERENCES rate_tables(id),
    rows_total BIGINT NOT NULL DEFAULT 0,
    rows_imported BIGINT NOT NULL DEFAULT 0,
    errors TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL,
    node TEXT NOT NULL,
    file_path TEXT NOT NULL,
    lease_until BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX imports_queue ON imports(node, status, id);

-- Every message the email rates manager handled, so none is handled twice.
CREATE TABLE email_messages (
    id BIGSERIAL PRIMARY KEY,
    source_key TEXT NOT NULL UNIQUE,
    message_id TEXT,
    sender TEXT NOT NULL,
    subject TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
