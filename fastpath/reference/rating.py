"""Rating (SPEC §4) and its inverse, the longest affordable call (SPEC §5). Integer micros only."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Terms:
    """How one rate charges: money in micros, times in seconds (increments already resolved, >= 1)."""

    connect_fee: int
    included_seconds: int
    rate_per_min: int
    initial_increment: int
    increment: int


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def charged_seconds(billable: int, terms: Terms) -> int:
    """Seconds charged at the per-minute rate, after included seconds and increments."""
    rest = billable - terms.included_seconds
    if rest <= 0:
        return 0
    if rest <= terms.initial_increment:
        return terms.initial_increment
    return terms.initial_increment + ceil_div(rest - terms.initial_increment, terms.increment) * terms.increment


def cost(billable: int, terms: Terms) -> int:
    """The exact cost of a call of `billable` seconds: one rounding, up, to the micro."""
    if billable <= 0:
        return 0
    return terms.connect_fee + ceil_div(charged_seconds(billable, terms) * terms.rate_per_min, 60)


def marked_up(rate_per_min: int, markup_percent: int) -> int:
    return ceil_div(rate_per_min * (100 + markup_percent), 100)


def max_duration(available: int, terms: Terms, max_call_seconds: int) -> int:
    """The largest b <= max_call_seconds with cost(b) <= available; 0 when not even one second is affordable.

    A free rate (no connect fee, no per-minute charge) grants max_call_seconds whatever the balance.
    """
    if terms.connect_fee == 0 and terms.rate_per_min == 0:
        return max_call_seconds
    if cost(1, terms) > available:
        return 0
    if cost(max_call_seconds, terms) <= available:
        return max_call_seconds
    low, high = 1, max_call_seconds  # cost(low) <= available < cost(high); cost never decreases with b
    while high - low > 1:
        middle = (low + high) // 2
        if cost(middle, terms) <= available:
            low = middle
        else:
            high = middle
    return low
