"""tollgate-admin's configuration commands, run as an operator runs them: a subprocess against the real server.

The database is shared by the whole session, so every test makes its own ids and numbers (uuid).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

import pytest

from tests.helpers import Run, clean_env, ok, ok_json, run_cli


@pytest.fixture
def cli(control_server, tmp_path: Path) -> Run:
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home) | {"TOLLGATE_ADDRESS": control_server.address, "TOLLGATE_TOKEN": control_server.admin_token}
    return lambda *args, stdin="": run_cli(list(args), env, stdin)


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def digits(length: int = 12) -> str:
    return str(uuid.uuid4().int)[:length]


def fails(result, code: int) -> str:
    assert result.returncode == code, f"rc={result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stderr


def new_provider(cli: Run) -> str:
    number = f"P{uuid.uuid4().hex[:12]}"
    ok(cli("accounts", "create", "--provider", "--number", number, "--email", f"{number}@example.com"))
    return number


def new_trunk(cli: Run, provider: str, *extra: str) -> str:
    ident = uid("tr")
    ok(cli("trunks", "create", ident, "--provider", provider, "--gateway", "192.0.2.10:5060", *extra))
    return ident


def table_rows(text: str) -> list[list[str]]:
    """A tabulate table without its header and rule, split on runs of 2+ spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()[2:] if line.strip()]


# --- errors ---------------------------------------------------------------------------------------------


def test_a_validation_error_is_printed_once_with_its_field(cli: Run) -> None:
    err = fails(cli("rate-groups", "create", "Not Valid"), 3)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # the violation, not the status message repeating it
    assert lines[0].startswith("error: INVALID_ARGUMENT: rate_group_id: ")


@pytest.mark.parametrize(("command", "field"), [
    (["rate-groups", "create", "Not Valid"], "rate_group_id"),
    (["trunks", "create", "Not Valid", "--provider", "P1", "--gateway", "192.0.2.1:5060"], "trunk_id"),
    (["dids", "create", "12ab"], "did_id"),
    (["sip-devices", "create", "bad user/name", "--account", "P1", "--password", "x" * 12], "sip_device_id"),
    (["ip-maps", "create", "Not Valid", "--account", "P1", "--cidr", "192.0.2.0/24"], "ip_map_id"),
    (["localizations", "create", "Not Valid"], "localization_id"),
])
def test_a_bad_id_names_the_request_field(cli: Run, command: list[str], field: str) -> None:
    """The violation names the Create request's field, so a script can tell which input was wrong."""
    err = fails(cli(*command), 3)
    assert err.startswith(f"error: INVALID_ARGUMENT: {field}: "), err


def test_update_without_flags_is_a_usage_error(cli: Run) -> None:
    for command in (["rate-groups", "update", "x"], ["trunks", "update", "x"], ["dids", "update", "1"],
                    ["localizations", "update", "x"], ["origination-rates", "update", "g", "1"]):
        assert "nothing to update" in fails(cli(*command), 2)


def test_bad_flag_values_are_usage_errors(cli: Run) -> None:
    assert "transport" in fails(cli("trunks", "create", "x", "--provider", "P1", "--gateway", "h:5060/sctp"), 2)
    assert "6 decimal places" in fails(cli("origination-rates", "create", "g", "1", "--rate", "0.0000001"), 2)
    assert "invalid choice" in fails(cli("rate-groups", "create", "g", "--strategy", "cheapest"), 2)


# --- rate groups and origination rates --------------------------------------------------------------------


def test_rate_group_create_get_list_update_delete(cli: Run) -> None:
    provider = new_provider(cli)
    first, second = new_trunk(cli, provider), new_trunk(cli, provider)
    group = uid("rg")
    created = ok_json(cli("--json", "rate-groups", "create", group, "--display-name", "Gold", "--markup-percent",
                          "15", "--strategy", "cost", "--initial-increment", "30", "--increment", "6",
                          "--trunk", second, "--trunk", f"trunks/{first}", "--inactive"))
    assert created["name"] == f"rateGroups/{group}"
    assert created["trunks"] == [f"trunks/{second}", f"trunks/{first}"]  # the order given
    assert (created["markup_percent"], created["routing_strategy"], created["status"]) == (
        15, "ROUTING_STRATEGY_COST", "STATUS_INACTIVE")
    assert (created["default_initial_increment"], created["default_increment"]) == (30, 6)

    shown = ok(cli("rate-groups", "get", group))
    assert "display_name" in shown and "Gold" in shown

    rows = {row[0]: row for row in table_rows(ok(cli("rate-groups", "list")))}
    assert rows[group][1:4] == ["Gold", "15", "COST"]
    spare = uid("rg")
    ok(cli("rate-groups", "create", spare))
    every = [g["name"] for g in ok_json(cli("rate-groups", "list", "--json", "--page-size", "1"))]
    assert {f"rateGroups/{group}", f"rateGroups/{spare}"} <= set(every)  # page tokens followed
    assert len(ok_json(cli("rate-groups", "list", "--json", "--page-size", "1", "--limit", "2"))) == 2

    updated = ok_json(cli("--json", "rate-groups", "update", group, "--markup-percent", "5", "--active"))
    assert (updated["markup_percent"], updated["status"], updated["display_name"]) == (5, "STATUS_ACTIVE", "Gold")
    assert updated["trunks"] == created["trunks"]  # not in the mask, untouched
    reordered = ok_json(cli("--json", "rate-groups", "update", group, "--trunk", first))
    assert reordered["trunks"] == [f"trunks/{first}"]
    assert ok_json(cli("--json", "rate-groups", "update", group, "--no-trunks"))["trunks"] == []

    assert f"deleted rateGroups/{group}" in ok(cli("rate-groups", "delete", group, "--yes"))
    assert "NOT_FOUND" in fails(cli("rate-groups", "get", group), 4)


def test_origination_rate_create_list_update_delete(cli: Run) -> None:
    provider = new_provider(cli)
    trunk = new_trunk(cli, provider)
    group = uid("rg")
    ok(cli("rate-groups", "create", group))
    rate = ok_json(cli("--json", "origination-rates", "create", group, "4420", "--connect-fee", "0.01",
                       "--included-seconds", "5", "--rate", "0.0125", "--initial-increment", "30", "--increment",
                       "6", "--forced-trunk", trunk, "--priority", "2", "--description", "London"))
    assert rate["name"] == f"rateGroups/{group}/rates/4420"
    assert (rate["connect_fee"], rate["rate_per_min"], rate["included_seconds"]) == ("10000", "12500", 5)
    assert (rate["initial_increment"], rate["increment"], rate["priority"]) == (30, 6, 2)
    assert rate["forced_trunks"] == [f"trunks/{trunk}"]
    ok(cli("origination-rates", "create", group, "44", "--rate", "0.02"))

    table = ok(cli("origination-rates", "list", group))
    rows = {row[0]: row for row in table_rows(table)}
    assert rows["4420"][1:5] == ["London", "0.010000", "5", "0.012500"]  # prices with all 6 decimals, aligned
    assert set(rows) == {"44", "4420"}
    assert len(ok_json(cli("origination-rates", "list", group, "--json", "--limit", "1"))) == 1

    updated = ok_json(cli("--json", "origination-rates", "update", group, "4420", "--rate", "0.009",
                          "--no-forced-trunks"))
    assert (updated["rate_per_min"], updated["connect_fee"], updated["forced_trunks"]) == ("9000", "10000", [])
    assert ok_json(cli("--json", "origination-rates", "get", group, "4420"))["rate_per_min"] == "9000"

    ok(cli("origination-rates", "delete", group, "4420", "--yes"))
    assert [r["prefix"] for r in ok_json(cli("--json", "origination-rates", "list", group))] == ["44"]
    assert ok_json(cli("--json", "rate-groups", "get", group))["rate_count"] == "1"


def deck_csv(rows: int, description_width: int = 120) -> str:
    """A deck well over one 256 KiB upload piece, so the stream really is cut into several messages."""
    lines = ["prefix,description,connect_fee,included_seconds,rate_per_min,initial_increment,increment,priority"]
    for i in range(rows):
        text = f"dest {i} ".ljust(description_width, "x")
        lines.append(f"{49_000_000 + i},{text},0.01,0,0.{i % 1000:03d}5,1,1,{i % 3}")
    return "\n".join(lines) + "\n"


def test_import_of_a_2000_row_deck_with_progress_then_a_bad_line_57_changes_nothing(
    cli: Run, tmp_path: Path
) -> None:
    group = uid("rg")
    ok(cli("rate-groups", "create", group))
    deck = tmp_path / "deck.csv"
    deck.write_text(deck_csv(2000), encoding="utf-8")
    assert deck.stat().st_size > 256 * 1024
    sha = hashlib.sha256(deck.read_bytes()).hexdigest()

    result = cli("origination-rates", "import", group, str(deck), "--progress")
    out = ok(result)
    assert "rows imported  2000" in out and "rows in deck   2000" in out and sha in out
    # tqdm's bar on stderr, counting bytes up to the whole file
    assert "deck.csv" in result.stderr and "100%" in result.stderr

    got = ok_json(cli("--json", "rate-groups", "get", group))
    assert (got["rate_count"], got["deck_sha256"]) == ("2000", sha)
    before = ok_json(cli("--json", "origination-rates", "list", group))
    assert len(before) == 2000
    sample = next(r for r in before if r["prefix"] == "49000007")
    assert (sample["connect_fee"], sample["rate_per_min"], sample["priority"]) == ("10000", "7500", 1)

    lines = deck_csv(2000).splitlines(keepends=True)
    lines[56] = "49999999,broken,0.01,0,not-money,1,1,0\n"  # line 57 of the file (the header is line 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines), encoding="utf-8")
    err = fails(cli("origination-rates", "import", group, str(bad)), 3)
    assert "line 57" in err and "csv_data" in err
    assert err.count("line 57") == 1

    after = ok_json(cli("--json", "rate-groups", "get", group))
    assert (after["rate_count"], after["deck_sha256"]) == ("2000", sha)
    assert ok_json(cli("--json", "origination-rates", "list", group)) == before


def test_import_json_merge_and_a_missing_file(cli: Run, tmp_path: Path) -> None:
    group = uid("rg")
    ok(cli("rate-groups", "create", group))
    deck = tmp_path / "small.csv"
    deck.write_text("prefix,rate_per_min\n33,0.01\n34,0.02\n", encoding="utf-8")
    replaced = ok_json(cli("--json", "origination-rates", "import", group, str(deck)))
    assert replaced == {"parent": f"rateGroups/{group}", "rows_imported": "2", "rows_in_deck": "2",
                        "deck_sha256": hashlib.sha256(deck.read_bytes()).hexdigest()}
    extra = tmp_path / "extra.csv"
    extra.write_text("prefix,rate_per_min\n34,0.03\n35,0.04\n", encoding="utf-8")
    merged = ok_json(cli("--json", "origination-rates", "import", group, str(extra), "--merge"))
    assert (merged["rows_imported"], merged["rows_in_deck"], merged["deck_sha256"]) == ("2", "3", "")
    rates = {r["prefix"]: r["rate_per_min"] for r in ok_json(cli("--json", "origination-rates", "list", group))}
    assert rates == {"33": "10000", "34": "30000", "35": "40000"}
    assert "cannot read rate deck" in fails(cli("origination-rates", "import", group, str(tmp_path / "nope.csv")), 2)


# --- trunks and termination rates --------------------------------------------------------------------------


def test_trunk_create_get_list_update_delete(cli: Run) -> None:
    provider, other = new_provider(cli), new_provider(cli)
    profile = uid("loc")
    ok(cli("localizations", "create", profile))
    trunk = uid("tr")
    created = ok_json(cli("--json", "trunks", "create", trunk, "--provider", provider, "--display-name", "Frankfurt",
                          "--gateway", "192.0.2.1:5060", "--gateway", "gw.example.com:5061/tls",
                          "--gateway", "[2001:db8::1]:5060/tcp", "--max-calls", "30", "--cps", "5",
                          "--localization", profile, "--priority", "3", "--inactive"))
    assert created["provider"] == f"accounts/{provider}"
    assert [(g["address"], g["transport"]) for g in created["gateways"]] == [
        ("192.0.2.1:5060", "TRANSPORT_UDP"), ("gw.example.com:5061", "TRANSPORT_TLS"),
        ("[2001:db8::1]:5060", "TRANSPORT_TCP")]
    assert (created["max_concurrent_calls"], created["cps"], created["priority"]) == (30, 5, 3)
    assert (created["localization"], created["status"]) == (f"localizations/{profile}", "STATUS_INACTIVE")

    shown = ok(cli("trunks", "get", trunk))
    assert "192.0.2.1:5060/udp, gw.example.com:5061/tls, [2001:db8::1]:5060/tcp" in shown

    other_trunk = new_trunk(cli, other)
    mine = table_rows(ok(cli("trunks", "list", "--provider", provider)))
    assert [row[0] for row in mine] == [trunk]
    assert mine[0][1:3] == [provider, "Frankfurt"]
    everyone = {t["name"] for t in ok_json(cli("--json", "trunks", "list"))}
    assert {f"trunks/{trunk}", f"trunks/{other_trunk}"} <= everyone

    updated = ok_json(cli("--json", "trunks", "update", trunk, "--gateway", "192.0.2.2:5070/tcp", "--active",
                          "--localization", ""))
    assert [(g["address"], g["transport"]) for g in updated["gateways"]] == [("192.0.2.2:5070", "TRANSPORT_TCP")]
    assert (updated["status"], updated["localization"], updated["max_concurrent_calls"]) == ("STATUS_ACTIVE", "", 30)

    ok(cli("trunks", "delete", trunk, "--yes"))
    fails(cli("trunks", "get", trunk), 4)


def test_termination_rate_create_list_update_delete_and_import(cli: Run, tmp_path: Path) -> None:
    trunk = new_trunk(cli, new_provider(cli))
    rate = ok_json(cli("--json", "termination-rates", "create", trunk, "4930", "--rate", "0.004", "--connect-fee",
                       "0", "--strip", "2", "--prepend", "0049", "--priority", "1", "--description", "Berlin"))
    assert rate["name"] == f"trunks/{trunk}/rates/4930"
    assert (rate["rate_per_min"], rate["strip"], rate["prepend"], rate["priority"]) == ("4000", 2, "0049", 1)
    rows = {row[0]: row for row in table_rows(ok(cli("termination-rates", "list", trunk)))}
    assert rows["4930"][-2:] == ["2", "0049"]

    updated = ok_json(cli("--json", "termination-rates", "update", trunk, "4930", "--strip", "0", "--prepend", ""))
    assert (updated["strip"], updated["prepend"], updated["rate_per_min"]) == (0, "", "4000")

    ok(cli("termination-rates", "delete", trunk, "4930", "--yes"))
    assert ok_json(cli("--json", "termination-rates", "list", trunk)) == []

    deck = tmp_path / "term.csv"
    deck.write_text("prefix,description,connect_fee,included_seconds,rate_per_min,initial_increment,increment,"
                    "priority,strip,prepend\n44,UK,0,0,0.008,1,1,0,2,0044\n1,US,0,0,0.002,6,6,0,0,\n", encoding="utf-8")
    out = ok(cli("termination-rates", "import", trunk, str(deck)))
    assert "rows in deck   2" in out
    got = ok_json(cli("--json", "trunks", "get", trunk))
    assert (got["rate_count"], got["deck_sha256"]) == ("2", hashlib.sha256(deck.read_bytes()).hexdigest())
    # a single-rate change clears the sha: the deck no longer is that file
    ok(cli("termination-rates", "update", trunk, "44", "--rate", "0.009"))
    assert ok_json(cli("--json", "trunks", "get", trunk))["deck_sha256"] == ""


# --- DIDs, caller ids, SIP devices, IP maps, localizations -----------------------------------------------------


def test_did_create_get_list_update_delete(cli: Run) -> None:
    provider = new_provider(cli)
    owner = ok_json(cli("--json", "accounts", "create", "--email", f"{uid('o')}@example.com"))["account_number"]
    number, spare = digits(), digits()
    did = ok_json(cli("--json", "dids", "create", number, "--account", owner, "--provider", provider))
    assert (did["name"], did["account"], did["provider"], did["status"]) == (
        f"dids/{number}", f"accounts/{owner}", f"accounts/{provider}", "STATUS_ACTIVE")
    ok(cli("dids", "create", spare, "--provider", provider, "--inactive"))

    assert ok_json(cli("--json", "dids", "get", number))["account"] == f"accounts/{owner}"
    rows = table_rows(ok(cli("dids", "list", "--account", owner)))
    assert [row[:4] for row in rows] == [[number, owner, provider, "ACTIVE"]]
    listed = {d["name"]: d for d in ok_json(cli("--json", "dids", "list"))}
    assert listed[f"dids/{spare}"]["status"] == "STATUS_INACTIVE"

    updated = ok_json(cli("--json", "dids", "update", number, "--account", "", "--inactive"))
    assert (updated["account"], updated["provider"], updated["status"]) == ("", f"accounts/{provider}",
                                                                            "STATUS_INACTIVE")
    assert ok_json(cli("--json", "dids", "list", "--account", owner)) == []

    ok(cli("dids", "delete", number, "--yes"))
    fails(cli("dids", "get", number), 4)


def test_caller_ids_add_list_get_delete(cli: Run) -> None:
    account = new_provider(cli)
    first, second = digits(), digits()
    added = ok_json(cli("--json", "caller-ids", "add", account, first))
    assert added == {"name": f"accounts/{account}/callerIds/{first}", "number": first}
    ok(cli("caller-ids", "add", account, second))
    assert "ALREADY_EXISTS" in fails(cli("caller-ids", "add", account, first), 5)

    assert {row[0] for row in table_rows(ok(cli("caller-ids", "list", account)))} == {first, second}
    assert ok_json(cli("--json", "caller-ids", "get", account, second))["number"] == second

    ok(cli("caller-ids", "delete", account, first, "--yes"))
    assert [c["number"] for c in ok_json(cli("--json", "caller-ids", "list", account))] == [second]


def test_sip_device_create_get_list_update_delete(cli: Run) -> None:
    account = new_provider(cli)
    username = uid("dev")
    created = ok_json(cli("--json", "sip-devices", "create", username, "--account", account, "--password",
                          "s3cret-digest-pass"))
    assert (created["name"], created["account"], created["status"]) == (
        f"sipDevices/{username}", f"accounts/{account}", "STATUS_ACTIVE")
    assert created.get("password", "") == ""  # input only
    assert created["realm"]

    # No --password and no terminal to prompt on: refuse rather than invent one.
    assert "--password is required" in fails(cli("sip-devices", "create", uid("dev"), "--account", account), 2)

    shown = ok(cli("sip-devices", "get", username))
    assert "password" not in shown and "s3cret" not in shown
    rows = table_rows(ok(cli("sip-devices", "list", "--account", account)))
    assert [row[:3] for row in rows] == [[username, account, "ACTIVE"]]

    updated = ok_json(cli("--json", "sip-devices", "update", username, "--password", "another-pass-1", "--inactive"))
    assert updated["status"] == "STATUS_INACTIVE"

    ok(cli("sip-devices", "delete", username, "--yes"))
    fails(cli("sip-devices", "get", username), 4)


def test_ip_map_create_get_list_update_delete(cli: Run) -> None:
    account = new_provider(cli)
    ident = uid("ip")
    created = ok_json(cli("--json", "ip-maps", "create", ident, "--account", account, "--cidr", "198.51.100.0/24",
                          "--tech-prefix", "1234", "--description", "office"))
    assert (created["name"], created["account"], created["cidr"], created["tech_prefix"], created["description"]) == (
        f"ipMaps/{ident}", f"accounts/{account}", "198.51.100.0/24", "1234", "office")
    assert ok_json(cli("--json", "ip-maps", "get", ident))["cidr"] == "198.51.100.0/24"
    rows = table_rows(ok(cli("ip-maps", "list", "--account", account)))
    assert [row[:4] for row in rows] == [[ident, account, "198.51.100.0/24", "1234"]]
    assert "cidr" in fails(cli("ip-maps", "update", ident, "--cidr", "not-a-network"), 3)

    updated = ok_json(cli("--json", "ip-maps", "update", ident, "--tech-prefix", "", "--cidr", "198.51.100.7"))
    assert updated["tech_prefix"] == "" and updated["cidr"].startswith("198.51.100.7")
    assert updated["description"] == "office"

    ok(cli("ip-maps", "delete", ident, "--yes"))
    fails(cli("ip-maps", "get", ident), 4)


def test_localization_create_get_list_update_delete(cli: Run) -> None:
    ident = uid("loc")
    created = ok_json(cli("--json", "localizations", "create", ident, "--display-name", "Germany",
                          "--caller-id-inbound", "0/49", "--caller-id-outbound", "49/0",
                          "--destination", "00/", "--destination", "0/49",
                          "--termination-caller-id", "*/+", "--termination-destination", r"/^49(.*)$/0049\1/"))
    assert created["destination"] == ["00/", "0/49"]  # order kept: rules apply in sequence
    assert created["termination_destination"] == [r"/^49(.*)$/0049\1/"]
    assert (created["caller_id_inbound"], created["caller_id_outbound"], created["termination_caller_id"]) == (
        ["0/49"], ["49/0"], ["*/+"])

    assert "0/49" in ok(cli("localizations", "get", ident))
    rows = {row[0]: row for row in table_rows(ok(cli("localizations", "list")))}
    assert rows[ident][1] == "Germany"

    updated = ok_json(cli("--json", "localizations", "update", ident, "--destination", "0/33",
                          "--no-caller-id-inbound"))
    assert (updated["destination"], updated["caller_id_inbound"], updated["caller_id_outbound"]) == (
        ["0/33"], [], ["49/0"])
    err = fails(cli("localizations", "update", ident, "--destination", "/([/x/"), 3)
    assert "destination" in err

    ok(cli("localizations", "delete", ident, "--yes"))
    fails(cli("localizations", "get", ident), 4)
