"""`login`, `logout`, `password`: an account's sessions (SPEC §11)."""

import argparse
import getpass

from admin import calls, output
from admin.errors import EXIT_OK, UsageError
from tollgate.v1 import auth_pb2, auth_pb2_grpc

Stub = auth_pb2_grpc.AuthServiceStub


def login(stub: Stub, args: argparse.Namespace) -> int:
    # Prompting keeps the password out of shell history and `ps`; --password is for scripts.
    password = args.password if args.password is not None else getpass.getpass("password: ")
    request = auth_pb2.LoginRequest(login=args.login, password=password)
    # No bearer token: Login is the one RPC that needs none, and a stale configured token must not break it.
    response = stub.Login(request, **calls.options(args, auth=False))
    if args.json:
        output.print_json(output.to_dict(response))
    else:
        print(response.token)  # alone on stdout, so TOKEN=$(tollgate-admin login ...) works
    return EXIT_OK


def logout(stub: Stub, args: argparse.Namespace) -> int:
    """End the session (or revoke the operator token) this command runs with."""
    stub.Logout(auth_pb2.LogoutRequest(), **calls.options(args))
    if not args.json:
        print("logged out: the token no longer works")
    return EXIT_OK


def change_password(stub: Stub, args: argparse.Namespace) -> int:
    """With an account's token: the current password, then the new one twice (or --current/--new for scripts)."""
    current = args.current if args.current is not None else getpass.getpass("current password: ")
    new = args.new
    if new is None:
        new = getpass.getpass("new password: ")
        if getpass.getpass("new password again: ") != new:
            raise UsageError("the new passwords differ")
    response = stub.ChangePassword(auth_pb2.ChangePasswordRequest(current_password=current, new_password=new),
                                   **calls.options(args))
    if args.json:
        output.print_json(output.to_dict(response))
    else:
        print(f"password changed; {response.tokens_revoked} other session(s) ended")
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("login", help="get a token for an account (email or number)", parents=[common])
    p.add_argument("login", metavar="LOGIN", help="email or account number")
    p.add_argument("--password", metavar="PASSWORD", help="prompted for when omitted")
    p.set_defaults(handler=login, stub=Stub)
    p = commands.add_parser("logout", help="end this token's session (or revoke this operator token)",
                            parents=[common])
    p.set_defaults(handler=logout, stub=Stub)
    p = commands.add_parser("password", help="change the password of the account whose token this is",
                            parents=[common])
    p.add_argument("--current", metavar="PASSWORD", help="prompted for when omitted")
    p.add_argument("--new", metavar="PASSWORD", help="prompted for (twice) when omitted")
    p.set_defaults(handler=change_password, stub=Stub)
