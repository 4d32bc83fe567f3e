-- Accounts (customers and providers on one list), the company profile, SIP devices and API tokens.
-- rate_groups and localization_profiles start as bare names so accounts can reference them;
-- the configuration model (issue 3) adds their columns.

CREATE TABLE company (
    id               integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    name             text     NOT NULL DEFAULT 'tollgate',
    currency         text     NOT NULL DEFAULT 'USD',
    decimals         smallint NOT NULL DEFAULT 4 CHECK (decimals BETWEEN 0 AND 6),
    pin_length       smallint NOT NULL DEFAULT 6 CHECK (pin_length BETWEEN 4 AND 12),
    invoice_with_cdr text     NOT NULL DEFAULT 'NONE' CHECK (invoice_with_cdr IN ('NONE', 'PDF', 'CSV')),
    max_call_seconds integer  NOT NULL DEFAULT 10800 CHECK (max_call_seconds > 0),
    timezone         text     NOT NULL DEFAULT 'UTC',
    sip_realm        text     NOT NULL DEFAULT 'tollgate'
);
INSERT INTO company DEFAULT VALUES;

CREATE TABLE rate_groups (
    id   text PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE localization_profiles (
    id   text PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE accounts (
    id                         bigserial PRIMARY KEY,
    account_number             text     NOT NULL,
    type                       text     NOT NULL CHECK (type IN ('CUSTOMER', 'PROVIDER')),
    password_hash              text,
    pin                        text     NOT NULL,
    email                      text     NOT NULL,
    -- account settings
    max_concurrent_calls       integer  NOT NULL DEFAULT 0 CHECK (max_concurrent_calls >= 0),
    cps                        integer  NOT NULL DEFAULT 0 CHECK (cps >= 0),
    localization_id            text REFERENCES localization_profiles (id),
    allow_local_calls          boolean  NOT NULL DEFAULT false,
    notifications              boolean  NOT NULL DEFAULT false,
    payment_gateway_permission boolean  NOT NULL DEFAULT false,
    allow_loss_less_routing    boolean  NOT NULL DEFAULT false,
    lc_charge_per_min          bigint   NOT NULL DEFAULT 0 CHECK (lc_charge_per_min >= 0),
    allow_recording            boolean  NOT NULL DEFAULT false,
    -- profile
    first_name                 text     NOT NULL DEFAULT '',
    last_name                  text     NOT NULL DEFAULT '',
    company                    text     NOT NULL DEFAULT '',
    phone                      text     NOT NULL DEFAULT '',
    notification_email         text     NOT NULL DEFAULT '',
    address1                   text     NOT NULL DEFAULT '',
    address2                   text     NOT NULL DEFAULT '',
    city                       text     NOT NULL DEFAULT '',
    province                   text     NOT NULL DEFAULT '',
    zip                        text     NOT NULL DEFAULT '',
    country                    text     NOT NULL DEFAULT '',
    timezone                   text     NOT NULL DEFAULT 'UTC',
    -- billing
    account_type               text     NOT NULL DEFAULT 'PREPAID' CHECK (account_type IN ('PREPAID', 'POSTPAID')),
    credit_limit               bigint   NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    rate_group_id              text REFERENCES rate_groups (id),
    non_cli_rate_group_id      text REFERENCES rate_groups (id),
    cli_pool                   smallint NOT NULL DEFAULT 0 CHECK (cli_pool BETWEEN 0 AND 8),
    tax_number                 text     NOT NULL DEFAULT '',
    generate_zero_invoice      boolean  NOT NULL DEFAULT false,
    invoice_note               text     NOT NULL DEFAULT '',
    reference                  text     NOT NULL DEFAULT '',
    billing_day                smallint NOT NULL DEFAULT 1 CHECK (billing_day BETWEEN 1 AND 28),
    invoice_with_cdr           text     NOT NULL DEFAULT 'NONE' CHECK (invoice_with_cdr IN ('NONE', 'PDF', 'CSV')),
    -- state
    status                     text     NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'INACTIVE')),
    expire_at                  timestamptz,
    balance                    bigint   NOT NULL DEFAULT 0,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    deleted_at                 timestamptz,
    CHECK (account_type = 'POSTPAID' OR credit_limit = 0),
    -- The target of every configuration reference: numbers are immutable and never reused.
    CONSTRAINT accounts_account_number_exact_key UNIQUE (account_number)
);
-- Numbers are never reused, deleted rows included; "AB12" and "ab12" are the same number.
CREATE UNIQUE INDEX accounts_number_key ON accounts (lower(account_number));
CREATE UNIQUE INDEX accounts_email_live_key ON accounts (lower(email)) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX accounts_pin_live_key ON accounts (pin) WHERE deleted_at IS NULL;
CREATE INDEX accounts_created_at_idx ON accounts (created_at);

CREATE TABLE sip_devices (
    id         bigserial PRIMARY KEY,
    account    text   NOT NULL REFERENCES accounts (account_number),
    username   text   NOT NULL,
    -- Digest credentials: md5(username:realm:password) and its SHA-256 twin (RFC 7616); never the password.
    ha1        text   NOT NULL,
    ha1_sha256 text   NOT NULL,
    realm      text   NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX sip_devices_username_key ON sip_devices (username);
CREATE INDEX sip_devices_account_idx ON sip_devices (account);

-- Portal login tokens, stored as SHA-256 so a database leak does not leak sessions.
CREATE TABLE api_tokens (
    token_sha256 bytea PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts (id),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX api_tokens_account_idx ON api_tokens (account_id);
