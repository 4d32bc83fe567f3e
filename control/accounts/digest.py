"""SIP digest credentials: what Kamailio's auth needs, without storing the password (RFC 2617/7616)."""

from __future__ import annotations

import hashlib
import secrets


def ha1_pair(username: str, realm: str, password: str) -> tuple[str, str]:
    """MD5 and SHA-256 HA1 of `username:realm:password`."""
    credentials = f"{username}:{realm}:{password}".encode()
    return hashlib.md5(credentials).hexdigest(), hashlib.sha256(credentials).hexdigest()


def generated_password() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits
