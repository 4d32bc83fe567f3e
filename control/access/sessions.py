"""Account sessions (SPEC §11): Login, Logout and ChangePassword.

- Login takes an email or an account number. Wrong passwords, unknown logins and disabled accounts answer
  alike and cost alike: one lookup, one Argon2 check (against a dummy hash when there is no account), one
  throttle write. Throttled per login and per source (control/access/throttle.py).
- A password change with an account token needs the current password (a stolen session must not lock
  its owner out) and ends every other session of the account; an operator setting a password through
  UpdateAccount ends them all (control/accounts/accounts.py).
- Logout ends the session (or revokes the operator token) the call carries.
"""

from __future__ import annotations

from datetime import datetime

from control.access import audit, throttle
from control.access.auth import hash_password, issue_session, revoke_sessions, verify_password
from control.access.principals import Principal
from control.api import calls, validation
from control.api.errors import failed_precondition, invalid, unauthenticated

MAX_LOGIN_LENGTH = 320
_REFUSED = "wrong login or password, or the account is disabled"
_FIND = (
    "SELECT id, account_number, password_hash FROM accounts WHERE deleted_at IS NULL AND status = 'ACTIVE'"
    " AND (expire_at IS NULL OR expire_at > now()) AND (lower(email) = %(l)s OR lower(account_number) = %(l)s)"
)


def login(db, limiter: throttle.LoginThrottle, login_name: str, password: str,
          ttl_seconds: int) -> tuple[str, str, datetime]:
    """(account number, token, expiry) for good credentials of a live account."""
    if not login_name.strip():
        raise invalid("login", "give an email or an account number")
    if len(login_name) > MAX_LOGIN_LENGTH:
        raise invalid("login", f"must be at most {MAX_LOGIN_LENGTH} characters")
    if len(password) > validation.MAX_PASSWORD_LENGTH:
        raise invalid("password", f"must be at most {validation.MAX_PASSWORD_LENGTH} characters")
    keys = {"login": throttle.login_key(login_name), "source": calls.current().source_address}
    limiter.refuse_if_known(keys)  # a flood against a lock this service saw costs no database round trip
    with db.transaction() as conn:
        limiter.check(conn, keys)
        row = conn.execute(_FIND, {"l": keys["login"]}).fetchone()
    # The Argon2 check holds no database connection: it is the slow part, and it waits its turn.
    good = verify_password(row["password_hash"] if row else None, password)
    with db.transaction() as conn:
        if not good:
            limiter.failed(conn, keys)
        else:
            limiter.succeeded(conn, keys["login"])
            token, expires = issue_session(conn, row["id"], ttl_seconds)
    if not good:
        raise unauthenticated(_REFUSED)
    return row["account_number"], token, expires


def logout(db, principal: Principal) -> None:
    if principal.token_digest is None:
        raise failed_precondition("a static admin token cannot log out: remove it from admin_tokens instead")
    with db.transaction() as conn:
        if principal.kind == "account":
            conn.execute("DELETE FROM api_tokens WHERE token_sha256 = %s", (principal.token_digest,))
            resource = f"accounts/{principal.name}"
        else:
            row = conn.execute("UPDATE operator_tokens SET revoked_at = now() WHERE token_sha256 = %s"
                               " RETURNING id", (principal.token_digest,)).fetchone()
            resource = f"operators/{principal.name}/tokens/{row['id'] if row else ''}"
        audit.record(conn, resource, {"session": {"old": "active", "new": "ended"}})


def change_password(db, limiter: throttle.LoginThrottle, principal: Principal, current: str, new: str) -> int:
    """Set the account's password; the number of its other sessions ended."""
    if not current:
        raise invalid("current_password", "is required")
    if len(current) > validation.MAX_PASSWORD_LENGTH:
        raise invalid("current_password", f"must be at most {validation.MAX_PASSWORD_LENGTH} characters")
    validation.password("new_password", new)
    # The same throttle as Login, on the account's number: a stolen session cannot guess the password here.
    keys = {"login": throttle.login_key(principal.name), "source": calls.current().source_address}
    with db.transaction() as conn:
        limiter.check(conn, keys)
        row = conn.execute("SELECT password_hash FROM accounts WHERE id = %s", (principal.account_id,)).fetchone()
    if not verify_password(row["password_hash"] if row else None, current):
        with db.transaction() as conn:
            limiter.failed(conn, keys)
        raise invalid("current_password", "is not the account's password")
    new_hash = hash_password(new)
    with db.transaction() as conn:
        conn.execute("UPDATE accounts SET password_hash = %s, updated_at = now() WHERE id = %s",
                     (new_hash, principal.account_id))
        limiter.succeeded(conn, keys["login"])
        ended = revoke_sessions(conn, principal.account_id, keep=principal.token_digest)
        audit.record(conn, f"accounts/{principal.name}", {"password": {"old": audit.MASK, "new": audit.MASK},
                                                          "sessions_ended": {"old": None, "new": ended}})
    return ended
