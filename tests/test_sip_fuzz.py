"""SIP fuzz: hundreds of broken, hostile or odd messages at a running relay node (issue "SIP edge").

A table of mutations of well-formed requests - missing and duplicated headers, bad CSeq, huge headers, NUL
bytes, bytes that are not UTF-8, odd URIs and numbers, bogus credentials, stray responses - is sent from an
unknown source (the challenge path) and from an IP-authenticated customer (the decision path). Every message
must be answered or dropped: afterwards the node still answers its keepalive 200, and its log shows no Python
exception (Kamailio's own parser may log what it refused).
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.kamailio_harness import customer_on, make_carrier, options_probe, start_kamailio
from tests.sip_wire import Gateway, Peer, sdp

PYTHON_FAULT = re.compile(r"Traceback|app_python3 \[|tollgate: \w+ failed:|Python exception")
Mutation = Callable[[str], bytes]


@pytest.fixture(scope="module")
def fuzz_node(control_server, tmp_path_factory):
    """A relay node of its own: the parser errors fuzz provokes must not count against the other modules."""
    node = start_kamailio(tmp_path_factory.mktemp("fuzz"), redis_url=control_server.redis_url,
                          namespace=control_server.keys.namespace, mode="relay", fr_timer_ms=500)
    yield node
    node.stop()


def base(method: str, user: str, node: str, source: tuple[str, int], *, to_tag: str = "") -> str:
    call_id = secrets.token_hex(8)
    body = sdp(source[0]) if method == "INVITE" else ""
    lines = [f"{method} sip:{user}@{node} SIP/2.0", f"Via: SIP/2.0/UDP {source[0]}:{source[1]};branch=z9hG4bK{call_id}",
             f"From: <sip:15550001111@{source[0]}>;tag=f{call_id}",
             f"To: <sip:{user}@{node}>" + (f";tag={to_tag}" if to_tag else ""), f"Call-ID: {call_id}@fuzz",
             f"CSeq: 1 {method}", f"Contact: <sip:15550001111@{source[0]}:{source[1]}>", "Max-Forwards: 70",
             *(["Content-Type: application/sdp"] if body else []), f"Content-Length: {len(body)}", "", body]
    return "\r\n".join(lines)


def _replace_header(name: str, value: str | None) -> Mutation:
    def mutate(message: str) -> bytes:
        out = []
        for line in message.split("\r\n"):
            if line.lower().startswith(name.lower() + ":"):
                if value is not None:
                    out.append(f"{name}: {value}")
                continue
            out.append(line)
        return "\r\n".join(out).encode("utf-8", "surrogateescape")

    return mutate


def _add_header(text: str) -> Mutation:
    return lambda message: message.replace("Max-Forwards: 70", f"Max-Forwards: 70\r\n{text}", 1).encode(
        "utf-8", "surrogateescape")


def _duplicate(name: str) -> Mutation:
    def mutate(message: str) -> bytes:
        line = next(line for line in message.split("\r\n") if line.startswith(name + ":"))
        return message.replace(line, f"{line}\r\n{line}", 1).encode()

    return mutate


def _first_line(text: str) -> Mutation:
    return lambda message: (text + "\r\n" + message.split("\r\n", 1)[1]).encode("utf-8", "surrogateescape")


def _user(user: str) -> Mutation:
    def mutate(message: str) -> bytes:
        first, rest = message.split("\r\n", 1)
        method, uri, version = first.split(" ")
        return f"{method} sip:{user}@{uri.split('@', 1)[1]} {version}\r\n{rest}".encode("utf-8", "surrogateescape")

    return mutate


def _raw(data: bytes) -> Mutation:
    return lambda message: data


LONG = "4" * 3000
MUTATIONS: dict[str, Mutation] = {
    "untouched": lambda message: message.encode(),
    **{f"missing {h}": _replace_header(h, None) for h in
       ("Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Contact")},
    **{f"duplicated {h}": _duplicate(h) for h in ("From", "To", "Call-ID", "CSeq", "Content-Length")},
    **{f"CSeq {v!r}": _replace_header("CSeq", v) for v in
       ("abc INVITE", "1 BYE", "-1 INVITE", "99999999999999999999 INVITE", "", "1", "1 INVITE extra")},
    **{f"Max-Forwards {v!r}": _replace_header("Max-Forwards", v) for v in ("0", "-1", "abc", "99999999999")},
    **{f"Content-Length {v!r}": _replace_header("Content-Length", v) for v in ("-5", "999999", "abc", "0")},
    "huge Subject": _add_header("Subject: " + "x" * 60_000),
    "100 Vias": _add_header("\r\n".join(f"Via: SIP/2.0/UDP 10.0.0.{i % 250}:5060;branch=z9hG4bK{i}"
                                        for i in range(100))),
    "huge Contact": _replace_header("Contact", "<sip:" + "a" * 10_000 + "@127.0.0.1>"),
    "NUL in header name": _add_header("X-Bad\x00Name: 1"),
    "NUL in From": _replace_header("From", "<sip:1555\x00000@127.0.0.1>;tag=x"),
    "NUL in Call-ID": _replace_header("Call-ID", "abc\x00def"),
    "not UTF-8 in From": _replace_header("From", "\udcff\udcfe <sip:1@127.0.0.1>;tag=x"),
    "not UTF-8 in To": _replace_header("To", "<sip:\udcff\udcfe@127.0.0.1>"),
    "From without URI": _replace_header("From", "nothing;tag=x"),
    "From without tag": _replace_header("From", "<sip:15550001111@127.0.0.1>"),
    "To in-dialog junk tag": _replace_header("To", "<sip:1@127.0.0.1>;tag=" + "%" * 50),
    "Route junk": _add_header("Route: <sip:;lr>"),
    "Route to nowhere": _add_header("Route: <sip:10.255.255.1:5060;lr>"),
    "Record-Route junk": _add_header("Record-Route: <>"),
    "Via without branch": _replace_header("Via", "SIP/2.0/UDP 127.0.0.1:5999"),
    "Via bad protocol": _replace_header("Via", "SIP/2.0/XYZ 127.0.0.1:5999;branch=z9hG4bKx"),
    "Via huge rport": _replace_header("Via", "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx;rport=999999"),
    "Expires junk": _add_header("Expires: -1000"),
    "Proxy-Require unknown": _add_header("Proxy-Require: flux-capacitor"),
    "Require unknown": _add_header("Require: 100rel, flux"),
    "Content-Type junk": _add_header("Content-Type: ;;;"),
    **{f"Proxy-Authorization {name}": _add_header("Proxy-Authorization: " + value) for name, value in {
        "empty": "", "basic": "Basic dXNlcjpwYXNz", "no fields": "Digest",
        "garbage": 'Digest username="a", realm=, nonce="', "huge nonce": f'Digest username="a", realm="tollgate", '
        f'nonce="{"n" * 8000}", uri="sip:a@b", response="00"',
        "NUL nonce": 'Digest username="a", realm="tollgate", nonce="ab\x00cd", uri="sip:a", response="1"',
        "sha-256": 'Digest username="dev", realm="tollgate", nonce="abc", uri="sip:x@y", response="1", '
                   'algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c"',
        "nc overflow": 'Digest username="dev", realm="tollgate", nonce="abc", uri="sip:x@y", response="1", '
                       'qop=auth, nc=ffffffffffffffffff, cnonce="c"',
        "other realm": 'Digest username="dev", realm="elsewhere", nonce="abc", uri="sip:x@y", response="1"',
    }.items()},
    **{f"user {name}": _user(user) for name, user in {
        "empty": "", "plus": "+", "3000 digits": LONG, "NUL": "44%00123", "unicode digits": "\u0664\u0664123",
        "params": "4420123456;npdi;rn=123", "spaces": "44%2020", "letters": "abc", "zero": "0",
        "star": "*99#", "long user": "a" * 5000}.items()},
    **{f"first line {name}": _first_line(line) for name, line in {
        "no version": "INVITE sip:a@127.0.0.1", "SIP/3.0": "INVITE sip:a@127.0.0.1 SIP/3.0",
        "tel": "INVITE tel:+4420123456 SIP/2.0", "sips": "INVITE sips:a@127.0.0.1 SIP/2.0",
        "no user": "INVITE sip:@127.0.0.1 SIP/2.0", "no host": "INVITE sip:a@ SIP/2.0",
        "bad port": "INVITE sip:a@127.0.0.1:99999 SIP/2.0", "ipv6": "INVITE sip:a@[::1] SIP/2.0",
        "unknown method": "FLUX sip:a@127.0.0.1 SIP/2.0", "lower case": "invite sip:a@127.0.0.1 SIP/2.0",
        "garbage": "\x01\x02\x03 garbage", "stray response": "SIP/2.0 200 OK",
        "NUL uri": "INVITE sip:a\x00b@127.0.0.1 SIP/2.0"}.items()},
    "empty datagram": _raw(b""),
    "blank lines": _raw(b"\r\n\r\n"),
    "keepalive CRLF": _raw(b"\r\n"),
    "binary": _raw(bytes(range(256)) * 4),
    "truncated": lambda message: message.encode()[: len(message) // 2],
}
METHODS = ("INVITE", "REGISTER", "BYE", "OPTIONS")
BATCH = 20


def cases(node: str, source: tuple[str, int], tech_prefix: str) -> Iterator[tuple[str, bytes]]:
    """Every mutation of every method, as an unknown caller (dialling a plain number) and, for INVITE, as the
    customer (dialling its tech prefix: the decision path)."""
    for method in METHODS:
        for name, mutate in MUTATIONS.items():
            yield f"{method} {name}", mutate(base(method, "4420123456", node, source))
    for name, mutate in MUTATIONS.items():
        yield f"customer INVITE {name}", mutate(base("INVITE", tech_prefix + "4420123456", node, source))
        yield f"in-dialog BYE {name}", mutate(base("BYE", "4420123456", node, source, to_tag="t1"))


def test_every_fuzzed_message_is_answered_or_dropped_and_nothing_breaks(admin, money, fast, fuzz_node):
    gateway = Gateway("answer")
    try:
        rate_group, _trunks, _provider = make_carrier(admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")],
                                                      "prefix,rate_per_min\n44,0.05\n")
        _account, tech_prefix = customer_on(admin, money, fast, rate_group)
        answers: Counter[str] = Counter()
        with Peer() as fuzzer:
            messages = list(cases(fuzz_node.address, fuzzer.address, tech_prefix))
            for start in range(0, len(messages), BATCH):  # in batches, so that no answer is lost to a full buffer
                for _name, data in messages[start:start + BATCH]:
                    if data:
                        fuzzer.send(data, (fuzz_node.host, fuzz_node.port))
                for message in fuzzer.collect(0.25):
                    answers[str(message.status or message.method)] += 1
        sent = len(messages)
        print(f"fuzz: {sent} messages sent, answers by status: {dict(sorted(answers.items()))}")
        assert sent >= 200, sent
        assert options_probe(fuzz_node.host, fuzz_node.port) == 200, "the node stopped answering its keepalive"
        faults = [line for line in fuzz_node.log().splitlines() if PYTHON_FAULT.search(line)]
        assert not faults, "\n".join(faults[:20])
        assert sum(answers.values()) > 0 and "500" not in answers, answers  # refused as a caller's mistake
    finally:
        gateway.stop()
