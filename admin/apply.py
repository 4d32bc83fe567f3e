"""`tollgate-admin apply -f provider.yaml`: declarative, idempotent configuration of one provider.

Apply reads the current state, compares it with the file and prints a plan (create, update with the
differing fields, delete, import, unchanged) before changing anything; `--dry-run` stops there. Steps run
in dependency order: localizations, the provider account, trunks, rate decks, DIDs, caller ids; deletes
come last, in reverse (caller ids, DIDs, trunks). The first server error stops the run with its exit code
(what was done before it is printed); a conflict found while planning (a trunk id of another provider,
an account number that is a customer or was deleted) exits 1 before any change. A plan that deletes asks
first at a terminal and, without one (a script, a pipe), refuses unless --yes. A second apply of the
same file plans only "unchanged".

A trunk's deck is uploaded only when sha256(file bytes) differs from the deck_sha256 the server keeps for
the last REPLACE import, so an unchanged deck file costs one hash and no upload.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from admin import calls, decks, fields, output
from admin.apply_spec import Spec, SpecError, TrunkSpec, load
from admin.confirm import confirm
from admin.errors import EXIT_OK, EXIT_OTHER, UsageError
from tollgate.v1 import (
    account_pb2,
    account_pb2_grpc,
    directory_pb2,
    directory_pb2_grpc,
    trunks_pb2,
    trunks_pb2_grpc,
)

CREATE, UPDATE, DELETE, IMPORT, UNCHANGED = "create", "update", "delete", "import", "unchanged"
PAST = {CREATE: "created", UPDATE: "updated", DELETE: "deleted", IMPORT: "imported"}


class Conflict(Exception):
    """The server holds something the file cannot take over (e.g. a trunk of another provider)."""


@dataclass
class Stubs:
    accounts: account_pb2_grpc.AccountServiceStub
    trunks: trunks_pb2_grpc.TrunkServiceStub
    directory: directory_pb2_grpc.DirectoryServiceStub

    @classmethod
    def connect(cls, channel: grpc.Channel) -> Stubs:
        return cls(
            account_pb2_grpc.AccountServiceStub(channel),
            trunks_pb2_grpc.TrunkServiceStub(channel),
            directory_pb2_grpc.DirectoryServiceStub(channel),
        )


@dataclass
class Step:
    action: str
    kind: str  # localization, account, trunk, deck, did, caller_id
    name: str
    fields: list[str] = field(default_factory=list)  # update: the differing paths, i.e. the update_mask
    detail: str = ""
    run: Callable[[], Any] | None = None  # None for "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "kind": self.kind, "name": self.name, "fields": self.fields,
                "detail": self.detail}


# --- comparing -----------------------------------------------------------------------------------------


def value_at(message: Message, path: str) -> Any:
    target: Any = message
    for part in path.split("."):
        target = getattr(target, part)
    return target


def _gateways(value: Iterable[trunks_pb2.Gateway]) -> list[tuple[str, int]]:
    return [(g.address, g.transport or trunks_pb2.TRANSPORT_UDP) for g in value]


def _name(value: str) -> str:
    return value.lower()  # account numbers are looked up case-insensitively by the server


# What "equal" means per path, where the server's spelling may differ from the file's (an unspecified
# enum is its default, account numbers ignore case). Anything else compares as the plain value.
NORMALIZE: dict[str, Callable[[Any], Any]] = {
    "status": lambda v: v or 1,  # STATUS_ACTIVE / ACTIVE
    "billing.account_type": lambda v: v or account_pb2.PREPAID,
    "gateways": _gateways,
    "account": _name,
    "provider": _name,
}


def comparable(path: str, value: Any) -> Any:
    normalize = NORMALIZE.get(path)
    if normalize is not None:
        return normalize(value)
    if hasattr(value, "__len__") and not isinstance(value, str | bytes):
        return list(value)  # repeated scalars
    return value


def differing(desired: Message | dict[str, Any], current: Message, paths: Iterable[str]) -> list[str]:
    """The paths whose values differ; `desired` is a message or {path: value}."""
    found = []
    for path in paths:
        want = desired[path] if isinstance(desired, dict) else value_at(desired, path)
        if comparable(path, want) != comparable(path, value_at(current, path)):
            found.append(path)
    return found


# --- planning ------------------------------------------------------------------------------------------

LOCALIZATION_PATHS = ("display_name", "caller_id_inbound", "caller_id_outbound", "destination",
                      "termination_caller_id", "termination_destination")
TRUNK_PATHS = ("display_name", "gateways", "max_concurrent_calls", "cps", "localization", "priority", "status")
DID_PATHS = ("account", "provider", "status")


class Planner:
    def __init__(self, spec: Spec, stubs: Stubs, args: argparse.Namespace):
        self.spec, self.stubs, self.args = spec, stubs, args
        self.opts = calls.options(args)
        self.account_name = spec.provider.name
        self.account_exists = False

    def get(self, rpc: Callable[..., Any], request: Message) -> Any:
        """The resource, or None when the server says NOT_FOUND."""
        try:
            return rpc(request, **self.opts)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def every(self, rpc: Callable[..., Any], request: Message, plural: str) -> list[Any]:
        found: list[Any] = []
        while True:
            response = rpc(request, **self.opts)
            found.extend(getattr(response, plural))
            if not response.next_page_token:
                return found
            request.page_token = response.next_page_token

    def plan(self) -> list[Step]:
        account = self.plan_account()  # first: it says whether the provider exists and its exact name
        steps = [*self.plan_localizations(), *account]
        trunk_steps, deck_steps, trunk_deletes = self.plan_trunks()
        did_steps, did_deletes = self.plan_dids()
        caller_steps, caller_deletes = self.plan_caller_ids()
        return [*steps, *trunk_steps, *deck_steps, *did_steps, *caller_steps,
                *caller_deletes, *did_deletes, *trunk_deletes]

    # localizations

    def plan_localizations(self) -> list[Step]:
        directory = self.stubs.directory
        steps = []
        for profile in self.spec.localizations:
            current = self.get(directory.GetLocalization, directory_pb2.GetLocalizationRequest(name=profile.name))
            if current is None:
                request = directory_pb2.CreateLocalizationRequest(
                    localization=profile, localization_id=calls.last_segment(profile.name)
                )
                steps.append(Step(CREATE, "localization", profile.name, run=self.call(directory.CreateLocalization,
                                                                                    request)))
                continue
            changed = differing(profile, current, LOCALIZATION_PATHS)
            steps.append(self.update_or_unchanged("localization", profile, changed, directory.UpdateLocalization,
                                                  directory_pb2.UpdateLocalizationRequest, "localization"))
        return steps

    # the provider account

    def plan_account(self) -> list[Step]:
        provider = self.spec.provider
        accounts = self.stubs.accounts
        current = self.get(accounts.GetAccount, account_pb2.GetAccountRequest(name=provider.name))
        if current is None:
            account = account_pb2.Account(account_number=provider.number, type=account_pb2.PROVIDER,
                                          password=provider.password or "")
            fields.apply(account, provider.values)
            run = self.call(accounts.CreateAccount, account_pb2.CreateAccountRequest(account=account))
            return [Step(CREATE, "account", provider.name, run=run)]
        if current.HasField("delete_time"):
            raise Conflict(f"{current.name} was deleted; account numbers are never reused")
        if current.type != account_pb2.PROVIDER:
            raise Conflict(f"{current.name} is a {account_pb2.AccountType.Name(current.type)} account, "
                           "not a PROVIDER")
        self.account_exists = True
        self.account_name = current.name  # the server's spelling of the number
        changed = differing(provider.values, current, provider.values)
        if not changed:
            return [Step(UNCHANGED, "account", current.name)]
        account = account_pb2.Account(name=current.name)
        fields.apply(account, {path: provider.values[path] for path in changed})
        request = account_pb2.UpdateAccountRequest(account=account, update_mask=FieldMask(paths=changed))
        return [Step(UPDATE, "account", current.name, changed, run=self.call(accounts.UpdateAccount, request))]

    # trunks and their decks

    def plan_trunks(self) -> tuple[list[Step], list[Step], list[Step]]:
        if self.spec.trunks is None:
            return [], [], []
        stub = self.stubs.trunks
        steps, deck_steps = [], []
        for wanted in self.spec.trunks:
            trunk = wanted.trunk
            trunk.provider = self.account_name
            current = self.get(stub.GetTrunk, trunks_pb2.GetTrunkRequest(name=trunk.name))
            if current is None:
                request = trunks_pb2.CreateTrunkRequest(trunk=trunk, trunk_id=calls.last_segment(trunk.name))
                steps.append(Step(CREATE, "trunk", trunk.name, run=self.call(stub.CreateTrunk, request)))
            else:
                if _name(current.provider) != _name(self.account_name):
                    raise Conflict(f"{current.name} belongs to {current.provider or 'no provider'}, "
                                   f"not {self.account_name}")
                changed = differing(trunk, current, TRUNK_PATHS)
                steps.append(self.update_or_unchanged("trunk", trunk, changed, stub.UpdateTrunk,
                                                      trunks_pb2.UpdateTrunkRequest, "trunk"))
            if wanted.deck is not None:
                deck_steps.append(self.plan_deck(wanted, current.deck_sha256 if current else ""))
        deletes = []
        if self.account_exists:
            wanted_names = {_name(t.trunk.name) for t in self.spec.trunks}
            listing = self.every(stub.ListTrunks, trunks_pb2.ListTrunksRequest(provider=self.account_name), "trunks")
            for current in listing:
                if _name(current.name) not in wanted_names:
                    run = self.call(stub.DeleteTrunk, trunks_pb2.DeleteTrunkRequest(name=current.name))
                    deletes.append(Step(DELETE, "trunk", current.name, run=run))
        return steps, deck_steps, deletes

    def plan_deck(self, wanted: TrunkSpec, current_sha: str) -> Step:
        assert wanted.deck is not None
        sha = decks.file_sha256(wanted.deck)
        name = wanted.trunk.name
        shown = self.shown_path(wanted.deck)
        if sha == current_sha.lower():
            return Step(UNCHANGED, "deck", name, detail=shown)

        def run() -> None:
            response = decks.upload(self.stubs.trunks.ImportTerminationRates, name, wanted.deck, False, self.args)
            if response.deck_sha256.lower() != sha:
                print(f"warning: {name}: the server reports deck_sha256 {response.deck_sha256!r} for a file "
                      f"whose sha256 is {sha}; the next apply will upload it again", file=sys.stderr)
            return response

        return Step(IMPORT, "deck", name, ["deck_sha256"], f"{shown} ({sha[:12]})", run)

    def shown_path(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.spec.source.parent.resolve()))
        except ValueError:
            return str(path)

    # DIDs

    def plan_dids(self) -> tuple[list[Step], list[Step]]:
        if self.spec.dids is None:
            return [], []
        stub = self.stubs.directory
        # ListDids filters by owner, not by provider: read them all and pick this provider's.
        current = {_name(d.name): d for d in self.every(stub.ListDids, directory_pb2.ListDidsRequest(), "dids")}
        steps = []
        for did in self.spec.dids:
            did.provider = self.account_name
            found = current.get(_name(did.name))
            if found is None:
                request = directory_pb2.CreateDidRequest(did=did, did_id=calls.last_segment(did.name))
                steps.append(Step(CREATE, "did", did.name, run=self.call(stub.CreateDid, request)))
            else:
                changed = differing(did, found, DID_PATHS)
                steps.append(self.update_or_unchanged("did", did, changed, stub.UpdateDid,
                                                      directory_pb2.UpdateDidRequest, "did", found.name))
        wanted = {_name(d.name) for d in self.spec.dids}
        deletes = [
            Step(DELETE, "did", d.name, run=self.call(stub.DeleteDid, directory_pb2.DeleteDidRequest(name=d.name)))
            for key, d in current.items()
            if key not in wanted and _name(d.provider) == _name(self.account_name)
        ]
        return steps, deletes

    # caller ids

    def plan_caller_ids(self) -> tuple[list[Step], list[Step]]:
        if self.spec.caller_ids is None:
            return [], []
        stub = self.stubs.directory
        current: dict[str, directory_pb2.CallerId] = {}
        if self.account_exists:
            request = directory_pb2.ListCallerIdsRequest(parent=self.account_name)
            current = {c.number: c for c in self.every(stub.ListCallerIds, request, "caller_ids")}
        steps = []
        for number in self.spec.caller_ids:
            name = f"{self.account_name}/callerIds/{number}"
            if number in current:
                steps.append(Step(UNCHANGED, "caller_id", current[number].name or name))
                continue
            request = directory_pb2.CreateCallerIdRequest(
                parent=self.account_name, caller_id=directory_pb2.CallerId(number=number)
            )
            steps.append(Step(CREATE, "caller_id", name, run=self.call(stub.CreateCallerId, request)))
        wanted = set(self.spec.caller_ids)
        deletes = [
            Step(DELETE, "caller_id", c.name,
                 run=self.call(stub.DeleteCallerId, directory_pb2.DeleteCallerIdRequest(name=c.name)))
            for number, c in current.items()
            if number not in wanted
        ]
        return steps, deletes

    # helpers

    def call(self, rpc: Callable[..., Any], request: Message) -> Callable[[], Any]:
        return lambda: rpc(request, **calls.options(self.args))

    def update_or_unchanged(
        self,
        kind: str,
        desired: Message,
        changed: list[str],
        rpc: Callable[..., Any],
        request_class: type,
        field_name: str,
        name: str | None = None,
    ) -> Step:
        """An update sending only the differing paths (so the mask is exactly what the plan shows)."""
        name = name or desired.name
        if not changed:
            return Step(UNCHANGED, kind, name)
        patch = type(desired)(name=name)
        fields.apply(patch, {path: value_at(desired, path) for path in changed})
        request = request_class(**{field_name: patch}, update_mask=FieldMask(paths=changed))
        return Step(UPDATE, kind, name, changed, run=self.call(rpc, request))


# --- the command ---------------------------------------------------------------------------------------


def read_spec(path_text: str) -> Spec:
    if path_text == "-":
        text, source = sys.stdin.read(), Path.cwd() / "stdin.yaml"
    else:
        source = Path(path_text)
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {source}: {exc}") from None
    try:
        return load(text, source)
    except SpecError as exc:
        raise UsageError(f"{source}: {exc}") from None


def print_plan(steps: list[Step]) -> None:
    rows = [(s.action, s.kind, s.name, ", ".join(s.fields) if s.action == UPDATE else s.detail) for s in steps]
    output.print_table(rows, ["action", "kind", "name", "changes"])
    counts = {action: sum(1 for s in steps if s.action == action) for action in (CREATE, UPDATE, IMPORT, DELETE)}
    unchanged = sum(1 for s in steps if s.action == UNCHANGED)
    summary = ", ".join(f"{n} to {action}" for action, n in counts.items())
    print(f"\nplan: {summary}, {unchanged} unchanged")


def apply_command(stubs: Stubs, args: argparse.Namespace) -> int:
    spec = read_spec(args.file)
    try:
        steps = Planner(spec, stubs, args).plan()
    except Conflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_OTHER
    if args.json:
        output.print_json([step.to_dict() for step in steps])
    else:
        print_plan(steps)
    log = sys.stderr if args.json else sys.stdout
    if args.dry_run:
        print("dry run: nothing changed", file=log)
        return EXIT_OK
    todo = [step for step in steps if step.run is not None]
    if not todo:
        print("nothing to change", file=log)
        return EXIT_OK
    deletes = [step for step in todo if step.action == DELETE]
    if deletes:
        # Creates and updates are what the file says; deletes are what it leaves out, which a trimmed file
        # or a wrong one does too.
        confirm(args, f"delete {len(deletes)} object(s) the file leaves out ({', '.join(s.name for s in deletes)})")
    for step in todo:
        step.run()  # a server error stops here; main() reports it with its exit code
        print(f"{PAST[step.action]} {step.kind} {step.name}", file=log, flush=True)
    print(f"applied {len(todo)} change(s)", file=log)
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    help = "make one provider's configuration match a YAML file (see examples/provider.yaml)"
    p = commands.add_parser(
        "apply", help=help, description=__doc__, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-f", "--file", required=True, metavar="FILE.yaml", help="the provider file ('-' = stdin)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("-y", "--yes", action="store_true",
                   help="apply a plan that deletes without asking; required then when stdin is not a terminal")
    p.set_defaults(handler=apply_command, stub=Stubs.connect)

