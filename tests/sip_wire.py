"""Raw SIP for attack and edge tests: craft any message, send it from any loopback address, see what arrives.

sipp plays well-formed scenarios; an attacker does not. `Peer` sends hand-written requests (forged dialogs,
replayed credentials, junk) over UDP and collects what comes back. `Gateway` is a carrier that records every
message it receives and answers INVITEs as told - 200 (echoing Record-Route), a final failure, only
100 Trying, or 180 then 200 later - over UDP, TCP or TLS. `digest()` computes RFC 2617 credentials, so a test
can authenticate, then replay or bend them.
"""

from __future__ import annotations

import re
import secrets
import socket
import ssl
import threading
import time

from admin.demo.sip import LOOPBACK, Message, digest, response, sdp

# The message model, answers and credentials are the demo's (admin/demo/sip.py), shared with the tests.
__all__ = ["LOOPBACK", "Gateway", "Message", "Peer", "challenge_nonce", "digest", "request", "response", "sdp"]

_HEADER_END = b"\r\n\r\n"


def request(method: str, ruri: str, *, via: tuple[str, int], call_id: str, from_user: str = "15550001111",
            from_host: str = LOOPBACK, from_tag: str | None = None, to_uri: str | None = None, to_tag: str = "",
            cseq: int = 1, branch: str | None = None, headers: list[str] = (), body: str = "",
            transport: str = "UDP") -> str:
    """A request as text; headers are extra lines ("Route: <sip:...;lr>")."""
    branch = branch or "z9hG4bK" + secrets.token_hex(8)
    from_tag = from_tag or secrets.token_hex(6)
    to = f"<{to_uri or ruri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} {ruri} SIP/2.0", f"Via: SIP/2.0/{transport} {via[0]}:{via[1]};branch={branch};rport",
             f"From: <sip:{from_user}@{from_host}>;tag={from_tag}", f"To: {to}", f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}", f"Contact: <sip:{from_user}@{via[0]}:{via[1]}>", "Max-Forwards: 70",
             *headers, f"Content-Length: {len(body.encode())}", "", body]
    return "\r\n".join(lines)


def challenge_nonce(message: Message, header: str = "Proxy-Authenticate") -> str:
    match = re.search(r'nonce="([^"]+)"', message.header(header) or "")
    if match is None:
        raise AssertionError(f"no challenge in {message.first_line}")
    return match.group(1)


class Peer:
    """A UDP endpoint on a loopback address: send anything, collect what comes back."""

    def __init__(self, host: str = LOOPBACK, port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.address = self.sock.getsockname()

    def send(self, data: str | bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data.encode() if isinstance(data, str) else data, to)

    def recv(self, timeout: float = 2.0) -> Message | None:
        self.sock.settimeout(timeout)
        try:
            data, source = self.sock.recvfrom(65535)
        except (TimeoutError, OSError):
            return None
        return Message(data, source)

    def final(self, timeout: float = 3.0, method: str | None = None) -> Message | None:
        """The next final answer (>= 200), skipping provisional ones and stray requests; None on silence."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.recv(left)
            if message is None:
                return None
            if (message.status or 0) >= 200 and (method is None or message.cseq_method == method):
                return message
        return None

    def collect(self, seconds: float) -> list[Message]:
        found, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.recv(left)
            if message is not None:
                found.append(message)
        return found

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- gateway


class Gateway:
    """A carrier on loopback that records every request and answers INVITEs by `behaviour`: "answer" (100,
    200), "ring" (100, 180, then 200 after `ring_seconds`), "trying" (100 only, then silence), or an int final
    code (100, then that). In-dialog BYE/OPTIONS/INFO/re-INVITE get 200; CANCEL 200 and the INVITE 487."""

    def __init__(self, behaviour: str | int = "answer", *, host: str = LOOPBACK, transport: str = "udp",
                 certificate: tuple[str, str] | None = None, ring_seconds: float = 0.0):
        self.behaviour = behaviour
        self.transport = transport
        self.ring_seconds = ring_seconds
        self.received: list[Message] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tags: dict[str, str] = {}
        self._cancelled: set[str] = set()  # Call-IDs whose ringing INVITE was cancelled: never answered 200
        if transport == "udp":
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        else:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.port = self._sock.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self._tls = None
        if transport == "tls":
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(*certificate)
        if transport != "udp":
            self._sock.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ what arrived
    def requests(self, method: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self.received if m.method and (method is None or m.method == method)]

    def wait_for(self, method: str, count: int = 1, timeout: float = 3.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while len(found := self.requests(method)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return found

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2)

    # ------------------------------------------------------------------ serving
    def _serve(self) -> None:
        if self.transport == "udp":
            self._sock.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    data, source = self._sock.recvfrom(65535)
                except (TimeoutError, OSError):
                    continue
                self._handle(Message(data, source), lambda out, to=source: self._sock.sendto(out, to))
            return
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, source = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve_stream, args=(conn, source), daemon=True).start()

    def _serve_stream(self, conn: socket.socket, source) -> None:
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            conn.settimeout(0.2)
            buffer = b""
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65535)
                except (TimeoutError, ssl.SSLWantReadError):
                    continue
                if not chunk:
                    return
                buffer += chunk
                while _HEADER_END in buffer:
                    head, rest = buffer.split(_HEADER_END, 1)
                    length = int(re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head).group(1)
                                 if re.search(rb"(?im)^(?:content-length|l)\s*:", head) else 0)
                    if len(rest) < length:
                        break
                    buffer = rest[length:]
                    self._handle(Message(head + _HEADER_END + rest[:length], source), conn.sendall)
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def _handle(self, message: Message, send) -> None:
        if message.status is not None:  # a response (to a request we never send): ignore
            return
        with self._lock:
            self.received.append(message)
        method = message.method
        tag = self._tags.setdefault(message.header("Call-ID") or "", secrets.token_hex(4))
        if method == "ACK":
            return
        if method == "INVITE" and not message.tag("To"):
            threading.Thread(target=self._answer, args=(message, send, tag), daemon=True).start()
            return
        if method == "CANCEL":
            self._cancelled.add(message.header("Call-ID") or "")
            send(response(message, 200, "OK"))
            invite = next((m for m in reversed(self.requests("INVITE")) if m.header("Call-ID") ==
                           message.header("Call-ID")), None)
            if invite is not None:
                send(response(invite, 487, "Request Terminated", to_tag=tag))
            return
        send(response(message, 200, "OK", to_tag=tag))

    def _answer(self, invite: Message, send, tag: str) -> None:
        contact = f"sip:gw@{self.address};transport={self.transport}"
        send(response(invite, 100, "Trying"))
        if self.behaviour == "trying":
            return
        if isinstance(self.behaviour, int):
            send(response(invite, self.behaviour, "Gateway says no", to_tag=tag))
            return
        if self.behaviour == "ring":
            send(response(invite, 180, "Ringing", to_tag=tag, contact=contact))
            deadline = time.monotonic() + self.ring_seconds
            while time.monotonic() < deadline and not self._stop.is_set():
                if invite.header("Call-ID") in self._cancelled:
                    return
                time.sleep(0.02)
            if self._stop.is_set():
                return
        send(response(invite, 200, "OK", to_tag=tag, contact=contact, body=sdp(),
                      extra=["Content-Type: application/sdp"]))
