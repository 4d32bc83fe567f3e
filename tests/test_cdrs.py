"""Reading CDRs (SPEC §9, §11): ListCdrs, ExportCdrsCsv and `tollgate-admin cdrs`, against the real services.

CDR rows are inserted straight into the `cdrs` table, as the ledger would write them. The database is shared
by the whole session, so every test uses account numbers of its own and filters on them.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from psycopg import sql

from tests.helpers import clean_env, failure, forged_page_tokens, ok, ok_json, run_cli, unique_email, unique_number
from tollgate.v1 import account_pb2, auth_pb2, cdr_pb2

BASE = datetime(2031, 5, 4, 10, 0, tzinfo=UTC)
PASSWORD = "cdr-reader-pass"
CSV_HEADER = [
    "call_id", "account_number", "direction", "caller_id_received", "caller_id_presented", "destination_dialled",
    "destination_sent", "rate_group", "prefix", "rate_per_min", "trunk", "provider", "gateway", "setup_time",
    "answer_time", "end_time", "billable_seconds", "sip_code", "sip_reason", "stage", "customer_cost",
    "provider_cost", "recorded", "end_reason", "create_time",
]


def number(letter: str) -> str:
    return letter + uuid.uuid4().hex[:12]


def at(minute: float) -> datetime:
    return BASE + timedelta(minutes=minute)


def cdr(account: str, call_id: str, minute: float, **overrides) -> dict:
    """One answered 60-second call unless overridden; every column of the table."""
    row = dict(
        call_id=call_id, account_number=account, direction="outbound", caller_id_received="4930111",
        caller_id_presented="4930111", destination_dialled="004940123", destination_sent="4940123",
        rate_group="retail", prefix="4940", rate_per_min=12_000, trunk="fra1", provider="", gateway="192.0.2.10:5060",
        setup_time=at(minute), answer_time=at(minute) + timedelta(seconds=5),
        end_time=at(minute) + timedelta(seconds=65), billable_seconds=60, sip_code=200, sip_reason="OK", stage="",
        customer_cost=12_000, provider_cost=4_200, recorded=False, end_reason="hangup",
    )
    row.update(overrides)
    return row


def insert(dsn: str, rows: list[dict]) -> None:
    columns = list(rows[0])
    statement = sql.SQL("INSERT INTO cdrs ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(sql.Placeholder(c) for c in columns))
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.executemany(statement, rows)


def list_all(stubs, filter_text: str, page_size: int = 0, metadata: tuple | None = None) -> list[cdr_pb2.Cdr]:
    found, token = [], ""
    for _ in range(2_000):  # a token that does not move on must fail the test, not hang it
        page = stubs.cdrs.ListCdrs(cdr_pb2.ListCdrsRequest(filter=filter_text, page_size=page_size, page_token=token),
                                   metadata=metadata or stubs.metadata)
        found += page.cdrs
        token = page.next_page_token
        if not token:
            return found
    raise AssertionError("paging never ended")


def call_ids(cdrs) -> list[str]:
    return [c.call_id for c in cdrs]


def export(stubs, filter_text: str, metadata: tuple | None = None) -> tuple[list[str], list[dict], int]:
    """(header, rows, number of chunks) of one CSV export."""
    chunks = list(stubs.cdrs.ExportCdrsCsv(cdr_pb2.ExportCdrsCsvRequest(filter=filter_text),
                                           metadata=metadata or stubs.metadata))
    text = b"".join(c.data for c in chunks).decode()
    assert text.endswith("\r\n")  # RFC 4180 line ends
    records = list(csv.reader(io.StringIO(text, newline="")))
    return records[0], [dict(zip(records[0], r, strict=True)) for r in records[1:]], len(chunks)


@pytest.fixture(scope="module")
def sample(control_server) -> dict:
    """Two customers (a < b in sort order) and one provider; rows inserted out of order on purpose. At minute 5,
    a's call id sorts after b's: the account number must decide."""
    a, b, provider = "A" + uuid.uuid4().hex[:12], "B" + uuid.uuid4().hex[:12], number("P")
    rows = [
        cdr(a, "a3", 10, trunk="ams1", provider=provider, destination_sent="4420777", billable_seconds=120,
            customer_cost=2_460_000, provider_cost=900_000),
        cdr(a, "a1", 0, provider=provider, caller_id_received="=1+2", destination_dialled="+494012345",
            customer_cost=1_230_000, provider_cost=420_000, recorded=True),
        cdr(a, "a2", 5, answer_time=None, sip_code=486, sip_reason="Busy Here", billable_seconds=0, customer_cost=0,
            provider_cost=0, trunk="", gateway="", destination_sent="4930999", end_reason="failed"),
        cdr(b, "0b1", 5, direction="local", trunk="", destination_sent="200"),
        cdr(a, "a5-y", 20), cdr(a, "a5-x", 20),  # the same setup time: call id decides
        cdr(b, "b2", 30, answer_time=None, sip_code=0, billable_seconds=0, customer_cost=0, provider_cost=0,
            end_reason="orphaned"),
        cdr(b, "b3", 31, answer_time=None, end_time=at(31), sip_code=503, sip_reason="CPS limit exceeded",
            stage="cps", billable_seconds=0, customer_cost=0, provider_cost=0, trunk="", gateway="",
            end_reason="refused"),
    ]
    insert(control_server.dsn, rows)
    return {"a": a, "b": b, "provider": provider}


# --------------------------------------------------------------------------------------------- list


def test_list_returns_rows_in_setup_order_with_every_field(admin, sample):
    a, provider = sample["a"], sample["provider"]
    both = list_all(admin, f"account = {a}")
    assert call_ids(both) == ["a1", "a2", "a3", "a5-x", "a5-y"]

    first = both[0]
    assert (first.account, first.provider, first.trunk, first.rate_group) == (
        f"accounts/{a}", f"accounts/{provider}", "trunks/fra1", "rateGroups/retail")
    assert (first.direction, first.caller_id_received, first.destination_dialled, first.destination_sent) == (
        "outbound", "=1+2", "+494012345", "4940123")
    assert (first.prefix, first.rate_per_min, first.gateway) == ("4940", 12_000, "192.0.2.10:5060")
    assert (first.billable_seconds, first.sip_code, first.customer_cost, first.provider_cost) == (
        60, 200, 1_230_000, 420_000)
    assert first.recorded and (first.end_reason, first.sip_reason, first.stage) == ("hangup", "OK", "")
    assert first.setup_time.ToDatetime(UTC) == at(0)
    assert first.answer_time.ToDatetime(UTC) == at(0) + timedelta(seconds=5)
    assert first.end_time.ToDatetime(UTC) == at(0) + timedelta(seconds=65)
    assert first.HasField("create_time")

    unanswered = both[1]
    assert not unanswered.HasField("answer_time") and unanswered.sip_code == 486
    assert (unanswered.trunk, unanswered.provider) == ("", "")  # never relayed: no resource names to make up


def test_ties_on_setup_time_go_by_account_then_call_id(admin, sample):
    a, b = sample["a"], sample["b"]
    at_five = [c for c in list_all(admin, f"setup_time = {at(5).isoformat()}") if c.account[9:] in (a, b)]
    assert [(c.account, c.call_id) for c in at_five] == [(f"accounts/{a}", "a2"), (f"accounts/{b}", "0b1")]


@pytest.mark.parametrize(("clause", "expected"), [
    ("sip_code = 486", ["a2"]),
    ("sip_code != 200", ["a2"]),
    ("billable_seconds > 60", ["a3"]),
    ("customer_cost < 1.23", ["a2", "a5-x", "a5-y"]),  # money in currency units, like everywhere people type it
    ("customer_cost >= 1.23 AND customer_cost <= 2.46", ["a1", "a3"]),
    ("destination_sent : 4420", ["a3"]),
    ('destination_dialled : "+49"', ["a1"]),
    ("call_id : A5", ["a5-x", "a5-y"]),  # contains is case-insensitive
    (f"setup_time >= {at(5).isoformat()} AND setup_time < {at(20).isoformat()}", ["a2", "a3"]),
    ("setup_time > 2031-05-04T10:19:00Z", ["a5-x", "a5-y"]),
    ("answer_time < 2031-05-04T10:06:00Z", ["a1"]),  # an unanswered call has no answer_time to compare
    ("trunk = trunks/AMS1", ["a3"]),
    ("trunk = fra1 AND sip_code = 200", ["a1", "a5-x", "a5-y"]),
    ("end_time <= 2031-05-04T10:01:05Z", ["a1"]),
])
def test_filters_narrow(admin, sample, clause, expected):
    assert call_ids(list_all(admin, f"account = {sample['a']} AND {clause}")) == expected


def test_account_and_provider_filters_take_numbers_or_names(admin, sample):
    a, b, provider = sample["a"], sample["b"], sample["provider"]
    assert call_ids(list_all(admin, f"account = accounts/{b}")) == ["0b1", "b2", "b3"]
    assert call_ids(list_all(admin, f'account = "{b}" and end_reason = orphaned')) == ["b2"]
    assert call_ids(list_all(admin, f'account = "{b}" and stage = CPS and sip_reason : "limit"')) == ["b3"]
    assert call_ids(list_all(admin, f"provider = accounts/{provider}")) == ["a1", "a3"]
    assert call_ids(list_all(admin, f"provider = {provider} AND account != {a}")) == []
    assert call_ids(list_all(admin, f"account : {b[1:8]} AND direction = LOCAL")) == ["0b1"]


@pytest.mark.parametrize("bad", [
    "colour = red", "sip_code > lots", "setup_time > yesterday", "customer_cost : 5", "trunk > x", "account < 5",
    "call_id", "sip_code = 200 AND", "sip_code = 200 OR sip_code = 486", "recorded_at > 2020-01-01",
])
def test_a_bad_filter_is_invalid_argument_naming_filter(admin, bad):
    result = failure(lambda: admin.cdrs.ListCdrs(cdr_pb2.ListCdrsRequest(filter=bad), metadata=admin.metadata))
    assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["filter"])
    exported = failure(lambda: list(admin.cdrs.ExportCdrsCsv(cdr_pb2.ExportCdrsCsvRequest(filter=bad),
                                                             metadata=admin.metadata)))
    assert (exported.code, exported.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["filter"])


# --------------------------------------------------------------------------------------------- paging


def test_paging_visits_every_row_once_in_order(admin, control_server):
    account = number("G")
    # Nine calls: two without a setup time (they sort first), and a tie at minute 3.
    rows = [cdr(account, f"g{i}", m) for i, m in enumerate((7, 3, 1, 3, 9, 2, 8))]
    rows += [cdr(account, "n2", 0, setup_time=None), cdr(account, "n1", 0, setup_time=None)]
    insert(control_server.dsn, rows)
    expected = ["n1", "n2", "g2", "g5", "g1", "g3", "g0", "g6", "g4"]
    for size in (1, 2, 4, 9, 50):
        assert call_ids(list_all(admin, f"account = {account}", page_size=size)) == expected, size

    first = admin.cdrs.ListCdrs(cdr_pb2.ListCdrsRequest(filter=f"account = {account}", page_size=4),
                                metadata=admin.metadata)
    assert len(first.cdrs) == 4 and first.next_page_token
    last = admin.cdrs.ListCdrs(cdr_pb2.ListCdrsRequest(filter=f"account = {account}", page_size=5,
                                                       page_token=first.next_page_token), metadata=admin.metadata)
    assert call_ids(last.cdrs) == expected[4:] and last.next_page_token == ""


def test_page_token_is_bound_to_its_filter_and_checked(admin, sample):
    filter_text = f"account = {sample['a']}"
    first = admin.cdrs.ListCdrs(cdr_pb2.ListCdrsRequest(filter=filter_text, page_size=2), metadata=admin.metadata)
    forged = [(token, filter_text) for token in forged_page_tokens(first.next_page_token)]
    for token, filter_ in ((first.next_page_token, "sip_code = 200"), *forged):
        result = failure(lambda t=token, f=filter_: admin.cdrs.ListCdrs(
            cdr_pb2.ListCdrsRequest(filter=f, page_token=t), metadata=admin.metadata))
        assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"]), token
    negative = failure(lambda: admin.cdrs.ListCdrs(cdr_pb2.ListCdrsRequest(page_size=-1), metadata=admin.metadata))
    assert negative.fields == ["page_size"]


# --------------------------------------------------------------------------------------------- authorization


def login_token(admin, email: str) -> tuple:
    token = admin.auth.Login(auth_pb2.LoginRequest(login=email, password=PASSWORD)).token
    return (("authorization", f"Bearer {token}"),)


def create(admin, **fields) -> account_pb2.Account:
    account = account_pb2.Account(account_number=unique_number(), email=unique_email("cdr"), password=PASSWORD,
                                  **fields)
    return admin.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account), metadata=admin.metadata)


@pytest.fixture(scope="module")
def parties(admin, control_server) -> dict:
    """A real customer and provider with portal logins, and calls between them and strangers."""
    customer, carrier = create(admin), create(admin, type=account_pb2.PROVIDER)
    c, p, other, other_carrier = customer.account_number, carrier.account_number, number("O"), number("Q")
    insert(control_server.dsn, [
        cdr(c, "both", 1, provider=p, customer_cost=50_000, provider_cost=20_000, trunk="carrier-fra"),
        cdr(c, "mine-elsewhere", 2, provider=other_carrier, customer_cost=70_000, provider_cost=30_000),
        cdr(other, "carried", 3, provider=p, customer_cost=90_000, provider_cost=40_000, trunk="carrier-ams"),
        cdr(other, "strangers", 4, provider=other_carrier),
    ])
    return {"customer": customer, "carrier": carrier, "other": other,
            "filter": f"setup_time >= {at(1).isoformat()} AND setup_time <= {at(4).isoformat()}"}


def test_an_account_token_sees_only_calls_it_placed_or_carried(admin, parties):
    window = parties["filter"]
    customer_token = login_token(admin, parties["customer"].email)
    carrier_token = login_token(admin, parties["carrier"].email)
    assert call_ids(list_all(admin, window, metadata=customer_token)) == ["both", "mine-elsewhere"]
    assert call_ids(list_all(admin, window, metadata=carrier_token)) == ["both", "carried"]
    # With no filter at all too: nothing of the rest of the session's CDRs leaks in.
    assert set(call_ids(list_all(admin, "", metadata=customer_token))) == {"both", "mine-elsewhere"}
    assert set(call_ids(list_all(admin, "", page_size=1, metadata=carrier_token))) == {"both", "carried"}
    # Asking for someone else's calls is refused, not answered with an empty list that reads "no calls";
    # a number nobody has gets the same answer, so the refusal tells nothing about other accounts.
    for token, clause in [(customer_token, f"account = {parties['other']}"),
                          (customer_token, f"account = accounts/{parties['other']}"),
                          (customer_token, "account = Nobody123"), (carrier_token, f"provider = {number('Q')}"),
                          (carrier_token, f"account = {parties['other']}")]:
        refused = failure(lambda t=token, c=clause: list_all(admin, c, metadata=t))
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED, clause
    # Its own number, in any case, is fine.
    own = f"account = {parties['customer'].account_number.lower()} AND {window}"
    assert call_ids(list_all(admin, own, metadata=customer_token)) == ["both", "mine-elsewhere"]
    # An admin sees all four (and whatever else other tests put in that window).
    assert {"both", "mine-elsewhere", "carried", "strangers"} <= set(call_ids(list_all(admin, window)))


def test_an_account_token_sees_only_its_side_of_a_call(admin, parties):
    customer, carrier = parties["customer"], parties["carrier"]
    as_customer = {c.call_id: c for c in list_all(admin, parties["filter"],
                                                  metadata=login_token(admin, customer.email))}
    mine = as_customer["both"]
    assert (mine.account, mine.customer_cost, mine.rate_group) == (customer.name, 50_000, "rateGroups/retail")
    assert (mine.provider, mine.trunk, mine.gateway) == ("", "", "")
    assert not mine.HasField("provider_cost")  # hidden, not a cost of 0

    carrier_token = login_token(admin, carrier.email)
    as_carrier = {c.call_id: c for c in list_all(admin, parties["filter"], metadata=carrier_token)}
    carried = as_carrier["carried"]
    assert (carried.provider, carried.provider_cost, carried.trunk) == (carrier.name, 40_000, "trunks/carrier-ams")
    assert (carried.rate_group, carried.prefix) == ("", "")
    assert not carried.HasField("customer_cost") and not carried.HasField("rate_per_min")
    # Its leg only: not the operator's customer, nor what the customer sent before the switch rewrote it.
    assert (carried.account, carried.caller_id_received, carried.destination_dialled) == ("", "", "")
    assert (carried.caller_id_presented, carried.destination_sent) == ("4930111", "4940123")
    assert list_all(admin, 'destination_dialled : "0049"', metadata=carrier_token) == []
    # The filter reads the same view: the customer's price cannot be probed for.
    assert list_all(admin, "customer_cost > 0", metadata=carrier_token) == []
    # Account numbers match in any case (the stored one is "T…"; the filter says "t…").
    lowered = f"provider = {carrier.account_number.lower()}"
    assert call_ids(list_all(admin, lowered, metadata=carrier_token)) == ["both", "carried"]
    _, rows, _ = export(admin, "", metadata=carrier_token)
    assert [(r["call_id"], r["provider"], r["provider_cost"]) for r in rows] == [
        ("both", carrier.account_number, "0.0200"), ("carried", carrier.account_number, "0.0400")]
    assert {(r["account_number"], r["caller_id_received"], r["destination_dialled"]) for r in rows} == {("", "", "")}
    assert all(r["customer_cost"] == r["rate_per_min"] == r["rate_group"] == "" for r in rows)  # hidden: empty


def test_without_a_token_nothing(admin):
    result = failure(lambda: admin.cdrs.ListCdrs(cdr_pb2.ListCdrsRequest()))
    assert result.code == grpc.StatusCode.UNAUTHENTICATED


# --------------------------------------------------------------------------------------------- CSV


@pytest.fixture
def two_decimals(company_decimals):
    company_decimals(2)


def test_export_has_header_decimal_money_and_safe_cells(admin, sample, two_decimals):
    header, rows, _ = export(admin, f"account = {sample['a']}")
    assert header == CSV_HEADER
    assert [r["call_id"] for r in rows] == call_ids(list_all(admin, f"account = {sample['a']}"))
    first = rows[0]
    assert (first["account_number"], first["provider"], first["trunk"]) == (sample["a"], sample["provider"], "fra1")
    assert (first["customer_cost"], first["provider_cost"]) == ("1.23", "0.42")  # the company's 2 decimals
    assert first["rate_per_min"] == "0.012000"  # a rate keeps every digit
    assert (first["caller_id_received"], first["destination_dialled"]) == ("'=1+2", "'+494012345")
    assert first["caller_id_presented"] == "4930111"  # plain text untouched
    assert (first["recorded"], first["end_reason"], first["sip_code"], first["sip_reason"]) == (
        "yes", "hangup", "200", "OK")
    assert datetime.fromisoformat(first["setup_time"]) == at(0)
    assert rows[1]["answer_time"] == "" and rows[1]["recorded"] == "no"
    assert datetime.fromisoformat(first["create_time"]).year >= 2024


def test_export_streams_every_row_in_chunks(admin, control_server):
    account = number("E")
    insert(control_server.dsn, [cdr(account, f"e{i:04d}", i / 100) for i in range(1_234)])
    _, rows, chunks = export(admin, f"account = {account}")
    assert [r["call_id"] for r in rows] == [f"e{i:04d}" for i in range(1_234)]
    assert chunks == 1 + 3  # the header, then 500 + 500 + 234 rows
    assert len(list_all(admin, f"account = {account}", page_size=1000)) == 1_234


# --------------------------------------------------------------------------------------------- server


def test_reflection_and_health_know_the_service(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    assert "tollgate.v1.CdrService" in {s.name for r in responses for s in r.list_services_response.service}
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="tollgate.v1.CdrService"), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


# --------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(control_server, tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home) | {"TOLLGATE_ADDRESS": control_server.address, "TOLLGATE_TOKEN": control_server.admin_token}
    return lambda *args: run_cli(list(args), env)


def test_cli_lists_a_table_following_pages(cli, sample, two_decimals):
    table = ok(cli("cdrs", "list", "--account", sample["a"], "--page-size", "2")).splitlines()
    for column in ("call id", "account", "setup time", "destination sent", "trunk", "billable s", "SIP code",
                   "ended", "customer cost", "provider cost"):
        assert column in table[0]
    body = [line.split() for line in table[2:]]
    assert [cells[0] for cells in body] == ["a1", "a2", "a3", "a5-x", "a5-y"]
    assert body[0] == ["a1", sample["a"], "2031-05-04T10:00:00Z", "4940123", "fra1", "60", "200", "hangup", "1.23",
                       "0.42"]  # the company's 2 decimals
    refused = ok(cli("cdrs", "list", "--account", sample["b"], "--filter", "end_reason = refused")).splitlines()
    assert "refused (cps)" in refused[2]


def test_cli_with_an_account_token_hides_the_other_side_and_refuses_other_accounts(admin, parties, control_server,
                                                                                   tmp_path: Path, two_decimals):
    def as_account(account: account_pb2.Account, *args: str):
        token = admin.auth.Login(auth_pb2.LoginRequest(login=account.email, password=PASSWORD)).token
        env = clean_env(tmp_path) | {"TOLLGATE_ADDRESS": control_server.address, "TOLLGATE_TOKEN": token}
        return run_cli(list(args), env)

    window = ["--filter", parties["filter"]]
    mine = ok(as_account(parties["customer"], "cdrs", "list", *window)).splitlines()
    assert "customer cost" in mine[0] and "provider cost" not in mine[0]  # hidden, not a column of 0.00
    carried = ok(as_account(parties["carrier"], "cdrs", "list", *window)).splitlines()
    assert "provider cost" in carried[0] and "customer cost" not in carried[0]
    assert [line.split()[-1] for line in carried[2:]] == ["0.02", "0.04"]
    refused = as_account(parties["customer"], "cdrs", "list", "--account", parties["other"])
    assert refused.returncode == 6 and "PERMISSION_DENIED" in refused.stderr, refused.stderr


def test_cli_money_has_the_company_decimals_in_every_row(cli, sample, company_decimals):
    company_decimals(4)
    table = ok(cli("cdrs", "list", "--account", sample["a"])).splitlines()
    costs = [line.split()[-2:] for line in table[2:]]
    assert costs and all(len(cost.rsplit(".", 1)[1]) == 4 for row in costs for cost in row), costs


def test_cli_json_filter_account_and_limit(cli, sample):
    listed = ok_json(cli("cdrs", "list", "--json", "--account", f"accounts/{sample['a']}",
                         "--filter", "sip_code = 200", "--page-size", "1", "--limit", "3"))
    assert [c["call_id"] for c in listed] == ["a1", "a3", "a5-x"]
    assert listed[0]["customer_cost"] == "1230000" and listed[0]["provider"] == f"accounts/{sample['provider']}"

    bad = cli("cdrs", "list", "--filter", "sip_code > lots")
    assert bad.returncode == 3 and bad.stderr.startswith("error: INVALID_ARGUMENT: filter: "), bad.stderr


def test_cli_exports_to_a_file_and_to_stdout(cli, sample, tmp_path: Path):
    target = tmp_path / "cdrs.csv"
    result = cli("cdrs", "export", "--filter", f"account = {sample['b']}", "-o", str(target))
    assert ok(result) == "" and result.stderr == ""  # no progress: stderr is no terminal here
    assert not target.with_name("cdrs.csv.part").exists()
    records = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
    assert records[0] == CSV_HEADER
    assert [r[0] for r in records[1:]] == ["0b1", "b2", "b3"]

    stdout = ok(cli("cdrs", "export", "--account", sample["b"]))
    assert stdout.replace("\r\n", "\n") == target.read_text(encoding="utf-8").replace("\r\n", "\n")
