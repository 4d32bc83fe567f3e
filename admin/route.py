"""`route simulate`: how the switch would route one call now, step by step (RouteService.SimulateCall)."""

import argparse

from admin import calls, fields, output
from admin.errors import EXIT_OK
from tollgate.v1 import route_pb2, route_pb2_grpc

Stub = route_pb2_grpc.RouteServiceStub
# How a step's outcome reads in the step list: refusals stand out, facts without a verdict carry no mark.
MARKS = {"pass": "ok", "refused": "REFUSED", "info": ""}


def time_arg(text: str) -> str:
    """--at: an RFC 3339 time with its offset ("never" means nothing here)."""
    if fields.to_timestamp(fields.timestamp_arg(text)) is None:
        raise argparse.ArgumentTypeError("--at needs a time, e.g. 2025-06-01T12:00:00+02:00")
    return text


def request_of(args: argparse.Namespace) -> route_pb2.SimulateCallRequest:
    request = route_pb2.SimulateCallRequest(account=calls.account_name(args.account), caller_id=args.caller_id,
                                            number=args.number, call_id=args.call_id or "")
    if args.at:
        request.at_time.CopyFrom(fields.to_timestamp(args.at))
    return request


def step_lines(response: route_pb2.SimulateCallResponse) -> list[str]:
    """The trace as people read it: one numbered line per step, its check and verdict first."""
    width = max((len(step.check) for step in response.steps), default=0)
    return [f"{index:>2}. {step.check:<{width}}  {MARKS.get(step.outcome, step.outcome):<7}  {step.detail}"
            for index, step in enumerate(response.steps, 1)]


def simulate(stub: Stub, args: argparse.Namespace) -> int:
    response = stub.SimulateCall(request_of(args), **calls.options(args))
    if args.json:
        output.print_json(output.to_dict(response))
        return EXIT_OK
    print(f"Call from {args.account} ({response.account_status.lower()}), caller id {args.caller_id!r}, number "
          f"{args.number}, at {response.at_time.ToJsonString()} (engine: {response.engine})")
    print("\n".join(step_lines(response)))
    print(f"SIP answer: {response.sip_code} {response.sip_reason}"
          + (f" (refused by: {response.stage})" if response.stage else f" -> {response.relayed_to}"))
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register `route simulate`; `common` carries the global options so they work after the verb too."""
    group = commands.add_parser("route", help="how the switch routes calls", parents=[common])
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
    help_text = ("trace one call as the switch would decide it now, with its engine and live data, and the SIP "
                 "answer it would give (nothing is counted or reserved)")
    parser = verbs.add_parser("simulate", help=help_text, description=help_text, parents=[common])
    parser.set_defaults(handler=simulate, stub=Stub)
    parser.add_argument("--account", required=True, metavar="N", help="the calling account's number")
    parser.add_argument("--caller-id", required=True, metavar="C", help="the caller id as sent (the From user)")
    parser.add_argument("--number", required=True, metavar="N",
                        help="the number as dialled, without the IP map's tech prefix")
    parser.add_argument("--at", type=time_arg, metavar="RFC3339",
                        help="decide as at this time (expiry); live counters are read now")
    parser.add_argument("--call-id", metavar="ID", help="the Call-ID: picks CLI pool options 1 and 2's random number")
