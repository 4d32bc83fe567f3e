-- Every identified call has a CDR, refused ones too (SPEC §9): the answer's reason phrase and the check that
-- refused the call (callstate.events.CallEvent). end_reason now says how every call ended: hangup,
-- duration_limit, failed, refused or orphaned ('' on CDRs written before this migration).
ALTER TABLE cdrs
    ADD COLUMN sip_reason text NOT NULL DEFAULT '',
    ADD COLUMN stage      text NOT NULL DEFAULT '';

-- Stream entries the ledger could not read as a call event: kept for a person, never dropped silently.
CREATE TABLE rejected_events (
    stream      text        NOT NULL,
    entry_id    text        NOT NULL,
    fields      jsonb       NOT NULL,
    error       text        NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, entry_id)
);
