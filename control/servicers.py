"""gRPC servicers: thin adapters from requests to the plain functions of accounts/company/listing.

Each RPC runs in one transaction on a pooled connection. Authentication and error mapping happen in
auth.ApiInterceptor before and after these methods.
"""

from __future__ import annotations

from collections.abc import Iterator

from psycopg import sql
from psycopg_pool import ConnectionPool

from control import account_csv, accounts, company, listing, paging, payments
from control.auth import current_principal, require_admin
from control.errors import invalid
from control.fields import timestamp
from tollgate.v1 import (
    account_pb2,
    account_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    company_pb2,
    company_pb2_grpc,
)

_EXPORT_ROWS_PER_CHUNK = 500


class AccountService(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, pool: ConnectionPool):
        self._pool = pool

    def CreateAccount(self, request: account_pb2.CreateAccountRequest, context) -> account_pb2.Account:
        require_admin()
        if not request.HasField("account"):
            raise invalid("account", "is required")
        with self._pool.connection() as conn, conn.transaction():
            return accounts.create(conn, request.account)

    def GetAccount(self, request: account_pb2.GetAccountRequest, context) -> account_pb2.Account:
        with self._pool.connection() as conn:
            return accounts.get(conn, current_principal(), request.name)

    def UpdateAccount(self, request: account_pb2.UpdateAccountRequest, context) -> account_pb2.Account:
        if not request.HasField("account"):
            raise invalid("account", "is required")
        with self._pool.connection() as conn, conn.transaction():
            return accounts.update(conn, current_principal(), request.account, list(request.update_mask.paths))

    def ListAccounts(self, request: account_pb2.ListAccountsRequest, context) -> account_pb2.ListAccountsResponse:
        query = listing.AccountQuery.build(current_principal(), request.filter, request.show_deleted)
        size = paging.page_size(request.page_size)
        after = paging.decode_token(request.page_token, query.fingerprint) or 0
        if not isinstance(after, int):
            raise invalid("page_token", "is not a token this service issued")
        with self._pool.connection() as conn, conn.transaction():
            rows = conn.execute(
                sql.SQL("SELECT a.* FROM accounts a WHERE {} AND a.id > %s ORDER BY a.id LIMIT %s").format(query.where),
                [*query.params, after, size + 1],
            ).fetchall()
            total = conn.execute(
                sql.SQL("SELECT count(*) AS n FROM accounts a WHERE {}").format(query.where), query.params
            ).fetchone()["n"]
            response = account_pb2.ListAccountsResponse(
                accounts=accounts.messages(conn, rows[:size]), total_size=total
            )
        if len(rows) > size:
            response.next_page_token = paging.encode_token(rows[size - 1]["id"], query.fingerprint)
        return response

    def DeleteAccounts(self, request: account_pb2.DeleteAccountsRequest, context) -> account_pb2.DeleteAccountsResponse:
        require_admin()
        with self._pool.connection() as conn, conn.transaction():
            return account_pb2.DeleteAccountsResponse(accounts=accounts.delete_many(conn, list(request.names)))

    def PostPayment(self, request: account_pb2.PostPaymentRequest, context) -> account_pb2.Payment:
        require_admin()
        with self._pool.connection() as conn, conn.transaction():
            return payments.post(conn, current_principal(), request)

    def ExportAccountsCsv(
        self, request: account_pb2.ExportAccountsCsvRequest, context
    ) -> Iterator[account_pb2.CsvChunk]:
        query = listing.AccountQuery.build(current_principal(), request.filter, request.show_deleted)
        with self._pool.connection() as conn, conn.transaction():
            decimals = company.load(conn)["decimals"]
            yield account_pb2.CsvChunk(data=account_csv.header().encode())
            # A server-side cursor: a million accounts stream without being held in memory.
            with conn.cursor(name="account_export") as cursor:
                cursor.execute(
                    sql.SQL("SELECT a.* FROM accounts a WHERE {} ORDER BY a.id").format(query.where), query.params
                )
                while batch := cursor.fetchmany(_EXPORT_ROWS_PER_CHUNK):
                    yield account_pb2.CsvChunk(data="".join(account_csv.rows(batch, decimals)).encode())


class CompanyService(company_pb2_grpc.CompanyServiceServicer):
    def __init__(self, pool: ConnectionPool):
        self._pool = pool

    def GetCompany(self, request: company_pb2.GetCompanyRequest, context) -> company_pb2.Company:
        current_principal()  # any valid token may read the company's currency and defaults
        with self._pool.connection() as conn:
            return company.to_message(company.load(conn))

    def UpdateCompany(self, request: company_pb2.UpdateCompanyRequest, context) -> company_pb2.Company:
        require_admin()
        paths = list(request.update_mask.paths) or company.implied_paths(request.company)
        with self._pool.connection() as conn, conn.transaction():
            return company.update(conn, request.company, paths)


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, pool: ConnectionPool, token_ttl_seconds: int):
        self._pool = pool
        self._ttl = token_ttl_seconds

    def Login(self, request: auth_pb2.LoginRequest, context) -> auth_pb2.LoginResponse:
        if not request.login:
            raise invalid("login", "give an email or an account number")
        with self._pool.connection() as conn, conn.transaction():
            row, token, expires = accounts.login(conn, request.login, request.password, self._ttl)
        return auth_pb2.LoginResponse(
            token=token, account=accounts.NAME_PREFIX + row["account_number"], expire_time=timestamp(expires)
        )
