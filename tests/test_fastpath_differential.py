"""Cython and the reference decide alike on generated worlds and calls (the reference is the spec).

Worlds are small but dense in collisions: few digits, nested prefixes, shared trunks, every CLI option,
rules of both syntaxes; decks are tried as dicts and as memory-mapped images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpath import _core
from fastpath.decision import Call
from fastpath.model import Device, World
from fastpath.reference.decision import decide, trace
from tests.worlds import NOW, account, group, origination, rules, termination, trunk, with_image_decks, world

DIGITS = "0123"  # a small alphabet: prefixes collide and nest often
numbers = st.text(DIGITS, min_size=1, max_size=8)
prefixes = st.text(DIGITS, min_size=1, max_size=5)
money = st.integers(0, 3_000_000)
TRUNK_IDS = ("t1", "t2", "t3")
ACCOUNTS = ("1000000001", "1000000002", "1000000003")
RULES = st.sampled_from(["0/", "*/1", "12/3", "3/", "/^(0+)(\\d)$/\\2/", "/1/22/", "00/*", "*/+", "2/*"])
# What callers send besides plain digits: nothing, a '+', other scripts' digits, NUL, URI parameters, too long.
JUNK = st.sampled_from(["", "+", "\u0661\u0662\u0663", "12\x003", "123;npdi;rn=456", "%00", "1" * 40, "abc",
                        "\uff11\uff12", "-abc", "a.b-c_d", "caf\u00e9", "x" * 65])
caller_ids = st.one_of(numbers, numbers, JUNK)


@st.composite
def origination_decks(draw, cover_all: bool = False):
    # cover_all: every one-digit prefix is present, so every number gets a rate and reaches routing.
    keys = st.sampled_from(DIGITS) if draw(st.booleans()) else prefixes
    rows = draw(st.dictionaries(st.one_of(keys, prefixes), st.tuples(
        money, st.integers(0, 60), money, st.integers(0, 60), st.integers(0, 60),
        st.lists(st.sampled_from(TRUNK_IDS), max_size=2, unique=True).filter(lambda t: len(t) != 1),
        st.integers(-2, 2)), min_size=1, max_size=8))
    for digit in DIGITS if cover_all else ():
        rows.setdefault(digit, (0, 0, draw(money), 0, 0, [], 0))
    return [origination(p, rate, fee, inc, init, step, tuple(forced), prio)
            for p, (fee, inc, rate, init, step, forced, prio) in rows.items()]


@st.composite
def termination_decks(draw, cover_all: bool = False):
    rows = draw(st.dictionaries(st.one_of(st.sampled_from(DIGITS), prefixes),
                                st.tuples(money, st.integers(0, 3), st.text(DIGITS, max_size=3), st.integers(-2, 2),
                                          money), min_size=1, max_size=6))
    for digit in DIGITS if cover_all else ():
        rows.setdefault(digit, (draw(money), 0, "", 0, 0))
    return [termination(p, rate, strip, prepend, prio, fee) for p, (rate, strip, prepend, prio, fee) in rows.items()]


@st.composite
def worlds(draw, routing_heavy: bool = False) -> World:
    """Any world; routing_heavy ones have callers that get past identity and CLI checks, to stress LCR."""
    accounts = [account(number, status=draw(st.just("ACTIVE") if routing_heavy else
                                            st.sampled_from(["ACTIVE", "ACTIVE", "ACTIVE", "INACTIVE"])),
                        deleted=draw(st.just(False) if routing_heavy else st.sampled_from([False, False, False, True])),
                        expire_epoch=draw(st.just(None) if routing_heavy else
                                          st.sampled_from([None, None, None, None, NOW - 1, NOW + 1])),
                        rate_group=draw(st.sampled_from(["g1", "g2"] if routing_heavy else ["g1", "g2", None])),
                        non_cli_rate_group=draw(st.sampled_from(["g1", "g2", None])),
                        cli_pool=draw(st.just(0) if routing_heavy else st.sampled_from([0, 0, 0, 0, *range(1, 9)])),
                        allow_local_calls=draw(st.booleans()),
                        allow_loss_less_routing=draw(st.sampled_from([True, True, True, False])),
                        allow_recording=draw(st.booleans()),
                        lc_charge_per_min=draw(money),
                        localization=draw(st.sampled_from([None, "p1"])),
                        default_caller_id=draw(st.sampled_from(["", "", "4930111"])))
                for number in ACCOUNTS]
    groups = [group(g, markup_percent=draw(st.integers(0, 150)),
                    routing_strategy=draw(st.sampled_from(["LCR", "COST"])),
                    default_initial_increment=draw(st.integers(1, 60)),
                    default_increment=draw(st.integers(1, 60)),
                    trunks=tuple(draw(st.permutations(TRUNK_IDS))[:draw(st.integers(1, 3))]),
                    status=draw(st.just("ACTIVE") if routing_heavy else st.sampled_from(["ACTIVE", "INACTIVE"])))
              for g in ("g1", "g2")]
    trunks = [trunk(t, status=draw(st.sampled_from(["ACTIVE", "ACTIVE", "ACTIVE", "INACTIVE"])),
                    provider_usable=draw(st.sampled_from([True, True, True, False])),
                    provider_expire_epoch=draw(st.sampled_from([None, None, NOW, NOW + 1])),
                    priority=draw(st.integers(0, 2)),
                    localization=draw(st.sampled_from([None, "p2"])),
                    max_concurrent_calls=draw(st.integers(0, 5)), cps=draw(st.integers(0, 5)))
              for t in TRUNK_IDS]
    w = world(accounts=accounts, groups=groups, trunks=trunks,
              origination_decks={g: draw(origination_decks(routing_heavy)) for g in ("g1", "g2")},
              termination_decks={t: draw(termination_decks(routing_heavy)) for t in TRUNK_IDS},
              max_call_seconds=draw(st.sampled_from([60, 3600, 10_800])),
              max_destination_digits=draw(st.sampled_from([15, 15, 4, 6])),
              min_destination_digits=draw(st.sampled_from([1, 1, 3, 5])),
              caller_id_fallback=draw(st.sampled_from(["DEFAULT_CALLER_ID", "ANONYMOUS"])))
    w.localizations = {
        "p1": rules(destination=draw(st.lists(RULES, max_size=2)),
                    caller_id_outbound=draw(st.lists(RULES, max_size=2))),
        "p2": rules(termination_destination=draw(st.lists(RULES, max_size=2)),
                    termination_caller_id=draw(st.lists(RULES, max_size=2))),
    }
    dids = draw(st.dictionaries(numbers, st.sampled_from([*ACCOUNTS, None]), max_size=3))
    w.did_owner = dids
    w.dids_by_account = {}
    for did, owner in sorted(dids.items()):
        if owner:
            w.dids_by_account[owner] = (*w.dids_by_account.get(owner, ()), did)
    w.caller_ids = {a: tuple(sorted(draw(st.sets(numbers, max_size=2)))) for a in ACCOUNTS}
    devices = draw(st.dictionaries(numbers, st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(["ACTIVE",
                                                                                                   "INACTIVE"])),
                                   max_size=3))
    w.devices = {u: Device(u, owner, "r", "", "", status) for u, (owner, status) in devices.items()}
    w.devices_by_account = {}
    for username, device in sorted(w.devices.items()):
        if device.status == "ACTIVE":
            w.devices_by_account[device.account] = (*w.devices_by_account.get(device.account, ()), username)
    return w


calls = st.builds(Call, account=st.sampled_from([*ACCOUNTS, *ACCOUNTS, "404"]), caller_id=caller_ids,
                  destination=st.one_of(st.text(DIGITS, min_size=3, max_size=8), JUNK),
                  available=st.integers(-1_000_000, 50_000_000), now=st.just(NOW), entropy=st.integers(0, 5))


def assert_same(w: World, batch: list[Call], compiled_world: World | None = None) -> None:
    """The reference on `w` and the compiled engine on `compiled_world` (default: `w`) decide alike, and trace
    alike (the route simulator's steps); tracing never changes the decision."""
    engine = _core.Engine(compiled_world or w)
    for call in batch:
        expected = decide(w, call).as_tuple()
        arguments = (call.account, call.caller_id, call.destination, call.available, call.now, call.entropy)
        actual = engine.decide(*arguments).as_tuple()
        assert actual == expected, call
        expected_decision, expected_trace = trace(w, call)
        traced, facts = engine.trace(*arguments)
        assert (traced.as_tuple(), expected_decision.as_tuple()) == (expected, expected), call
        assert facts == expected_trace, call


@settings(max_examples=300, deadline=None)
@given(w=worlds(), batch=st.lists(calls, min_size=1, max_size=12))
def test_cython_decides_like_the_reference(w, batch):
    assert_same(w, batch)


@settings(max_examples=300, deadline=None)
@given(w=worlds(routing_heavy=True), data=st.data())
def test_cython_routes_like_the_reference(w, data):
    # Destinations built from the termination prefixes, so that trunks match at different lengths.
    known = sorted({p for deck in w.termination_decks.values() for p in deck._table})
    destinations = st.builds(str.__add__, st.sampled_from(known), st.text(DIGITS, max_size=4))
    batch = data.draw(st.lists(st.builds(Call, account=st.sampled_from(ACCOUNTS), caller_id=numbers,
                                         destination=destinations, available=st.integers(0, 500_000_000),
                                         now=st.just(NOW), entropy=st.integers(0, 5)), min_size=1, max_size=12))
    assert_same(w, batch)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=worlds(), batch=st.lists(calls, min_size=1, max_size=12))
def test_cython_with_deck_images_decides_like_the_reference(w, batch):
    with tempfile.TemporaryDirectory() as directory:
        assert_same(w, batch, compiled_world=with_image_decks(w, Path(directory)))
