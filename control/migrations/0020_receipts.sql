-- Receipts (SPEC §10): one for every payment and non-call charge, made in the transaction that posts it
-- (control/billing/receipts.py), numbered RCT_000001... in a series of their own.

-- The last receipt number given, like invoice_counter: taken FOR UPDATE in the posting transaction, so a
-- payment that rolls back gives its number back and the series has no gap.
CREATE TABLE receipt_counter (
    id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    last_number bigint  NOT NULL DEFAULT 0
);
INSERT INTO receipt_counter DEFAULT VALUES;

-- A receipt says what was received (PAYMENT) or charged (CHARGE), always as a positive amount, and the
-- balance it left; copied from the payment, which never changes either.
CREATE TABLE receipts (
    id             bigserial   PRIMARY KEY,
    number         text        NOT NULL UNIQUE,
    payment_id     bigint      NOT NULL UNIQUE REFERENCES payments (id),
    account_number text        NOT NULL REFERENCES accounts (account_number),
    kind           text        NOT NULL CHECK (kind IN ('PAYMENT', 'CHARGE')),
    amount         bigint      NOT NULL CHECK (amount > 0),
    balance_after  bigint      NOT NULL,
    note           text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX receipts_account ON receipts (account_number, id);
