"""The company's logo: checked when it is set (a real PNG or JPEG of a bounded size, so that rendering a document
never meets a file it cannot read or a decompression bomb), kept by content in document_images."""

from __future__ import annotations

import hashlib
import io
import warnings

import psycopg
from PIL import Image, UnidentifiedImageError

from control.api.errors import invalid

MAX_LOGO_BYTES = 512 * 1024
MAX_LOGO_PIXELS = 2000  # per side
_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}


def logo(field: str, data: bytes) -> bytes:
    """The logo as given, when it is a PNG or JPEG within the limits; b"" (remove the logo) passes."""
    if not data:
        return b""
    if len(data) > MAX_LOGO_BYTES:
        raise invalid(field, f"at most {MAX_LOGO_BYTES // 1024} KiB")
    content_type(field, data)
    return data


def content_type(field: str, data: bytes) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind, (width, height) = image.format, image.size
                image.verify()  # reads the whole file: a truncated or corrupt one is refused here, not when printing
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError):
        raise invalid(field, "must be a PNG or JPEG image") from None
    if kind not in _TYPES:
        raise invalid(field, f"must be a PNG or JPEG image, not {kind}")
    if not (0 < width <= MAX_LOGO_PIXELS and 0 < height <= MAX_LOGO_PIXELS):
        raise invalid(field, f"at most {MAX_LOGO_PIXELS} x {MAX_LOGO_PIXELS} pixels")
    return _TYPES[kind]


def store(conn: psycopg.Connection, data: bytes) -> str | None:
    """Keep the image (once per content); its SHA-256, or None for b""."""
    if not data:
        return None
    digest = hashlib.sha256(data).hexdigest()
    conn.execute("INSERT INTO document_images (sha256, content_type, data) VALUES (%s, %s, %s) "
                 "ON CONFLICT (sha256) DO NOTHING", (digest, content_type("company.logo", data), data))
    return digest


def load(conn: psycopg.Connection, digest: str | None) -> bytes | None:
    if not digest:
        return None
    row = conn.execute("SELECT data FROM document_images WHERE sha256 = %s", (digest,)).fetchone()
    return bytes(row["data"]) if row else None
