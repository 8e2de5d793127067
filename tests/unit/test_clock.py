"""The idle clock (udfs/clock.py): watermarks while input flows, the wall clock once the input is silent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udfs.clock import NO_TIME, IdleClock

IDLE = 1000
T0 = 1_795_000_000_000  # a wall-clock time
E0 = 1_700_000_000_000  # an event time


def test_watermark_while_input_flows_then_wall_clock_once_idle():
    clock = IdleClock(IDLE, T0)
    clock.on_input(E0, T0)
    assert clock.now(E0, T0 + 999) == E0  # not idle yet
    assert clock.now(E0, T0 + 1000) == E0 + 1000  # idle: the watermark plus the silence
    assert clock.now(E0, T0 + 60_000) == E0 + 60_000
    clock.on_input(E0 + 5, T0 + 61_000)  # input again: back to the watermark
    assert clock.now(E0 + 5, T0 + 61_500) == E0 + 5


def test_a_watermark_seen_while_idle_restarts_the_extrapolation_but_time_never_goes_back():
    clock = IdleClock(IDLE, T0)
    clock.on_input(E0, T0)
    assert clock.now(E0, T0 + 10_000) == E0 + 10_000
    # event time really moved (other inputs), but less than guessed: hold until the new line catches up
    assert clock.now(E0 + 2_000, T0 + 11_000) == E0 + 10_000
    assert clock.now(E0 + 2_000, T0 + 19_000) == E0 + 10_000
    assert clock.now(E0 + 2_000, T0 + 20_000) == E0 + 11_000
    assert clock.now(E0 + 50_000, T0 + 21_000) == E0 + 50_000  # a watermark ahead of the guess: taken
    assert clock.now(E0 + 50_000, T0 + 22_000) == E0 + 51_000  # and extrapolated from


def test_wall_time_for_an_event_time():
    clock = IdleClock(IDLE, T0)
    assert clock.wall_time_for(E0) is None  # no event time known yet
    clock.on_input(E0, T0)
    assert clock.wall_time_for(E0 + 30_000) == T0 + 30_000
    assert clock.wall_time_for(E0 + 10) == T0 + IDLE  # never before the input is idle
    assert clock.wall_time_for(E0 - 5) == T0 + IDLE


def test_a_restored_subtask_extrapolates_from_observed_per_key_times():
    clock = IdleClock(IDLE, T0)  # started (restored) at T0, no input, watermark still Flink's initial one
    assert clock.now(NO_TIME, T0 + 5_000) == NO_TIME
    clock.observe(E0, T0 + 5_000)  # a key's restored event time
    assert clock.now(NO_TIME, T0 + 5_000) == E0
    assert clock.now(NO_TIME, T0 + 8_000) == E0 + 3_000
    assert clock.wall_time_for(E0 + 10_000) == T0 + 15_000


def test_idle_timeout_must_be_positive():
    with pytest.raises(ValueError):
        IdleClock(0, T0)


# -- properties: any interleaving of inputs, observations and reads, with a wall clock moving forward ----

steps = st.lists(st.tuples(st.sampled_from(["input", "observe", "now"]), st.integers(0, 3 * IDLE),
                           st.integers(-5_000, 20_000)), min_size=1, max_size=40)


def replay(ops: list[tuple[str, int, int]]) -> tuple[IdleClock, int, int]:
    """A clock fed `ops` (reads count as observations); returns it with the final wall time and watermark."""
    clock = IdleClock(IDLE, T0)
    wall, watermark = T0, E0
    for op, dt, dwm in ops:
        wall += dt
        watermark += abs(dwm)
        if op == "input":
            clock.on_input(watermark, wall)
        else:
            clock.observe(watermark, wall)
    return clock, wall, watermark


@given(steps)
def test_effective_time_is_the_watermark_unless_idle_and_never_below_it(ops):
    clock = IdleClock(IDLE, T0)
    wall, watermark, last_input = T0, E0, T0
    for op, dt, dwm in ops:
        wall += dt
        watermark = max(watermark, watermark + dwm)  # watermarks never go back
        if op == "input":
            clock.on_input(watermark, wall)
            last_input = wall
        elif op == "observe":
            clock.observe(watermark + dwm, wall)
        else:
            now = clock.now(watermark, wall)
            assert now >= watermark
            if wall - last_input < IDLE:
                assert now == watermark


@given(steps, st.lists(st.integers(1, 5 * IDLE), min_size=1, max_size=10))
def test_while_idle_time_moves_forward_with_the_wall_clock(ops, silences):
    clock, wall, watermark = replay(ops)
    wall += IDLE  # silence: idle from here on, the watermark stalls
    previous = clock.now(watermark, wall)
    for silence in silences:
        wall += silence
        now = clock.now(watermark, wall)
        assert now - previous == silence  # as fast as the wall clock
        previous = now


@given(steps, st.integers(-10_000, 500_000))
def test_wall_time_for_is_exactly_when_the_time_is_reached(ops, ahead):
    clock, wall, watermark = replay(ops)
    target = watermark + ahead
    due = clock.wall_time_for(target)
    assert due is not None
    if due - 1 >= wall and clock.idle(due - 1):
        assert clock.now(watermark, due - 1) < target or target <= watermark
    assert clock.now(watermark, max(due, wall)) >= target


@given(st.lists(st.integers(1, IDLE - 1), min_size=1, max_size=50), st.lists(st.integers(0, 3_600_000), min_size=1,
                                                                              max_size=50))
def test_a_backfill_never_idle_only_follows_watermarks(gaps, jumps):
    clock = IdleClock(IDLE, T0)
    wall, watermark = T0, E0
    for gap, jump in zip(gaps, jumps, strict=False):
        wall += gap
        watermark += jump  # event time racing ahead of the wall clock
        clock.on_input(watermark, wall)
        assert clock.now(watermark, wall + gap // 2) == watermark
