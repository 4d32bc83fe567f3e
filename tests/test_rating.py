"""Rating (SPEC §4) and max duration (SPEC §5): examples and properties, on the reference and on Cython."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastpath import _core  # built by `pip install -e .`; a missing build must fail, not skip
from fastpath.reference import rating as reference
from fastpath.reference.rating import Terms

IMPLEMENTATIONS = [pytest.param(reference, id="reference"), pytest.param(_core, id="cython")]

EUR = 1_000_000  # micros per currency unit


def terms(connect_fee=0, included=0, rate=0, initial=1, increment=1) -> Terms:
    return Terms(connect_fee, included, rate, initial, increment)


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request):
    return request.param


def cost(impl, billable: int, t: Terms) -> int:
    return impl.cost(billable, t.connect_fee, t.included_seconds, t.rate_per_min, t.initial_increment, t.increment) \
        if impl is _core else impl.cost(billable, t)


def max_duration(impl, available: int, t: Terms, limit: int) -> int:
    if impl is _core:
        return impl.max_duration(available, t.connect_fee, t.included_seconds, t.rate_per_min, t.initial_increment,
                                 t.increment, limit)
    return impl.max_duration(available, t, limit)


@pytest.mark.parametrize(("billable", "t", "expected"), [
    (0, terms(connect_fee=50_000, rate=EUR), 0),                       # unanswered: nothing
    (-3, terms(connect_fee=50_000, rate=EUR), 0),
    (10, terms(connect_fee=50_000, included=30, rate=EUR), 50_000),    # within included seconds: connect fee only
    (30, terms(connect_fee=50_000, included=30, rate=EUR), 50_000),
    (31, terms(connect_fee=50_000, included=30, rate=60 * EUR), 50_000 + 1 * EUR),
    (1, terms(rate=1_200_000, initial=60, increment=60), 1_200_000),   # 60/60
    (60, terms(rate=1_200_000, initial=60, increment=60), 1_200_000),
    (61, terms(rate=1_200_000, initial=60, increment=60), 2_400_000),
    (1, terms(rate=600_000, initial=30, increment=6), 300_000),        # 30/6
    (31, terms(rate=600_000, initial=30, increment=6), 360_000),
    (36, terms(rate=600_000, initial=30, increment=6), 360_000),
    (37, terms(rate=600_000, initial=30, increment=6), 420_000),
    (7, terms(rate=600_000), 70_000),                                  # 1/1
    (1, terms(rate=1), 1),                                             # one rounding, up, to the micro
    (120, terms(rate=1), 2),                                           # not 120 (a rounding per second)
    (61, terms(rate=7, initial=60, increment=60), 14),
])
def test_cost_examples(impl, billable, t, expected):
    assert cost(impl, billable, t) == expected


def test_markup_applies_to_the_rate_not_the_connect_fee():
    assert reference.marked_up(1_000_000, 10) == 1_100_000
    assert reference.marked_up(333_333, 10) == 366_667  # 366,666.3 rounds up
    assert reference.marked_up(500, 0) == 500
    assert _core.marked_up(333_333, 10) == 366_667


terms_strategy = st.builds(
    Terms,
    connect_fee=st.integers(0, 5 * EUR),
    included_seconds=st.integers(0, 120),
    rate_per_min=st.integers(0, 20 * EUR),
    initial_increment=st.integers(1, 120),
    increment=st.integers(1, 120),
)


@given(t=terms_strategy, billable=st.integers(0, 20_000))
def test_cost_never_decreases_with_duration(t, billable):
    assert reference.cost(billable, t) <= reference.cost(billable + 1, t)


@given(t=terms_strategy, available=st.integers(-EUR, 200 * EUR), limit=st.integers(1, 10_800))
def test_max_duration_is_the_exact_inverse(t, available, limit):
    granted = reference.max_duration(available, t, limit)
    free = t.connect_fee == 0 and t.rate_per_min == 0
    if free:
        assert granted == limit
    elif granted == 0:
        assert reference.cost(1, t) > available  # not even the first block
    else:
        assert 1 <= granted <= limit
        assert reference.cost(granted, t) <= available
        assert granted == limit or reference.cost(granted + 1, t) > available


@given(t=terms_strategy, billable=st.integers(-5, 20_000), available=st.integers(-EUR, 200 * EUR),
       limit=st.integers(1, 10_800))
def test_cython_rating_equals_the_reference(t, billable, available, limit):
    assert cost(_core, billable, t) == reference.cost(billable, t)
    assert max_duration(_core, available, t, limit) == reference.max_duration(available, t, limit)


extreme_terms = st.builds(
    Terms,
    connect_fee=st.integers(0, 10**12),
    included_seconds=st.integers(0, 86_400),
    rate_per_min=st.integers(0, 10**12),  # control/fields.MAX_MONEY: the API refuses more
    initial_increment=st.integers(1, 86_400),
    increment=st.integers(1, 86_400),
)


@given(t=extreme_terms, billable=st.integers(0, 86_400), available=st.integers(-(10**15), 10**15))
def test_cython_stays_exact_at_the_largest_accepted_values(t, billable, available):
    assert cost(_core, billable, t) == reference.cost(billable, t)
    assert max_duration(_core, available, t, 86_400) == reference.max_duration(available, t, 86_400)
    assert _core.marked_up(t.rate_per_min, 1000) == reference.marked_up(t.rate_per_min, 1000)
