"""AuthService, OperatorService and AuditService: sessions, operators and the audit log (control/access)."""

from __future__ import annotations

from control.access import audit, operators, sessions
from control.access.throttle import LoginThrottle
from control.accounts.accounts import NAME_PREFIX as ACCOUNT_PREFIX
from control.api import calls
from control.api.errors import invalid
from control.api.fields import timestamp
from control.config import Config
from control.db import Database
from tollgate.v1 import audit_pb2, audit_pb2_grpc, auth_pb2, auth_pb2_grpc, operator_pb2, operator_pb2_grpc


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, db: Database, config: Config, limiter: LoginThrottle):
        self._db = db
        self._ttl = config.token_ttl_seconds
        self._limiter = limiter

    def Login(self, request: auth_pb2.LoginRequest, context) -> auth_pb2.LoginResponse:
        number, token, expires = sessions.login(self._db, self._limiter, request.login, request.password, self._ttl)
        return auth_pb2.LoginResponse(token=token, account=ACCOUNT_PREFIX + number,
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
