"""Descriptor-driven fuzzing of the whole API (SPEC §11, issue 10 finding 3): every RPC of every service,
found from the descriptors, gets REQUESTS_PER_RPC generated requests as an admin, as an account and with no
token. None may answer UNKNOWN or INTERNAL (a caller's mistake is never the server's fault), the service must
be SERVING afterwards, and the data that existed before must be unchanged.

The requests come from a seeded random generator: strings with NUL, odd Unicode, SQL and filter syntax,
10,000-character runs, well-formed resource names of objects that do not exist, forged page tokens; integers at
their extremes, unknown enum values, impossible timestamps, repeated fields of zero to a hundred items. The
server has a database of its own: GenerateInvoices and UpdateCompany as an admin may really run.
"""

from __future__ import annotations

import collections
import random
import string

import grpc
import psycopg
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from control.server import SERVICE_NAMES
from tests.helpers import forged_page_tokens, stubs_for, unique_email
from tollgate.v1 import account_pb2, auth_pb2, directory_pb2, rating_pb2, trunks_pb2

REQUESTS_PER_RPC = 50
SEED = 20_261_130
PASSWORD = "fuzz-target-pass"
# Rows the RPCs write for themselves while refusing a caller (sessions, throttle counts, audit events) are not
# "existing data"; every other table is compared before and after.
_BOOKKEEPING = {"api_tokens", "login_throttle", "audit_events", "schema_migrations", "projection_state",
                "server_secrets", "operator_tokens"}
_PREFIXES = ("accounts/", "trunks/", "rateGroups/", "dids/", "sipDevices/", "ipMaps/", "localizations/",
             "invoices/", "operators/", "payments/", "rateGroups/fz/rates/", "trunks/fz/rates/",
             "accounts/FZ0001/callerIds/", "operators/fz/tokens/", "auditEvents/")
_FILTER_WORDS = ("email", "balance", "create_time", "type", "account", "sip_code", "setup_time", "rpc", "total",
                 "principal", "colour", "=", "!=", ":", ">=", "<", "AND", "and", '"', "'", "\\", "PROVIDER",
                 "2024-01-01T00:00:00Z", "-1", "99999999999999999999", "%", "_", "*")


_PLAUSIBLE_FILTERS = ("", "email : a", "balance > 0", "type = PROVIDER", "sip_code = 200 AND billable_seconds > 0",
                      "rpc : Create", "total > 0", "create_time >= 2020-01-01T00:00:00Z", "principal : operator")


class Generator:
    """Random request messages for a method's input descriptor: half of them wild, half plausible (well-formed
    values, chosen by the field's name, that get past the first checks into the deeper code)."""

    def __init__(self, seed: int, genuine_token: str):
        self.rng = random.Random(seed)
        self.tokens = forged_page_tokens(genuine_token)
        self.plausible = False

    def _ident(self, alphabet: str = string.ascii_lowercase + string.digits, size: int = 8) -> str:
        return self.rng.choice(alphabet[:26] if alphabet[0] == "a" else alphabet) + "".join(
            self.rng.choices(alphabet, k=size - 1))

    def plausible_string(self, name: str) -> str:
        rng = self.rng
        by_name = {
            "email": lambda: unique_email("fz"), "notification_email": lambda: unique_email("fzn"),
            "login": lambda: unique_email("fzl"), "filter": lambda: rng.choice(_PLAUSIBLE_FILTERS),
            "address": lambda: f"192.0.2.{rng.randrange(1, 255)}:{rng.choice((5060, 5061))}",
            "cidr": lambda: f"198.51.100.{rng.randrange(256)}/32", "country": lambda: rng.choice(("DE", "FR", "")),
            "timezone": lambda: rng.choice(("Europe/Berlin", "UTC")), "currency": lambda: rng.choice(("EUR", "USD")),
            "kind": lambda: rng.choice(("login", "source")), "tax_percent": lambda: rng.choice(("0", "7.5")),
            "account_number": lambda: "FZ" + self._ident(string.digits, 6),
        }
        if name in by_name:
            return by_name[name]()
        if "password" in name:
            return "".join(rng.choices(string.ascii_letters + string.digits, k=12))
        if name in ("name", "parent", "account", "provider") or name.endswith(("rate_group", "localization")):
            return rng.choice(_PREFIXES) + self._ident()
        if name in ("prefix", "number", "tech_prefix", "did_id", "prepend", "pin"):
            return self._ident(string.digits, rng.randrange(1, 10))
        if name.endswith("_id"):
            return self._ident()
        return "".join(rng.choices(string.ascii_letters + " ", k=rng.randrange(0, 20)))

    def string(self, field_name: str) -> str:
        if self.plausible:
            return self.plausible_string(field_name)
        rng = self.rng
        choice = rng.randrange(14)
        if choice == 0:
            return ""
        if choice == 1:
            return "a\x00b"
        if choice == 2:
            return rng.choice(_PREFIXES) + "".join(rng.choices(string.ascii_lowercase + string.digits + "-", k=8))
        if choice == 3:
            return "x" * rng.choice((256, 4097, 10_000))
        if choice == 4:
            return " ".join(rng.choices(_FILTER_WORDS, k=rng.randrange(1, 12)))
        if choice == 5:
            return rng.choice(("'; DROP TABLE accounts; --", "' OR '1'='1", "$1", "%s", "{}", "\\x00", "NULL"))
        if choice == 6:
            return "".join(chr(rng.choice((0x202E, 0xFEFF, 0x1F600, 0xE9, 0x0301, 0x7F, 0xD7FF, 0x10FFFF)))
                           for _ in range(rng.randrange(1, 20)))
        if choice == 7 and "token" in field_name:
            return rng.choice(self.tokens)
        if choice == 8:
            return unique_email("fz")
        if choice == 9:
            return "".join(rng.choices(string.digits, k=rng.randrange(1, 40)))
        if choice == 10:
            return rng.choice(("a" * 24 + "-:5060", "[::1]:5060", "1.2.3.4:0", "h:99999", "/(0*)*1/x/", "*/",
                               "00/", "login", "source", "127.0.0.1", "*"))
        return "".join(rng.choices(string.printable, k=rng.randrange(1, 60)))

    def integer(self, field: FieldDescriptor) -> int:
        bits = 64 if field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64,
                                    FieldDescriptor.TYPE_SFIXED64) else 32
        if field.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32,
                          FieldDescriptor.TYPE_FIXED64):
            return self.rng.choice((0, 1, 2**bits - 1, self.rng.randrange(2**bits)))
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return self.rng.choice((0, 1, -1, low, high, self.rng.randint(low, high), self.rng.randint(-1000, 1000)))

    def scalar(self, field: FieldDescriptor):
        kind = field.type
        if self.plausible and kind not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BOOL):
            if kind == FieldDescriptor.TYPE_ENUM:
                return self.rng.choice([v.number for v in field.enum_type.values])
            if kind == FieldDescriptor.TYPE_BYTES:
                return b"prefix,rate_per_min,description\n49,0.01,x\n44,0.02,y\n"
            return self.rng.randrange(0, 100)
        if kind == FieldDescriptor.TYPE_STRING:
            return self.string(field.name)
        if kind == FieldDescriptor.TYPE_BYTES:
            return self.rng.choice((b"", bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(64))),
                                    b"prefix,rate_per_min\n49,0.01\n", b"prefix,rate_per_min\n" + b"9" * 200_000,
                                    b"\xff\xfe\x00", "prefix,rate_per_min\n\u00e9,1\n".encode()))
        if kind == FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if kind == FieldDescriptor.TYPE_ENUM:
            known = [v.number for v in field.enum_type.values]
            return self.rng.choice((*known, 99, -5, 2**31 - 1))
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return self.rng.choice((0.0, -1.0, 1e308, float("nan")))
        return self.integer(field)

    def fill(self, message, depth: int = 0) -> None:
        for field in message.DESCRIPTOR.fields:
            if self.rng.random() < 0.45:
                continue
            repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
            sizes = (0, 1, 2) if self.plausible else (0, 1, 2, 3, 100)
            if field.message_type is not None:
                if depth >= 3:
                    continue
                if repeated:
                    for _ in range(self.rng.choice(sizes)):
                        self.fill_message(getattr(message, field.name).add(), depth + 1)
                else:
                    self.fill_message(getattr(message, field.name), depth + 1)
            elif repeated:
                getattr(message, field.name).extend(self.scalar(field) for _ in range(self.rng.choice(sizes)))
            else:
                setattr(message, field.name, self.scalar(field))

    def fill_message(self, message, depth: int) -> None:
        name = message.DESCRIPTOR.full_name
        if name == "google.protobuf.Timestamp":
            if self.plausible:
                message.seconds = self.rng.randint(1_700_000_000, 2_100_000_000)
                return
            message.seconds = self.rng.choice((0, -1, 2**62, -(2**62), 1_900_000_000, 253_402_300_800,
                                               self.rng.randint(0, 2_000_000_000)))
            message.nanos = self.rng.choice((0, -1, 10**9, 999_999_999, 2**31 - 1))
        elif name == "google.protobuf.FieldMask":
            message.paths.extend(self.string("path") for _ in range(self.rng.randrange(4)))
        else:
            self.fill(message, depth)
            if self.rng.random() < 0.1:
                message.MergeFromString(b"")  # an empty message, present


def _snapshot(dsn: str) -> dict[str, dict]:
    """Every row of every table but the bookkeeping ones, keyed by its table's first column(s)."""
    with psycopg.connect(dsn) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()]
        found = {}
        for table in tables:
            if table in _BOOKKEEPING:
                continue
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            found[table] = {repr(row[:2]): repr(row) for row in rows}
        return found


@pytest.fixture(scope="module")
def target(server_factory):
    server = server_factory(workers=8)
    channel = grpc.insecure_channel(server.address)
    admin = stubs_for(channel, server.admin_token)
    md = admin.metadata
    customer = admin.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
        account_number="FZ0001", email=unique_email("fz"), password=PASSWORD)), metadata=md)
    provider = admin.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
        account_number="FZP001", email=unique_email("fzp"), type=account_pb2.PROVIDER)), metadata=md)
    admin.trunks.CreateTrunk(trunks_pb2.CreateTrunkRequest(trunk_id="fz", trunk=trunks_pb2.Trunk(
        provider=provider.name, gateways=[trunks_pb2.Gateway(address="192.0.2.9:5060")])), metadata=md)
    admin.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(rate_group_id="fz", rate_group=(
        rating_pb2.RateGroup(trunks=["trunks/fz"]))), metadata=md)
    admin.directory.CreateDid(directory_pb2.CreateDidRequest(did_id="4930123", did=directory_pb2.Did(
        account=customer.name)), metadata=md)
    admin.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
        email=unique_email("fz2"))), metadata=md)
    genuine = admin.accounts.ListAccounts(account_pb2.ListAccountsRequest(page_size=1), metadata=md).next_page_token
    yield {"server": server, "channel": channel, "admin": admin, "customer": customer, "genuine": genuine}
    channel.close()


def _methods() -> list:
    pool = descriptor_pool.Default()
    return [m for name in SERVICE_NAMES for m in pool.FindServiceByName(name).methods]


def _call(channel: grpc.Channel, method, request_messages: list, metadata: tuple) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    kinds = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
             (True, False): channel.stream_unary}
    rpc = kinds[(method.client_streaming, method.server_streaming)](
        path, request_serializer=request_type.SerializeToString, response_deserializer=response_type.FromString)
    try:
        if method.client_streaming:
            rpc(iter(request_messages), metadata=metadata, timeout=30)
        elif method.server_streaming:
            for _ in rpc(request_messages[0], metadata=metadata, timeout=30):
                pass
        else:
            rpc(request_messages[0], metadata=metadata, timeout=30)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _login(admin, customer) -> tuple:
    token = admin.auth.Login(auth_pb2.LoginRequest(login=customer.email, password=PASSWORD)).token
    return (("authorization", f"Bearer {token}"),)


def _fuzz(target, principal: str, counts: collections.Counter, failures: list) -> None:
    admin, channel = target["admin"], target["channel"]
    metadata = {"admin": admin.metadata, "account": _login(admin, target["customer"]), "none": ()}[principal]
    for index, method in enumerate(_methods()):
        generator = Generator(SEED + index * 7 + len(principal), target["genuine"])
        request_type = message_factory.GetMessageClass(method.input_type)
        for _ in range(REQUESTS_PER_RPC):
            messages = []
            generator.plausible = generator.rng.random() < 0.5
            for _ in range(generator.rng.randrange(1, 4) if method.client_streaming else 1):
                message = request_type()
                generator.fill(message)
                messages.append(message)
            code = _call(channel, method, messages, metadata)
            counts[code.name] += 1
            if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
                failures.append((principal, method.full_name, code.name, messages[0]))
            if principal == "account" and method.name in ("Logout", "ChangePassword") and code == grpc.StatusCode.OK:
                metadata = _login(admin, target["customer"])  # a session that ended is renewed for the next ones


@pytest.mark.parametrize("principal", ["none", "account", "admin"])
def test_no_generated_request_is_answered_unknown_or_internal(target, principal, record_property):
    before = _snapshot(target["server"].dsn)
    counts: collections.Counter = collections.Counter()
    failures: list = []
    _fuzz(target, principal, counts, failures)
    record_property("status_counts", dict(counts))
    print(f"\nfuzz as {principal}: {sum(counts.values())} requests, {len(_methods())} RPCs:",
          dict(sorted(counts.items())))
    assert not failures, failures[:5]
    assert sum(counts.values()) >= REQUESTS_PER_RPC * len(_methods())

    health = health_pb2_grpc.HealthStub(target["channel"]).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    after = _snapshot(target["server"].dsn)
    if principal == "admin":  # an admin may create things, change the company row and count invoices; no more
        for singleton in ("company", "invoice_counter"):
            before.pop(singleton), after.pop(singleton)
        for table, rows in before.items():
            assert {k: after[table].get(k) for k in rows} == rows, table
    else:
        assert after == before
