-- E-mail notifications (SPEC §2 `notifications`): an outbox written in the transaction of the event that causes
-- it, sent by control/notifications/sender.py with retries. Nothing is lost while the mail server is down.

-- Below this much money left to spend (balance, plus the credit limit of a postpaid account) the account is
-- told, once per crossing; 0 = never.
ALTER TABLE accounts ADD COLUMN low_balance_threshold bigint NOT NULL DEFAULT 0 CHECK (low_balance_threshold >= 0);

CREATE TABLE notifications (
    id              bigserial   PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('ACCOUNT_CREATED', 'INVOICE_ISSUED', 'RECEIPT',
                                                         'LOW_BALANCE')),
    account_number  text        NOT NULL REFERENCES accounts (account_number),
    recipient       text        NOT NULL,  -- the account's notification_email, else its email, when written
    subject         text        NOT NULL,
    resource        text        NOT NULL DEFAULT '',  -- invoices/INV_..., receipts/RCT_...: what it attaches
    data            jsonb       NOT NULL DEFAULT '{}',  -- what the message says that may change later
    status          text        NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '',
    -- The next try; a sender that takes a message moves it a lease ahead, so that another sender (or this one
    -- after a crash) takes it only once that has passed.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX notifications_due ON notifications (next_attempt_at, id) WHERE status = 'PENDING';
CREATE INDEX notifications_account ON notifications (account_number, id);

-- Low balance is seen where every balance move is: an update of accounts.balance (a call's debit by the ledger,
-- a charge, a payment), of the credit limit or of the threshold. The row lock orders the updates of one
-- account, so each crossing from "enough" to "below the threshold" is one update, seen once, in its own
-- transaction, without the ledger knowing about mail. Rising above it again re-arms the alert.
CREATE FUNCTION notify_low_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notifications (kind, account_number, recipient, subject, data)
    VALUES ('LOW_BALANCE', NEW.account_number,
            CASE WHEN NEW.notification_email <> '' THEN NEW.notification_email ELSE NEW.email END,
            (SELECT name FROM company WHERE id = 1) || ': low balance on account ' || NEW.account_number,
            jsonb_build_object('balance', NEW.balance, 'credit_limit', NEW.credit_limit,
                               'threshold', NEW.low_balance_threshold, 'account_type', NEW.account_type));
    PERFORM pg_notify('tollgate_notifications', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER accounts_low_balance
    AFTER UPDATE OF balance, credit_limit, low_balance_threshold ON accounts
    FOR EACH ROW
    WHEN (NEW.notifications AND NEW.deleted_at IS NULL AND NEW.low_balance_threshold > 0
          AND NEW.balance + NEW.credit_limit < NEW.low_balance_threshold
          AND NOT (OLD.low_balance_threshold > 0 AND OLD.balance + OLD.credit_limit < OLD.low_balance_threshold))
    EXECUTE FUNCTION notify_low_balance();
