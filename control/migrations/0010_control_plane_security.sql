-- The control plane an operator can expose (SPEC §11): operators and their tokens, login throttling, the
-- audit log, who posted a payment, and the server's own secret (page tokens).

-- Named operators with a role. Names are never reused (deleted rows included): the audit log names them.
CREATE TABLE operators (
    id          bigserial   PRIMARY KEY,
    name        text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('admin', 'config', 'billing', 'readonly')),
    description text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX operators_name_key ON operators (lower(name));

-- Operator tokens, stored as SHA-256 like the account sessions; `id` names one for listing and revoking.
CREATE TABLE operator_tokens (
    id           bigserial   PRIMARY KEY,
    token_sha256 bytea       NOT NULL UNIQUE,
    operator_id  bigint      NOT NULL REFERENCES operators (id),
    description  text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX operator_tokens_operator ON operator_tokens (operator_id, id);

-- Account sessions: when each was made (housekeeping purges the expired ones).
ALTER TABLE api_tokens ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX api_tokens_expires_at ON api_tokens (expires_at);

-- Failed logins per login name (lower-cased, known or not) and per client address. `failures` counts the
-- failures since the last success (login) or within the lock window; `locked_until` refuses attempts
-- without checking a password.
CREATE TABLE login_throttle (
    kind            text        NOT NULL CHECK (kind IN ('login', 'source')),
    key             text        NOT NULL,
    failures        integer     NOT NULL DEFAULT 0,
    last_failure_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    PRIMARY KEY (kind, key)
);

-- Every change made through the API, written in the change's own transaction.
CREATE TABLE audit_events (
    id         bigserial   PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    principal  text        NOT NULL,
    role       text        NOT NULL,
    rpc        text        NOT NULL,
    resource   text        NOT NULL DEFAULT '',
    request_id text        NOT NULL DEFAULT '',
    source     text        NOT NULL DEFAULT '',
    changes    jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_created_at ON audit_events (created_at);
CREATE INDEX audit_events_resource ON audit_events (resource, id);

ALTER TABLE payments ADD COLUMN posted_by text NOT NULL DEFAULT '';

-- Secrets the service makes for itself, shared by every control service on this database.
CREATE TABLE server_secrets (
    name       text        PRIMARY KEY,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
