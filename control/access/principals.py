"""Who calls: an operator with a role, or one account. Set on the Call by the auth interceptor."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("admin", "config", "billing", "readonly")
ACCOUNT = "account"
BREAK_GLASS = "break-glass"  # the operator name of a static admin token from control.toml


@dataclass(frozen=True)
class Principal:
    kind: str  # "operator" | "account" | "system"
    name: str  # operator id, BREAK_GLASS, account number, or the system part ("ledger")
    role: str  # one of ROLES for operators; "account"; "system"
    account_id: int | None = None  # accounts: the database id
    token_digest: bytes | None = None  # the session or operator token of this call (None for static tokens)

    @property
    def is_operator(self) -> bool:
        """Operators see every account's data (their role limits which RPCs); accounts see only their own."""
        return self.kind != "account"

    @property
    def account_number(self) -> str | None:
        return self.name if self.kind == "account" else None

    @property
    def label(self) -> str:
        """How the audit log and page-token bindings name this principal: "operator:alice"."""
        return f"{self.kind}:{self.name}"


def operator(name: str, role: str, token_digest: bytes | None = None) -> Principal:
    return Principal("operator", name, role, token_digest=token_digest)


def account(number: str, account_id: int, token_digest: bytes) -> Principal:
    return Principal("account", number, ACCOUNT, account_id=account_id, token_digest=token_digest)


def system(part: str) -> Principal:
    return Principal("system", part, "system")
