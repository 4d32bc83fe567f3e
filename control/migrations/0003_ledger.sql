-- Money: CDRs and the balance moves of calls (SPEC §9), written by control/ledger.py from the switch's Redis
-- event streams; payments and charges, posted through the API and pushed by the ledger into Redis.

-- One row per call that passed identification, answered or not. Keyed by the calling account as well: a
-- Call-ID is chosen by the caller's equipment, and one customer reusing another's must not hide either CDR.
CREATE TABLE cdrs (
    call_id              text        NOT NULL,
    account_number       text        NOT NULL,
    direction            text        NOT NULL DEFAULT '',
    caller_id_received   text        NOT NULL DEFAULT '',
    caller_id_presented  text        NOT NULL DEFAULT '',
    destination_dialled  text        NOT NULL DEFAULT '',
    destination_sent     text        NOT NULL DEFAULT '',
    rate_group           text        NOT NULL DEFAULT '',
    prefix               text        NOT NULL DEFAULT '',
    rate_per_min         bigint      NOT NULL DEFAULT 0,
    trunk                text        NOT NULL DEFAULT '',
    provider             text        NOT NULL DEFAULT '',
    gateway              text        NOT NULL DEFAULT '',
    setup_time           timestamptz,
    answer_time          timestamptz,
    end_time             timestamptz,
    billable_seconds     integer     NOT NULL DEFAULT 0,
    sip_code             integer     NOT NULL DEFAULT 0,
    customer_cost        bigint      NOT NULL DEFAULT 0,
    provider_cost        bigint      NOT NULL DEFAULT 0,
    recorded             boolean     NOT NULL DEFAULT false,
    end_reason           text        NOT NULL DEFAULT '',  -- '' normally; 'orphaned' when reaped (see fastpath.admission)
    recorded_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_number, call_id)
);
CREATE INDEX cdrs_account_setup ON cdrs (account_number, setup_time);
-- ListCdrs pages in this order (control/cdrs.py _ORDER_KEY): without it every page sorts the whole table.
CREATE INDEX cdrs_setup_order ON cdrs ((coalesce(setup_time, '-infinity')), account_number, call_id);
CREATE INDEX cdrs_provider_setup ON cdrs (provider, setup_time) WHERE provider <> '';

-- Each call moves an account's balance at most once (the customer debited, the provider credited): the key
-- makes a redelivered stream entry a no-op. call_id is the Call-ID for the customer's entry and
-- "<customer>/<Call-ID>" for a provider's (fastpath.admission.provider_settlement_id).
CREATE TABLE ledger_entries (
    account_number text        NOT NULL,
    call_id        text        NOT NULL,
    amount         bigint      NOT NULL,  -- signed micros added to the balance
    posted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_number, call_id)
);

-- Money posted by the operator: payments (amount > 0) and non-call charges (< 0). accounts.balance moves in the
-- same transaction; pushed_at is set once the switch's live balance in Redis has moved too (exactly once:
-- Redis remembers the payment ids it applied).
CREATE TABLE payments (
    id             bigserial   PRIMARY KEY,
    account_number text        NOT NULL REFERENCES accounts (account_number),
    amount         bigint      NOT NULL CHECK (amount <> 0),
    note           text        NOT NULL DEFAULT '',
    request_id     text        UNIQUE,
    balance_after  bigint      NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    pushed_at      timestamptz
);
CREATE INDEX payments_to_push ON payments (id) WHERE pushed_at IS NULL;
CREATE INDEX payments_account ON payments (account_number, created_at);
