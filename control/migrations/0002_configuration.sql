-- The configuration model (SPEC §3, §6, §7): rate groups and decks, trunks, DIDs, caller ids,
-- SIP devices, IP maps, localization profiles; and the bookkeeping of the Redis projection.

ALTER TABLE rate_groups RENAME COLUMN name TO display_name;
ALTER TABLE rate_groups
    ALTER COLUMN display_name SET DEFAULT '',
    ADD COLUMN markup_percent            integer NOT NULL DEFAULT 0 CHECK (markup_percent BETWEEN 0 AND 1000),
    ADD COLUMN routing_strategy          text    NOT NULL DEFAULT 'LCR' CHECK (routing_strategy IN ('LCR', 'COST')),
    ADD COLUMN default_initial_increment integer NOT NULL DEFAULT 1 CHECK (default_initial_increment > 0),
    ADD COLUMN default_increment         integer NOT NULL DEFAULT 1 CHECK (default_increment > 0),
    ADD COLUMN trunks                    text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN status                    text    NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'INACTIVE')),
    ADD COLUMN rate_count                bigint  NOT NULL DEFAULT 0,
    ADD COLUMN deck_sha256               text    NOT NULL DEFAULT '',
    ADD COLUMN created_at                timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN updated_at                timestamptz NOT NULL DEFAULT now();

CREATE TABLE origination_rates (
    rate_group_id     text    NOT NULL REFERENCES rate_groups (id) ON DELETE CASCADE,
    prefix            text    NOT NULL CHECK (prefix ~ '^[0-9]{1,18}$'),  -- the fast path keys prefixes as uint64
    description       text    NOT NULL DEFAULT '',
    connect_fee       bigint  NOT NULL DEFAULT 0 CHECK (connect_fee >= 0),
    included_seconds  integer NOT NULL DEFAULT 0 CHECK (included_seconds >= 0),
    rate_per_min      bigint  NOT NULL DEFAULT 0 CHECK (rate_per_min >= 0),
    initial_increment integer NOT NULL DEFAULT 0 CHECK (initial_increment >= 0),
    increment         integer NOT NULL DEFAULT 0 CHECK (increment >= 0),
    forced_trunks     text[]  NOT NULL DEFAULT '{}',
    priority          integer NOT NULL DEFAULT 0,
    PRIMARY KEY (rate_group_id, prefix)
);

ALTER TABLE localization_profiles RENAME COLUMN name TO display_name;
ALTER TABLE localization_profiles
    ALTER COLUMN display_name SET DEFAULT '',
    ADD COLUMN caller_id_inbound       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN caller_id_outbound      text[] NOT NULL DEFAULT '{}',
    ADD COLUMN destination             text[] NOT NULL DEFAULT '{}',
    ADD COLUMN termination_caller_id   text[] NOT NULL DEFAULT '{}',
    ADD COLUMN termination_destination text[] NOT NULL DEFAULT '{}';

CREATE TABLE trunks (
    id                   text    PRIMARY KEY,
    provider             text    NOT NULL REFERENCES accounts (account_number),
    display_name         text    NOT NULL DEFAULT '',
    gateways             jsonb   NOT NULL DEFAULT '[]',
    max_concurrent_calls integer NOT NULL DEFAULT 0 CHECK (max_concurrent_calls >= 0),
    cps                  integer NOT NULL DEFAULT 0 CHECK (cps >= 0),
    localization_id      text REFERENCES localization_profiles (id),
    priority             integer NOT NULL DEFAULT 0,
    status               text    NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'INACTIVE')),
    rate_count           bigint  NOT NULL DEFAULT 0,
    deck_sha256          text    NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trunks_provider_idx ON trunks (provider);

CREATE TABLE termination_rates (
    trunk_id          text    NOT NULL REFERENCES trunks (id) ON DELETE CASCADE,
    prefix            text    NOT NULL CHECK (prefix ~ '^[0-9]{1,18}$'),  -- the fast path keys prefixes as uint64
    description       text    NOT NULL DEFAULT '',
    connect_fee       bigint  NOT NULL DEFAULT 0 CHECK (connect_fee >= 0),
    included_seconds  integer NOT NULL DEFAULT 0 CHECK (included_seconds >= 0),
    rate_per_min      bigint  NOT NULL DEFAULT 0 CHECK (rate_per_min >= 0),
    initial_increment integer NOT NULL DEFAULT 0 CHECK (initial_increment >= 0),
    increment         integer NOT NULL DEFAULT 0 CHECK (increment >= 0),
    strip             integer NOT NULL DEFAULT 0 CHECK (strip BETWEEN 0 AND 32),
    prepend           text    NOT NULL DEFAULT '' CHECK (prepend ~ '^[0-9]{0,32}$'),
    priority          integer NOT NULL DEFAULT 0,
    PRIMARY KEY (trunk_id, prefix)
);

CREATE TABLE dids (
    number     text PRIMARY KEY CHECK (number ~ '^[0-9]{1,32}$'),
    account    text REFERENCES accounts (account_number),
    provider   text REFERENCES accounts (account_number),
    status     text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'INACTIVE')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dids_account_idx ON dids (account);

CREATE TABLE caller_ids (
    account text NOT NULL REFERENCES accounts (account_number),
    number  text NOT NULL CHECK (number ~ '^[0-9]{1,32}$'),
    PRIMARY KEY (account, number)
);

ALTER TABLE sip_devices
    ADD COLUMN status text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'INACTIVE'));

CREATE TABLE ip_maps (
    id          text PRIMARY KEY,
    account     text NOT NULL REFERENCES accounts (account_number),
    cidr        cidr NOT NULL,
    tech_prefix text NOT NULL DEFAULT '' CHECK (tech_prefix ~ '^[0-9]{0,16}$'),
    description text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'INACTIVE'))
);
-- Named after its first column so a clash is reported on `cidr`.
CREATE UNIQUE INDEX ip_maps_cidr_key ON ip_maps (cidr, tech_prefix);

-- One row per projected family: `seq` grows with every committed change, so a publisher can tell
-- which families Redis lags behind (and catch up after Redis or the publisher was down).
CREATE TABLE projection_state (
    family text   PRIMARY KEY,
    seq    bigint NOT NULL DEFAULT 1
);
-- Identifies this database to Redis: a projection written from another (or a recreated) database is
-- republished whole instead of being trusted by its sequence numbers.
CREATE TABLE projection_epoch (
    id    integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    epoch text    NOT NULL DEFAULT gen_random_uuid()::text
);
INSERT INTO projection_epoch DEFAULT VALUES;

INSERT INTO projection_state (family)
VALUES ('company'), ('accounts'), ('devices'), ('ipmaps'), ('dids'), ('callerids'), ('rategroups'),
       ('trunks'), ('localizations');
