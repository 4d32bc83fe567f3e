"""The routing decision (SPEC §5–§7), every case run on the reference and on Cython (they must agree)."""

from __future__ import annotations

import pytest

from fastpath.model import Device
from tests.worlds import EUR, NOW, account, both, device, group, origination, rules, termination, trunk, world

UK = [origination("44", EUR), origination("4420", 2 * EUR)]


def routed(**overrides):
    """A caller, a rate group over trunks a and b, and termination decks that both cover 44."""
    base = dict(
        accounts=[account()],
        groups=[group(trunks=("a", "b"))],
        trunks=[trunk("a"), trunk("b")],
        origination_decks={"retail": UK},
        termination_decks={"a": [termination("44", 900_000)], "b": [termination("4420", 1_500_000)]},
    )
    return world(**(base | overrides))


# ------------------------------------------------------------------------------------------ account state


@pytest.mark.parametrize("state", [dict(status="INACTIVE"), dict(deleted=True), dict(expire_epoch=NOW),
                                   dict(expire_epoch=NOW - 1)])
def test_disabled_accounts_are_refused(state):
    d = both(routed(accounts=[account(**state)]))
    assert (d.code, d.reason, d.stage) == (403, "Account disabled", "account")


def test_unknown_account_is_refused():
    assert both(routed(), caller="999").code == 403


def test_expiry_in_the_future_still_calls():
    assert both(routed(accounts=[account(expire_epoch=NOW + 1)])).code == 200


# ------------------------------------------------------------------------------------------ rating + routing


def test_longest_origination_prefix_and_lcr_order():
    d = both(routed())
    assert (d.code, d.direction, d.prefix, d.rate_per_min, d.rate_group) == (200, "outbound", "4420", 2 * EUR,
                                                                              "retail")
    # LCR: the longest termination prefix first (b matches 4420), then cost.
    assert [r.trunk for r in d.routes] == ["b", "a"]
    assert d.granted_seconds == 3000 and d.reserve == 100 * EUR  # 100 EUR at 2 EUR/min


@pytest.mark.parametrize(("expire_epoch", "trunks"), [(None, ["b", "a"]), (NOW + 1, ["b", "a"]), (NOW, ["a"])])
def test_an_expired_providers_trunks_stop_routing_at_the_expiry(expire_epoch, trunks):
    """Expiry is a time, not a change: the projection is not rebuilt when it passes, the decision checks it."""
    d = both(routed(trunks=[trunk("a"), trunk("b", provider="9000000009", provider_expire_epoch=expire_epoch)]))
    assert [r.trunk for r in d.routes] == trunks


def test_cost_strategy_orders_by_cost_first():
    d = both(routed(groups=[group(trunks=("a", "b"), routing_strategy="COST")]))
    assert [r.trunk for r in d.routes] == ["a", "b"]


def test_priority_breaks_cost_ties():
    w = routed(groups=[group(trunks=("a", "b"), routing_strategy="COST")], trunks=[trunk("a", priority=5),
                                                                                    trunk("b", priority=1)],
               termination_decks={"a": [termination("44", EUR)], "b": [termination("44", EUR)]})
    assert [r.trunk for r in both(w).routes] == ["b", "a"]


def test_loss_less_routing_off_drops_costlier_trunks_and_on_keeps_them():
    decks = {"a": [termination("44", 3 * EUR)], "b": [termination("44", EUR)]}
    assert [r.trunk for r in both(routed(termination_decks=decks)).routes] == ["b"]
    lossy = routed(termination_decks=decks, accounts=[account(allow_loss_less_routing=True)])
    assert [r.trunk for r in both(lossy).routes] == ["b", "a"]


def test_markup_raises_the_rate_loss_check_uses_the_marked_up_rate():
    w = routed(groups=[group(trunks=("a",), markup_percent=50)],
               termination_decks={"a": [termination("44", 2_500_000)]})
    d = both(w)
    assert d.rate_per_min == 3 * EUR and [r.trunk for r in d.routes] == ["a"]


def test_many_trunks_sort_like_few():
    ids = tuple(f"t{n:02d}" for n in range(20))
    w = routed(groups=[group(trunks=ids)], trunks=[trunk(t, priority=n % 3) for n, t in enumerate(ids)],
               termination_decks={t: [termination("4420"[: 1 + n % 4], 100_000 + (n * 7919) % 5)]
                                  for n, t in enumerate(ids)})
    d = both(w)
    assert len(d.routes) == 20 and len(d.routes[0].prefix) == 4


def test_disabled_trunks_and_deleted_providers_are_skipped():
    for t in (trunk("a", status="INACTIVE"), trunk("a", provider_usable=False), trunk("a", gateways=())):
        d = both(routed(trunks=[t, trunk("b")]))
        assert [r.trunk for r in d.routes] == ["b"]


def test_no_route_when_no_trunk_has_a_rate():
    d = both(routed(termination_decks={"a": [termination("33", 1)], "b": []}))
    assert (d.code, d.reason, d.stage, d.granted_seconds) == (503, "No route available", "route", 3000)


def test_no_rate_without_group_or_prefix():
    assert both(routed(), destination="3312345").code == 404
    assert both(routed(accounts=[account(rate_group=None)])).code == 404
    assert both(routed(groups=[group(trunks=("a", "b"), status="INACTIVE")])).reason == "No rate for destination"


def test_balance_checks_and_max_duration():
    w = routed(origination_decks={"retail": [origination("44", 60 * EUR, connect_fee=EUR, initial=30,
                                                           increment=6)]},
               termination_decks={"a": [termination("44", EUR)], "b": []})
    d = both(w, available=EUR + 30 * EUR + 6 * EUR - 1)  # connect + first 30 s + one 6 s block, less a micro
    assert (d.code, d.granted_seconds, d.reserve) == (200, 30, 31 * EUR)
    assert d.terms == (EUR, 0, 60 * EUR, 30, 6)  # what billing applies at the call's end
    assert d.routes[0].terms == (0, 0, EUR, 1, 1)  # the provider's, increments defaulted to 1
    poor = both(w, available=EUR + 30 * EUR - 1)
    assert (poor.code, poor.reason, poor.stage) == (402, "Insufficient balance", "balance")


def test_free_rate_gets_max_call_seconds():
    w = routed(origination_decks={"retail": [origination("44", 0)]}, termination_decks={"a": [termination("44", 0)],
                                                                                        "b": []})
    d = both(w, available=-5 * EUR)
    assert (d.code, d.granted_seconds, d.reserve) == (200, 10_800, 0)


def test_forced_trunks_replace_the_group_trunks():
    w = routed(origination_decks={"retail": [origination("44", EUR, forced=("b",))]},
               termination_decks={"a": [termination("44", 1)], "b": [termination("44", 2)]})
    assert [r.trunk for r in both(w).routes] == ["b"]


def test_strip_prepend_and_termination_cost():
    w = routed(termination_decks={"a": [termination("44", 600_000, strip=2, prepend="0044", connect_fee=10_000)],
                                  "b": []})
    d = both(w, available=2 * EUR)
    route = d.routes[0]
    assert route.destination == "0044" + "20123456" and route.prefix == "44"
    assert route.cost == 10_000 + route.rate_per_min * d.granted_seconds // 60


def test_record_flag_follows_the_account():
    assert both(routed(accounts=[account(allow_recording=True)])).record is True
    assert both(routed()).record is False


# ------------------------------------------------------------------------------------------ localization


def test_localization_of_both_syntaxes_on_both_sides():
    w = routed(accounts=[account(localization="uk")],
               termination_decks={"a": [termination("0044", 900_000)], "b": [termination("4420", 1_500_000)]})
    w.localizations = {
        "uk": rules(destination=["00/", "/^0(\\d{10})$/44\\1/"], caller_id_outbound=["+/", "*/00"]),
        "carrier": rules(termination_destination=["44/0044"], termination_caller_id=["00/+"]),
    }
    w.trunks["a"] = trunk("a", localization="carrier")
    d = both(w, destination="004420123456", caller_id="+15550001111")
    assert d.destination == "4420123456" and d.caller_id == "0015550001111"
    by_trunk = {r.trunk: r for r in d.routes}
    assert by_trunk["a"].destination == "004420123456" and by_trunk["a"].caller_id == "+15550001111"
    assert by_trunk["b"].destination == "4420123456"
    national = both(w, destination="02012345678")
    assert national.destination == "442012345678"


# ------------------------------------------------------------------------------------------ direction


def test_local_call_between_devices():
    w = routed(accounts=[account(allow_local_calls=True, lc_charge_per_min=120_000), account("1000000002")])
    w.devices = {"alice": device("alice", "1000000002")}
    d = both(w, destination="alice", available=EUR)
    assert (d.code, d.direction, d.callee, d.rate_per_min) == (200, "local", "alice", 120_000)
    assert d.granted_seconds == 480 and d.reserve == 960_000  # 60 s steps at 0.12/min within 1 EUR


def test_local_calls_not_allowed_route_outbound():
    w = routed()
    w.devices = {"4420123456": device("4420123456", "1000000002")}
    assert both(w).direction == "outbound"


def test_inactive_device_is_not_a_local_destination():
    w = routed(accounts=[account(allow_local_calls=True)])
    w.devices = {"alice": Device("alice", "1000000002", "r", "", "", "INACTIVE")}
    # Not a local destination, so a number for a carrier, and a name is no number (SPEC §8).
    assert (both(w, destination="alice").code, both(w, destination="alice").stage) == (484, "number")


def test_inbound_did_reaches_the_owner():
    owner = account("1000000002")
    w = routed(accounts=[account(), owner])
    w.did_owner = {"3312345678": owner.number}
    w.devices_by_account = {owner.number: ("bob", "bob-desk")}
    d = both(w, destination="3312345678")
    assert (d.code, d.direction, d.callee, d.callee_devices) == (200, "inbound", owner.number, ("bob", "bob-desk"))


def test_inbound_did_of_a_disabled_owner_is_not_in_service():
    w = routed(accounts=[account(), account("1000000002", status="INACTIVE")])
    w.did_owner = {"3312345678": "1000000002"}
    assert both(w, destination="3312345678").code == 404


# ------------------------------------------------------------------------------------------ CLI pool (SPEC §6)

DIDS = ("3300000001", "3300000002")
CIDS = ("4400000001",)


def cli_world(option: int, non_cli: str | None = "nocli"):
    w = routed(accounts=[account(cli_pool=option, non_cli_rate_group=non_cli)],
               groups=[group(trunks=("a", "b")), group("nocli", trunks=("a", "b"), markup_percent=100)],
               origination_decks={"retail": UK, "nocli": UK})
    w.dids_by_account = {"1000000001": DIDS}
    w.caller_ids = {"1000000001": CIDS}
    return w


@pytest.mark.parametrize(("option", "caller_id", "code", "presented", "rate_group"), [
    (0, "123", 200, "123", "retail"),
    (1, DIDS[1], 200, DIDS[1], "retail"),
    (1, "123", 200, DIDS[1], "retail"),  # random DID: entropy 1 picks the second
    (2, CIDS[0], 200, CIDS[0], "retail"),
    (2, "123", 200, CIDS[0], "retail"),
    (3, DIDS[0], 200, DIDS[0], "retail"),
    (3, CIDS[0], 200, CIDS[0], "nocli"),
    (4, CIDS[0], 200, CIDS[0], "retail"),
    (4, DIDS[0], 200, DIDS[0], "nocli"),
    (5, DIDS[0], 200, DIDS[0], "retail"),
    (5, CIDS[0], 200, CIDS[0], "retail"),
    (5, "123", 200, "123", "nocli"),
    (6, DIDS[0], 200, DIDS[0], "retail"),
    (6, CIDS[0], 403, CIDS[0], ""),
    (7, CIDS[0], 200, CIDS[0], "retail"),
    (7, DIDS[0], 403, DIDS[0], ""),
    (8, DIDS[1], 200, DIDS[1], "retail"),
    (8, CIDS[0], 200, CIDS[0], "retail"),
    (8, "123", 403, "123", ""),
])
def test_cli_pool_table(option, caller_id, code, presented, rate_group):
    d = both(cli_world(option), caller_id=caller_id, entropy=1)
    assert (d.code, d.caller_id, d.rate_group) == (code, presented, rate_group)
    if code == 403:
        assert (d.reason, d.stage) == ("CLI not allowed", "cli")
    if rate_group == "nocli":
        assert d.rate_per_min == 4 * EUR  # the non-CLI group's 100 % markup applies


@pytest.mark.parametrize("option", [1, 2])
def test_empty_pool_refuses_rather_than_guess(option):
    w = cli_world(option)
    w.dids_by_account, w.caller_ids = {}, {}
    assert both(w, caller_id="123").code == 403


@pytest.mark.parametrize("option", [3, 4, 5])
def test_missing_non_cli_group_refuses(option):
    assert both(cli_world(option, non_cli=None), caller_id="999").code == 403


def test_inbound_calls_localize_the_caller_id_with_the_inbound_rules():
    owner = account("1000000002")
    w = routed(accounts=[account(localization="p"), owner])
    w.localizations = {"p": rules(caller_id_inbound=["0/49"], caller_id_outbound=["0/33"])}
    w.did_owner = {"3312345678": owner.number}
    assert both(w, destination="3312345678", caller_id="030123").caller_id == "4930123"
    assert both(w, caller_id="030123").caller_id == "3330123"  # outbound: the outbound rules


def test_a_call_to_an_inactive_did_is_refused_not_routed_out():
    w = routed(accounts=[account(), account("1000000002")])
    w.did_owner = {"4420123456": None}  # our DID, not in service
    d = both(w)
    assert (d.code, d.direction, d.reason) == (404, "inbound", "DID not in service")


def test_local_call_to_a_disabled_callee_is_refused():
    w = routed(accounts=[account(allow_local_calls=True), account("1000000002", status="INACTIVE")])
    w.devices = {"bob": device("bob", "1000000002")}
    d = both(w, destination="bob")
    assert (d.code, d.direction, d.reason) == (404, "local", "Callee not in service")


# ---------------------------------------------------------------------------------------------- number hygiene


@pytest.mark.parametrize("dialled", ["", "+4420123456", "44 20", "4420%00", "\u0664\u0664201", "44;npdi;rn=1",
                                     "4" * 16, "4" * 500])
def test_a_destination_that_is_not_1_to_n_ascii_digits_is_484(dialled):
    d = both(routed(), destination=dialled)
    assert (d.code, d.reason, d.stage) == (484, "Address Incomplete", "number")


def test_the_longest_destination_is_a_company_setting():
    w = routed(max_destination_digits=18)
    assert both(w, destination="44" + "1" * 16).code == 200
    w = routed(max_destination_digits=6)
    assert both(w, destination="4420123").code == 484
    assert both(w, destination="442012").code == 200


def test_the_shortest_destination_is_a_company_setting_too():
    """A "0" dialled and localized to "49" is a country code, no number: 484 once the company says so."""
    w = routed(accounts=[account(localization="p")], min_destination_digits=5)
    w.localizations = {"p": rules(destination=["00/", "0/44"])}
    assert (both(w, destination="0").code, both(w, destination="0").stage) == (484, "number")
    assert both(w, destination="020123").code == 200  # "4420123": 7 digits
    assert both(routed(min_destination_digits=10), destination="4420123456").code == 200


def test_the_check_applies_after_localization():
    w = routed(accounts=[account(localization="p")])
    w.localizations = {"p": rules(destination=["+/"])}  # "+4420123456" dialled -> "4420123456"
    assert both(w, destination="+4420123456").code == 200


@pytest.mark.parametrize("received", ["", "+", "\u0661\u0662\u0663", "1" * 33, "155 5", "anonymous"])
def test_a_junk_caller_id_becomes_the_default_caller_id_then_anonymous(received):
    w = routed(accounts=[account(default_caller_id="4930111")])
    assert both(w, caller_id=received).caller_id == "4930111"
    w = routed(accounts=[account(default_caller_id="4930111")], caller_id_fallback="ANONYMOUS")
    d = both(w, caller_id=received)
    assert (d.caller_id, {r.caller_id for r in d.routes}) == ("anonymous", {"anonymous"})
    w = routed(accounts=[account()])
    assert both(w, caller_id=received).caller_id == "anonymous"


def test_an_anonymous_caller_meets_the_cli_pool_like_any_outsider():
    w = routed(accounts=[account(cli_pool=7)])  # reject if not one of its caller ids
    w.caller_ids = {"1000000001": ("4930111",)}
    assert both(w, caller_id="+").code == 403
    w = routed(accounts=[account(cli_pool=2)])  # else a random caller id of its own
    w.caller_ids = {"1000000001": ("4930111",)}
    assert both(w, caller_id="+").caller_id == "4930111"


def test_calls_on_the_switch_may_present_a_device_name_carriers_only_digits():
    w = routed(accounts=[account(allow_local_calls=True), account("1000000002")])
    w.devices = {"bob": device("bob", "1000000002")}
    assert both(w, caller_id="alice.desk", destination="bob").caller_id == "alice.desk"
    assert both(w, caller_id="alice\x00", destination="bob").caller_id == "anonymous"
    assert both(w, caller_id="alice.desk").caller_id == "anonymous"  # outbound: to a carrier
