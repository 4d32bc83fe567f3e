-- Postpaid invoices (SPEC §10), written by control/invoices.py.

-- The company's tax rate, applied to every invoice (usage and non-call charges); 0 = no tax.
ALTER TABLE company ADD COLUMN tax_percent numeric(7, 4) NOT NULL DEFAULT 0 CHECK (tax_percent BETWEEN 0 AND 100);

-- The last invoice number given. Taken FOR UPDATE in the transaction that inserts the invoice: a rolled-back
-- invoice gives its number back (a sequence would burn it and leave a gap, which tax law does not allow).
CREATE TABLE invoice_counter (
    id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    last_number bigint  NOT NULL DEFAULT 0
);
INSERT INTO invoice_counter DEFAULT VALUES;

-- Money in micros. Usage is split by call direction (outbound, local, inbound): calls = CDRs (answered or
-- not), seconds = billable seconds, amount = what the customer was debited. charges are the non-call charges
-- as an amount owed (> 0); payments the money received (> 0); total = usage + charges + tax_amount.
CREATE TABLE invoices (
    id               bigserial   PRIMARY KEY,
    number           text        NOT NULL UNIQUE,
    account_number   text        NOT NULL REFERENCES accounts (account_number),
    period_start     timestamptz NOT NULL,  -- inclusive
    period_end       timestamptz NOT NULL,  -- exclusive: the billing day 00:00 in the account's timezone
    issue_date       date        NOT NULL,  -- the billing day, in the account's timezone
    due_date         date        NOT NULL,
    outbound_calls   bigint      NOT NULL DEFAULT 0,
    outbound_seconds bigint      NOT NULL DEFAULT 0,
    outbound_amount  bigint      NOT NULL DEFAULT 0,
    local_calls      bigint      NOT NULL DEFAULT 0,
    local_seconds    bigint      NOT NULL DEFAULT 0,
    local_amount     bigint      NOT NULL DEFAULT 0,
    inbound_calls    bigint      NOT NULL DEFAULT 0,
    inbound_seconds  bigint      NOT NULL DEFAULT 0,
    inbound_amount   bigint      NOT NULL DEFAULT 0,
    charges          bigint      NOT NULL DEFAULT 0,
    payments         bigint      NOT NULL DEFAULT 0,
    tax_percent      numeric(7, 4) NOT NULL DEFAULT 0,
    tax_amount       bigint      NOT NULL DEFAULT 0,
    total            bigint      NOT NULL DEFAULT 0,
    -- Copied from the account and the company at issue: an invoice never changes afterwards.
    timezone         text        NOT NULL,
    tax_number       text        NOT NULL DEFAULT '',
    invoice_note     text        NOT NULL DEFAULT '',
    invoice_with_cdr text        NOT NULL DEFAULT 'NONE' CHECK (invoice_with_cdr IN ('NONE', 'PDF', 'CSV')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (period_end > period_start),
    -- One invoice per account and billing day, whatever runs generation concurrently.
    UNIQUE (account_number, period_end)
);
CREATE INDEX invoices_account ON invoices (account_number, id);

-- Each CDR (its customer's side) and each payment belongs to at most one invoice, set in the transaction that
-- makes the invoice; one that arrives after its period was invoiced goes on the next invoice.
ALTER TABLE cdrs ADD COLUMN invoice_id bigint REFERENCES invoices (id);
CREATE INDEX cdrs_invoice ON cdrs (invoice_id, setup_time) WHERE invoice_id IS NOT NULL;
ALTER TABLE payments ADD COLUMN invoice_id bigint REFERENCES invoices (id);
CREATE INDEX payments_uninvoiced ON payments (account_number, created_at) WHERE invoice_id IS NULL;
