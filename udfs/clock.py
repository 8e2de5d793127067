"""The idle clock: event time that keeps moving when the whole input is silent.

Flink watermarks only advance when records arrive (idle partitions are skipped, but when every partition
is idle the watermark stops). A keyed operator that must act in event time without further input (close a
session, end a window) asks this clock instead: while input flows, its time is the watermark; once the
operator subtask has seen no input for `idle_timeout_ms`, its time is the highest watermark seen plus the
wall-clock time elapsed since then (never less than the current watermark):

    effective = watermark                                   while input arrived within idle_timeout_ms
    effective = max(watermark, base + (wall - since))       once idle, with since = max(base seen at, last input)

Backfills stay exact (input is never idle while a backlog is read, so only watermarks count) and live
sessions close about `idle_timeout_ms` plus the watermark delay after they are due. The clock's memory is
per operator subtask and transient: it needs no checkpointing, because after a restore it starts again from
the watermarks (and restored per-key event times) it observes. Pure Python, no pyflink import.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_IDLE_TIMEOUT_MS = 1000
NO_TIME = -(2**63)
"""Flink's initial watermark (Long.MIN_VALUE): no event time known yet."""


@dataclass
class IdleClock:
    """Effective event time of one operator subtask (all times in epoch ms).

    Args:
        idle_timeout_ms: input silence after which event time follows the wall clock.
        started_wall_ms: wall time the clock starts at (counts as the last input: a subtask that never
            receives input becomes idle `idle_timeout_ms` after it started).
    """

    idle_timeout_ms: int
    started_wall_ms: int

    def __post_init__(self) -> None:
        if self.idle_timeout_ms <= 0:
            raise ValueError(f"idle_timeout_ms must be positive, not {self.idle_timeout_ms}")
        self._input_wall = self.started_wall_ms
        self._base: int | None = None  # highest event time observed
        self._base_wall = self.started_wall_ms  # wall time it was first observed at
        self._idle_floor: int | None = None  # highest time returned since input stopped (monotone while idle)

    def observe(self, event_time: int, wall_ms: int) -> None:
        """Records an event time known to be reached (a watermark, or a restored per-key event time)."""
        if event_time > NO_TIME and (self._base is None or event_time > self._base):
            self._base, self._base_wall = event_time, wall_ms

    def on_input(self, watermark: int, wall_ms: int) -> None:
        """Records that input arrived (at the given watermark): the clock is not idle."""
        self._input_wall = max(self._input_wall, wall_ms)
        self._idle_floor = None
        self.observe(watermark, wall_ms)

    def idle(self, wall_ms: int) -> bool:
        """Whether no input arrived for at least `idle_timeout_ms`."""
        return wall_ms - self._input_wall >= self.idle_timeout_ms

    def now(self, watermark: int, wall_ms: int) -> int:
        """Returns the effective event time at `wall_ms`, given the current watermark.

        While idle, successive calls never go backwards (a watermark observed meanwhile restarts the
        extrapolation from itself, but not below what was already returned).
        """
        self.observe(watermark, wall_ms)
        if self._base is None or not self.idle(wall_ms):
            return watermark
        extrapolated = self._base + wall_ms - max(self._base_wall, self._input_wall)
        floor = watermark if self._idle_floor is None else self._idle_floor
        self._idle_floor = max(watermark, extrapolated, floor)
        return self._idle_floor

    def wall_time_for(self, event_time: int) -> int | None:
        """Returns the wall time at which, with no further input, `now` reaches `event_time`.

        None when the clock has observed no event time yet (it cannot extrapolate; the caller's event-time
        timer still fires when the watermark gets there).
        """
        if self._base is None:
            return None
        since = max(self._base_wall, self._input_wall)
        return max(self._input_wall + self.idle_timeout_ms, since + max(0, event_time - self._base))
