"""Field checks shared by the services: each raises INVALID_ARGUMENT naming the API field."""

from __future__ import annotations

import functools
import re
import zoneinfo

import pycountry
from email_validator import EmailNotValidError, validate_email

from control.api.errors import clip, invalid

__all__ = ["invalid"]

_CUSTOM_NUMBER = re.compile(r"[0-9A-Za-z]{4,20}")
MAX_PASSWORD_LENGTH = 1024


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def email(field: str, value: str) -> str:
    """The normalised address (lower-case domain); raises when it is not a valid address."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise invalid(field, f"not a valid email address: {exc}") from None


def timezone(field: str, value: str) -> str:
    if value not in _timezones():
        raise invalid(field, f"unknown IANA time zone {clip(value)}")
    return value


def country(field: str, value: str) -> str:
    if value == "":
        return value
    if len(value) != 2 or pycountry.countries.get(alpha_2=value.upper()) is None:
        raise invalid(field, f"unknown ISO 3166-1 alpha-2 country code {clip(value)}")
    return value.upper()


def currency(field: str, value: str) -> str:
    if len(value) != 3 or pycountry.currencies.get(alpha_3=value.upper()) is None:
        raise invalid(field, f"unknown ISO 4217 currency {clip(value)}")
    return value.upper()


def custom_account_number(field: str, value: str) -> str:
    if not _CUSTOM_NUMBER.fullmatch(value):
        raise invalid(field, "must be 4 to 20 characters of 0-9, A-Z, a-z")
    return value


def pin(field: str, value: str, length: int) -> str:
    if not (value.isascii() and value.isdigit() and len(value) == length):
        raise invalid(field, f"must be exactly {length} digits")
    return value


def password(field: str, value: str) -> str:
    if len(value) < 8:
        raise invalid(field, "must be at least 8 characters")
    if len(value) > MAX_PASSWORD_LENGTH:
        raise invalid(field, f"must be at most {MAX_PASSWORD_LENGTH} characters")
    return value


def in_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise invalid(field, f"must be between {low} and {high}")
    return value


def non_negative(field: str, value: int) -> int:
    if value < 0:
        raise invalid(field, "must not be negative")
    return value


def max_length(field: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise invalid(field, f"must be at most {limit} characters")
    return value


def is_ascii_digits(value: str) -> bool:
    """Only 0-9 (str.isdigit() also accepts other scripts' digits, which no switch can dial)."""
    return value.isascii() and value.isdigit()
