"""tollgate-admin: the operator's command line for the tollgate gRPC control API.

Only main() opens the channel; each command is a plain function of (stub, args) returning an exit code,
so errors are reported in one place and the commands stay testable without a socket.
"""

import argparse
import os
import sys

import grpc

from admin import (
    accounts,
    apply,
    audit,
    cdrs,
    company,
    config,
    directory,
    invoices,
    login,
    notifications,
    operators,
    rating,
    receipts,
    route,
    trunks,
)
from admin.errors import EXIT_OTHER, EXIT_USAGE, Aborted, UsageError, report_rpc_error

PROG = "tollgate-admin"


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:  # also rejects nan
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


class Parser(argparse.ArgumentParser):
    """Each (sub)command refuses the arguments it does not know itself, so the error shows its own usage:
    `accounts list --filtr x` prints `tollgate-admin accounts list`'s usage, not the top level's, which argparse
    would print after handing the unknown flag up from the subcommand."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def global_options(top_level: bool) -> argparse.ArgumentParser:
    """The options every command takes. Below the top level they default to SUPPRESS, so
    `tollgate-admin accounts list --json` works and does not reset a `--json` given before the command."""
    parser = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return value if top_level else argparse.SUPPRESS

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--address",
        metavar="HOST:PORT",
        default=default(None),
        help=f"control service (env {config.ENV_ADDRESS}; default {config.DEFAULT_ADDRESS})",
    )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        default=default(None),
        help=f"bearer token (env {config.ENV_TOKEN}; prefer it or the config file over this flag, "
        "which other users can see in ps)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print JSON only (the proto3 JSON mapping: int64 as strings, money in micros)",
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        default=default(None),
        help=f"TOML file with address and token (env {config.ENV_CONFIG}; default {config.DEFAULT_CONFIG})",
    )
    group.add_argument("--ca-file", metavar="FILE", default=default(None),
                       help=f"CA that signed the server's certificate (env {config.ENV_CA_FILE}; default: the "
                       "system's CAs)")
    group.add_argument("--cert-file", metavar="FILE", default=default(None),
                       help=f"client certificate, for a server that requires one (env {config.ENV_CERT_FILE})")
    group.add_argument("--key-file", metavar="FILE", default=default(None),
                       help=f"the client certificate's key (env {config.ENV_KEY_FILE})")
    group.add_argument("--plaintext", action="store_true", default=default(False),
                       help=f"no TLS, for a server configured so (env {config.ENV_PLAINTEXT}=1)")
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=positive_seconds,
        default=default(10.0),
        help="deadline of each call (default 10)",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a script's `--pass` must not silently become --password after a new flag appears.
    # Subparsers are made of the parent's class, so every command level is a Parser.
    parser = Parser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        allow_abbrev=False,
        parents=[global_options(top_level=True)],
    )
    common = global_options(top_level=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    accounts.add_parsers(commands, common)
    company.add_parsers(commands, common)
    login.add_parsers(commands, common)
    rating.add_parsers(commands, common)
    trunks.add_parsers(commands, common)
    directory.add_parsers(commands, common)
    apply.add_parsers(commands, common)
    cdrs.add_parsers(commands, common)
    invoices.add_parsers(commands, common)
    receipts.add_parsers(commands, common)
    notifications.add_parsers(commands, common)
    operators.add_parsers(commands, common)
    audit.add_parsers(commands, common)
    route.add_parsers(commands, common)
    return parser


def run(args: argparse.Namespace) -> int:
    settings = config.resolve(args.address, args.token, args.config, ca_file=args.ca_file,
                              cert_file=args.cert_file, key_file=args.key_file, plaintext=args.plaintext)
    args.token = settings.token
    with config.open_channel(settings) as channel:
        args.channel = channel  # for what a command needs of another service (the company's decimals)
        return args.handler(args.stub(channel), args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 itself on a bad command line
    try:
        return run(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Aborted as exc:
        print(exc, file=sys.stderr)
        return EXIT_OTHER
    except grpc.RpcError as err:
        return report_rpc_error(err)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `tollgate-admin accounts list | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OTHER
    except OSError as exc:  # e.g. export -o into a missing directory
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_OTHER


if __name__ == "__main__":
    sys.exit(main())
