"""gRPC servicers: thin adapters from requests to the plain functions of accounts/company/sessions/operators.

Each RPC runs in one transaction on a Database session (statement time limits, cancelled when the client
leaves). Authentication, the permission table and error mapping happen in control/interceptors.py before and
after these methods.
"""

from __future__ import annotations

from collections.abc import Iterator

from psycopg import sql

from control import account_csv, accounts, audit, calls, company, listing, operators, payments, sessions
from control.config import Config
from control.db import Database
from control.errors import invalid
from control.fields import timestamp
from control.throttle import LoginThrottle
from tollgate.v1 import (
    account_pb2,
    account_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    company_pb2,
    company_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
)

_EXPORT_ROWS_PER_CHUNK = 500


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
        query = listing.AccountQuery.build(calls.principal(), request.filter, request.show_deleted)
        with self._db.transaction(long=True) as conn:
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
    def __init__(self, db: Database):
        self._db = db

    def GetCompany(self, request: company_pb2.GetCompanyRequest, context) -> company_pb2.Company:
        with self._db.transaction() as conn:
            return company.to_message(company.load(conn))

    def UpdateCompany(self, request: company_pb2.UpdateCompanyRequest, context) -> company_pb2.Company:
        paths = list(request.update_mask.paths) or company.implied_paths(request.company)
        with self._db.transaction() as conn:
            return company.update(conn, request.company, paths)


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, db: Database, config: Config, limiter: LoginThrottle):
        self._db = db
        self._ttl = config.token_ttl_seconds
        self._limiter = limiter

    def Login(self, request: auth_pb2.LoginRequest, context) -> auth_pb2.LoginResponse:
        number, token, expires = sessions.login(self._db, self._limiter, request.login, request.password, self._ttl)
        return auth_pb2.LoginResponse(token=token, account=accounts.NAME_PREFIX + number,
                                      expire_time=timestamp(expires))

    def Logout(self, request: auth_pb2.LogoutRequest, context) -> auth_pb2.LogoutResponse:
        sessions.logout(self._db, calls.principal())
        return auth_pb2.LogoutResponse()

    def ChangePassword(self, request: auth_pb2.ChangePasswordRequest, context) -> auth_pb2.ChangePasswordResponse:
        ended = sessions.change_password(self._db, self._limiter, calls.principal(), request.current_password,
                                         request.new_password)
        return auth_pb2.ChangePasswordResponse(tokens_revoked=ended)


class OperatorService(operator_pb2_grpc.OperatorServiceServicer):
    def __init__(self, db: Database, config: Config, limiter: LoginThrottle):
        self._db = db
        self._ttl = config.operator_token_ttl_seconds
        self._limiter = limiter

    def CreateOperator(self, request, context) -> operator_pb2.CreateOperatorResponse:
        if not request.HasField("operator"):
            raise invalid("operator", "is required")
        with self._db.transaction() as conn:
            return operators.create(conn, request, self._ttl)

    def GetOperator(self, request, context) -> operator_pb2.Operator:
        with self._db.transaction() as conn:
            return operators.get(conn, request.name)

    def ListOperators(self, request, context) -> operator_pb2.ListOperatorsResponse:
        with self._db.transaction() as conn:
            return operators.list_page(conn, request)

    def UpdateOperator(self, request, context) -> operator_pb2.Operator:
        if not request.HasField("operator"):
            raise invalid("operator", "is required")
        with self._db.transaction() as conn:
            return operators.update(conn, request)

    def DeleteOperator(self, request, context) -> operator_pb2.Operator:
        with self._db.transaction() as conn:
            return operators.delete(conn, request.name)

    def CreateOperatorToken(self, request, context) -> operator_pb2.OperatorToken:
        with self._db.transaction() as conn:
            return operators.create_token(conn, request, self._ttl)

    def ListOperatorTokens(self, request, context) -> operator_pb2.ListOperatorTokensResponse:
        with self._db.transaction() as conn:
            return operators.list_tokens(conn, request)

    def RevokeOperatorToken(self, request, context) -> operator_pb2.OperatorToken:
        with self._db.transaction() as conn:
            return operators.revoke_token(conn, request.name)

    def ListLoginLocks(self, request, context) -> operator_pb2.ListLoginLocksResponse:
        with self._db.transaction() as conn:
            return operators.list_locks(conn, request)

    def ClearLoginLock(self, request, context) -> operator_pb2.ClearLoginLockResponse:
        with self._db.transaction() as conn:
            operators.clear_lock(conn, self._limiter, request.kind, request.key)
        return operator_pb2.ClearLoginLockResponse()


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, db: Database):
        self._db = db

    def ListAuditEvents(self, request, context) -> audit_pb2.ListAuditEventsResponse:
        with self._db.transaction() as conn:
            return audit.list_page(conn, request)
