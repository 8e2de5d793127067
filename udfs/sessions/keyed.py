"""What the sessions job's keyed operator does for one person: messages in, state and records out.

The Flink `KeyedProcessFunction` (keyed by person id) loads the person's `Slot`, calls
:meth:`KeyedSessions.handle` or :meth:`KeyedSessions.on_time`, stores the new slot, routes the records and
registers timers. Person merges follow the shared protocol of `udfs/merges.py` (held until event time
reaches them, then handed off through the `sessions.handoff` loop topic); this module is the sessions
side of it, :class:`SessionsCore`: the export of a person is `PersonState.to_dict()` (open and retained
closed sessions, seen ids), folded with `Sessionizer.merge_person`. An `erase` event removes the person's
sessions from the state and the stores. Pure Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from udfs.merges import HANDOFF, MERGE, SURVIVE, MergeDriver, Pointer, Result, Slot, route_merge
from udfs.sessions.aggregate import event_time
from udfs.sessions.config import SessionConfig
from udfs.sessions.model import MIN_WATERMARK, PersonState
from udfs.sessions.records import LATE, Output, dynamo_writes, redis_live, redis_recent
from udfs.sessions.sessionizer import Sessionizer, Step
from udfs.stores.keys import build_key
from udfs.stores.ops import DynamoErasePartition, RedisDelete

__all__ = ["HANDOFF", "MERGE", "SURVIVE", "Emitted", "KeyedSessions", "SessionsCore", "Slot", "open_sessions",
           "route_merge", "slot_from_json", "slot_to_json"]

ERASE = "erase"


class Emitted(NamedTuple):
    """What one core call emits: `sessions` records and `late` events, and the store ops, in order."""

    outputs: list[Output]
    store_ops: list[Any]


class SessionsCore:
    """The :class:`udfs.merges.MergeCore` of the sessions job around a :class:`Sessionizer`."""

    def __init__(self, config: SessionConfig):
        self.config = config
        self.sessionizer = Sessionizer(config)

    def new_state(self, person_id: str) -> PersonState:
        return self.sessionizer.new_state(person_id)

    def person_of(self, state: PersonState) -> str:
        return state.person_id

    def wakeup(self, state: PersonState) -> int | None:
        return self.sessionizer.next_wakeup(state)

    def on_event(self, state: PersonState, event: Mapping[str, Any], watermark: int | None
                 ) -> tuple[PersonState, Emitted]:
        if event.get("type") == ERASE:
            return self.erase(state, event)
        return self._stepped(self.sessionizer.on_event(state, event, _wm(watermark)))

    def advance(self, state: PersonState, now: int, watermark: int | None) -> tuple[PersonState, Emitted]:
        return self._stepped(self.sessionizer.advance(state, now))

    def hand_off(self, state: PersonState, at: int) -> tuple[dict[str, Any] | None, PersonState, Emitted]:
        exported = state.to_dict() if state.sessions or state.seen else None
        cleared = PersonState(state.person_id, watermark=state.watermark, floor=state.floor, recent=state.recent,
                              seq=state.seq + 1)
        return exported, cleared, Emitted([], [redis_live(cleared, self.config)])

    def fold(self, state: PersonState, exported: Mapping[str, Any], watermark: int | None
             ) -> tuple[PersonState, Emitted]:
        absorbed = PersonState.from_dict(exported)
        return self._stepped(self.sessionizer.merge_person(state, absorbed, _wm(watermark)))

    def erase(self, state: PersonState, event: Mapping[str, Any]) -> tuple[PersonState, Emitted]:
        """An `erase` event: the person's sessions are deleted unconditionally from Redis (live and recent
        keys) and DynamoDB (the whole history: a partition erasure, since the state knows only the latest
        sessions); the state restarts empty (keeping its watermark and version counter, and the erase's id as
        seen)."""
        cfg, seq = self.config, state.seq + 1
        ops: list[Any] = [RedisDelete(build_key(k, person_id=state.person_id), seq, erase=True)
                          for k in (cfg.redis_live_key, cfg.redis_recent_key)]
        ops.append(DynamoErasePartition(cfg.dynamodb_table, state.person_id, seq))
        seen = {str(event["event_id"]): event_time(event)}
        fresh = PersonState(state.person_id, seen=seen, watermark=state.watermark, seq=seq)
        return fresh, Emitted([], ops)

    def _stepped(self, step: Step) -> tuple[PersonState, Emitted]:
        ops: list[Any] = []
        if any(o.kind != LATE for o in step.outputs):
            ops = [redis_live(step.state, self.config), redis_recent(step.state, self.config)]
            for output in step.outputs:
                ops.extend(dynamo_writes(output, self.config))
        return step.state, Emitted(step.outputs, ops)


class KeyedSessions(MergeDriver[PersonState, Emitted]):
    """The keyed operator's logic: the merge protocol around :class:`SessionsCore`.

    Args:
        config: the sessionization settings.
        max_hops: a handoff forwarded more often than this is dropped (a cycle of merge pointers).
    """

    def __init__(self, config: SessionConfig, max_hops: int = 8):
        super().__init__(SessionsCore(config), max_hops)
        self.config = config


SessionsResult = Result[PersonState, Emitted]


def slot_to_json(slot: Slot[PersonState]) -> str:
    """Serializes a slot (Flink state, JSON text)."""
    return orjson.dumps({"state": slot.state.to_dict(), "merge": slot.merge.to_dict()}).decode("utf-8")


def slot_from_json(data: str | bytes) -> Slot[PersonState]:
    """Inverse of :func:`slot_to_json`."""
    doc = orjson.loads(data)
    return Slot(PersonState.from_dict(doc["state"]), Pointer.from_dict(doc.get("merge", {})))


def open_sessions(slot: Slot[PersonState]) -> int:
    """Number of open sessions of a slot."""
    return sum(1 for s in slot.state.sessions if not s.closed)


def _wm(watermark: int | None) -> int:
    return MIN_WATERMARK if watermark is None else watermark
