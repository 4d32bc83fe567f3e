"""CdrService, InvoiceService, ReceiptService and NotificationService: reading CDRs, invoices, receipts and the
outbox, generating invoices (control/billing, control/notifications)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from google.api import httpbody_pb2

from control.api import calls
from control.billing import cdrs, invoices, receipts
from control.db import Database
from control.documents import render
from control.notifications import outbox
from tollgate.v1 import (
    account_pb2,
    cdr_pb2,
    cdr_pb2_grpc,
    invoice_pb2,
    invoice_pb2_grpc,
    notification_pb2,
    notification_pb2_grpc,
    receipt_pb2,
    receipt_pb2_grpc,
)


class CdrService(cdr_pb2_grpc.CdrServiceServicer):
    def __init__(self, db: Database):
        self._db = db

    def ListCdrs(self, request: cdr_pb2.ListCdrsRequest, context) -> cdr_pb2.ListCdrsResponse:
        with self._db.transaction() as conn:
            return cdrs.list_page(conn, calls.principal(), request)

    def ExportCdrsCsv(self, request: cdr_pb2.ExportCdrsCsvRequest, context) -> Iterator[account_pb2.CsvChunk]:
        query = cdrs.CdrQuery.build(calls.principal(), request.filter)
        with self._db.transaction(long=True) as conn:
            yield from cdrs.csv_chunks(conn, query)


class InvoiceService(invoice_pb2_grpc.InvoiceServiceServicer):
    def __init__(self, db: Database):
        self._db = db

    def GenerateInvoices(self, request: invoice_pb2.GenerateInvoicesRequest,
                         context) -> invoice_pb2.GenerateInvoicesResponse:
        as_of = request.as_of.ToDatetime(tzinfo=UTC) if request.HasField("as_of") else datetime.now(UTC)
        with self._db.connection(long=True) as conn:
            return invoices.generate(conn, request, as_of)

    def GetInvoice(self, request: invoice_pb2.GetInvoiceRequest, context) -> invoice_pb2.Invoice:
        with self._db.transaction() as conn:
            return invoices.to_message(invoices.fetch(conn, calls.principal(), request.name))

    def ListInvoices(self, request: invoice_pb2.ListInvoicesRequest, context) -> invoice_pb2.ListInvoicesResponse:
        with self._db.transaction() as conn:
            return invoices.list_page(conn, calls.principal(), request)

    def ExportInvoiceCdrsCsv(self, request: invoice_pb2.ExportInvoiceCdrsCsvRequest,
                             context) -> Iterator[account_pb2.CsvChunk]:
        principal = calls.principal()
        with self._db.transaction(long=True) as conn:
            invoice = invoices.fetch(conn, principal, request.name)
            # The CdrService view: an account token sees only its own side of each call (no route, no cost).
            yield from cdrs.csv_chunks(conn, invoices.cdr_query(principal, invoice["id"]))

    def GetInvoicePdf(self, request: invoice_pb2.GetInvoicePdfRequest, context) -> Iterator[httpbody_pb2.HttpBody]:
        with self._db.transaction(long=True) as conn:
            data = render.invoice_pdf(conn, invoices.fetch(conn, calls.principal(), request.name))
        yield from pdf_chunks(data)


def pdf_chunks(data: bytes) -> Iterator[httpbody_pb2.HttpBody]:
    """The document in pieces a client accepts by default (4 MiB messages), the first naming its type."""
    for index, piece in enumerate(render.chunks(data)):
        yield httpbody_pb2.HttpBody(content_type="application/pdf" if index == 0 else "", data=piece)


class ReceiptService(receipt_pb2_grpc.ReceiptServiceServicer):
    def __init__(self, db: Database):
        self._db = db

    def GetReceipt(self, request: receipt_pb2.GetReceiptRequest, context) -> receipt_pb2.Receipt:
        with self._db.transaction() as conn:
            return receipts.to_message(receipts.fetch(conn, calls.principal(), request.name))

    def ListReceipts(self, request: receipt_pb2.ListReceiptsRequest, context) -> receipt_pb2.ListReceiptsResponse:
        with self._db.transaction() as conn:
            return receipts.list_page(conn, calls.principal(), request)

    def GetReceiptPdf(self, request: receipt_pb2.GetReceiptPdfRequest, context) -> Iterator[httpbody_pb2.HttpBody]:
        with self._db.transaction() as conn:
            data = render.receipt_pdf(conn, receipts.fetch(conn, calls.principal(), request.name))
        yield from pdf_chunks(data)


class NotificationService(notification_pb2_grpc.NotificationServiceServicer):
    def __init__(self, db: Database):
        self._db = db

    def ListNotifications(self, request: notification_pb2.ListNotificationsRequest,
                          context) -> notification_pb2.ListNotificationsResponse:
        with self._db.transaction() as conn:
            return outbox.list_page(conn, request)
