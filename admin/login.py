"""`login`, `logout`, `password`: an account's sessions (SPEC §11)."""

import argparse
import getpass
import sys

from admin import calls, output
from admin.errors import EXIT_OK, UsageError
from tollgate.v1 import auth_pb2, auth_pb2_grpc

Stub = auth_pb2_grpc.AuthServiceStub


def read_secret(prompt: str, instead: str) -> str:
    """Ask at a terminal. Without one, getpass would read stdin and crash with EOFError on an empty one: say
    which flags to give instead (`instead`)."""
    if not sys.stdin.isatty():
        raise UsageError(f"no terminal to ask for the {prompt} on: {instead}")
    try:
        return getpass.getpass(f"{prompt}: ")
    except EOFError:  # Ctrl-D at the prompt
        raise UsageError(f"no {prompt} given") from None


def stdin_password() -> str:
    """The first line of stdin, without its line end: `--password-stdin < file` or `pass show x | ...`."""
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("--password-stdin: stdin held no password")
    return password


def login_password(args: argparse.Namespace) -> str:
    # Prompting keeps the password out of shell history and `ps`; --password(-stdin) is for scripts.
    if args.password_stdin:
        return stdin_password()
    if args.password is not None:
        return args.password
    return read_secret("password", "pass --password PASSWORD, or --password-stdin with the password on stdin")


def login(stub: Stub, args: argparse.Namespace) -> int:
    password = login_password(args)
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
    instead = "pass --current and --new"
    current = args.current if args.current is not None else read_secret("current password", instead)
    new = args.new
    if new is None:
        new = read_secret("new password", instead)
        if read_secret("new password again", instead) != new:
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
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--password", metavar="PASSWORD",
                        help="asked for at a terminal when omitted (other users can see this flag in ps)")
    secret.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin (scripts without a terminal)")
    p.set_defaults(handler=login, stub=Stub)
    p = commands.add_parser("logout", help="end this token's session (or revoke this operator token)",
                            parents=[common])
    p.set_defaults(handler=logout, stub=Stub)
    p = commands.add_parser("password", help="change the password of the account whose token this is",
                            parents=[common])
    p.add_argument("--current", metavar="PASSWORD", help="asked for at a terminal when omitted")
    p.add_argument("--new", metavar="PASSWORD", help="asked for (twice) at a terminal when omitted")
    p.set_defaults(handler=change_password, stub=Stub)
