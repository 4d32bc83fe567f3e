"""`login`: exchange an account's portal credentials for a token scoped to that account."""

import argparse
import getpass

from admin import calls, output
from admin.errors import EXIT_OK
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


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("login", help="get a token for an account (email or number)", parents=[common])
    p.add_argument("login", metavar="LOGIN", help="email or account number")
    p.add_argument("--password", metavar="PASSWORD", help="prompted for when omitted")
    p.set_defaults(handler=login, stub=Stub)
