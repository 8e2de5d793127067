"""A write-through cache of deserialized keyed state for a keyed operator. Pure Python.

In PyFlink's thread mode every `ValueState.value()` crosses into the JVM and unpickles the whole value, and
the segments job reads a person's state on every event and timer (profile of issue 6: ~30 % of the
TaskManager's busy time went to reading and unpickling it). An operator that writes every change through to
its Flink state may keep the objects it last wrote and read them back from here instead: what Flink holds
for the key is exactly what was last written, so the cached object is identical to what `value()` would
return, as long as

- every change is written through to Flink state (`put` after the write), and a value changed in place but
  *not* written (an evaluation that failed half-way) is dropped (`drop`);
- the entry is younger than the state TTL: Flink expires a value `ttl` after its last write, so an entry
  older than `max_age_ms` since that write is dropped and the state read again;
- the cache lives in the operator instance: a restore from a checkpoint or savepoint opens a new instance
  with an empty cache.

Memory is bounded by `capacity` entries (least recently used first out). PyFlink's process mode has the same
kind of cache on its Python side (`python.state.cache-size`, default 1000); thread mode has none.
"""

from __future__ import annotations

from typing import Generic, TypeVar

V = TypeVar("V")


class StateCache(Generic[V]):
    """Values of the most recently used keys with the processing time of their last write.

    Args:
        capacity: most entries kept (0: caching off).
        max_age_ms: an entry written longer ago than this is not returned (below the state TTL).
    """

    def __init__(self, capacity: int, max_age_ms: int) -> None:
        if capacity < 0 or max_age_ms < 0:
            raise ValueError(f"capacity and max_age_ms must be non-negative, not {capacity}, {max_age_ms}")
        self.capacity = capacity
        self.max_age_ms = max_age_ms
        self._entries: dict[str, tuple[V, int]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now_ms: int) -> V | None:
        """The value last written for `key` (None: not cached, or too old: read the state)."""
        entry = self._entries.pop(key, None)
        if entry is None or now_ms - entry[1] >= self.max_age_ms:
            self.misses += 1
            return None
        self._entries[key] = entry  # most recently used last
        self.hits += 1
        return entry[0]

    def put(self, key: str, value: V, written_ms: int) -> None:
        """Remembers the value just written to the state for `key` at processing time `written_ms`."""
        if not self.capacity:
            return
        self._entries.pop(key, None)
        self._entries[key] = (value, written_ms)
        if len(self._entries) > self.capacity:
            del self._entries[next(iter(self._entries))]

    def drop(self, key: str) -> None:
        """Forgets `key` (its cached value may differ from the state)."""
        self._entries.pop(key, None)
