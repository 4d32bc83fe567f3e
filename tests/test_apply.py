"""`tollgate-admin apply -f provider.yaml` against the real server: plan, dry run, idempotence, edits.

Each test writes its own provider file with unique ids (the database is shared by the session) and reads
the result back through the CLI's own get/list commands.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from admin.apply_spec import load
from tests.helpers import Run, clean_env, ok, ok_json, run_cli
from tests.test_admin_config_cli import digits, fails, uid

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

HEADER = "prefix,description,connect_fee,included_seconds,rate_per_min,initial_increment,increment,priority," \
         "strip,prepend\n"


@pytest.fixture
def cli(control_server, tmp_path: Path) -> Run:
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home) | {"TOLLGATE_ADDRESS": control_server.address, "TOLLGATE_TOKEN": control_server.admin_token}
    return lambda *args, stdin="": run_cli(list(args), env, stdin)


@dataclass
class Setup:
    """One provider's file and the ids in it."""

    dir: Path
    number: str
    localization: str
    trunk_a: str
    trunk_b: str
    dids: list[str]
    caller_ids: list[str]

    @property
    def yaml(self) -> Path:
        return self.dir / "provider.yaml"

    @property
    def account(self) -> str:
        return f"accounts/{self.number}"

    def text(self) -> str:
        return self.yaml.read_text(encoding="utf-8")

    def write(self, text: str) -> None:
        self.yaml.write_text(text, encoding="utf-8")


def deck(rows: list[tuple[str, str]]) -> str:
    return HEADER + "".join(f"{prefix},dest {prefix},0,0,{rate},1,1,0,0,\n" for prefix, rate in rows)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path / "conf", f"P{uuid.uuid4().hex[:12]}", uid("loc"), uid("tra"), uid("trb"),
              [digits() for _ in range(3)], [digits(), digits()])
    (s.dir / "decks").mkdir(parents=True)
    (s.dir / "decks" / "a.csv").write_text(deck([("49", "0.0045"), ("4930", "0.004"), ("33", "0.006")]))
    (s.dir / "decks" / "b.csv").write_text(deck([("31", "0.0055"), ("44", "0.005")]))
    s.write(f"""\
version: 1
provider:
  account_number: "{s.number}"
  email: {s.number.lower()}@Carrier.Example
  password: "initial-pass-1"
  status: active
  profile:
    company: Apply Test Carrier
    city: Berlin
    country: de
    timezone: Europe/Berlin
  settings:
    max_concurrent_calls: 50
    cps: 5
    localization: {s.localization}
    allow_recording: true
    lc_charge_per_min: "0.015"
  billing:
    account_type: postpaid
    credit_limit: "250.50"
    cli_pool: 2
    billing_day: 15
    invoice_with_cdr: pdf
localizations:
  - id: {s.localization}
    display_name: Germany
    caller_id_inbound: ["0/49"]
    destination: ["00/", "0/49"]
    termination_destination: ["/^49(.*)$/0049\\\\1/"]
trunks:
  - id: {s.trunk_a}
    display_name: Frankfurt
    gateways:
      - address: 192.0.2.10:5060
      - address: gw.carrier.example:5061
        transport: tls
    max_concurrent_calls: 30
    cps: 3
    localization: {s.localization}
    priority: 1
    rates: decks/a.csv
  - id: {s.trunk_b}
    gateways:
      - {{address: "[2001:db8::10]:5060", transport: tcp}}
    status: inactive
    rates: decks/b.csv
dids:
  - number: "{s.dids[0]}"
    account: "{s.number}"
  - number: "{s.dids[1]}"
    status: inactive
  - "{s.dids[2]}"
caller_ids:
  - "{s.caller_ids[0]}"
  - "{s.caller_ids[1]}"
""")
    return s


def plan(cli: Run, setup: Setup, *extra: str) -> list[dict]:
    """Apply (or with --dry-run plan) the file; --yes, because these plans may delete and stdin is no terminal."""
    return ok_json(cli("--json", "apply", "-f", str(setup.yaml), "--yes", *extra))


def changes(steps: list[dict]) -> set[tuple]:
    return {(s["action"], s["kind"], s["name"], tuple(s["fields"])) for s in steps if s["action"] != "unchanged"}


def snapshot(cli: Run, s: Setup) -> dict:
    """Everything apply manages, as the server reports it (update_time included)."""
    return {
        "account": ok_json(cli("--json", "accounts", "get", s.number)),
        "localization": ok_json(cli("--json", "localizations", "get", s.localization)),
        "trunks": ok_json(cli("--json", "trunks", "list", "--provider", s.number)),
        "rates_a": ok_json(cli("--json", "termination-rates", "list", s.trunk_a)),
        "rates_b": ok_json(cli("--json", "termination-rates", "list", s.trunk_b)),
        "dids": sorted((d for d in ok_json(cli("--json", "dids", "list")) if d["provider"] == s.account),
                       key=lambda d: d["name"]),
        "caller_ids": ok_json(cli("--json", "caller-ids", "list", s.number)),
    }


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- dry run, first apply, second apply -----------------------------------------------------------------


def test_dry_run_prints_the_plan_and_changes_nothing(cli: Run, setup: Setup) -> None:
    table = ok(cli("apply", "-f", str(setup.yaml), "--dry-run"))
    assert table.splitlines()[0].split() == ["action", "kind", "name", "changes"]
    assert "dry run: nothing changed" in table

    steps = plan(cli, setup, "--dry-run")
    assert [(s["action"], s["kind"]) for s in steps] == [
        ("create", "localization"), ("create", "account"), ("create", "trunk"), ("create", "trunk"),
        ("import", "deck"), ("import", "deck"), ("create", "did"), ("create", "did"), ("create", "did"),
        ("create", "caller_id"), ("create", "caller_id"),
    ]
    assert [s["name"] for s in steps][:4] == [f"localizations/{setup.localization}", setup.account,
                                             f"trunks/{setup.trunk_a}", f"trunks/{setup.trunk_b}"]

    fails(cli("accounts", "get", setup.number), 4)
    fails(cli("localizations", "get", setup.localization), 4)
    fails(cli("trunks", "get", setup.trunk_a), 4)
    fails(cli("dids", "get", setup.dids[0]), 4)


def test_first_apply_creates_everything_and_the_second_changes_nothing(cli: Run, setup: Setup) -> None:
    first = plan(cli, setup)
    assert {s["action"] for s in first} == {"create", "import"}

    got = snapshot(cli, setup)
    account = got["account"]
    assert (account["type"], account["email"], account["status"]) == (
        "PROVIDER", f"{setup.number.lower()}@carrier.example", "ACTIVE")
    assert (account["profile"]["company"], account["profile"]["country"], account["profile"]["timezone"]) == (
        "Apply Test Carrier", "DE", "Europe/Berlin")
    assert (account["settings"]["max_concurrent_calls"], account["settings"]["cps"],
            account["settings"]["localization"], account["settings"]["allow_recording"],
            account["settings"]["lc_charge_per_min"]) == (50, 5, f"localizations/{setup.localization}", True, "15000")
    assert (account["billing"]["account_type"], account["billing"]["credit_limit"], account["billing"]["cli_pool"],
            account["billing"]["billing_day"], account["billing"]["invoice_with_cdr"]) == (
        "POSTPAID", "250500000", "CLI_POOL_CID_MATCH_ELSE_RANDOM_CID", 15, "INVOICE_WITH_CDR_PDF")
    # the password was used at creation: the account can log in with it
    ok(cli("login", setup.number, "--password", "initial-pass-1"))

    assert got["localization"]["destination"] == ["00/", "0/49"]
    assert got["localization"]["termination_destination"] == [r"/^49(.*)$/0049\1/"]

    trunks = {t["name"]: t for t in got["trunks"]}
    assert set(trunks) == {f"trunks/{setup.trunk_a}", f"trunks/{setup.trunk_b}"}
    a, b = trunks[f"trunks/{setup.trunk_a}"], trunks[f"trunks/{setup.trunk_b}"]
    assert [(g["address"], g["transport"]) for g in a["gateways"]] == [
        ("192.0.2.10:5060", "TRANSPORT_UDP"), ("gw.carrier.example:5061", "TRANSPORT_TLS")]
    assert (a["max_concurrent_calls"], a["cps"], a["priority"], a["status"], a["localization"]) == (
        30, 3, 1, "STATUS_ACTIVE", f"localizations/{setup.localization}")
    assert (b["status"], b["localization"], b["priority"]) == ("STATUS_INACTIVE", "", 0)
    assert (a["rate_count"], a["deck_sha256"]) == ("3", sha(setup.dir / "decks" / "a.csv"))
    assert (b["rate_count"], b["deck_sha256"]) == ("2", sha(setup.dir / "decks" / "b.csv"))
    assert {r["prefix"]: r["rate_per_min"] for r in got["rates_a"]} == {"49": "4500", "4930": "4000", "33": "6000"}

    dids = {d["name"]: d for d in got["dids"]}
    assert set(dids) == {f"dids/{n}" for n in setup.dids}
    assert dids[f"dids/{setup.dids[0]}"]["account"] == setup.account
    assert dids[f"dids/{setup.dids[1]}"]["status"] == "STATUS_INACTIVE"
    assert dids[f"dids/{setup.dids[2]}"]["account"] == ""
    assert sorted(c["number"] for c in got["caller_ids"]) == sorted(setup.caller_ids)

    second = plan(cli, setup)
    assert second and {s["action"] for s in second} == {"unchanged"}
    assert len(second) == len(first)
    assert snapshot(cli, setup) == got  # update_time, deck sha, rates: all as they were
    assert "nothing to change" in ok(cli("apply", "-f", str(setup.yaml)))


def test_editing_the_file_plans_exactly_those_changes(cli: Run, setup: Setup) -> None:
    plan(cli, setup)
    before = snapshot(cli, setup)

    text = setup.text()
    text = text.replace(f'  - "{setup.dids[2]}"\n', "")  # drop a DID
    text = text.replace("address: gw.carrier.example:5061", "address: gw2.carrier.example:5062")  # a gateway
    setup.write(text)
    (setup.dir / "decks" / "b.csv").write_text(deck([("31", "0.0051"), ("44", "0.005"), ("32", "0.007")]))

    expected = {
        ("update", "trunk", f"trunks/{setup.trunk_a}", ("gateways",)),
        ("import", "deck", f"trunks/{setup.trunk_b}", ("deck_sha256",)),
        ("delete", "did", f"dids/{setup.dids[2]}", ()),
    }
    assert changes(plan(cli, setup, "--dry-run")) == expected
    assert snapshot(cli, setup) == before  # the dry run changed nothing

    steps = plan(cli, setup)
    assert changes(steps) == expected
    assert steps[-1]["action"] == "delete"  # deletes come after everything else

    after = snapshot(cli, setup)
    trunks = {t["name"]: t for t in after["trunks"]}
    a, b = trunks[f"trunks/{setup.trunk_a}"], trunks[f"trunks/{setup.trunk_b}"]
    assert [g["address"] for g in a["gateways"]] == ["192.0.2.10:5060", "gw2.carrier.example:5062"]
    assert (b["rate_count"], b["deck_sha256"]) == ("3", sha(setup.dir / "decks" / "b.csv"))
    assert {r["prefix"]: r["rate_per_min"] for r in after["rates_b"]} == {"31": "5100", "44": "5000", "32": "7000"}
    fails(cli("dids", "get", setup.dids[2]), 4)
    # what the file did not touch stayed as it was
    assert after["account"] == before["account"]
    assert after["rates_a"] == before["rates_a"]
    assert after["caller_ids"] == before["caller_ids"]

    assert {s["action"] for s in plan(cli, setup)} == {"unchanged"}


def test_a_plan_that_deletes_needs_yes_without_a_terminal(cli: Run, setup: Setup) -> None:
    plan(cli, setup)
    setup.write(setup.text().replace(f'  - "{setup.dids[2]}"\n', ""))  # drop a DID: the plan deletes it
    refused = cli("apply", "-f", str(setup.yaml))
    assert refused.returncode == 2, refused.stderr
    assert "refusing to delete 1 object(s) the file leaves out (dids/" in refused.stderr
    assert "pass --yes" in refused.stderr
    assert ok_json(cli("--json", "dids", "get", setup.dids[2]))  # still there
    assert "deleted did" in ok(cli("apply", "-f", str(setup.yaml), "--yes"))


def test_only_differing_account_fields_are_sent_and_sections_left_out_are_not_managed(
    cli: Run, setup: Setup
) -> None:
    plan(cli, setup)
    ok(cli("accounts", "update", setup.number, "--city", "Hamburg", "--phone", "+4940111"))  # drift
    text = setup.text().replace("    cps: 5\n", "    cps: 7\n")
    # leave the DIDs out entirely (not managed: kept), empty the caller ids (managed: all deleted)
    text = text[: text.index("dids:")] + "caller_ids: []\n"
    setup.write(text)

    steps = plan(cli, setup)
    assert changes(steps) == {
        ("update", "account", setup.account, ("profile.city", "settings.cps")),
        ("delete", "caller_id", f"{setup.account}/callerIds/{setup.caller_ids[0]}", ()),
        ("delete", "caller_id", f"{setup.account}/callerIds/{setup.caller_ids[1]}", ()),
    }
    assert not [s for s in steps if s["kind"] == "did"]
    account = ok_json(cli("--json", "accounts", "get", setup.number))
    assert (account["profile"]["city"], account["settings"]["cps"]) == ("Berlin", 7)
    assert account["profile"]["phone"] == "+4940111"  # not in the file: left alone
    assert ok_json(cli("--json", "caller-ids", "list", setup.number)) == []
    assert ok_json(cli("--json", "dids", "get", setup.dids[2]))["provider"] == setup.account


# --- mistakes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "path"), [
    ("  status: active\n", "  status: active\n  colour: red\n", "provider.colour: unknown key"),
    ('credit_limit: "250.50"', "credit_limit: 250.5", "provider.billing.credit_limit: must be a decimal amount"),
    ("        transport: tls", "        transport: sctp", "trunks[0].gateways[1].transport: must be one of"),
    ("    cps: 3\n", "    cps: lots\n", "trunks[0].cps: must be a whole number"),
    ("rates: decks/b.csv", "rates: decks/missing.csv", "trunks[1].rates: no such file"),
    ("    status: inactive\n", "    status: inactive\n    gateway: x\n", "trunks[1].gateway: unknown key"),
    ('  - number: "{did0}"', "  - number: {did0}", "dids[0].number: must be a quoted string of digits"),
    ("caller_ids:\n", "caller_ids:\n  - 4930\n", "caller_ids[0]: must be a quoted string of digits"),
    ("version: 1\n", "version: 2\n", "version: only version 1 is known"),
    ("version: 1\n", "version: 1\ntrunks: []\n", "found the key 'trunks' twice"),
    ("    max_concurrent_calls: 30\n", "    max_concurrent_calls: -1\n", "trunks[0].max_concurrent_calls: must be"),
])
def test_file_mistakes_exit_2_naming_the_key_before_any_change(
    cli: Run, setup: Setup, old: str, new: str, path: str
) -> None:
    text = setup.text()
    old, new = old.format(did0=setup.dids[0]), new.format(did0=setup.dids[0])
    assert old in text
    setup.write(text.replace(old, new, 1))
    err = fails(cli("apply", "-f", str(setup.yaml)), 2)
    assert path in err
    fails(cli("accounts", "get", setup.number), 4)
    fails(cli("localizations", "get", setup.localization), 4)


def test_the_first_server_error_stops_the_run_with_its_exit_code(cli: Run, setup: Setup) -> None:
    setup.write(setup.text().replace("    cli_pool: 2\n", f"    cli_pool: 2\n    rate_group: {uid('none')}\n"))
    result = cli("apply", "-f", str(setup.yaml))
    err = fails(result, 3)
    assert "billing.rate_group" in err
    assert f"created localization localizations/{setup.localization}" in result.stdout  # done before the error
    ok(cli("localizations", "get", setup.localization))
    fails(cli("accounts", "get", setup.number), 4)
    fails(cli("trunks", "get", setup.trunk_a), 4)  # nothing after it ran


def test_a_trunk_of_another_provider_is_not_taken_over(cli: Run, setup: Setup) -> None:
    other = f"P{uuid.uuid4().hex[:12]}"
    ok(cli("accounts", "create", "--provider", "--number", other, "--email", f"{other}@example.com"))
    ok(cli("trunks", "create", setup.trunk_b, "--provider", other, "--gateway", "192.0.2.99:5060"))
    err = fails(cli("apply", "-f", str(setup.yaml), "--dry-run"), 1)
    assert f"trunks/{setup.trunk_b} belongs to accounts/{other}" in err
    assert ok_json(cli("--json", "trunks", "get", setup.trunk_b))["provider"] == f"accounts/{other}"


def test_the_example_file_is_valid() -> None:
    """examples/provider.yaml parses (no server call needed for that) and its decks are where it says."""
    spec = load((EXAMPLES / "provider.yaml").read_text(encoding="utf-8"), EXAMPLES / "provider.yaml")
    assert spec.trunks and all(t.deck is not None and t.deck.is_file() for t in spec.trunks)
    assert spec.dids and spec.caller_ids and spec.localizations
