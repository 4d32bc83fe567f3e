"""AIP-158 paging: page sizes and opaque page tokens bound to the request that issued them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from control.errors import invalid


def page_size(requested: int, default: int = 50, maximum: int = 1000) -> int:
    if requested < 0:
        raise invalid("page_size", "must not be negative")
    return min(requested or default, maximum)


def fingerprint(*parts) -> str:
    """Ties a token to the filter/parent it was issued for; reusing it elsewhere is an error."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def encode_token(after, issued_for: str) -> str:
    payload = json.dumps({"after": after, "q": issued_for}).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_token(token: str, issued_for: str):
    """The key to continue after, or None for the first page."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after, fingerprint_ = payload["after"], payload["q"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise invalid("page_token", "is not a token this service issued") from None
    if fingerprint_ != issued_for:
        raise invalid("page_token", "was issued for another request")
    return after
