"""`audit list`: the audit log (SPEC §11), newest first, with the filter language of the other lists."""

import argparse
import json
from collections.abc import Iterator

from google.protobuf import json_format

from admin import calls, fields, output
from admin.cdrs import filter_text
from admin.errors import EXIT_OK
from tollgate.v1 import audit_pb2, audit_pb2_grpc

Stub = audit_pb2_grpc.AuditServiceStub

HEADERS = ["time", "principal", "rpc", "resource", "request id", "changes"]


def iter_events(stub: Stub, args: argparse.Namespace) -> Iterator[audit_pb2.AuditEvent]:
    """Follow next_page_token until the server says done or --limit is reached."""
    limit = args.limit
    request = audit_pb2.ListAuditEventsRequest(page_size=min(limit, 1000) if limit else 1000,
                                               filter=_filter(args))
    seen = 0
    while True:
        response = stub.ListAuditEvents(request, **calls.options(args))
        for event in response.audit_events:
            if limit and seen >= limit:
                return
            seen += 1
            yield event
        if not response.next_page_token or (limit and seen >= limit):
            return
        request.page_token = response.next_page_token


def _filter(args: argparse.Namespace) -> str:
    """--filter, with `resource = R` ANDed in for --resource (the language has only AND, so appending is exact)."""
    args.account = None  # filter_text's --account: the audit log filters by resource instead
    text = filter_text(args)
    if args.resource:
        quoted = args.resource.replace("\\", "\\\\").replace('"', '\\"')
        text = " AND ".join(t for t in (text, f'resource = "{quoted}"') if t)
    return text


def _whole(value):
    """JSON numbers come back from a Struct as floats: 20000000.0 reads as 20000000 again (money in micros)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


def _as_dict(event: audit_pb2.AuditEvent) -> dict:
    return output.to_dict(event) | {"changes": _whole(json_format.MessageToDict(event.changes))}


def _changes(event: audit_pb2.AuditEvent) -> str:
    """field: old -> new, one per change, compact; the full values are in --json."""
    parts = []
    for name, change in _whole(json_format.MessageToDict(event.changes)).items():
        if isinstance(change, dict) and set(change) <= {"old", "new"}:
            parts.append(f"{name}: {json.dumps(change.get('old'))} -> {json.dumps(change.get('new'))}")
        else:
            parts.append(f"{name}: {json.dumps(change)}")
    text = "; ".join(parts)
    return text if len(text) <= 120 else text[:119] + "…"


def list_(stub: Stub, args: argparse.Namespace) -> int:
    events = list(iter_events(stub, args))
    if args.json:
        output.print_json([_as_dict(e) for e in events])
    else:
        output.print_table(([e.create_time.ToJsonString(), e.principal, e.rpc.rsplit(".", 1)[-1], e.resource,
                             e.request_id, _changes(e)] for e in events), HEADERS)
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("audit", help="the audit log: who changed what", parents=[common])
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("list", help="list audit events, newest first", description="list audit events, newest "
                         "first; fields: principal role rpc resource request_id source create_time", parents=[common])
    p.set_defaults(handler=list_, stub=Stub)
    p.add_argument("--filter", metavar="F", help="e.g. 'principal = operator:alice AND rpc : Trunk'")
    p.add_argument("--resource", metavar="NAME", help="only this resource's events, e.g. trunks/fra1")
    p.add_argument("--limit", type=fields.positive_int, metavar="N", help="stop after N events")
