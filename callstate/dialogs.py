"""Kamailio's dialogs in PostgreSQL: each node's tables, and the calls in progress they tell of.

Kamailio's dialog module keeps every confirmed call in its node's table (control/migrations/0007), so a
restarted node loads its calls again. The same rows tell the control service, when Redis lost its state,
which calls are in progress: their plans (dialog variable `tollgate`), answer times and routes become the
open calls restore_account() reserves again.

    python -m callstate.dialogs --dsn DSN --node NODE --namespace NS   # prints: db_url dialog_table vars_table
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from urllib.parse import quote

import psycopg
from psycopg import sql

from callstate.plan import CallPlan
from callstate.store import OpenCall, Route

CONFIRMED = 4  # Kamailio's DLG_STATE_CONFIRMED: answered and acknowledged
PLAN, ANSWER, ROUTE = "tollgate", "tollgate_answer", "tollgate_route"  # the dialog variables (kemi/relay.py)
ACCOUNT = "tollgate_account"


def node_tables(conn: psycopg.Connection, node: str, namespace: str) -> tuple[str, str]:
    """The node's (dialog table, vars table), made on first use; the node belongs to the stack of `namespace`."""
    row = conn.execute("SELECT * FROM tollgate_node_dialog_tables(%s, %s)", (node, namespace)).fetchone()
    return (row["dialog_table"], row["vars_table"]) if isinstance(row, dict) else (row[0], row[1])


def kamailio_db_url(dsn: str) -> str:
    """A libpq DSN (URL or key=value) as Kamailio's db_postgres wants it: postgres://user:password@host:port/db."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    user = quote(params.get("user", "postgres"), safe="")
    password = params.get("password")
    credentials = user + (f":{quote(password, safe='')}" if password else "")
    host = params.get("host") or "127.0.0.1"
    if host.startswith("/"):
        raise ValueError("Kamailio's db_postgres needs a TCP host in the DSN, not a socket directory")
    return f"postgres://{credentials}@{host}:{params.get('port') or 5432}/{params.get('dbname', 'tollgate')}"


def open_calls(conn: psycopg.Connection, namespace: str) -> dict[str, list[tuple[str, OpenCall]]]:
    """The calls in progress on every node of the stack, by calling account: (call id, OpenCall) as admission
    wrote them."""
    found: dict[str, list[tuple[str, OpenCall]]] = defaultdict(list)
    nodes = conn.execute("SELECT node, dialog_table, vars_table FROM kamailio_nodes WHERE namespace = %s "
                         "ORDER BY node", (namespace,)).fetchall()
    for node, dialogs, variables in (_values(row) for row in nodes):
        query = sql.SQL(
            "SELECT d.callid, v.dialog_key, v.dialog_value FROM {} d JOIN {} v"
            " ON v.hash_entry = d.hash_entry AND v.hash_id = d.hash_id"
            " WHERE d.state = %s AND v.dialog_key IN (%s, %s, %s)").format(
            sql.Identifier(dialogs), sql.Identifier(variables))
        by_call: dict[str, dict[str, str]] = defaultdict(dict)
        for call_id, key, value in (_values(r) for r in conn.execute(query, (CONFIRMED, PLAN, ANSWER, ROUTE))):
            by_call[call_id][key] = value
        for variables_of in by_call.values():
            if PLAN not in variables_of:
                continue
            plan = CallPlan.decode(variables_of[PLAN])
            route = variables_of.get(ROUTE, "-")
            answered = variables_of.get(ANSWER)
            found[plan.account].append((plan.call_id, OpenCall(
                plan.reserve, plan.granted, int(plan.setup), node, plan.terms,
                float(answered) if answered else None, Route.decode(route) if route not in ("", "-") else None)))
    return dict(found)


def node_calls(conn: psycopg.Connection, namespace: str, node: str) -> dict[str, set[str]]:
    """The calls in one node's dialog table, by calling account: what the node loads when it starts (the
    reaper's survivors of a restart)."""
    row = conn.execute("SELECT dialog_table, vars_table FROM kamailio_nodes WHERE namespace = %s AND node = %s",
                       (namespace, node)).fetchone()
    if row is None:
        return {}
    dialogs, variables = _values(row)
    found: dict[str, set[str]] = defaultdict(set)
    query = sql.SQL("SELECT d.callid, v.dialog_value FROM {} d JOIN {} v"
                    " ON v.hash_entry = d.hash_entry AND v.hash_id = d.hash_id WHERE v.dialog_key = %s").format(
        sql.Identifier(dialogs), sql.Identifier(variables))
    for call_id, account in (_values(r) for r in conn.execute(query, (ACCOUNT,))):
        found[account].add(call_id)
    return dict(found)


def forget(conn: psycopg.Connection, namespace: str, call_ids: list[str]) -> int:
    """Remove ended calls' rows from the stack's dialog tables (the ledger calls this once their CDRs are
    written). Kamailio deletes a dialog's row itself when it ends; a row it could not delete (PostgreSQL was
    down then) would otherwise be loaded again by a restarted node, or reserved again by a restore."""
    if not call_ids:
        return 0
    removed = 0
    nodes = conn.execute("SELECT dialog_table, vars_table FROM kamailio_nodes WHERE namespace = %s",
                         (namespace,)).fetchall()
    for dialogs_table, vars_table in (_values(row) for row in nodes):
        gone = conn.execute(sql.SQL("DELETE FROM {} WHERE callid = ANY(%s) RETURNING hash_entry, hash_id").format(
            sql.Identifier(dialogs_table)), (call_ids,)).fetchall()
        for hash_entry, hash_id in (_values(row) for row in gone):
            conn.execute(sql.SQL("DELETE FROM {} WHERE hash_entry = %s AND hash_id = %s").format(
                sql.Identifier(vars_table)), (hash_entry, hash_id))
        removed += len(gone)
    return removed


def _values(row) -> tuple:
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="prepare a Kamailio node's dialog tables")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--namespace", required=True)
    args = parser.parse_args(argv)
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        dialog_table, vars_table = node_tables(conn, args.node, args.namespace)
    print(kamailio_db_url(args.dsn), dialog_table, vars_table)


if __name__ == "__main__":
    main()
