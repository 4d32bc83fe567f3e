"""tollgate-admin run as an operator runs it: a subprocess against the real control server.

The database is shared by the whole session, so every test makes its own unique emails, numbers and
company tags (uuid) and filters on them instead of assuming an empty list.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from admin.accounts import RowCounter
from admin.money import format_amount, format_rate, parse_money
from tests.helpers import Run, clean_env, ok, ok_json, run_cli

VENV_SCRIPT = Path(sys.executable).with_name("tollgate-admin")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cli(control_server, home: Path) -> Run:
    """Address and token from the environment, the way a shell session would set them."""
    env = clean_env(home) | {"TOLLGATE_ADDRESS": control_server.address, "TOLLGATE_TOKEN": control_server.admin_token}
    return lambda *args, stdin="": run_cli(list(args), env, stdin)


@pytest.fixture
def cli_flags(control_server, home: Path) -> Run:
    """Address and token as global flags, nothing in the environment."""
    env = clean_env(home)
    flags = ["--address", control_server.address, "--token", control_server.admin_token]
    return lambda *args, stdin="": run_cli([*flags, *args], env, stdin)


def unique() -> str:
    return uuid.uuid4().hex[:12]


def create_customer(cli: Run, tag: str, *extra: str) -> dict:
    return ok_json(cli("--json", "accounts", "create", "--email", f"c-{unique()}@example.com",
                       "--company", tag, *extra))


# --- create / get -------------------------------------------------------------------------------------


def test_create_customer_with_many_flags_and_get_json(cli: Run) -> None:
    email = f"cust-{unique()}@example.com"
    created = ok_json(cli(
        "accounts", "create", "--json", "--email", email, "--password", "s3cret-pass",
        "--first-name", "Ada", "--last-name", "Lovelace", "--company", "Analytical Ltd",
        "--phone", "+441234567", "--notification-email", f"n-{email}", "--address1", "1 Engine St",
        "--address2", "Floor 2", "--city", "London", "--province", "Greater London", "--zip", "EC1A",
        "--country", "GB", "--timezone", "Europe/London", "--postpaid", "--credit-limit", "12.345",
        "--cli-pool", "2", "--tax-number", "GB123", "--zero-invoice", "--invoice-note", "thanks",
        "--reference", "ref-1", "--billing-day", "15", "--invoice-with-cdr", "csv", "--max-calls", "5",
        "--cps", "3", "--local-calls", "--notifications", "--payment-gateway", "--loss-less-routing",
        "--lc-charge-per-min", "0.015", "--recording", "--expire", "2031-01-02T03:04:05Z",
    ))
    number = created["account_number"]
    assert len(number) == 10 and number.isdigit()

    got = ok_json(cli("accounts", "get", number, "--json"))
    assert got["name"] == f"accounts/{number}"
    assert got["type"] == "CUSTOMER"
    assert got["email"] == email
    assert got["status"] == "ACTIVE"
    assert got["expire_time"] == "2031-01-02T03:04:05Z"
    assert "password" not in got or got["password"] == ""  # input only, never returned
    assert got["profile"] == {
        "first_name": "Ada", "last_name": "Lovelace", "company": "Analytical Ltd", "phone": "+441234567",
        "notification_email": f"n-{email}", "address1": "1 Engine St", "address2": "Floor 2",
        "city": "London", "province": "Greater London", "zip": "EC1A", "country": "GB",
        "timezone": "Europe/London",
    }
    billing = got["billing"]
    # The decimal the operator typed becomes exact micros; proto3 JSON writes int64 as a string.
    assert billing["credit_limit"] == "12345000"
    assert billing["account_type"] == "POSTPAID"
    assert billing["cli_pool"] == "CLI_POOL_CID_MATCH_ELSE_RANDOM_CID"
    assert billing["tax_number"] == "GB123"
    assert billing["generate_zero_invoice"] is True
    assert billing["invoice_note"] == "thanks"
    assert billing["reference"] == "ref-1"
    assert billing["billing_day"] == 15
    assert billing["invoice_with_cdr"] == "INVOICE_WITH_CDR_CSV"
    settings = got["settings"]
    assert settings["max_concurrent_calls"] == 5
    assert settings["cps"] == 3
    assert settings["allow_local_calls"] is True
    assert settings["notifications"] is True
    assert settings["payment_gateway_permission"] is True
    assert settings["allow_loss_less_routing"] is True
    assert settings["lc_charge_per_min"] == "15000"
    assert settings["allow_recording"] is True


def test_create_provider_shows_sip_password_once(cli_flags: Run) -> None:
    number = f"P{unique()}"
    created = cli_flags("accounts", "create", "--provider", "--number", number, "--sip-device",
                        "--email", f"prov-{unique()}@example.com", "--company", "Carrier Inc",
                        "--prepaid", "--inactive", "--max-calls", "100")
    out = ok(created)
    assert "shown only once" in out
    password_line = next(line for line in out.splitlines() if "shown only once" in line)
    assert password_line.rsplit(":", 1)[1].strip()  # a non-empty password follows

    got = ok_json(cli_flags("--json", "accounts", "get", number))
    assert got["account_number"] == number
    assert got["type"] == "PROVIDER"
    assert got["status"] == "INACTIVE"
    assert got["billing"]["account_type"] == "PREPAID"
    assert got["settings"]["max_concurrent_calls"] == 100
    assert got["sip_devices"] == [number]
    assert got.get("sip_device_password", "") == ""  # only ever in the create response


def test_get_human_output_is_key_value_with_decimal_money(cli: Run, company_decimals) -> None:
    company_decimals(2)
    tag = f"kv-{unique()}"
    number = create_customer(cli, tag, "--postpaid", "--credit-limit", "100.5",
                             "--lc-charge-per-min", "0.0090")["account_number"]
    out = ok(cli("accounts", "get", number))
    rows = dict(line.split(None, 1) for line in out.splitlines() if len(line.split(None, 1)) == 2)
    assert rows["account_number"] == number
    assert rows["profile.company"] == tag
    assert rows["billing.credit_limit"] == "100.50"  # an amount: the company's decimals
    assert rows["settings.lc_charge_per_min"] == "0.009000"  # a price: every micro, 0.0090 not 0.009
    company_decimals(4)
    out = ok(cli("accounts", "get", number))
    assert "100.5000" in out and "0.009000" in out
    assert rows["billing.account_type"] == "POSTPAID"


# --- list ------------------------------------------------------------------------------------------------


def test_list_table_contains_both_and_filter_narrows(cli: Run) -> None:
    tag = f"list-{unique()}"
    customer = create_customer(cli, tag)["account_number"]
    provider = ok_json(cli("--json", "accounts", "create", "--provider", "--email",
                           f"p-{unique()}@example.com", "--company", tag))["account_number"]

    table = ok(cli("accounts", "list"))
    header = table.splitlines()[0]
    for column in ("number", "type", "name", "company", "email", "account type", "status", "balance"):
        assert column in header
    assert customer in table and provider in table

    narrowed = ok(cli("accounts", "list", "--filter", f'company = "{tag}" AND type = PROVIDER'))
    assert provider in narrowed and customer not in narrowed

    listed = ok_json(cli("accounts", "list", "--json", "--filter", f"company = {tag}"))
    assert sorted(a["account_number"] for a in listed) == sorted([customer, provider])


def test_list_follows_page_tokens_and_limit(cli: Run) -> None:
    tag = f"page-{unique()}"
    numbers = {create_customer(cli, tag)["account_number"] for _ in range(5)}
    listed = ok_json(cli("accounts", "list", "--json", "--page-size", "2", "--filter", f"company = {tag}"))
    assert {a["account_number"] for a in listed} == numbers
    limited = ok_json(cli("accounts", "list", "--json", "--page-size", "2", "--limit", "3",
                          "--filter", f"company = {tag}"))
    assert len(limited) == 3


# --- update ----------------------------------------------------------------------------------------------


def test_update_changes_only_the_given_fields(cli: Run) -> None:
    tag = f"upd-{unique()}"
    before = create_customer(cli, tag, "--city", "Berlin", "--phone", "+4930123", "--cps", "1", "--recording")
    number = before["account_number"]

    after = ok_json(cli("--json", "accounts", "update", number, "--city", "Paris", "--cps", "7",
                        "--no-recording", "--postpaid", "--credit-limit", "12.345"))
    assert after["profile"]["city"] == "Paris"
    assert after["settings"]["cps"] == 7
    assert after["settings"]["allow_recording"] is False
    assert after["billing"]["credit_limit"] == "12345000"

    got = ok_json(cli("--json", "accounts", "get", number))
    assert got["profile"]["city"] == "Paris"
    # Untouched fields keep their values: the mask named only the flags given.
    assert got["profile"]["phone"] == "+4930123"
    assert got["profile"]["company"] == tag
    assert got["email"] == before["email"]
    assert got["billing"]["billing_day"] == before["billing"]["billing_day"]


def test_update_clears_expiry_and_sets_status(cli: Run) -> None:
    number = create_customer(cli, f"exp-{unique()}", "--expire", "2032-06-01T00:00:00+02:00")["account_number"]
    got = ok_json(cli("--json", "accounts", "get", number))
    assert got["expire_time"] == "2032-05-31T22:00:00Z"
    ok(cli("accounts", "update", number, "--expire", "never", "--inactive"))
    got = ok_json(cli("--json", "accounts", "get", number))
    assert "expire_time" not in got
    assert got["status"] == "INACTIVE"


def test_update_without_flags_is_a_usage_error(cli: Run) -> None:
    result = cli("accounts", "update", "1234567890")
    assert result.returncode == 2
    assert "nothing to update" in result.stderr


# --- export ----------------------------------------------------------------------------------------------


def test_export_to_file_is_csv_with_header_and_rows(cli: Run, tmp_path: Path) -> None:
    tag = f"exp-{unique()}"
    numbers = {create_customer(cli, tag)["account_number"] for _ in range(3)}
    target = tmp_path / "accounts.csv"
    ok(cli("accounts", "export", "--filter", f"company = {tag}", "-o", str(target)))
    assert not target.with_name("accounts.csv.part").exists()

    rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
    header, body = rows[0], rows[1:]
    assert "account_number" in header
    column = header.index("account_number")
    assert {row[column] for row in body} == numbers

    # The same bytes on stdout when no file is given.
    stdout = ok(cli("accounts", "export", "--filter", f"company = {tag}"))
    assert stdout.replace("\r\n", "\n") == target.read_text(encoding="utf-8").replace("\r\n", "\n")


@pytest.mark.parametrize("command", [["accounts", "export"], ["cdrs", "export"], ["invoices", "cdrs"]])
def test_export_help_explains_the_apostrophe_before_formula_like_cells(home: Path, command: list[str]) -> None:
    text = " ".join(ok(run_cli([*command, "--help"], clean_env(home))).split())
    assert "leading apostrophe (')" in text and "+4930" in text and "formula" in text


# --- delete ----------------------------------------------------------------------------------------------


def test_delete_yes_then_get_shows_delete_time_and_list_omits_it(cli: Run) -> None:
    tag = f"del-{unique()}"
    gone = create_customer(cli, tag)["account_number"]
    kept = create_customer(cli, tag)["account_number"]

    out = ok(cli("accounts", "delete", gone, "--yes"))
    assert f"accounts/{gone}" in out

    got = ok_json(cli("--json", "accounts", "get", gone))
    assert got.get("delete_time")

    listed = ok_json(cli("--json", "accounts", "list", "--filter", f"company = {tag}"))
    assert [a["account_number"] for a in listed] == [kept]
    with_deleted = ok_json(cli("--json", "accounts", "list", "--show-deleted", "--filter", f"company = {tag}"))
    assert {a["account_number"] for a in with_deleted} == {gone, kept}


def run_on_a_terminal(args: list[str], env: dict[str, str], typed: str) -> subprocess.CompletedProcess:
    """The CLI with a pseudo-terminal as stdin, as a person at a shell runs it, answering `typed`."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-m", "admin", *args], env=env, stdin=follower,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.write(leader, typed.encode())
        stdout, stderr = process.communicate(timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("stdin", ["", "n\n", "y\n"])
def test_delete_without_a_terminal_needs_yes_whatever_stdin_says(cli: Run, stdin: str) -> None:
    number = create_customer(cli, f"delp-{unique()}")["account_number"]
    refused = cli("accounts", "delete", number, stdin=stdin)
    assert refused.returncode == 2, refused.stderr
    assert "stdin is not a terminal" in refused.stderr and "pass --yes" in refused.stderr
    assert "delete_time" not in ok_json(cli("--json", "accounts", "get", number))


def test_delete_at_a_terminal_asks_and_no_exits_non_zero(control_server, home: Path, cli: Run) -> None:
    env = clean_env(home) | {"TOLLGATE_ADDRESS": control_server.address, "TOLLGATE_TOKEN": control_server.admin_token}
    number = create_customer(cli, f"delt-{unique()}")["account_number"]
    declined = run_on_a_terminal(["accounts", "delete", number], env, "n\n")
    assert declined.returncode == 1, declined.stderr
    assert f"Delete account: accounts/{number}? [y/N]" in declined.stderr and "aborted" in declined.stderr
    assert "delete_time" not in ok_json(cli("--json", "accounts", "get", number))
    accepted = run_on_a_terminal(["accounts", "delete", number], env, "y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert ok_json(cli("--json", "accounts", "get", number)).get("delete_time")


@pytest.mark.parametrize("argv", [
    ["rate-groups", "delete", "some-group"], ["origination-rates", "delete", "some-group", "49"],
    ["trunks", "delete", "some-trunk"], ["termination-rates", "delete", "some-trunk", "49"],
    ["dids", "delete", "4930123"], ["caller-ids", "delete", "ACME01", "4930123"],
    ["sip-devices", "delete", "someone"], ["ip-maps", "delete", "some-map"], ["localizations", "delete", "some-loc"],
    ["operators", "delete", "someone"], ["operators", "revoke-token", "someone", "tok1"],
])
def test_every_destructive_command_needs_yes_without_a_terminal(cli: Run, argv: list[str]) -> None:
    refused = cli(*argv, stdin="y\n")
    assert refused.returncode == 2, refused.stderr
    assert "refusing to" in refused.stderr and "pass --yes" in refused.stderr
    assert "--yes" in ok(cli(*argv, "--help"))  # and its help says so


def test_delete_many_is_one_call_and_json_lists_them(cli: Run) -> None:
    tag = f"delm-{unique()}"
    numbers = [create_customer(cli, tag)["account_number"] for _ in range(2)]
    deleted = ok_json(cli("--json", "accounts", "delete", *numbers, "--yes"))
    assert sorted(a["account_number"] for a in deleted) == sorted(numbers)
    assert all(a.get("delete_time") for a in deleted)


def test_delete_of_a_missing_account_deletes_nothing(cli: Run) -> None:
    tag = f"dela-{unique()}"
    number = create_customer(cli, tag)["account_number"]
    missing = f"NoPe{unique()}"
    result = cli("accounts", "delete", number, missing, "--yes")
    assert result.returncode == 4, result.stderr
    # The number as typed (not lower-cased), in a sentence.
    assert result.stderr.strip() == f"error: NOT_FOUND: account {missing} not found; nothing was deleted"
    two = cli("accounts", "delete", missing, "GONE1234", "--yes")
    assert f"accounts {missing}, GONE1234 not found; nothing was deleted" in two.stderr
    # All or none: the existing one is still alive.
    assert "delete_time" not in ok_json(cli("--json", "accounts", "get", number))


# --- errors ----------------------------------------------------------------------------------------------


def test_validation_error_exits_3_and_names_the_field(cli: Run) -> None:
    result = cli("accounts", "create", "--email", "not-an-email")
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("error: INVALID_ARGUMENT: ")
    assert "email" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_not_found_exits_4(cli: Run) -> None:
    result = cli("accounts", "get", f"X{unique()}")
    assert result.returncode == 4
    assert "error: NOT_FOUND" in result.stderr


def test_duplicate_email_exits_5(cli: Run) -> None:
    email = f"dup-{unique()}@example.com"
    ok(cli("accounts", "create", "--email", email))
    result = cli("accounts", "create", "--email", email)
    assert result.returncode == 5, result.stderr
    assert "error: ALREADY_EXISTS" in result.stderr


def test_wrong_token_exits_6(control_server, home: Path) -> None:
    env = clean_env(home) | {"TOLLGATE_ADDRESS": control_server.address, "TOLLGATE_TOKEN": "wrong-token"}
    result = run_cli(["accounts", "list"], env)
    assert result.returncode == 6
    assert "UNAUTHENTICATED" in result.stderr or "PERMISSION_DENIED" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_server_exits_7(home: Path) -> None:
    result = run_cli(["--address", "127.0.0.1:1", "--token", "x", "--timeout", "5", "accounts", "list"],
                     clean_env(home))
    assert result.returncode == 7
    assert result.stderr.startswith("error: UNAVAILABLE")


@pytest.mark.parametrize(("argv", "usage", "unknown"), [
    (["accounts", "list", "--filtr", "x"], "usage: tollgate-admin accounts list ", "--filtr x"),
    (["trunks", "get", "t1", "--gatway", "x"], "usage: tollgate-admin trunks get ", "--gatway x"),
    (["accounts", "--bogus", "list"], "usage: tollgate-admin accounts ", "--bogus"),
    (["--bogus", "accounts", "list"], "usage: tollgate-admin [-h]", "--bogus"),
])
def test_a_wrong_flag_prints_the_usage_of_the_command_it_was_given_to(home: Path, argv: list[str], usage: str,
                                                                       unknown: str) -> None:
    result = run_cli(argv, clean_env(home))
    assert result.returncode == 2
    assert result.stderr.startswith(usage), result.stderr
    assert f"error: unrecognized arguments: {unknown}" in result.stderr


def test_too_many_decimals_is_a_usage_error(cli: Run) -> None:
    result = cli("accounts", "create", "--email", f"m-{unique()}@example.com", "--credit-limit", "1.1234567")
    assert result.returncode == 2
    assert "6 decimal places" in result.stderr


# --- where the address and token come from ---------------------------------------------------------------


def test_config_file_supplies_address_and_token(control_server, home: Path, tmp_path: Path) -> None:
    config = tmp_path / "admin.toml"
    config.write_text(f'address = "{control_server.address}"\ntoken = "{control_server.admin_token}"\n')
    env = clean_env(home)
    number = ok_json(run_cli(["--config", str(config), "--json", "accounts", "create", "--email",
                              f"cfg-{unique()}@example.com"], env))["account_number"]
    # The same file found through the environment variable, and through the default path under $HOME.
    ok(run_cli(["accounts", "get", number], env | {"TOLLGATE_ADMIN_CONFIG": str(config)}))
    default = home / ".config" / "tollgate" / "admin.toml"
    default.parent.mkdir(parents=True)
    default.write_text(config.read_text())
    ok(run_cli(["accounts", "get", number], env))


def test_flag_beats_environment_beats_config(control_server, home: Path, tmp_path: Path) -> None:
    config = tmp_path / "admin.toml"
    config.write_text(f'address = "{control_server.address}"\ntoken = "from-config-and-wrong"\n')
    env = clean_env(home) | {"TOLLGATE_ADMIN_CONFIG": str(config)}
    assert run_cli(["accounts", "list", "--limit", "1"], env).returncode == 6
    env_token = env | {"TOLLGATE_TOKEN": control_server.admin_token}
    ok(run_cli(["accounts", "list", "--limit", "1"], env_token))
    wrong_env = env | {"TOLLGATE_TOKEN": "from-env-and-wrong"}
    ok(run_cli(["--token", control_server.admin_token, "accounts", "list", "--limit", "1"], wrong_env))


def test_a_missing_token_says_where_tokens_come_from(control_server, home: Path) -> None:
    result = run_cli(["--address", control_server.address, "accounts", "list"], clean_env(home))
    assert result.returncode == 2, result.stderr
    for source in ("--token", "TOLLGATE_TOKEN", "~/.config/tollgate/admin.toml", "TOLLGATE_ADMIN_CONFIG", "login"):
        assert source in result.stderr


def test_missing_named_config_file_is_a_usage_error(home: Path, tmp_path: Path) -> None:
    result = run_cli(["--config", str(tmp_path / "nope.toml"), "accounts", "list"], clean_env(home))
    assert result.returncode == 2
    assert "config file not found" in result.stderr


# --- company and login -----------------------------------------------------------------------------------


def test_company_get_and_update_one_field(cli_flags: Run) -> None:
    before = ok_json(cli_flags("--json", "company", "get"))
    assert before["currency"]
    new_name = f"co-{unique()}"
    try:
        after = ok_json(cli_flags("--json", "company", "update", "--name", new_name))
        assert after["name"] == new_name
        assert {k: v for k, v in after.items() if k != "name"} == {k: v for k, v in before.items() if k != "name"}
    finally:
        ok(cli_flags("company", "update", "--name", before["name"]))
    assert "currency" in ok(cli_flags("company", "get"))


def test_login_prints_a_token_that_works_for_the_account(cli: Run, control_server, home: Path) -> None:
    email = f"login-{unique()}@example.com"
    number = ok_json(cli("--json", "accounts", "create", "--email", email, "--password", "portal-pass-1"))[
        "account_number"
    ]
    token = ok(cli("login", email, "--password", "portal-pass-1")).strip()
    assert token and "\n" not in token

    full = ok_json(cli("--json", "login", number, "--password", "portal-pass-1"))
    assert full["account"] == f"accounts/{number}"
    assert full["token"]

    env = clean_env(home) | {"TOLLGATE_ADDRESS": control_server.address}
    ok(run_cli(["--token", token, "accounts", "get", number], env))

    bad = cli("login", email, "--password", "wrong-password")
    assert bad.returncode == 6, bad.stderr
    assert "UNAUTHENTICATED" in bad.stderr


def test_login_without_a_terminal_says_how_to_give_the_password(cli: Run) -> None:
    email = f"login-nt-{unique()}@example.com"
    ok(cli("accounts", "create", "--email", email, "--password", "portal-pass-1"))
    for stdin in ("", "portal-pass-1\n"):  # getpass would read a pipe, and crash on an empty one
        refused = cli("login", email, stdin=stdin)
        assert refused.returncode == 2, refused.stderr
        assert "Traceback" not in refused.stderr and "EOFError" not in refused.stderr
        assert "no terminal to ask for the password on: pass --password PASSWORD, or --password-stdin" \
            in refused.stderr
    assert ok(cli("login", email, "--password-stdin", stdin="portal-pass-1\n")).startswith("tgs_")
    empty = cli("login", email, "--password-stdin", stdin="")
    assert empty.returncode == 2 and "stdin held no password" in empty.stderr
    changed = cli("password", stdin="")
    assert changed.returncode == 2 and "pass --current and --new" in changed.stderr


def test_console_script_is_installed(control_server, home: Path) -> None:
    env = clean_env(home)
    result = subprocess.run([str(VENV_SCRIPT), "--address", control_server.address, "--token",
                             control_server.admin_token, "company", "get", "--json"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(ok(result))["currency"]


# --- pure helpers, no server -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "micros"), [
    ("12.345", 12_345_000), ("100.50", 100_500_000), ("0", 0), ("0.000001", 1), ("-2", -2_000_000),
    ("1.0000000", 1_000_000),
])
def test_parse_money_is_exact(text: str, micros: int) -> None:
    assert parse_money(text) == micros


@pytest.mark.parametrize("text", ["1.1234567", "abc", "NaN", "Infinity", "", "9223372036854.775808"])
def test_parse_money_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_money(text)


def test_amounts_print_with_the_decimals_given_and_prices_with_six() -> None:
    assert [format_amount(m, 4) for m in (4_038, -210_000, 0, 12_345_678)] == ["0.0040", "-0.2100", "0.0000", "12.3457"]
    assert [format_amount(m, 2) for m in (100_500_000, 5_000)] == ["100.50", "0.00"]  # half-even, as the exports
    assert format_amount(7_000_000, 0) == "7"
    assert [format_rate(m) for m in (9_000, 12_500, 1)] == ["0.009000", "0.012500", "0.000001"]


def test_row_counter_ignores_newlines_inside_quotes_across_chunks() -> None:
    counter = RowCounter()
    for chunk in (b'h1,h2\n1,"a\n', b'b"\n2,"x""', b'y"\n'):
        counter.feed(chunk)
    assert counter.rows == 2


def test_pay_and_charge_move_the_balance_and_a_retry_pays_once(cli: Run) -> None:
    number = ok_json(cli("accounts", "create", "--json", "--email", f"pay-{unique()}@example.com"))["account_number"]
    paid = ok(cli("accounts", "pay", number, "25.50", "--note", "bank ref 4711", "--request-id", "r-1"))
    assert "25.50" in paid and "bank ref 4711" in paid
    again = ok_json(cli("accounts", "pay", number, "25.50", "--request-id", "r-1", "--json"))
    assert again["balance_after"] == str(25_500_000)  # proto3 JSON prints int64 as a string
    charged = ok_json(cli("accounts", "pay", number, "0.50", "--charge", "--json"))
    assert (charged["amount"], charged["balance_after"]) == (str(-500_000), str(25_000_000))
    assert "25.00" in ok(cli("accounts", "get", number))
    for amount in ("0", "-5", "-0.01"):  # the sign is --charge's to give, not AMOUNT's
        for charge in ((), ("--charge",)):
            refused = cli("accounts", "pay", number, amount, *charge)
            assert refused.returncode == 2 and "must be more than 0" in refused.stderr, refused.stderr
    assert "25.00" in ok(cli("accounts", "get", number))  # nothing moved
    charged = ok(cli("accounts", "pay", number, "1", "--charge")).splitlines()[0]
    assert charged.startswith("charge of 1.00") and charged.endswith(f"taken from accounts/{number}")
    paid = ok(cli("accounts", "pay", number, "2")).splitlines()[0]
    assert paid.startswith("payment of 2.00") and paid.endswith(f"added to accounts/{number}")


def test_account_references_take_a_bare_id_or_a_resource_name(cli: Run) -> None:
    group = f"g{unique()}"
    ok(cli("rate-groups", "create", group))
    number = ok_json(cli("accounts", "create", "--json", "--email", f"ref-{unique()}@example.com"))["account_number"]
    bare = ok_json(cli("accounts", "update", number, "--rate-group", group, "--json"))
    assert bare["billing"]["rate_group"] == f"rateGroups/{group}"
    named = ok_json(cli("accounts", "update", number, "--non-cli-rate-group", f"rateGroups/{group}", "--json"))
    assert named["billing"]["non_cli_rate_group"] == f"rateGroups/{group}"
    cleared = ok_json(cli("accounts", "update", number, "--rate-group", "", "--json"))
    assert cleared["billing"]["rate_group"] == ""
