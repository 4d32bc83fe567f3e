"""The one table that maps Account API fields to database columns (conversions: control/api/fields.py).

Create, update, get, list and export all go through FIELDS, so adding a field is one line here plus
its column in a migration.
"""

from __future__ import annotations

from control.api.fields import MAX_MONEY, Field
from control.api.fields import enum as _enum
from tollgate.v1 import account_pb2

# Mutable fields (account_number, type and password are handled by their own rules).
FIELDS: tuple[Field, ...] = (
    Field("pin", "pin", "str", max_len=12),
    Field("email", "email", "str"),
    Field("settings.max_concurrent_calls", "max_concurrent_calls", "int"),
    Field("settings.cps", "cps", "int"),
    Field("settings.localization", "localization_id", "ref", collection="localizations"),
    Field("settings.allow_local_calls", "allow_local_calls", "bool"),
    Field("settings.notifications", "notifications", "bool"),
    Field("settings.payment_gateway_permission", "payment_gateway_permission", "bool"),
    Field("settings.allow_loss_less_routing", "allow_loss_less_routing", "bool"),
    Field("settings.lc_charge_per_min", "lc_charge_per_min", "int", max_value=MAX_MONEY),
    Field("settings.allow_recording", "allow_recording", "bool"),
    Field("settings.default_caller_id", "default_caller_id", "str", max_len=18),
    Field("profile.first_name", "first_name", "str"),
    Field("profile.last_name", "last_name", "str"),
    Field("profile.company", "company", "str"),
    Field("profile.phone", "phone", "str", max_len=40),
    Field("profile.notification_email", "notification_email", "str"),
    Field("profile.address1", "address1", "str"),
    Field("profile.address2", "address2", "str"),
    Field("profile.city", "city", "str"),
    Field("profile.province", "province", "str"),
    Field("profile.zip", "zip", "str", max_len=20),
    Field("profile.country", "country", "str", max_len=2),
    Field("profile.timezone", "timezone", "str", max_len=64),
    _enum("billing.account_type", "account_type", account_pb2.BillingMode),
    Field("billing.credit_limit", "credit_limit", "int"),
    Field("billing.rate_group", "rate_group_id", "ref", collection="rateGroups"),
    Field("billing.non_cli_rate_group", "non_cli_rate_group_id", "ref", collection="rateGroups"),
    Field("billing.cli_pool", "cli_pool", "int"),
    Field("billing.tax_number", "tax_number", "str", max_len=64),
    Field("billing.generate_zero_invoice", "generate_zero_invoice", "bool"),
    Field("billing.invoice_note", "invoice_note", "str", max_len=4000),
    Field("billing.reference", "reference", "str"),
    Field("billing.billing_day", "billing_day", "int"),
    _enum("billing.invoice_with_cdr", "invoice_with_cdr", account_pb2.InvoiceWithCdr, "INVOICE_WITH_CDR_"),
    Field("billing.low_balance_threshold", "low_balance_threshold", "int", max_value=MAX_MONEY),
    _enum("status", "status", account_pb2.AccountStatus),
    Field("expire_time", "expire_at", "time"),
)
BY_PATH = {f.path: f for f in FIELDS}
# Paths an account may change on its own account with its own token: its contact details. Not the password
# (AuthService.ChangePassword, which needs the current one) nor where notifications go (a stolen session must
# not redirect them): the operator changes that, like the login email.
SELF_SERVICE_PATHS = frozenset({f.path for f in FIELDS if f.path.startswith("profile.")}
                               - {"profile.notification_email"})
# Paths that exist but can never be updated.
IMMUTABLE_PATHS = frozenset({"name", "account_number", "type", "create_sip_device", "balance", "sip_devices",
                             "sip_device_password", "create_time", "update_time", "delete_time"})
UPDATABLE_PATHS = frozenset({"password"} | set(BY_PATH))
