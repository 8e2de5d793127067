"""What the sessions job's keyed operator does for one person: messages in, state and records out.

The Flink `KeyedProcessFunction` (keyed by person id) only loads the person's `Slot`, calls
:meth:`KeyedSessions.handle` or :meth:`KeyedSessions.on_time`, stores the new slot, routes the records and
registers timers. Messages (`kind`, JSON body):

| kind | key | body | effect |
| --- | --- | --- | --- |
| `event` | the event's person | an `events.valid` event | placed by `Sessionizer.on_event` (or forwarded, below) |
| `merge` | the absorbed person | a `person-merges` record of kind `merge` | its state is handed off to the survivor |
| `survive` | the survivor | the same record | a stale forwarding pointer of the survivor is dropped |
| `handoff` | the survivor | a handoff record (below) | folded with `Sessionizer.merge_person` |

Flink keyed state cannot move between keys, so a person merge travels through a loop topic: the absorbed
key emits a handoff record `{"kind": "handoff", "type": "state", "from", "to", "id", "hops", "state"}`
keyed by the survivor, clears its sessions and from then on forwards its events as handoff records of type
`event`. A forwarding person forwards handoffs too (chains of merges), at most `max_hops` times (merge
cycles). Handoff ids are remembered (`folded`), so a redelivered handoff is folded once. Pure Python.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import orjson

from udfs.sessions.config import SessionConfig
from udfs.sessions.model import PersonState
from udfs.sessions.records import LATE, Output, dynamo_writes, redis_live, redis_recent
from udfs.sessions.sessionizer import Sessionizer, Step

EVENT, MERGE, SURVIVE, HANDOFF = "event", "merge", "survive", "handoff"
MAX_FOLDED = 64

# Names of what happened besides records (the wrapper counts them as metrics).
FORWARDED, MERGED, MERGED_AWAY, DUPLICATE, DROPPED_LOOP, STALE = (
    "forwarded", "merged", "merged_away", "handoff_duplicate", "handoff_dropped", "merge_stale")


@dataclass(frozen=True)
class Slot:
    """Everything the keyed operator keeps for one person.

    Attributes:
        state: the core's state.
        survivor: set once this person was merged into another: its inputs are forwarded there.
        merged_at: event time of the latest merge record about this person (older ones are stale).
        folded: ids of the handoffs already folded into this person, newest first.
    """

    state: PersonState
    survivor: str | None = None
    merged_at: int | None = None
    folded: tuple[str, ...] = ()

    def to_json(self) -> str:
        """Serializes the slot (Flink state)."""
        return orjson.dumps({"state": self.state.to_dict(), "survivor": self.survivor,
                             "merged_at": self.merged_at, "folded": list(self.folded)}).decode("utf-8")

    @classmethod
    def from_json(cls, data: str | bytes) -> Slot:
        """Rebuilds a slot from `to_json` output."""
        doc = orjson.loads(data)
        return cls(PersonState.from_dict(doc["state"]), doc["survivor"], doc["merged_at"], tuple(doc["folded"]))


class Result(NamedTuple):
    """Outcome of one call.

    Attributes:
        slot: the person's new slot.
        outputs: the core's records: `sessions` records and `late` events.
        handoffs: (target person, handoff record) for the loop topic.
        store_ops: Redis and DynamoDB writes, in order.
        wakeup: event time at which `on_time` must run next (None: no timer needed).
        notes: what else happened (`forwarded`, `merged`, ...), for metrics.
    """

    slot: Slot
    outputs: list[Output]
    handoffs: list[tuple[str, dict[str, Any]]]
    store_ops: list[Any]
    wakeup: int | None
    notes: tuple[str, ...] = ()


def route_merge(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Returns the (person, message kind) pairs a `person-merges` record is delivered to.

    Only kind `merge` moves state (`split`, `refused` and `review` records are informational here: a
    session cannot be split after the fact).
    """
    absorbed, survivor = record.get("absorbed"), record.get("survivor")
    if record.get("kind") != "merge" or not isinstance(absorbed, str) or not isinstance(survivor, str):
        return []
    if not absorbed or not survivor or absorbed == survivor:
        return []
    return [(absorbed, MERGE), (survivor, SURVIVE)]


def merge_id(record: Mapping[str, Any]) -> str:
    """Returns the id of the handoff a merge record causes (its idempotency key, else a hash of it)."""
    key = record.get("idempotency_key")
    if isinstance(key, str) and key:
        return key
    parts = (record.get("absorbed"), record.get("survivor"), record.get("event_id"), record.get("ts"))
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).hexdigest()


class KeyedSessions:
    """The keyed operator's logic around a :class:`Sessionizer`.

    Args:
        config: the sessionization settings.
        max_hops: a handoff forwarded more often than this is dropped (a cycle of merge pointers).
    """

    def __init__(self, config: SessionConfig, max_hops: int = 8):
        self.config = config
        self.sessionizer = Sessionizer(config)
        self.max_hops = max_hops

    def new_slot(self, person_id: str) -> Slot:
        """The slot of a person with no history."""
        return Slot(self.sessionizer.new_state(person_id))

    def wakeup(self, slot: Slot) -> int | None:
        """The event time at which `on_time` has work for this slot."""
        return self.sessionizer.next_wakeup(slot.state)

    def handle(self, slot: Slot, kind: str, body: bytes | str, watermark: int) -> Result:
        """Handles one message (see the module doc) at the current watermark."""
        doc = orjson.loads(body)
        if kind == EVENT:
            return self.on_event(slot, doc, watermark)
        if kind == MERGE:
            return self.on_merge(slot, doc)
        if kind == SURVIVE:
            return self.on_survive(slot, doc)
        if kind == HANDOFF:
            return self.on_handoff(slot, doc, watermark)
        raise ValueError(f"unknown message kind {kind!r}")

    def on_event(self, slot: Slot, event: Mapping[str, Any], watermark: int) -> Result:
        """Places an event, or forwards it when this person was merged away."""
        if slot.survivor is not None:
            record = {"kind": HANDOFF, "type": EVENT, "from": slot.state.person_id, "to": slot.survivor,
                      "hops": 1, "event": dict(event)}
            return self._unchanged(slot, [(slot.survivor, record)], FORWARDED)
        return self._stepped(slot, self.sessionizer.on_event(slot.state, event, watermark))

    def on_time(self, slot: Slot, now: int) -> Result:
        """Moves the person's event time to `now` (a watermark, or the idle clock's time)."""
        return self._stepped(slot, self.sessionizer.advance(slot.state, now))

    def on_merge(self, slot: Slot, record: Mapping[str, Any]) -> Result:
        """This person was absorbed: hands its state off to the survivor and starts forwarding."""
        survivor, ts = str(record["survivor"]), _ts(record)
        if slot.survivor == survivor or (slot.merged_at is not None and ts < slot.merged_at):
            return self._unchanged(slot, [], STALE)
        state = slot.state
        handoffs = []
        if state.sessions or state.seen:
            handoffs.append((survivor, {"kind": HANDOFF, "type": "state", "from": state.person_id, "to": survivor,
                                        "id": merge_id(record), "hops": 0, "state": state.to_dict()}))
        cleared = PersonState(state.person_id, watermark=state.watermark, floor=state.floor, recent=state.recent,
                              seq=state.seq + 1)
        new_slot = replace(slot, state=cleared, survivor=survivor, merged_at=ts)
        return Result(new_slot, [], handoffs, [redis_live(cleared, self.config)], None, (MERGED_AWAY,))

    def on_survive(self, slot: Slot, record: Mapping[str, Any]) -> Result:
        """This person survived a merge: a forwarding pointer older than the merge is dropped."""
        ts = _ts(record)
        if slot.merged_at is not None and ts < slot.merged_at:
            return self._unchanged(slot, [], STALE)
        return self._unchanged(replace(slot, survivor=None, merged_at=ts), [])

    def on_handoff(self, slot: Slot, record: Mapping[str, Any], watermark: int) -> Result:
        """Folds a handed-off state (or places a forwarded event), or forwards it along a merge chain."""
        me = slot.state.person_id
        if slot.survivor is not None:
            hops = int(record.get("hops", 0)) + 1
            if hops > self.max_hops:
                return self._unchanged(slot, [], DROPPED_LOOP)
            forwarded = {**record, "to": slot.survivor, "hops": hops}
            return self._unchanged(slot, [(slot.survivor, forwarded)], FORWARDED)
        if record["type"] == EVENT:
            return self.on_event(slot, record["event"], watermark)
        handoff_id = str(record["id"])
        absorbed = PersonState.from_dict(record["state"])
        if handoff_id in slot.folded:
            return self._unchanged(slot, [], DUPLICATE)
        if absorbed.person_id == me:  # our own state came back around a merge cycle
            return self._unchanged(slot, [], DROPPED_LOOP)
        step = self.sessionizer.merge_person(slot.state, absorbed, watermark)
        folded = (handoff_id, *slot.folded)[:MAX_FOLDED]
        result = self._stepped(replace(slot, folded=folded), step)
        return result._replace(notes=(*result.notes, MERGED))

    # -- internals ---------------------------------------------------------------------------------------

    def _stepped(self, slot: Slot, step: Step) -> Result:
        ops: list[Any] = []
        if any(o.kind != LATE for o in step.outputs):
            ops = [redis_live(step.state, self.config), redis_recent(step.state, self.config)]
            for output in step.outputs:
                ops.extend(dynamo_writes(output, self.config))
        return Result(replace(slot, state=step.state), step.outputs, [], ops, step.next_wakeup)

    def _unchanged(self, slot: Slot, handoffs: list[tuple[str, dict[str, Any]]], *notes: str) -> Result:
        return Result(slot, [], handoffs, [], self.wakeup(slot), notes)


def open_sessions(slot: Slot) -> int:
    """Number of open sessions of a slot."""
    return sum(1 for s in slot.state.sessions if not s.closed)


def _ts(record: Mapping[str, Any]) -> int:
    ts = record.get("ts")
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else 0
