"""Exact, incremental window aggregates over a person's evidence.

Every window in tagstream is half-open on the left: the window of length `W` at time `t` holds the events
with `t - W < ts <= t`, i.e. `[t - W + 1, t]` in integer milliseconds. An event at `e` is therefore inside
the window for `t` in `[e, e + W)`: it counts from its own millisecond and stops counting at `e + W`.

`Series` keeps evidence sorted by `(ts, event_id)` with optional prefix sums, so counts and sums over any
window are two binary searches; appending in time order and evicting from the front are O(1) amortized.
`PresenceIntervals` answers distinct counts: each value is present on the union of `[e, e + W)` over its
occurrences, and the distinct count at `t` is the number of presence intervals covering `t`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import Any

_COMPACT_AT = 64
_MAX = 1 << 63


class Series:
    """Evidence times in ascending `(ts, event_id)` order, with optional integer values and prefix sums."""

    __slots__ = ("_head", "_ids", "_pre", "_ts", "_vals")

    def __init__(self, weighted: bool = False) -> None:
        self._ts: list[int] = []
        self._ids: list[str] = []
        self._vals: list[int] | None = [] if weighted else None
        self._pre: list[int] | None = [0] if weighted else None
        self._head = 0

    def __len__(self) -> int:
        return len(self._ts) - self._head

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles the retained items only, as a tuple of lists (the person's state is pickled on every write)."""
        head = self._head
        if not head:  # the usual case: nothing evicted since the last compaction, no copies
            return _series, (self._ts, self._ids, self._vals, self._pre)
        if self._vals is None or self._pre is None:
            return _series, (self._ts[head:], self._ids[head:], None, None)
        return _series, (self._ts[head:], self._ids[head:], self._vals[head:], self._pre[head:])

    def add(self, ts: int, event_id: str, value: int = 0) -> None:
        """Inserts one piece of evidence (O(1) when in time order)."""
        times, ids = self._ts, self._ids
        if not times or ts > times[-1] or (ts == times[-1] and event_id > ids[-1]):
            times.append(ts)
            ids.append(event_id)
            if self._vals is not None and self._pre is not None:
                self._vals.append(value)
                self._pre.append(self._pre[-1] + value)
            return
        i = bisect_left(times, ts, self._head)
        end = bisect_right(times, ts, i)
        while i < end and ids[i] < event_id:
            i += 1
        times.insert(i, ts)
        ids.insert(i, event_id)
        if self._vals is not None:
            self._vals.insert(i, value)
            self._reprefix(i)

    def remove(self, ts: int, event_id: str) -> bool:
        """Removes one piece of evidence; returns whether it was there."""
        times = self._ts
        i = bisect_left(times, ts, self._head)
        end = bisect_right(times, ts, i)
        while i < end:
            if self._ids[i] == event_id:
                del times[i], self._ids[i]
                if self._vals is not None:
                    del self._vals[i]
                    self._reprefix(i)
                return True
            i += 1
        return False

    def contains(self, ts: int, event_id: str) -> bool:
        """Returns whether this exact evidence is present."""
        i = bisect_left(self._ts, ts, self._head)
        end = bisect_right(self._ts, ts, i)
        return event_id in self._ids[i:end]

    def _reprefix(self, i: int) -> None:
        assert self._vals is not None and self._pre is not None
        del self._pre[i + 1:]
        self._pre.extend(accumulate(self._vals[i:], initial=self._pre[i]))
        del self._pre[i + 1]

    def evict_through(self, t: int) -> None:
        """Forgets evidence with `ts <= t` (amortized O(1) per item)."""
        self._head = bisect_right(self._ts, t, self._head)
        head = self._head
        if head >= _COMPACT_AT and head * 2 >= len(self._ts):
            del self._ts[:head], self._ids[:head]
            if self._vals is not None and self._pre is not None:
                del self._vals[:head], self._pre[:head]
            self._head = 0

    def count(self, lo: int, hi: int) -> int:
        """Number of items with `lo <= ts <= hi`."""
        return bisect_right(self._ts, hi, self._head) - bisect_left(self._ts, lo, self._head)

    def total(self, lo: int, hi: int) -> int:
        """Sum of the values of the items with `lo <= ts <= hi`."""
        assert self._pre is not None
        pre, times, head = self._pre, self._ts, self._head
        return pre[bisect_right(times, hi, head)] - pre[bisect_left(times, lo, head)]

    def latest(self, t: int) -> int | None:
        """Time of the newest item with `ts <= t`, if any."""
        i = bisect_right(self._ts, t, self._head) - 1
        return self._ts[i] if i >= self._head else None

    def first_after(self, t: int) -> int | None:
        """Time of the oldest item with `ts > t`, if any."""
        i = bisect_right(self._ts, t, self._head)
        return self._ts[i] if i < len(self._ts) else None

    def latest_before(self, t: int, floor: int) -> int | None:
        """Time of the newest item with `floor < ts < t`, if any."""
        i = bisect_left(self._ts, t, self._head) - 1
        return self._ts[i] if i >= self._head and self._ts[i] > floor else None

    def count_drop_time(self, t: int, width: int, need: int) -> int | None:
        """When, with no new evidence, the count over the window ending at `t` falls below `need`.

        The `need`-th newest item at or before `t` leaves the window at its time + `width`; None when the
        count is already below `need`.
        """
        i = bisect_right(self._ts, t, self._head) - need
        if i < self._head or self._ts[i] <= t - width:
            return None
        return self._ts[i] + width

    def sum_drop_time(self, t: int, width: int, need: int) -> int | None:
        """When, with no new evidence, the sum over the window ending at `t` falls below `need` (> 0).

        Values are non-negative, so prefix sums are non-decreasing and the item whose expiry makes the sum
        fall is found by binary search; None when the sum is already below `need`.
        """
        assert self._pre is not None
        pre = self._pre
        lo = bisect_left(self._ts, t - width + 1, self._head)
        hi = bisect_right(self._ts, t, self._head)
        if pre[hi] - pre[lo] < need:
            return None
        # smallest m in (lo, hi] with pre[hi] - pre[m] < need: dropping items [lo, m) breaks the condition
        m = bisect_right(pre, pre[hi] - need, lo + 1, hi + 1)
        return self._ts[m - 1] + width

    def newest_ids(self, lo: int, hi: int, limit: int) -> list[str]:
        """Ids of the newest `limit` items with `lo <= ts <= hi`, newest first."""
        start = bisect_left(self._ts, lo, self._head)
        end = bisect_right(self._ts, hi, self._head)
        return self._ids[max(start, end - limit):end][::-1]

    def items(self) -> list[tuple[int, str]]:
        """All retained `(ts, event_id)` pairs in order."""
        return list(zip(self._ts[self._head:], self._ids[self._head:], strict=True))

    def between(self, lo: int, hi: int) -> list[tuple[int, str]]:
        """The `(ts, event_id)` pairs with `lo <= ts <= hi`, in order."""
        start = bisect_left(self._ts, lo, self._head)
        end = bisect_right(self._ts, hi, self._head)
        return list(zip(self._ts[start:end], self._ids[start:end], strict=True))


def _series(ts: list[int], ids: list[str], vals: list[int] | None, pre: list[int] | None) -> Series:
    """Inverse of `Series.__reduce__`."""
    series = Series.__new__(Series)
    series._ts, series._ids, series._vals, series._pre, series._head = ts, ids, vals, pre, 0
    return series


class PresenceIntervals:
    """Distinct values per window: each value's presence is a union of `[e, e + width)` intervals."""

    __slots__ = ("_by_value", "_ends", "_starts", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self._by_value: dict[str, list[tuple[int, int]]] = {}
        self._starts: list[int] = []
        self._ends: list[tuple[int, str]] = []

    def add(self, ts: int, value: str) -> None:
        """Adds one occurrence of `value` at `ts`, merging overlapping or touching intervals."""
        start, end = ts, ts + self.width
        intervals = self._by_value.setdefault(value, [])
        j = bisect_right(intervals, (end, _MAX))
        i = j
        while i > 0 and intervals[i - 1][1] >= start:
            i -= 1
        for old_start, old_end in intervals[i:j]:
            start, end = min(start, old_start), max(end, old_end)
            del self._starts[bisect_left(self._starts, old_start)]
            del self._ends[bisect_left(self._ends, (old_end, value))]
        intervals[i:j] = [(start, end)]
        self._starts.insert(bisect_right(self._starts, start), start)
        self._ends.insert(bisect_right(self._ends, (end, value)), (end, value))

    def covering(self, t: int) -> int:
        """Number of distinct values present at `t`."""
        return bisect_right(self._starts, t) - bisect_left(self._ends, (t + 1,))

    def drop_time(self, t: int, need: int) -> int | None:
        """When, with no new evidence, fewer than `need` values are present (None if already so).

        Exact when no interval starts after `t` (the usual case at the frontier); otherwise the next interval
        end after `t`, a time at which the count may change.
        """
        have = self.covering(t)
        if have < need:
            return None
        j = bisect_left(self._ends, (t + 1,))
        if bisect_right(self._starts, t) == len(self._starts):
            return self._ends[j + have - need][0]
        return self._ends[j][0]

    def next_start(self, t: int) -> int | None:
        """The first interval start after `t`, if any."""
        i = bisect_right(self._starts, t)
        return self._starts[i] if i < len(self._starts) else None

    def evict_through(self, t: int) -> None:
        """Forgets the intervals that ended at or before `t`."""
        k = bisect_left(self._ends, (t + 1,))
        for _end, value in self._ends[:k]:
            intervals = self._by_value[value]
            start = intervals[0][0]
            del intervals[0]
            if not intervals:
                del self._by_value[value]
            del self._starts[bisect_left(self._starts, start)]
        del self._ends[:k]

    def __len__(self) -> int:
        return len(self._ends)
