"""The write-through state cache (`udfs/state_cache.py`): an LRU of the values last written, bounded by
entries and age (tier 1, hypothesis against a model)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udfs.state_cache import StateCache

AGE = 100
ops = st.lists(st.tuples(st.sampled_from(["get", "put", "drop"]), st.sampled_from("abcde"), st.integers(0, 60)),
               max_size=60)


@given(st.integers(0, 4), ops)
def test_behaves_like_a_bounded_lru_of_the_values_last_written(capacity: int, steps) -> None:
    cache: StateCache[int] = StateCache(capacity, AGE)
    model: list[tuple[str, int, int]] = []  # (key, value, written), least recently used first
    now = 0
    for n, (op, key, advance) in enumerate(steps):
        now += advance
        entry = next((e for e in model if e[0] == key), None)
        if op == "put":
            cache.put(key, n, now)
            if capacity:
                model = [e for e in model if e[0] != key] + [(key, n, now)]
                model = model[-capacity:]
        elif op == "drop":
            cache.drop(key)
            model = [e for e in model if e[0] != key]
        else:
            fresh = entry is not None and now - entry[2] < AGE
            assert cache.get(key, now) == (entry[1] if fresh else None)
            model = [e for e in model if e[0] != key] + ([entry] if fresh and entry else [])
        assert len(cache) == len(model) <= capacity


def test_an_entry_as_old_as_max_age_is_read_again() -> None:
    cache: StateCache[str] = StateCache(2, 10)
    cache.put("k", "v", 100)
    assert cache.get("k", 109) == "v"
    assert cache.get("k", 110) is None and len(cache) == 0
    assert (cache.hits, cache.misses) == (1, 1)


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        StateCache(-1, 10)
