"""`operators …` and `logins …` commands: named operators with roles and their tokens (SPEC §11), and the
login throttle's counts and locks."""

import argparse
from collections.abc import Iterator

from google.protobuf import field_mask_pb2

from admin import calls, output
from admin.confirm import ASKS, add_yes_flag, confirm
from admin.errors import EXIT_OK, UsageError
from tollgate.v1 import operator_pb2, operator_pb2_grpc

Stub = operator_pb2_grpc.OperatorServiceStub

ROLES = ("admin", "config", "billing", "readonly")
OPERATOR_HEADERS = ["operator", "role", "description", "created", "deleted"]
TOKEN_HEADERS = ["token", "description", "created", "expires", "revoked"]
LOCK_HEADERS = ["kind", "key", "failures", "last failure", "locked until"]
_ROLE_PREFIX = "OPERATOR_ROLE_"
_DAY = 86_400


def _role(text: str) -> int:
    return operator_pb2.OperatorRole.Value(_ROLE_PREFIX + text.upper())


def _role_name(value: int) -> str:
    known = operator_pb2.OperatorRole.DESCRIPTOR.values_by_number.get(value)
    return known.name.removeprefix(_ROLE_PREFIX).lower() if known else str(value)


def _when(message, field: str) -> str:
    return getattr(message, field).ToJsonString() if message.HasField(field) else ""


def operator_name(ident: str) -> str:
    return calls.resource_name("operators", ident)


def _operator_row(operator: operator_pb2.Operator) -> list[str]:
    return [calls.last_segment(operator.name), _role_name(operator.role), operator.description,
            _when(operator, "create_time"), _when(operator, "delete_time")]


def _token_row(token: operator_pb2.OperatorToken) -> list[str]:
    return [calls.last_segment(token.name), token.description, _when(token, "create_time"),
            _when(token, "expire_time"), _when(token, "revoke_time")]


def _show_operator(operator: operator_pb2.Operator, args: argparse.Namespace) -> None:
    if args.json:
        output.print_json(output.to_dict(operator))
    else:
        output.print_table([_operator_row(operator)], OPERATOR_HEADERS)


def _show_new_token(token: operator_pb2.OperatorToken, args: argparse.Namespace, extra: dict | None = None) -> None:
    """The secret alone on stdout (TOKEN=$(tollgate-admin operators create …) works); it is never shown again."""
    if args.json:
        output.print_json((extra or {}) | {"token": output.to_dict(token)})
    else:
        print(token.token)


def _ttl_seconds(args: argparse.Namespace) -> int:
    return int(args.ttl_days * _DAY) if args.ttl_days else 0


def create(stub: Stub, args: argparse.Namespace) -> int:
    request = operator_pb2.CreateOperatorRequest(
        operator_id=args.operator_id, operator=operator_pb2.Operator(role=_role(args.role),
                                                                     description=args.description or ""),
        token_ttl_seconds=_ttl_seconds(args), token_description=args.token_description or "")
    response = stub.CreateOperator(request, **calls.options(args))
    _show_new_token(response.token, args, {"operator": output.to_dict(response.operator)})
    return EXIT_OK


def get(stub: Stub, args: argparse.Namespace) -> int:
    _show_operator(stub.GetOperator(operator_pb2.GetOperatorRequest(name=operator_name(args.operator_id)),
                                    **calls.options(args)), args)
    return EXIT_OK


def _pages(call, request, items: str, args: argparse.Namespace) -> Iterator:
    while True:
        response = call(request, **calls.options(args))
        yield from getattr(response, items)
        if not response.next_page_token:
            return
        request.page_token = response.next_page_token


def list_(stub: Stub, args: argparse.Namespace) -> int:
    operators = list(_pages(stub.ListOperators, operator_pb2.ListOperatorsRequest(
        page_size=1000, show_deleted=args.show_deleted), "operators", args))
    if args.json:
        output.print_json([output.to_dict(o) for o in operators])
    else:
        output.print_table((_operator_row(o) for o in operators), OPERATOR_HEADERS)
    return EXIT_OK


def update(stub: Stub, args: argparse.Namespace) -> int:
    operator = operator_pb2.Operator(name=operator_name(args.operator_id))
    paths = []
    if args.role:
        operator.role, paths = _role(args.role), [*paths, "role"]
    if args.description is not None:
        operator.description, paths = args.description, [*paths, "description"]
    if not paths:
        raise UsageError("nothing to update: give --role or --description")
    _show_operator(stub.UpdateOperator(operator_pb2.UpdateOperatorRequest(
        operator=operator, update_mask=field_mask_pb2.FieldMask(paths=paths)), **calls.options(args)), args)
    return EXIT_OK


def delete(stub: Stub, args: argparse.Namespace) -> int:
    confirm(args, f"delete {operator_name(args.operator_id)} and revoke all its tokens")
    _show_operator(stub.DeleteOperator(operator_pb2.DeleteOperatorRequest(name=operator_name(args.operator_id)),
                                       **calls.options(args)), args)
    return EXIT_OK


def new_token(stub: Stub, args: argparse.Namespace) -> int:
    token = stub.CreateOperatorToken(operator_pb2.CreateOperatorTokenRequest(
        parent=operator_name(args.operator_id), ttl_seconds=_ttl_seconds(args), description=args.description or ""),
        **calls.options(args))
    _show_new_token(token, args)
    return EXIT_OK


def tokens(stub: Stub, args: argparse.Namespace) -> int:
    found = list(_pages(stub.ListOperatorTokens, operator_pb2.ListOperatorTokensRequest(
        parent=operator_name(args.operator_id), page_size=1000), "tokens", args))
    if args.json:
        output.print_json([output.to_dict(t) for t in found])
    else:
        output.print_table((_token_row(t) for t in found), TOKEN_HEADERS)
    return EXIT_OK


def revoke_token(stub: Stub, args: argparse.Namespace) -> int:
    name = f"{operator_name(args.operator_id)}/tokens/{args.token_id}"
    confirm(args, f"revoke {name}")
    token = stub.RevokeOperatorToken(operator_pb2.RevokeOperatorTokenRequest(name=name), **calls.options(args))
    if args.json:
        output.print_json(output.to_dict(token))
    else:
        output.print_table([_token_row(token)], TOKEN_HEADERS)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- logins


def locks(stub: Stub, args: argparse.Namespace) -> int:
    found = list(_pages(stub.ListLoginLocks, operator_pb2.ListLoginLocksRequest(
        page_size=1000, locked_only=args.locked), "locks", args))
    if args.json:
        output.print_json([output.to_dict(lock) for lock in found])
    else:
        output.print_table(([lock.kind, lock.key, str(lock.failures), _when(lock, "last_failure_time"),
                             _when(lock, "locked_until")] for lock in found), LOCK_HEADERS)
    return EXIT_OK


def unlock(stub: Stub, args: argparse.Namespace) -> int:
    kind, key = ("source", args.source) if args.source else ("login", args.login)
    if not key:
        raise UsageError("give a LOGIN or --source ADDRESS")
    stub.ClearLoginLock(operator_pb2.ClearLoginLockRequest(kind=kind, key=key), **calls.options(args))
    if not args.json:
        print(f"cleared the failed logins of {kind} {key}")
    return EXIT_OK


def _positive_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not 0 < value <= 3650:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 3650")
    return value


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register `operators <verb>` and `logins <verb>`."""
    group = commands.add_parser("operators", help="named operators with roles, and their tokens", parents=[common])
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(parent, name: str, handler: calls.Handler, help: str) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, help=help, description=help, parents=[common])
        parser.set_defaults(handler=handler, stub=Stub)
        return parser

    ident = {"metavar": "OPERATOR", "help": "operator id (alice) or operators/alice"}
    p = verb(verbs, "create", create, "create an operator; prints its first token, which is never shown again")
    p.add_argument("operator_id", metavar="OPERATOR", help="1-63 of a-z 0-9 . _ -")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--description", metavar="TEXT")
    p.add_argument("--ttl-days", type=_positive_days, metavar="DAYS", help="token lifetime (default: the server's)")
    p.add_argument("--token-description", metavar="TEXT", help="what the first token is for")
    verb(verbs, "get", get, "show one operator").add_argument("operator_id", **ident)
    verb(verbs, "list", list_, "list operators").add_argument("--show-deleted", action="store_true")
    p = verb(verbs, "update", update, "change an operator's role or description")
    p.add_argument("operator_id", **ident)
    p.add_argument("--role", choices=ROLES)
    p.add_argument("--description", metavar="TEXT")
    p = verb(verbs, "delete", delete, f"delete an operator and revoke all its tokens; {ASKS}")
    p.add_argument("operator_id", **ident)
    add_yes_flag(p)
    p = verb(verbs, "token", new_token, "make another token for an operator; prints it, never shown again")
    p.add_argument("operator_id", **ident)
    p.add_argument("--ttl-days", type=_positive_days, metavar="DAYS", help="lifetime (default: the server's)")
    p.add_argument("--description", metavar="TEXT", help="what it is for, e.g. the machine using it")
    verb(verbs, "tokens", tokens, "list an operator's tokens (never their secrets)").add_argument("operator_id",
                                                                                               **ident)
    p = verb(verbs, "revoke-token", revoke_token, f"revoke one token of an operator; {ASKS}")
    p.add_argument("operator_id", **ident)
    p.add_argument("token_id", metavar="TOKEN_ID", help="the id shown by `operators tokens`")
    add_yes_flag(p)

    group = commands.add_parser("logins", help="failed logins: counts and locks", parents=[common])
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verb(verbs, "locks", locks, "list logins and addresses with failed attempts, most recent first")
    p.add_argument("--locked", action="store_true", help="only those locked now")
    p = verb(verbs, "unlock", unlock, "forget the failed attempts of a login (or an address), which unlocks it")
    p.add_argument("login", metavar="LOGIN", nargs="?", help="the email or account number as typed at login")
    p.add_argument("--source", metavar="ADDRESS", help="a client address instead of a login")
