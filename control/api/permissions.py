"""Which principals may call which RPC: the one table the auth interceptor checks before any servicer runs.

Operator roles (SPEC §11): `admin` everything; `config` accounts, the company profile, rate groups, trunks and
the directory; `billing` payments, invoices, receipts and CDRs, and reads accounts; `readonly` every Get, List and
Export and the audit log. `account` is an account's own token: its servicers narrow what it sees to its own
data. An RPC missing from the table is refused to everyone but the admin role (tests/test_permissions.py
checks that the table names every RPC the server has).
"""

from __future__ import annotations

from control.access.principals import ACCOUNT

PUBLIC_METHOD_PREFIXES = (
    "/tollgate.v1.AuthService/Login",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
)

_ALL_OPERATORS = frozenset({"admin", "config", "billing", "readonly"})
_READ = _ALL_OPERATORS
_CONFIG = frozenset({"admin", "config"})
_BILLING = frozenset({"admin", "billing"})
_ADMIN = frozenset({"admin"})
_ACCOUNT = frozenset({ACCOUNT})
# Who may read accounts and the company: every operator role reads them (billing needs them too).
_ACCOUNT_READERS = _READ | _ACCOUNT


def _crud(service: str, *resources: str) -> dict[str, frozenset[str]]:
    """Get/List for every operator role, Create/Update/Delete/Import for admin and config."""
    rules: dict[str, frozenset[str]] = {}
    for resource in resources:
        rules[f"{service}/Get{resource}"] = _READ - {"billing"}
        rules[f"{service}/List{resource}s"] = _READ - {"billing"}
        for verb in ("Create", "Update", "Delete"):
            rules[f"{service}/{verb}{resource}"] = _CONFIG
    return rules


ALLOWED: dict[str, frozenset[str]] = {
    "AccountService/CreateAccount": _CONFIG,
    "AccountService/GetAccount": _ACCOUNT_READERS,
    "AccountService/UpdateAccount": _CONFIG | _ACCOUNT,  # an account: its profile only (control/accounts/accounts.py)
    "AccountService/ListAccounts": _ACCOUNT_READERS,
    "AccountService/DeleteAccounts": _CONFIG,
    "AccountService/ExportAccountsCsv": _ACCOUNT_READERS,
    "AccountService/PostPayment": _BILLING,
    "CompanyService/GetCompany": _ACCOUNT_READERS,
    "CompanyService/UpdateCompany": _CONFIG,
    "AuthService/Logout": _ALL_OPERATORS | _ACCOUNT,
    "AuthService/ChangePassword": _ACCOUNT,
    **_crud("RateGroupService", "RateGroup", "OriginationRate"),
    "RateGroupService/ImportOriginationRates": _CONFIG,
    **_crud("TrunkService", "Trunk", "TerminationRate"),
    "TrunkService/ImportTerminationRates": _CONFIG,
    **_crud("DirectoryService", "Did", "CallerId", "SipDevice", "IpMap", "Localization"),
    "CdrService/ListCdrs": (_READ - {"config"}) | _ACCOUNT,
    "CdrService/ExportCdrsCsv": (_READ - {"config"}) | _ACCOUNT,
    "InvoiceService/GenerateInvoices": _BILLING,
    "InvoiceService/GetInvoice": (_READ - {"config"}) | _ACCOUNT,
    "InvoiceService/ListInvoices": (_READ - {"config"}) | _ACCOUNT,
    "InvoiceService/ExportInvoiceCdrsCsv": (_READ - {"config"}) | _ACCOUNT,
    "InvoiceService/GetInvoicePdf": (_READ - {"config"}) | _ACCOUNT,
    "ReceiptService/GetReceipt": (_READ - {"config"}) | _ACCOUNT,
    "ReceiptService/ListReceipts": (_READ - {"config"}) | _ACCOUNT,
    "ReceiptService/GetReceiptPdf": (_READ - {"config"}) | _ACCOUNT,
    "NotificationService/ListNotifications": _READ - {"config"},
    "OperatorService/CreateOperator": _ADMIN,
    "OperatorService/GetOperator": _ADMIN,
    "OperatorService/ListOperators": _ADMIN,
    "OperatorService/UpdateOperator": _ADMIN,
    "OperatorService/DeleteOperator": _ADMIN,
    "OperatorService/CreateOperatorToken": _ADMIN,
    "OperatorService/ListOperatorTokens": _ADMIN,
    "OperatorService/RevokeOperatorToken": _ADMIN,
    "OperatorService/ListLoginLocks": _ALL_OPERATORS,
    "OperatorService/ClearLoginLock": _ADMIN,
    "AuditService/ListAuditEvents": frozenset({"admin", "readonly"}),
    # Who may read the configuration may see how it routes a call; an account, its own calls only.
    "RouteService/SimulateCall": (_READ - {"billing"}) | _ACCOUNT,
}
# CallerIds have no Update RPC; the rule is harmless but keeps the table honest about what exists.
del ALLOWED["DirectoryService/UpdateCallerId"]


def is_public(method: str) -> bool:
    return method.startswith(PUBLIC_METHOD_PREFIXES)


def allows(method: str, role: str) -> bool:
    """Whether `role` may call `method` ("/tollgate.v1.TrunkService/GetTrunk"); unknown RPCs: admin only."""
    service_method = method.rsplit(".", 1)[-1]  # "TrunkService/GetTrunk"
    allowed = ALLOWED.get(service_method)
    if allowed is None:
        return role == "admin"
    return role in allowed
