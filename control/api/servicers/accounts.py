"""AccountService and CompanyService: thin adapters from requests to control/accounts and control/billing.

Each RPC runs in one transaction on a Database session (statement time limits, cancelled when the client
leaves). Authentication, the permission table and error mapping happen in control/api/interceptors.py before
and after these methods.
"""

from __future__ import annotations

from collections.abc import Iterator

from control.accounts import accounts, company, export
from control.api import calls
from control.api.errors import invalid
from control.billing import payments
from control.db import Database
from tollgate.v1 import account_pb2, account_pb2_grpc, company_pb2, company_pb2_grpc


class AccountService(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, db: Database):
        self._db = db

    def CreateAccount(self, request: account_pb2.CreateAccountRequest, context) -> account_pb2.Account:
        if not request.HasField("account"):
            raise invalid("account", "is required")
        with self._db.transaction() as conn:
            return accounts.create(conn, request.account)

    def GetAccount(self, request: account_pb2.GetAccountRequest, context) -> account_pb2.Account:
        with self._db.transaction() as conn:
            return accounts.get(conn, calls.principal(), request.name)

    def UpdateAccount(self, request: account_pb2.UpdateAccountRequest, context) -> account_pb2.Account:
        if not request.HasField("account"):
            raise invalid("account", "is required")
        with self._db.transaction() as conn:
            return accounts.update(conn, calls.principal(), request.account, list(request.update_mask.paths))

    def ListAccounts(self, request: account_pb2.ListAccountsRequest, context) -> account_pb2.ListAccountsResponse:
        with self._db.transaction() as conn:
            return accounts.list_page(conn, calls.principal(), request)

    def DeleteAccounts(self, request: account_pb2.DeleteAccountsRequest, context) -> account_pb2.DeleteAccountsResponse:
        with self._db.transaction() as conn:
            return account_pb2.DeleteAccountsResponse(accounts=accounts.delete_many(conn, list(request.names)))

    def PostPayment(self, request: account_pb2.PostPaymentRequest, context) -> account_pb2.Payment:
        with self._db.transaction() as conn:
            return payments.post(conn, calls.principal(), request)

    def ExportAccountsCsv(
        self, request: account_pb2.ExportAccountsCsvRequest, context
    ) -> Iterator[account_pb2.CsvChunk]:
        query = accounts.AccountQuery.build(calls.principal(), request.filter, request.show_deleted)
        with self._db.transaction(long=True) as conn:
            yield from export.csv_chunks(conn, query)


class CompanyService(company_pb2_grpc.CompanyServiceServicer):
    def __init__(self, db: Database):
        self._db = db

    def GetCompany(self, request: company_pb2.GetCompanyRequest, context) -> company_pb2.Company:
        with self._db.transaction() as conn:
            return company.to_message(company.load(conn))

    def UpdateCompany(self, request: company_pb2.UpdateCompanyRequest, context) -> company_pb2.Company:
        paths = list(request.update_mask.paths) or company.implied_paths(request.company)
        with self._db.transaction() as conn:
            return company.update(conn, request.company, paths)
