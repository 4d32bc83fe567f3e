"""tollgate-admin's operators, logins, audit, password and logout commands, run as an operator runs them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.helpers import Run, clean_env, ok, ok_json, run_cli, unique_email

PASSWORD = "cli-security-pass"


@pytest.fixture
def cli(control_server, tmp_path: Path) -> Run:
    env = clean_env(tmp_path) | {"TOLLGATE_ADDRESS": control_server.address,
                                 "TOLLGATE_TOKEN": control_server.admin_token}
    return lambda *args, stdin="", token=None: run_cli(
        list(args), env | ({"TOLLGATE_TOKEN": token} if token else {}), stdin)


def test_operators_from_creation_to_revocation(cli: Run):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    token = ok(cli("operators", "create", name, "--role", "readonly", "--description", "night shift")).strip()
    assert token.startswith("tgo_") and "\n" not in token
    assert ok(cli("accounts", "list", "--limit", "1", token=token))  # a readonly operator reads
    denied = cli("company", "update", "--decimals", "2", token=token)
    assert denied.returncode == 6 and "PERMISSION_DENIED" in denied.stderr
    listed = ok(cli("operators", "list"))
    assert name in listed and "readonly" in listed and "night shift" in listed
    ok(cli("operators", "update", name, "--role", "config"))
    assert ok_json(cli("--json", "operators", "get", name))["role"] == "OPERATOR_ROLE_CONFIG"
    second = ok_json(cli("--json", "operators", "token", name, "--ttl-days", "1", "--description", "laptop"))
    assert second["token"]["token"].startswith("tgo_")
    tokens = ok_json(cli("--json", "operators", "tokens", name))
    assert len(tokens) == 2 and all(t["token"] == "" for t in tokens)  # secrets are never shown again
    first_id = tokens[0]["name"].rsplit("/", 1)[1]
    ok(cli("operators", "revoke-token", name, first_id, "--yes"))
    assert cli("company", "get", token=token).returncode == 6
    assert ok(cli("company", "get", token=second["token"]["token"]))
    ok(cli("operators", "delete", name, "--yes"))
    assert cli("company", "get", token=second["token"]["token"]).returncode == 6
    assert name not in ok(cli("operators", "list")) and name in ok(cli("operators", "list", "--show-deleted"))


def test_audit_list_shows_who_changed_what(cli: Run):
    email = unique_email("cli-audit")
    number = ok_json(cli("--json", "accounts", "create", "--email", email))["account_number"]
    ok(cli("accounts", "update", number, "--city", "Porto"))
    table = ok(cli("audit", "list", "--resource", f"accounts/{number}"))
    lines = table.splitlines()
    assert "principal" in lines[0] and len(lines) == 4  # header, rule, two events, newest first
    assert "UpdateAccount" in lines[2] and "profile.city" in lines[2] and "Porto" in lines[2]
    assert "CreateAccount" in lines[3] and "operator:break-glass" in lines[3]
    events = ok_json(cli("--json", "audit", "list", "--filter", f"resource = accounts/{number} AND rpc : Update"))
    assert [e["changes"] for e in events] == [{"profile.city": {"old": "", "new": "Porto"}}]
    assert len(ok_json(cli("--json", "audit", "list", "--limit", "1"))) == 1


def test_password_logout_and_login_locks(cli: Run):
    email = unique_email("cli-session")
    ok(cli("accounts", "create", "--email", email, "--password", PASSWORD))
    token = ok(cli("login", email, "--password", PASSWORD)).strip()
    other = ok(cli("login", email, "--password", PASSWORD)).strip()
    wrong = cli("password", "--current", "nope-nope", "--new", "new-password-1", token=token)
    assert wrong.returncode == 3 and "current_password" in wrong.stderr
    assert "1 other session(s) ended" in ok(cli("password", "--current", PASSWORD, "--new", "new-password-1",
                                                token=token))
    assert cli("company", "get", token=other).returncode == 6
    ok(cli("logout", token=token))
    assert cli("company", "get", token=token).returncode == 6

    for _ in range(6):
        cli("login", email, "--password", "wrong-wrong")
    locked = cli("login", email, "--password", "new-password-1")
    assert locked.returncode == 1 and "RESOURCE_EXHAUSTED" in locked.stderr
    assert email.lower() in ok(cli("logins", "locks", "--locked"))
    ok(cli("logins", "unlock", email))
    assert ok(cli("login", email, "--password", "new-password-1")).startswith("tgs_")
