"""Just enough SIP over UDP for the demo's two ends (and the wire tests): parse a message, answer a request,
compute digest credentials, follow a route set. Not a SIP stack: one call at a time per dialog, no TCP/TLS."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
T1 = 0.5  # RFC 3261's round-trip estimate: the first retransmission interval over UDP


@dataclass
class Message:
    raw: bytes
    source: tuple[str, int] = ("", 0)
    at: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0]

    @property
    def status(self) -> int | None:
        parts = self.first_line.split(" ", 2)
        return int(parts[1]) if parts[0] == "SIP/2.0" and len(parts) > 1 and parts[1].isdigit() else None

    @property
    def reason(self) -> str:
        parts = self.first_line.split(" ", 2)
        return parts[2] if self.status is not None and len(parts) > 2 else ""

    @property
    def method(self) -> str | None:
        return None if self.first_line.startswith("SIP/2.0") else self.first_line.split(" ", 1)[0]

    @property
    def cseq_method(self) -> str:
        return (self.header("CSeq") or " ").split()[-1]

    @property
    def body(self) -> str:
        return self.text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in self.text else ""

    def headers(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in order; a comma-joined Route or Record-Route
        line counts as one value per URI."""
        wanted = name.lower()
        head = self.text.split("\r\n\r\n", 1)[0]
        values = [line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:]
                  if ":" in line and line.split(":", 1)[0].strip().lower() == wanted]
        if wanted in ("route", "record-route"):
            return [uri for value in values for uri in split_uri_list(value)]
        return values

    def header(self, name: str) -> str | None:
        found = self.headers(name)
        return found[0] if found else None

    def tag(self, name: str) -> str:
        value = self.header(name) or ""
        match = re.search(r";tag=([^;>\s]+)", value)
        return match.group(1) if match else ""


def split_uri_list(value: str) -> list[str]:
    """'<sip:a;lr>, <sip:b;lr>' -> ['<sip:a;lr>', '<sip:b;lr>'] (commas inside <> are kept)."""
    return [part.strip() for part in re.findall(r"<[^>]*>[^,]*|[^,<]+", value) if part.strip()]


def uri_of(name_addr: str) -> str:
    """'"Bob" <sip:bob@h:5060;lr>;tag=1' -> 'sip:bob@h:5060;lr'; a bare URI is returned as it is."""
    match = re.search(r"<([^>]*)>", name_addr)
    return match.group(1) if match else name_addr.split(";", 1)[0].strip()


def hop_of(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """Where a SIP URI says to send: 'sip:u@127.0.0.1:5090;lr' -> ('127.0.0.1', 5090)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    hostport = rest.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    host, _, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
    return host, int(port) if port.isdigit() else default_port


def response(request_message: Message, code: int, reason: str, *, to_tag: str = "", extra: list[str] = (),
             body: str = "", contact: str = "") -> bytes:
    """A response to `request_message`, copying Via, From, To (+ tag), Call-ID, CSeq and, on 1xx/2xx,
    Record-Route (so that the proxy stays on the dialog's path)."""
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {v}" for v in request_message.headers("Via")]
    lines.append(f"From: {request_message.header('From')}")
    to = request_message.header("To") or ""
    lines.append(f"To: {to};tag={to_tag}" if to_tag and ";tag=" not in to else f"To: {to}")
    lines += [f"Call-ID: {request_message.header('Call-ID')}", f"CSeq: {request_message.header('CSeq')}"]
    if code < 300:
        lines += [f"Record-Route: {rr}" for rr in request_message.headers("Record-Route")]
    if contact:
        lines.append(f"Contact: <{contact}>")
    lines += [*extra, f"Content-Length: {len(body.encode())}", "", body]
    return "\r\n".join(lines).encode()


def sdp(host: str = LOOPBACK) -> str:
    """An audio offer/answer; the demo sends no media, so the port is nominal."""
    return (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def digest(*, username: str, password: str, realm: str, method: str, uri: str, nonce: str, nc: int = 1,
           cnonce: str = "0a4f113b", algorithm: str = "MD5", claimed_algorithm: str | None = None,
           header: str = "Proxy-Authorization", qop: bool = True) -> str:
    """An RFC 2617 credentials header (always computed with MD5; `claimed_algorithm` is what it says)."""
    ha1 = hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    base = (f'{header}: Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f"algorithm={claimed_algorithm or algorithm}")
    if not qop:
        response_hash = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        return f'{base}, response="{response_hash}"'
    nc_text = f"{nc:08x}"
    response_hash = hashlib.md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return f'{base}, response="{response_hash}", cnonce="{cnonce}", qop=auth, nc={nc_text}'


def challenge(message: Message, header: str = "Proxy-Authenticate") -> dict[str, str]:
    """The parameters of a digest challenge (realm, nonce, qop, ...)."""
    value = message.header(header) or ""
    return {key.lower(): quoted or bare for key, quoted, bare in
            re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)}
