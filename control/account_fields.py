"""The one table that maps Account API fields to database columns, and the conversions both ways.

Create, update, get, list and export all go through FIELDS, so adding a field is one line here plus
its column in a migration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from control import validation
from tollgate.v1 import account_pb2


@dataclass(frozen=True)
class Field:
    path: str  # API path, as written in update_mask
    column: str
    kind: str  # str | int | bool | enum | ref | time
    enum_prefix: str = ""  # enum: proto value name = enum_prefix + stored text
    enum_type: Any = None
    collection: str = ""  # ref: "rateGroups", "localizations"
    max_len: int = 255


def _enum(path: str, column: str, enum_type, prefix: str = "") -> Field:
    return Field(path, column, "enum", enum_prefix=prefix, enum_type=enum_type)


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
    Field("settings.lc_charge_per_min", "lc_charge_per_min", "int"),
    Field("settings.allow_recording", "allow_recording", "bool"),
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
    _enum("status", "status", account_pb2.AccountStatus),
    Field("expire_time", "expire_at", "time"),
)
BY_PATH = {f.path: f for f in FIELDS}
# Paths an account may change on its own account with its own token.
SELF_SERVICE_PATHS = frozenset({"password"} | {f.path for f in FIELDS if f.path.startswith("profile.")})
# Paths that exist but can never be updated.
IMMUTABLE_PATHS = frozenset({"name", "account_number", "type", "create_sip_device", "balance", "sip_devices",
                             "sip_device_password", "create_time", "update_time", "delete_time"})
UPDATABLE_PATHS = frozenset({"password"} | set(BY_PATH))


def read(message, path: str):
    """The value at a dotted path of a message (`profile.city`)."""
    for part in path.split("."):
        message = getattr(message, part)
    return message


def is_set(message, path: str) -> bool:
    """Whether the request populated this path (proto3: a non-default value, or a present message)."""
    *parents, leaf = path.split(".")
    for part in parents:
        if not message.HasField(part):
            return False
        message = getattr(message, part)
    if leaf in ("expire_time",):
        return message.HasField(leaf)
    return bool(getattr(message, leaf))


def to_column(field: Field, value) -> Any:
    """API value -> database value. Enum UNSPECIFIED and empty references become None ("default")."""
    if field.kind == "enum":
        if value == 0:
            return None
        try:
            return field.enum_type.Name(value).removeprefix(field.enum_prefix)
        except ValueError:
            raise validation.invalid(field.path, f"unknown value {value}") from None
    if field.kind == "ref":
        return validation.resource_id(field.path, value, field.collection)
    if field.kind == "time":
        return value.ToDatetime(tzinfo=UTC) if value.ByteSize() else None
    if field.kind == "str":
        return validation.max_length(field.path, value.strip(), field.max_len)
    return value


def set_from_column(message, field: Field, value) -> None:
    """Write a database value into the message at the field's path."""
    *parents, leaf = field.path.split(".")
    target = message
    for part in parents:
        target = getattr(target, part)
    if value is None:
        return
    if field.kind == "enum":
        setattr(target, leaf, field.enum_type.Value(field.enum_prefix + value))
    elif field.kind == "ref":
        setattr(target, leaf, f"{field.collection}/{value}")
    elif field.kind == "time":
        getattr(target, leaf).CopyFrom(timestamp(value))
    else:
        setattr(target, leaf, value)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts
