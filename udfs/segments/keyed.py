"""The segments side of the shared person-merge protocol (`udfs/merges.py`): the engine as a `MergeCore`.

The Flink wrapper (`jobs/segments.py`) keeps, per person, the engine's `PersonState` and the merge
`Pointer`, and runs :func:`driver` on every message and timer. A person merged away hands its retained
history, consent and traits (`engine.export_person`) to the survivor through the `segments.handoff` loop
topic; its tags exit with cause `merge` and its store entries are deleted; the survivor folds the export
(`Engine.fold`) as if every event had carried its id. Pure Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from udfs.merges import MergeDriver
from udfs.segments.engine import Engine
from udfs.segments.records import Outputs
from udfs.segments.state import PersonState

MAX_STEPS = 1000


class SegmentsCore:
    """The :class:`udfs.merges.MergeCore` of the segments job around one catalog's :class:`Engine`.

    Args:
        engine: the engine of the current definition set.
        max_steps: at most this many wakeups are processed by one `advance` (a bound for idle-clock jumps).
    """

    def __init__(self, engine: Engine, max_steps: int = MAX_STEPS):
        self.engine = engine
        self.max_steps = max_steps

    def new_state(self, person_id: str) -> PersonState:
        return self.engine.new_state(person_id)

    def person_of(self, state: PersonState) -> str:
        return state.person_id

    def wakeup(self, state: PersonState) -> int | None:
        return self.engine.next_wakeup(state)

    def on_event(self, state: PersonState, event: Mapping[str, Any], watermark: int | None
                 ) -> tuple[PersonState, Outputs]:
        state, out, _ = self.engine.on_event(state, event, watermark)
        return state, out

    def advance(self, state: PersonState, now: int, watermark: int | None) -> tuple[PersonState, Outputs]:
        """Emits every change due up to `now`, one wakeup at a time (the person's clock stops at the last
        change, not at `now`, so an idle-clock time ahead of the watermark never makes later events late)."""
        out, wake = Outputs(), self.engine.next_wakeup(state)
        for _ in range(self.max_steps):
            if wake is None or wake > now:
                break
            state, step, wake = self.engine.advance(state, wake, watermark)
            out.extend(step)
        return state, out

    def hand_off(self, state: PersonState, at: int) -> tuple[dict[str, Any] | None, PersonState, Outputs]:
        return self.engine.hand_off(state, at)

    def fold(self, state: PersonState, exported: Mapping[str, Any], watermark: int | None
             ) -> tuple[PersonState, Outputs]:
        state, out, _ = self.engine.fold(state, exported, watermark)
        return state, out


def driver(engine: Engine, max_hops: int = 8) -> MergeDriver[PersonState, Outputs]:
    """The merge protocol around an engine (cheap: build one per call, the engine changes on hot reload)."""
    return MergeDriver(SegmentsCore(engine), max_hops)
