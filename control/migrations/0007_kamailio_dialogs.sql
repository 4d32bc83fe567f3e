-- Kamailio's dialogs, kept in PostgreSQL (issue "Survive restarts and faults"): a restarted node loads its calls
-- again (their BYEs are relayed and settled once), and a Redis that lost its state learns from them which calls
-- are in progress. Each node has tables of its own (Kamailio loads every row of its table at start, so nodes
-- must not share one); tollgate_node_dialog_tables() makes them. The columns are Kamailio 5.6/6.0's (dialog
-- table version 7, dialog_vars 1), as text: a long Call-ID, URI or call plan must not fail a write.

CREATE TABLE IF NOT EXISTS version (
    id            serial  PRIMARY KEY,
    table_name    text    NOT NULL UNIQUE,
    table_version integer NOT NULL DEFAULT 0
);

CREATE TABLE kamailio_dialog_template (
    id               serial  PRIMARY KEY,
    hash_entry       integer NOT NULL,
    hash_id          integer NOT NULL,
    callid           text    NOT NULL,
    from_uri         text    NOT NULL,
    from_tag         text    NOT NULL,
    to_uri           text    NOT NULL,
    to_tag           text    NOT NULL,
    caller_cseq      text    NOT NULL,
    callee_cseq      text    NOT NULL,
    caller_route_set text,
    callee_route_set text,
    caller_contact   text    NOT NULL,
    callee_contact   text    NOT NULL,
    caller_sock      text    NOT NULL,
    callee_sock      text    NOT NULL,
    state            integer NOT NULL,
    start_time       integer NOT NULL,
    timeout          integer NOT NULL DEFAULT 0,
    sflags           integer NOT NULL DEFAULT 0,
    iflags           integer NOT NULL DEFAULT 0,
    toroute_name     text,
    req_uri          text    NOT NULL,
    xdata            text
);

CREATE TABLE kamailio_dialog_vars_template (
    id           serial  PRIMARY KEY,
    hash_entry   integer NOT NULL,
    hash_id      integer NOT NULL,
    dialog_key   text    NOT NULL,
    dialog_value text    NOT NULL
);

-- Which tables belong to which node (its id, as kamailio.cfg's TOLLGATE_NODE says), of which stack (its Redis
-- namespace: stacks sharing a database restore only their own calls).
CREATE TABLE kamailio_nodes (
    node         text PRIMARY KEY,
    namespace    text NOT NULL,
    dialog_table text NOT NULL UNIQUE,
    vars_table   text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The node's dialog tables, made once: (dialog table, vars table).
CREATE FUNCTION tollgate_node_dialog_tables(node_id text, node_namespace text, OUT dialog_table text,
                                            OUT vars_table text)
LANGUAGE plpgsql AS $$
DECLARE
    suffix text := substr(md5(node_id), 1, 12);
BEGIN
    SELECT n.dialog_table, n.vars_table INTO dialog_table, vars_table FROM kamailio_nodes n WHERE n.node = node_id;
    IF FOUND THEN
        RETURN;
    END IF;
    dialog_table := 'dialog_' || suffix;
    vars_table := 'dialog_vars_' || suffix;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I (LIKE kamailio_dialog_template INCLUDING DEFAULTS)', dialog_table);
    EXECUTE format('CREATE SEQUENCE IF NOT EXISTS %I OWNED BY %I.id', dialog_table || '_id', dialog_table);
    EXECUTE format('ALTER TABLE %I ALTER COLUMN id SET DEFAULT nextval(%L), ADD PRIMARY KEY (id)', dialog_table,
                   dialog_table || '_id');
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (hash_entry, hash_id)', dialog_table || '_hash', dialog_table);
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I (LIKE kamailio_dialog_vars_template INCLUDING DEFAULTS)',
                   vars_table);
    EXECUTE format('CREATE SEQUENCE IF NOT EXISTS %I OWNED BY %I.id', vars_table || '_id', vars_table);
    EXECUTE format('ALTER TABLE %I ALTER COLUMN id SET DEFAULT nextval(%L), ADD PRIMARY KEY (id)', vars_table,
                   vars_table || '_id');
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (hash_entry, hash_id)', vars_table || '_hash', vars_table);
    INSERT INTO version (table_name, table_version) VALUES (dialog_table, 7), (vars_table, 1)
        ON CONFLICT (table_name) DO NOTHING;
    INSERT INTO kamailio_nodes (node, namespace, dialog_table, vars_table)
        VALUES (node_id, node_namespace, dialog_table, vars_table);
END
$$;
