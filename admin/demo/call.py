"""Place one call as a SIP device would: INVITE through Kamailio, answer its digest challenge, ACK the answer,
then wait for the far end's BYE (or hang up after `--max-seconds`). Prints the SIP flow, one line per message.

    python -m admin.demo.call --proxy 127.0.0.1:5060 --credentials run/demo-sip-device --number 4930123456

The credentials file holds one line, `USERNAME PASSWORD` (start-stack.sh writes run/demo-sip-device, mode
600), so the password never appears in `ps`. Exit 0 when the call was answered and ended cleanly, 1 when it
was refused (the answer is printed), 2 on bad arguments, 3 when the proxy never answered.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from admin.demo.carrier import parse_hostport
from admin.demo.sip import LOOPBACK, T1, Message, branch, challenge, digest, hop_of, response, sdp, uri_of

EXIT_ANSWERED, EXIT_REFUSED, EXIT_USAGE, EXIT_SILENT = 0, 1, 2, 3


@dataclass
class Call:
    """The caller's side of one dialog: what it sends is built from here, what it saw is kept in `flow`."""

    proxy: tuple[str, int]
    username: str
    caller_id: str
    number: str
    sock: socket.socket
    call_id: str = field(default_factory=lambda: f"demo-{secrets.token_hex(8)}@{LOOPBACK}")
    tag: str = field(default_factory=lambda: secrets.token_hex(6))
    cseq: int = 1
    flow: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def local(self) -> tuple[str, int]:
        return self.sock.getsockname()

    @property
    def ruri(self) -> str:
        return f"sip:{self.number}@{self.proxy[0]}:{self.proxy[1]}"

    def note(self, arrow: str, text: str) -> None:
        line = f"  {time.monotonic() - self.started:6.2f}s  {arrow} {text}"
        self.flow.append(line)
        print(line, flush=True)

    def invite(self, credentials: str = "") -> tuple[bytes, str]:
        """An INVITE with a fresh branch; returns it with its branch (the ACK of a refusal reuses it)."""
        via_branch = branch()
        body = sdp(self.local[0])
        lines = [f"INVITE {self.ruri} SIP/2.0", self.via(via_branch), self.from_header(), f"To: <{self.ruri}>",
                 f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} INVITE", self.contact(), "Max-Forwards: 70",
                 *([credentials] if credentials else []), "Content-Type: application/sdp",
                 f"Content-Length: {len(body.encode())}", "", body]
        return "\r\n".join(lines).encode(), via_branch

    def ack_refusal(self, refusal: Message, via_branch: str) -> bytes:
        """The ACK of a non-2xx answer: hop by hop, same branch and CSeq number as the INVITE (RFC 3261 17.1.1.3)."""
        lines = [f"ACK {self.ruri} SIP/2.0", self.via(via_branch), self.from_header(), f"To: {refusal.header('To')}",
                 f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} ACK", "Max-Forwards: 70", "Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode()

    def in_dialog(self, method: str, answer: Message, cseq: int) -> tuple[bytes, tuple[str, int]]:
        """ACK or BYE of the answered call: to the callee's Contact along the reversed Record-Route set (the UAC
        keeps it reversed, RFC 3261 12.1.2), sent to the first hop."""
        routes = list(reversed(answer.headers("Record-Route")))
        target = uri_of(answer.header("Contact") or self.ruri)
        lines = [f"{method} {target} SIP/2.0", self.via(branch()), self.from_header(), f"To: {answer.header('To')}",
                 f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}", "Max-Forwards: 70",
                 *[f"Route: {route}" for route in routes], "Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode(), hop_of(uri_of(routes[0]) if routes else target)

    def via(self, via_branch: str) -> str:
        return f"Via: SIP/2.0/UDP {self.local[0]}:{self.local[1]};branch={via_branch};rport"

    def from_header(self) -> str:
        return f"From: <sip:{self.caller_id}@{self.local[0]}>;tag={self.tag}"

    def contact(self) -> str:
        return f"Contact: <sip:{self.username}@{self.local[0]}:{self.local[1]}>"


def receive(sock: socket.socket, timeout: float) -> Message | None:
    sock.settimeout(max(timeout, 0.001))
    try:
        data, source = sock.recvfrom(65535)
    except (TimeoutError, OSError):
        return None
    return Message(data, source)


def await_final(call: Call, request: bytes) -> Message | None:
    """Send an INVITE and wait for its final answer, sending it again at T1, 2*T1, ... until a provisional
    answer arrives (RFC 3261 timer A) and giving up after 64*T1 of silence (timer B)."""
    interval, resend_at, deadline, provisional = T1, time.monotonic() + T1, time.monotonic() + 64 * T1, False
    call.sock.sendto(request, call.proxy)
    while time.monotonic() < deadline:
        if not provisional and time.monotonic() >= resend_at:
            call.sock.sendto(request, call.proxy)
            interval = min(interval * 2, 4.0)
            resend_at = time.monotonic() + interval
        message = receive(call.sock, min(resend_at, deadline) - time.monotonic() if not provisional else 0.5)
        if message is None or message.cseq_method != "INVITE" or message.status is None:
            continue
        call.note("<-", f"{message.status} {message.reason}")
        if message.status >= 200:
            return message
        provisional = True
        deadline = time.monotonic() + 180  # a ringing call may take its time to be answered
    return None


def answer_challenge(call: Call, refusal: Message, via_branch: str, password: str) -> tuple[bytes, str]:
    """ACK the 401/407, then the INVITE again with credentials for the challenge's realm and nonce."""
    call.sock.sendto(call.ack_refusal(refusal, via_branch), call.proxy)
    call.note("->", "ACK")
    header = "Proxy-Authenticate" if refusal.status == 407 else "WWW-Authenticate"
    params = challenge(refusal, header)
    call.cseq += 1
    credentials = digest(username=call.username, password=password, realm=params.get("realm", ""),
                         method="INVITE", uri=call.ruri, nonce=params.get("nonce", ""), cnonce=secrets.token_hex(8),
                         header="Proxy-Authorization" if refusal.status == 407 else "Authorization",
                         qop="auth" in params.get("qop", ""))
    request, new_branch = call.invite(credentials)
    call.note("->", f"INVITE again with digest credentials for {call.username}@{params.get('realm', '')}")
    return request, new_branch


def talk(call: Call, answer: Message, max_seconds: float) -> str:
    """ACK the 200, then answer in-dialog requests until the far end's BYE; hang up at `max_seconds`.
    Returns who ended the call."""
    ack, hop = call.in_dialog("ACK", answer, call.cseq)
    call.sock.sendto(ack, hop)
    call.note("->", "ACK")
    deadline = time.monotonic() + max_seconds
    while (left := deadline - time.monotonic()) > 0:
        message = receive(call.sock, left)
        if message is None or message.method is None:
            if message is not None and message.cseq_method == "INVITE" and message.status == 200:
                call.sock.sendto(ack, hop)  # our ACK was lost: the 200 came again
            continue
        call.sock.sendto(response(message, 200, "OK"), message.source)
        if message.method == "BYE":
            call.note("<-", "BYE (the far end hung up)")
            call.note("->", "200 OK")
            return "callee"
        call.note("<-", f"{message.method} (in-dialog, answered 200 OK)")
    bye, hop = call.in_dialog("BYE", answer, call.cseq + 1)
    call.note("->", f"BYE (hanging up after {max_seconds:g} s)")
    for attempt in range(6):
        call.sock.sendto(bye, hop)
        reply = receive(call.sock, T1 * 2 ** attempt)
        if reply is not None and reply.cseq_method == "BYE" and (reply.status or 0) >= 200:
            call.note("<-", f"{reply.status} {reply.reason}")
            break
    return "caller"


def place(call: Call, password: str, max_seconds: float) -> tuple[int, dict]:
    """The whole call; returns the exit code and a summary."""
    request, via_branch = call.invite()
    call.note("->", f"INVITE {call.ruri} (from {call.caller_id})")
    final = await_final(call, request)
    if final is not None and final.status in (401, 407):
        request, via_branch = answer_challenge(call, final, via_branch, password)
        final = await_final(call, request)
    summary = {"call_id": call.call_id, "code": final.status if final else None,
               "reason": final.reason if final else "no answer"}
    if final is None:
        call.note("!!", f"no final answer from {call.proxy[0]}:{call.proxy[1]}")
        return EXIT_SILENT, summary
    if final.status >= 300:
        call.sock.sendto(call.ack_refusal(final, via_branch), call.proxy)
        call.note("->", "ACK")
        return EXIT_REFUSED, summary
    answered_at = time.monotonic()
    summary["ended_by"] = talk(call, final, max_seconds)
    summary["talk_seconds"] = round(time.monotonic() - answered_at, 2)
    return EXIT_ANSWERED, summary


def read_credentials(path: Path) -> tuple[str, str]:
    fields = path.read_text().split()
    if len(fields) != 2:
        raise ValueError(f"{path}: expected one line 'USERNAME PASSWORD'")
    return fields[0], fields[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m admin.demo.call", description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy", type=parse_hostport, default=("127.0.0.1", 5060), metavar="HOST:PORT",
                        help="Kamailio's UDP address (default 127.0.0.1:5060)")
    parser.add_argument("--credentials", type=Path, required=True, metavar="FILE",
                        help="file with one line 'USERNAME PASSWORD' (the SIP device)")
    parser.add_argument("--number", default="4930123456", help="number to dial (default 4930123456, Berlin)")
    parser.add_argument("--caller-id", default="442071234567", help="caller id to present (default 442071234567)")
    parser.add_argument("--max-seconds", type=float, default=30.0, metavar="S",
                        help="hang up after this long if the far end has not (default 30)")
    parser.add_argument("--summary", type=Path, metavar="FILE",
                        help="also write a JSON summary here (call_id, code, reason, ended_by, talk_seconds)")
    args = parser.parse_args(argv)
    try:
        username, password = read_credentials(args.credentials)
    except (OSError, ValueError) as error:
        print(f"demo call: {error}", file=sys.stderr)
        return EXIT_USAGE
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        call = Call(args.proxy, username, args.caller_id, args.number, sock)
        code, summary = place(call, password, args.max_seconds)
    if args.summary:
        args.summary.write_text(json.dumps(summary) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
