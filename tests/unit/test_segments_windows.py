"""Incremental window aggregates: exact counts, sums and distinct counts, and exact drop times (tier 1)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.segments.config import format_duration, parse_duration
from udfs.segments.windows import PresenceIntervals, Series

W = 1000


def test_durations():
    assert parse_duration("500ms") == 500
    assert parse_duration("30s") == 30_000
    assert parse_duration("5m") == 300_000
    assert parse_duration("7d") == 7 * 86_400_000
    assert parse_duration("1w") == 7 * 86_400_000
    assert parse_duration(1234) == 1234
    for bad in ("0s", "5", "1.5m", "-1s", 0, True, None):
        try:
            parse_duration(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
    assert format_duration(600_000) == "10m"
    assert format_duration(1500) == "1500ms"


def test_series_window_is_half_open_on_the_left():
    s = Series()
    s.add(100, "a")
    # the window (t - W, t] holds the event for t in [100, 1100)
    assert s.count(100 - W + 1, 100) == 1
    assert s.count(1099 - W + 1, 1099) == 1
    assert s.count(1100 - W + 1, 1100) == 0
    assert s.count(99 - W + 1, 99) == 0


def test_count_drop_time_is_the_nth_newest_plus_window():
    s = Series()
    for i, t in enumerate([0, 10, 20, 30]):
        s.add(t, f"e{i}")
    # count >= 3 at t=30 holds until the 3rd-newest (t=10) leaves: 10 + W
    assert s.count_drop_time(30, W, 3) == 1010
    assert s.count_drop_time(30, W, 4) == 1000
    assert s.count_drop_time(30, W, 5) is None
    assert s.count_drop_time(1009, W, 3) == 1010
    assert s.count_drop_time(1010, W, 3) is None  # only 20, 30 left


def test_out_of_order_inserts_keep_order_and_sums():
    s = Series(weighted=True)
    for t, v in [(50, 5), (10, 1), (30, 3), (30, 2), (20, 7)]:
        s.add(t, f"id{t}-{v}", v)
    assert [t for t, _ in s.items()] == [10, 20, 30, 30, 50]
    assert s.total(0, 100) == 18
    assert s.total(20, 30) == 12
    assert s.remove(30, "id30-3")
    assert s.total(0, 100) == 15
    assert not s.remove(30, "nope")


def test_sum_drop_time():
    s = Series(weighted=True)
    for t, v in [(0, 5), (10, 5), (20, 5)]:
        s.add(t, f"e{t}", v)
    assert s.sum_drop_time(20, W, 15) == 1000  # first item leaving breaks it
    assert s.sum_drop_time(20, W, 10) == 1010
    assert s.sum_drop_time(20, W, 5) == 1020
    assert s.sum_drop_time(20, W, 16) is None


def test_eviction_and_compaction():
    s = Series(weighted=True)
    for t in range(200):
        s.add(t, f"e{t:03d}", 1)
    s.evict_through(149)
    assert len(s) == 50
    assert s.total(0, 1000) == 50
    assert s.latest(1000) == 199
    assert s.first_after(150) == 151
    assert s.newest_ids(190, 199, 3) == ["e199", "e198", "e197"]


def test_presence_intervals_distinct():
    p = PresenceIntervals(W)
    p.add(0, "a")
    p.add(500, "a")  # merges: a present on [0, 1500)
    p.add(100, "b")
    assert p.covering(0) == 1
    assert p.covering(100) == 2
    assert p.covering(1099) == 2
    assert p.covering(1100) == 1
    assert p.covering(1499) == 1
    assert p.covering(1500) == 0
    assert p.drop_time(200, 2) == 1100
    assert p.drop_time(200, 1) == 1500
    p.evict_through(1100)
    assert len(p) == 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 9), st.sampled_from("abcd")), max_size=40),
       st.integers(0, 4000))
def test_aggregates_match_brute_force(items, t):
    s = Series(weighted=True)
    p = PresenceIntervals(W)
    for i, (ts, v, key) in enumerate(items):
        s.add(ts, f"e{i:02d}", v)
        p.add(ts, key)
    inside = [(ts, v, key) for ts, v, key in items if t - W < ts <= t]
    assert s.count(t - W + 1, t) == len(inside)
    assert s.total(t - W + 1, t) == sum(v for _, v, _ in inside)
    assert p.covering(t) == len({key for _, _, key in inside})
    for need in (1, 2, 3):
        drop = s.count_drop_time(t, W, need)
        past = [ts for ts, _, _ in items if ts <= t]
        if len([x for x in past if x > t - W]) < need:
            assert drop is None
        else:
            assert drop == sorted(past)[-need] + W
