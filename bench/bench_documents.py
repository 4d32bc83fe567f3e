"""How long an invoice PDF takes to render with N CDRs of PDF detail, against a bare fpdf2 page of the same
number of text lines (the library's own floor), on a scratch database made and dropped here.

    .venv/bin/python bench/bench_documents.py [--cdrs 1000 10000 100000]

Prints one line per size: seconds to render (the CDR query included), pages, bytes, and the bare baseline.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from datetime import UTC, datetime, timedelta

import psycopg
from fpdf import FPDF
from psycopg import sql
from psycopg.rows import dict_row

from control import db
from control.billing import invoices
from control.documents import render
from control.documents.pdf import _font_files

SERVER = os.environ.get("TOLLGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def scratch() -> tuple[str, str]:
    name = f"tollgate_bench_docs_{secrets.token_hex(3)}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, psycopg.conninfo.make_conninfo(SERVER, dbname=name)


def invoice_with(conn: psycopg.Connection, cdrs: int) -> dict:
    number = f"B{secrets.token_hex(4)}"
    conn.execute("INSERT INTO accounts (account_number, type, pin, email, account_type, credit_limit, "
                 "invoice_with_cdr, created_at, company, city) VALUES (%s, 'CUSTOMER', %s, %s, 'POSTPAID', "
                 "100000000, 'PDF', '2031-01-01', 'Bench Customer GmbH', 'Berlin')",
                 (number, secrets.token_hex(4), f"{number}@bench.example"))
    start = datetime(2031, 1, 2, tzinfo=UTC)
    with conn.cursor().copy("COPY cdrs (call_id, account_number, direction, caller_id_received, "
                            "destination_dialled, setup_time, billable_seconds, sip_code, customer_cost) "
                            "FROM STDIN") as copy:
        for i in range(cdrs):
            copy.write_row((f"c{i}", number, "outbound", "4930111222", "004940123456",
                            start + timedelta(seconds=20 * i), 30 + i % 600, 200, 10_000 + i % 5_000))
    conn.commit()
    (made,) = [r for r in invoices.generate_due(conn, datetime(2031, 2, 1, 12, tzinfo=UTC), number)]
    conn.commit()
    return made


def bare(lines: int) -> float:
    """fpdf2 writing the same number of lines, seven text() calls each: what the detail cannot beat."""
    began = time.perf_counter()
    pdf = FPDF(format="A4")
    files = _font_files()
    if files:
        pdf.add_font("body", "", str(files[0]))
    pdf.set_auto_page_break(False)
    y = 300.0
    for i in range(lines):
        if y > 270:
            pdf.add_page()
            pdf.set_font("body" if files else "helvetica", size=7.2)
            y = 25.0
        for x, text in ((18, "2031-01-02 00:00:00"), (49, "4930111222"), (79, "004940123456"), (113, "outbound"),
                        (131, str(i % 600)), (148, "200"), (158, "0.0100")):
            pdf.text(x, y, text)
        y += 3.9
    pdf.output()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdrs", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = parser.parse_args()
    name, dsn = scratch()
    try:
        db.migrate(dsn)
        with psycopg.connect(dsn, row_factory=dict_row) as conn:
            for count in args.cdrs:
                invoice = invoice_with(conn, count)
                began = time.perf_counter()
                with conn.transaction():
                    data = render.invoice_pdf(conn, invoice)
                seconds = time.perf_counter() - began
                pages = data.count(b"/Type /Page") - data.count(b"/Type /Pages")
                print(f"{count:>8,} CDRs: {seconds:6.2f} s ({seconds / count * 1e6:5.1f} µs per CDR), "
                      f"{pages:,} pages, {len(data):,} bytes; bare fpdf2 lines: {bare(count):.2f} s", flush=True)
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
