"""`notifications …` commands: the e-mail outbox, newest first (what was sent, what waits and why)."""

import argparse
from collections.abc import Iterator

from admin import calls, output
from admin.errors import EXIT_OK
from tollgate.v1 import notification_pb2, notification_pb2_grpc

Stub = notification_pb2_grpc.NotificationServiceStub

HEADERS = ["id", "created", "kind", "account", "recipient", "state", "attempts", "next try / sent", "last error"]
Notification = notification_pb2.Notification


def filter_text(args: argparse.Namespace) -> str:
    terms = [args.filter] if args.filter else []
    if args.account:
        terms.append(f'account = "{args.account}"')
    if args.state:
        terms.append(f"state = {args.state.upper()}")
    return " AND ".join(terms)


def row(item: Notification) -> list[str]:
    when = item.send_time if item.HasField("send_time") else item.next_attempt_time
    return [calls.last_segment(item.name), item.create_time.ToJsonString(), Notification.Kind.Name(item.kind),
            calls.last_segment(item.account), item.recipient, Notification.State.Name(item.state),
            str(item.attempts), when.ToJsonString() if when.ByteSize() else "", item.last_error[:80]]


def iter_notifications(stub: Stub, args: argparse.Namespace) -> Iterator[Notification]:
    request = notification_pb2.ListNotificationsRequest(page_size=min(args.limit or 1000, 1000),
                                                        filter=filter_text(args))
    shown = 0
    while True:
        response = stub.ListNotifications(request, **calls.options(args))
        for item in response.notifications:
            if args.limit and shown >= args.limit:
                return
            shown += 1
            yield item
        if not response.next_page_token:
            return
        request.page_token = response.next_page_token


def list_(stub: Stub, args: argparse.Namespace) -> int:
    found = list(iter_notifications(stub, args))
    if args.json:
        output.print_json([output.to_dict(n) for n in found])
    else:
        output.print_table((row(n) for n in found), HEADERS)
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("notifications", help="the e-mail outbox", parents=[common])
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("list", help="list notifications, newest first", description="list notifications, "
                         "newest first: state, attempts, when the next try is (or when it was sent), the last error",
                         parents=[common])
    p.set_defaults(handler=list_, stub=Stub)
    p.add_argument("--account", metavar="N", help="only this account's")
    p.add_argument("--state", choices=["pending", "sent", "failed"], type=str.lower, help="only those in this state")
    p.add_argument("--filter", metavar="F", help="e.g. 'kind = LOW_BALANCE AND create_time >= 2031-01-01'")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="at most N, the newest")
