-- The SIP edge (issue "SIP edge you can put on the internet"): what a trunk's carrier may see and how long it
-- may stay silent, how long a dialled number may be, and what a call presents when its caller id is junk.

ALTER TABLE trunks
    ADD COLUMN pdd_timeout_seconds integer NOT NULL DEFAULT 0 CHECK (pdd_timeout_seconds BETWEEN 0 AND 120),
    ADD COLUMN pass_diversion      boolean NOT NULL DEFAULT false,
    ADD COLUMN pass_privacy        boolean NOT NULL DEFAULT false,
    ADD COLUMN pass_history_info   boolean NOT NULL DEFAULT false,
    ADD COLUMN topology_hiding     text    NOT NULL DEFAULT 'ON' CHECK (topology_hiding IN ('ON', 'OFF'));

ALTER TABLE company
    ADD COLUMN max_destination_digits smallint NOT NULL DEFAULT 15 CHECK (max_destination_digits BETWEEN 1 AND 18),
    ADD COLUMN caller_id_fallback     text     NOT NULL DEFAULT 'DEFAULT_CALLER_ID'
        CHECK (caller_id_fallback IN ('DEFAULT_CALLER_ID', 'ANONYMOUS'));

ALTER TABLE accounts
    ADD COLUMN default_caller_id text NOT NULL DEFAULT '' CHECK (default_caller_id ~ '^[0-9]{0,18}$');
