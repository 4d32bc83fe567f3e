"""The demo carrier: a gateway on loopback that answers every call and hangs up after a few seconds.

    python -m admin.demo.carrier --listen 127.0.0.1:5090 --hold 5

It is what a real carrier does on the wire, reduced to the parts tollgate depends on: 100 Trying, 180 Ringing,
200 OK with an SDP answer that echoes Record-Route (so ACK and BYE come back through Kamailio, which must see
the call end to settle it; sipp's built-in `-sn uas` does not echo it, and its calls are never billed), the 200
sent again until the ACK arrives, then a BYE along the route set after `--hold` seconds. A BYE from the caller,
in-dialog OPTIONS (Kamailio's dialog keepalives) and anything else in a dialog get 200; CANCEL gets 200 and the
INVITE 487. One line per event goes to stdout (start-stack.sh sends it to run/demo-carrier.log).
"""

from __future__ import annotations

import argparse
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from admin.demo.sip import T1, Message, branch, hop_of, response, sdp, uri_of

RETRANSMISSIONS = 7  # 200 OK sent again at T1, 2*T1, ... until the ACK: RFC 3261's 64*T1 in all
MAX_CALL_SECONDS = 3600.0  # with --hold 0 a call the caller never ends is still hung up, after an hour


@dataclass
class Dialog:
    """One answered call as the carrier sees it (the UAS side)."""

    invite: Message
    tag: str
    acked: threading.Event
    ended: threading.Event

    @property
    def call_id(self) -> str:
        return self.invite.header("Call-ID") or ""

    def bye(self, local: tuple[str, int]) -> tuple[bytes, tuple[str, int]]:
        """The carrier's BYE: to the caller's Contact, along the Record-Route set in its order (RFC 3261
        12.1.1: the UAS keeps the route set as received), sent to the first hop."""
        routes = self.invite.headers("Record-Route")
        target = uri_of(self.invite.header("Contact") or self.invite.header("From") or "")
        hop = hop_of(uri_of(routes[0]) if routes else target)
        lines = [f"BYE {target} SIP/2.0", f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch()};rport",
                 f"From: {self.invite.header('To')};tag={self.tag}", f"To: {self.invite.header('From')}",
                 f"Call-ID: {self.call_id}", "CSeq: 1 BYE", "Max-Forwards: 70",
                 *[f"Route: {route}" for route in routes], "Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode(), hop


class Carrier:
    """Serves one UDP socket; each answered call runs its hang-up timer in a thread of its own."""

    def __init__(self, listen: tuple[str, int], hold: float, ring: float, out=sys.stdout):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(listen)
        self.address = self.sock.getsockname()
        self.hold, self.ring, self.out = hold, ring, out
        self.dialogs: dict[str, Dialog] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def log(self, call_id: str, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {call_id[:24]:<24} {text}", file=self.out, flush=True)

    def serve_forever(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            message = Message(data, source)
            if message.method is not None:  # responses (to our BYEs) need nothing
                self.handle(message)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, to)
        except OSError as error:  # the proxy went away: the call ends without us
            self.log("-", f"cannot send to {to[0]}:{to[1]}: {error}")

    def handle(self, message: Message) -> None:
        call_id = message.header("Call-ID") or ""
        with self.lock:
            dialog = self.dialogs.get(call_id)
        if message.method == "INVITE" and not message.tag("To"):
            if dialog is None:  # a retransmitted INVITE: the first one's thread answers it
                self.start_call(message)
            return
        if message.method == "ACK":
            if dialog is not None:
                dialog.acked.set()
            return
        tag = dialog.tag if dialog else secrets.token_hex(4)
        self.send(response(message, 200, "OK", to_tag=tag), message.source)
        if message.method == "CANCEL" and dialog is not None and not dialog.acked.is_set():
            dialog.ended.set()
            self.send(response(dialog.invite, 487, "Request Terminated", to_tag=dialog.tag), dialog.invite.source)
            self.log(call_id, "CANCEL: 487 Request Terminated")
        elif message.method == "BYE" and dialog is not None:
            dialog.ended.set()
            self.log(call_id, "BYE from the caller: 200 OK")

    def start_call(self, invite: Message) -> None:
        dialog = Dialog(invite, secrets.token_hex(4), threading.Event(), threading.Event())
        with self.lock:
            self.dialogs[dialog.call_id] = dialog
        threading.Thread(target=self.run_call, args=(dialog,), daemon=True).start()

    def run_call(self, dialog: Dialog) -> None:
        invite, call_id = dialog.invite, dialog.call_id
        contact = f"sip:gateway@{self.address[0]}:{self.address[1]}"
        self.log(call_id, f"INVITE {invite.first_line.split()[1]} from {invite.source[0]}:{invite.source[1]}")
        self.send(response(invite, 100, "Trying"), invite.source)
        self.send(response(invite, 180, "Ringing", to_tag=dialog.tag, contact=contact), invite.source)
        if dialog.ended.wait(self.ring):
            return self.forget(dialog)
        ok = response(invite, 200, "OK", to_tag=dialog.tag, contact=contact, body=sdp(self.address[0]),
                      extra=["Content-Type: application/sdp"])
        for attempt in range(RETRANSMISSIONS):
            self.send(ok, invite.source)
            if dialog.acked.wait(T1 * 2 ** attempt):
                break
        else:
            self.log(call_id, "no ACK for the 200 OK: call dropped")
            return self.forget(dialog)
        self.log(call_id, f"answered; hanging up in {self.hold:g} s" if self.hold else "answered")
        if not dialog.ended.wait(self.hold or MAX_CALL_SECONDS):
            bye, hop = dialog.bye(self.address)
            self.send(bye, hop)
            self.log(call_id, f"BYE sent to {hop[0]}:{hop[1]}")
        time.sleep(32 * T1)  # a retransmitted BYE or 200 still finds the dialog (and its tag) a while
        self.forget(dialog)

    def forget(self, dialog: Dialog) -> None:
        with self.lock:
            self.dialogs.pop(dialog.call_id, None)

    def stop(self, *_) -> None:
        self.stopping.set()


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m admin.demo.carrier", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=parse_hostport, default=("127.0.0.1", 5090), metavar="HOST:PORT",
                        help="UDP address to answer on (default 127.0.0.1:5090)")
    parser.add_argument("--hold", type=float, default=5.0, metavar="SECONDS",
                        help="hang up this long after answering (default 5; 0 = wait for the caller's BYE)")
    parser.add_argument("--ring", type=float, default=0.5, metavar="SECONDS",
                        help="ring this long before answering (default 0.5)")
    args = parser.parse_args(argv)
    carrier = Carrier(args.listen, args.hold, args.ring)
    signal.signal(signal.SIGTERM, carrier.stop)
    signal.signal(signal.SIGINT, carrier.stop)
    print(f"demo carrier answering on udp:{carrier.address[0]}:{carrier.address[1]}, hold {args.hold:g} s",
          flush=True)
    carrier.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
