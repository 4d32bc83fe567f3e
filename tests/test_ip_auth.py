"""IP authentication (SPEC §5): source network + optional tech prefix -> account, most specific first."""

from __future__ import annotations

import ipaddress

from fastpath.model import IpIndex, IpMap, World, account_for_source


def world(*maps: tuple[str, str, str]) -> World:
    index = IpIndex([IpMap(ipaddress.ip_network(cidr), prefix, account) for cidr, prefix, account in maps])
    return World(ip_maps=index)


def test_the_most_specific_network_wins():
    w = world(("10.0.0.0/8", "", "wide"), ("10.1.0.0/16", "", "narrow"), ("10.1.2.3/32", "", "host"))
    assert account_for_source(w, "10.1.2.3", "4420") == ("host", "4420")
    assert account_for_source(w, "10.1.9.9", "4420") == ("narrow", "4420")
    assert account_for_source(w, "10.200.0.1", "4420") == ("wide", "4420")
    assert account_for_source(w, "192.0.2.1", "4420") is None


def test_tech_prefix_selects_and_is_stripped():
    w = world(("192.0.2.0/24", "111#", "gold"), ("192.0.2.0/24", "222#", "silver"), ("192.0.2.0/24", "", "plain"))
    assert account_for_source(w, "192.0.2.7", "111#4420") == ("gold", "4420")
    assert account_for_source(w, "192.0.2.7", "222#4420") == ("silver", "4420")
    assert account_for_source(w, "192.0.2.7", "4420") == ("plain", "4420")


def test_ipv6_and_the_catch_all():
    w = world(("2001:db8::/32", "", "v6"), ("0.0.0.0/0", "9", "anyone"))
    assert account_for_source(w, "2001:db8::5", "1") == ("v6", "1")
    assert account_for_source(w, "203.0.113.9", "955") == ("anyone", "55")
    assert account_for_source(w, "203.0.113.9", "55") is None
    assert account_for_source(w, "not-an-ip", "55") is None


def test_lookup_cost_does_not_grow_with_the_number_of_maps():
    maps = [(f"10.{n // 256}.{n % 256}.0/24", "", f"a{n}") for n in range(10_000)]
    w = world(*maps)
    assert len(w.ip_maps) == 10_000
    assert account_for_source(w, "10.39.15.77", "1") == ("a9999", "1")
