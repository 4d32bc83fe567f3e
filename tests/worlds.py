"""Hand-built Worlds for fast-path tests, and one call that runs both implementations and compares them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fastpath import _core
from fastpath.decision import Call, Decision
from fastpath.deck_image import DeckImage, build_image
from fastpath.localization import parse_rules
from fastpath.model import Account, Device, RateGroup, Rules, Trunk, World
from fastpath.reference.decision import decide
from fastpath.reference.lpm import DictDeck

NOW = 1_800_000_000
EUR = 1_000_000


def account(number: str = "1000000001", **fields) -> Account:
    values = dict(number=number, type="CUSTOMER", status="ACTIVE", deleted=False, expire_epoch=None,
                  account_type="PREPAID", credit_limit=0, max_concurrent_calls=0, cps=0, localization=None,
                  allow_local_calls=False, allow_loss_less_routing=False, lc_charge_per_min=0,
                  allow_recording=False, rate_group="retail", non_cli_rate_group=None, cli_pool=0)
    return Account(**(values | fields))


def group(id: str = "retail", **fields) -> RateGroup:
    values = dict(id=id, markup_percent=0, routing_strategy="LCR", default_initial_increment=1,
                  default_increment=1, trunks=(), status="ACTIVE")
    return RateGroup(**(values | fields))


def trunk(id: str, **fields) -> Trunk:
    values = dict(id=id, provider="9000000001", provider_usable=True, gateways=((f"127.0.0.1:{5000 + len(id)}",
                                                                                 "udp"),),
                  max_concurrent_calls=0, cps=0, localization=None, priority=0, status="ACTIVE")
    return Trunk(**(values | fields))


def origination(prefix: str, rate: int, connect_fee: int = 0, included: int = 0, initial: int = 0,
                increment: int = 0, forced: tuple = (), priority: int = 0) -> tuple:
    return prefix, (connect_fee, included, rate, initial, increment, list(forced), priority)


def termination(prefix: str, rate: int, strip: int = 0, prepend: str = "", priority: int = 0,
                connect_fee: int = 0) -> tuple:
    return prefix, (connect_fee, 0, rate, 0, 0, strip, prepend, priority)


def rules(**lists: list[str]) -> Rules:
    return Rules(**{name: parse_rules(texts) for name, texts in lists.items()})


def device(username: str, owner: str, status: str = "ACTIVE") -> Device:
    return Device(username, owner, "tollgate", "0" * 32, "0" * 64, status)


def world(accounts=(), groups=(), trunks=(), origination_decks=None, termination_decks=None, **fields) -> World:
    w = World(**fields)
    w.accounts = {a.number: a for a in accounts}
    w.rate_groups = {g.id: g for g in groups}
    w.trunks = {t.id: t for t in trunks}
    w.origination_decks = {k: _deck("odeck", rows) for k, rows in (origination_decks or {}).items()}
    w.termination_decks = {k: _deck("tdeck", rows) for k, rows in (termination_decks or {}).items()}
    return w


def _deck(kind: str, rows: list[tuple]) -> DictDeck:
    return DictDeck(kind, [[prefix, *record] for prefix, record in rows])


def with_image_decks(w: World, directory: Path) -> World:
    """The same world with every deck as a memory-mapped image (what production uses)."""
    def image(kind: str, owner: str, deck: DictDeck) -> DeckImage:
        path = directory / f"{kind}-{owner}.img"
        build_image(str(path), kind, [[prefix, *record] for prefix, record in deck._table.items()])
        return DeckImage(str(path))

    return dataclasses.replace(
        w,
        origination_decks={k: image("odeck", k, d) for k, d in w.origination_decks.items()},
        termination_decks={k: image("tdeck", k, d) for k, d in w.termination_decks.items()},
    )


def both(w: World, caller: str = "1000000001", caller_id: str = "15550001111", destination: str = "4420123456",
         available: int = 100 * EUR, now: int = NOW, entropy: int = 0) -> Decision:
    """Decide with the reference and with Cython; they must agree; return the reference's decision."""
    expected = decide(w, Call(caller, caller_id, destination, available, now, entropy))
    actual = _core.Engine(w).decide(caller, caller_id, destination, available, now, entropy)
    assert actual.as_tuple() == expected.as_tuple()
    return expected
