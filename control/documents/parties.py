"""Who a document is from and to, as copied into it when it is issued (invoices.issuer/bill_to, receipts.…): a
document printed again later says what it said then, whatever the company or the account became."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

ISSUER_COLUMNS = ("name", "address", "tax_number", "email", "currency", "decimals", "logo_sha256")
BILL_TO_COLUMNS = ("account_number", "company", "first_name", "last_name", "address1", "address2", "city",
                   "province", "zip", "country", "email", "tax_number", "timezone")


def issuer(conn: psycopg.Connection) -> dict:
    with conn.cursor(row_factory=dict_row) as cursor:  # whatever the connection's own row factory
        row = cursor.execute("SELECT * FROM company WHERE id = 1").fetchone()
    return {column: row[column] for column in ISSUER_COLUMNS}


def bill_to(account: dict) -> dict:
    return {column: account[column] for column in BILL_TO_COLUMNS}


def snapshot(conn: psycopg.Connection, account: dict) -> tuple[Jsonb, Jsonb]:
    """(issuer, bill_to) as the columns store them."""
    return Jsonb(issuer(conn)), Jsonb(bill_to(account))


def of_document(conn: psycopg.Connection, row: dict) -> tuple[dict, dict]:
    """What a document prints: its own copies, or (a document from before they were kept) the company and
    the account as they are now."""
    if row.get("issuer") and row.get("bill_to"):
        return row["issuer"], row["bill_to"]
    with conn.cursor(row_factory=dict_row) as cursor:
        account = cursor.execute("SELECT * FROM accounts WHERE account_number = %s",
                                 (row["account_number"],)).fetchone()
    return issuer(conn), bill_to(account)
