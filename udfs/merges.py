"""Person merges in a job keyed by person: the protocol the sessions and segments jobs share. Pure Python.

The identity job announces on `person-merges` that person `absorbed` became part of `survivor`. A job
keyed by person must then move the absorbed person's state to the survivor, but Flink keyed state cannot
move between keys, so the state travels through a loop topic (the job's `*.handoff` topic, keyed by the
survivor, read back by the same job). :class:`MergeDriver` runs that protocol around a job's pure core
(:class:`MergeCore`); the Flink operator only loads the person's :class:`Slot`, calls
:meth:`MergeDriver.handle` or :meth:`MergeDriver.on_time`, stores the slot, routes what comes out and
registers a timer at `Result.wakeup`. Messages (`kind`, JSON body):

| kind | key | body | effect |
| --- | --- | --- | --- |
| `event` | the event's person | an event | placed by the core (or forwarded, below) |
| `merge` | the absorbed person | a `person-merges` record of kind `merge` | held until its `ts`, then handed off |
| `survive` | the survivor | the same record | a stale forwarding pointer of the survivor is dropped |
| `handoff` | the survivor | a handoff record (below) | folded into the survivor by the core |

**Event time.** A merge is applied when the person's event time (watermark, or the idle clock) reaches the
merge's `ts`, not when the record arrives: by then every event of the absorbed person up to the merge
(within the watermark's out-of-orderness) has been placed, whatever the partitions, topics and
parallelism the records took. Held merges are part of the slot (`Pointer.pending`) and set the wakeup.

**Handoff.** The absorbed key emits `{"kind": "handoff", "type": "state", "from", "to", "id", "hops", "ts",
"state"}` (`state`: the core's export, JSON; `ts`: the merge's time) keyed by the survivor, starts over with
an empty core state and from then on forwards its events as handoffs of type `event` (`ts`: the event's
time; events still keyed by the old id, e.g. in flight when the identity job merged, or late). The loop
topic's event time is that `ts`, never the Kafka record time: a handoff written at wall-clock time while
the events are behind (a backlog, a replay) would move the operator's watermark ahead of them. A
forwarding person forwards handoffs too (chains of merges), at most `max_hops` times (merge cycles).
Handoff ids are remembered (`Pointer.folded`), so a redelivered handoff is folded once. A `survive`
message newer than a pointer removes it (re-keys that swap two persons do not loop); merge records older
than the latest one applied to a person are stale.

Only records of kind `merge` move anything: `split` (a later link changed an earlier decision),
`refused` (merge protection) and `review` (probabilistic candidates below the threshold) are not merges.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import orjson

EVENT, MERGE, SURVIVE, HANDOFF = "event", "merge", "survive", "handoff"
MAX_FOLDED = 64
MAX_PENDING = 64

# Names of what happened besides records (the wrappers count them as metrics).
FORWARDED, MERGED, MERGED_AWAY, DUPLICATE, DROPPED_LOOP, STALE, HELD = (
    "forwarded", "merged", "merged_away", "handoff_duplicate", "handoff_dropped", "merge_stale", "merge_held")
NOTES = (FORWARDED, MERGED, MERGED_AWAY, DUPLICATE, DROPPED_LOOP, STALE, HELD)

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741
O_co = TypeVar("O_co", covariant=True)


def route_merge(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Returns the (person, message kind) pairs a `person-merges` record is delivered to.

    Only kind `merge` with two different persons moves state; every other kind (`split`, `refused`,
    `review`) or a malformed record is delivered nowhere.
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


def event_ts(event: Mapping[str, Any]) -> int | None:
    """An event's time in epoch ms (`ts_ms`, else an integer `ts`), None when it has none."""
    for name in ("ts_ms", "ts"):
        ts = event.get(name)
        if isinstance(ts, int) and not isinstance(ts, bool):
            return ts
    return None


def record_ts(record: Mapping[str, Any]) -> int:
    """The event time of a merge record (0 when missing)."""
    ts = record.get("ts")
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else 0


@dataclass(frozen=True)
class Pointer:
    """A person's part of the merge protocol.

    Attributes:
        survivor: set once this person was merged into another: its inputs are forwarded there.
        merged_at: event time of the latest merge record applied to this person (older ones are stale).
        folded: ids of the handoffs already folded into this person, newest first.
        pending: merge records about this person waiting for event time to reach their `ts`, by time.
    """

    survivor: str | None = None
    merged_at: int | None = None
    folded: tuple[str, ...] = ()
    pending: tuple[dict[str, Any], ...] = ()

    @property
    def wakeup(self) -> int | None:
        """The event time of the earliest held merge."""
        return record_ts(self.pending[0]) if self.pending else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"survivor": self.survivor, "merged_at": self.merged_at, "folded": list(self.folded),
                "pending": list(self.pending)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Pointer:
        """Inverse of `to_dict`."""
        return cls(doc.get("survivor"), doc.get("merged_at"), tuple(doc.get("folded", ())),
                   tuple(doc.get("pending", ())))


@dataclass(frozen=True)
class Slot(Generic[S]):
    """Everything a keyed operator keeps for one person: the core's state and the merge pointer."""

    state: S
    merge: Pointer = Pointer()


class MergeCore(Protocol[S, O_co]):
    """What a job's pure core offers the driver. `O` is the core's bundle of outputs of one call."""

    def new_state(self, person_id: str) -> S:
        """State of a person never seen."""

    def person_of(self, state: S) -> str:
        """The person a state belongs to."""

    def on_event(self, state: S, event: Mapping[str, Any], watermark: int | None) -> tuple[S, O_co]:
        """Places one event."""

    def advance(self, state: S, now: int, watermark: int | None) -> tuple[S, O_co]:
        """Moves the person's event time to `now`."""

    def hand_off(self, state: S, at: int) -> tuple[dict[str, Any] | None, S, O_co]:
        """The person was absorbed at event time `at`: its export (None: nothing worth handing off), the
        state it keeps (emptied) and the outputs (e.g. store deletes)."""

    def fold(self, state: S, exported: Mapping[str, Any], watermark: int | None) -> tuple[S, O_co]:
        """Folds another person's export into this person's state."""

    def wakeup(self, state: S) -> int | None:
        """Event time at which `advance` has work."""


class Result(NamedTuple, Generic[S, O]):
    """Outcome of one driver call.

    Attributes:
        slot: the person's new slot.
        outputs: the core's output bundles, in order.
        handoffs: (target person, handoff record) for the loop topic.
        wakeup: event time at which `on_time` must run next (None: no timer needed).
        notes: what else happened (`forwarded`, `merged`, ...), for metrics.
    """

    slot: Slot[S]
    outputs: list[O]
    handoffs: list[tuple[str, dict[str, Any]]]
    wakeup: int | None
    notes: tuple[str, ...] = ()


class MergeDriver(Generic[S, O]):
    """Runs the merge protocol (module doc) around a job's core.

    Args:
        core: the job's core.
        max_hops: a handoff forwarded more often than this is dropped (a cycle of merge pointers).
    """

    def __init__(self, core: MergeCore[S, O], max_hops: int = 8):
        self.core = core
        self.max_hops = max_hops

    def new_slot(self, person_id: str) -> Slot[S]:
        """The slot of a person with no history."""
        return Slot(self.core.new_state(person_id))

    def wakeup(self, slot: Slot[S]) -> int | None:
        """The event time at which `on_time` has work for this slot."""
        times = [t for t in (self.core.wakeup(slot.state), slot.merge.wakeup) if t is not None]
        return min(times) if times else None

    def handle(self, slot: Slot[S], kind: str, body: bytes | str, watermark: int | None) -> Result[S, O]:
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

    def on_event(self, slot: Slot[S], event: Mapping[str, Any], watermark: int | None) -> Result[S, O]:
        """Places an event, or forwards it when this person was merged away."""
        if slot.merge.survivor is not None:
            record = {"kind": HANDOFF, "type": EVENT, "from": self.core.person_of(slot.state),
                      "to": slot.merge.survivor, "hops": 1, "ts": event_ts(event), "event": dict(event)}
            return self._unchanged(slot, [(slot.merge.survivor, record)], FORWARDED)
        state, out = self.core.on_event(slot.state, event, watermark)
        return self._result(replace(slot, state=state), [out])

    def on_merge(self, slot: Slot[S], record: Mapping[str, Any]) -> Result[S, O]:
        """This person was absorbed: the merge is held until event time reaches its `ts` (`on_time`)."""
        held = [r for r in slot.merge.pending if merge_id(r) != merge_id(record)]
        held.append(dict(record))
        held.sort(key=lambda r: (record_ts(r), merge_id(r)))
        pending = tuple(held[-MAX_PENDING:])
        return self._unchanged(replace(slot, merge=replace(slot.merge, pending=pending)), [], HELD)

    def on_survive(self, slot: Slot[S], record: Mapping[str, Any]) -> Result[S, O]:
        """This person survived a merge: a forwarding pointer older than the merge is dropped."""
        ts = record_ts(record)
        ptr = slot.merge
        if ptr.merged_at is not None and ts < ptr.merged_at:
            return self._unchanged(slot, [], STALE)
        return self._unchanged(replace(slot, merge=replace(ptr, survivor=None, merged_at=ts)), [])

    def on_time(self, slot: Slot[S], now: int, watermark: int | None = None) -> Result[S, O]:
        """Moves the person's event time to `now` (a watermark, or the idle clock's time): applies the held
        merges that are due, each at its own time, then advances the core."""
        outputs: list[O] = []
        handoffs: list[tuple[str, dict[str, Any]]] = []
        notes: list[str] = []
        while slot.merge.pending and record_ts(slot.merge.pending[0]) <= now:
            record, rest = slot.merge.pending[0], slot.merge.pending[1:]
            slot = replace(slot, merge=replace(slot.merge, pending=rest))
            if slot.merge.survivor is None:
                state, out = self.core.advance(slot.state, record_ts(record), watermark)
                slot = replace(slot, state=state)
                outputs.append(out)
            slot, handoff, note, applied = self._apply_merge(slot, record)
            handoffs += handoff
            notes.append(note)
            outputs += applied
        if slot.merge.survivor is None:
            state, out = self.core.advance(slot.state, now, watermark)
            slot = replace(slot, state=state)
            outputs.append(out)
        return Result(slot, outputs, handoffs, self.wakeup(slot), tuple(notes))

    def on_handoff(self, slot: Slot[S], record: Mapping[str, Any], watermark: int | None) -> Result[S, O]:
        """Folds a handed-off state (or places a forwarded event), or forwards it along a merge chain."""
        if slot.merge.survivor is not None:
            hops = int(record.get("hops", 0)) + 1
            if hops > self.max_hops:
                return self._unchanged(slot, [], DROPPED_LOOP)
            forwarded = {**record, "to": slot.merge.survivor, "hops": hops}
            return self._unchanged(slot, [(slot.merge.survivor, forwarded)], FORWARDED)
        if record["type"] == EVENT:
            return self.on_event(slot, record["event"], watermark)
        handoff_id = str(record["id"])
        if handoff_id in slot.merge.folded:
            return self._unchanged(slot, [], DUPLICATE)
        if record.get("from") == self.core.person_of(slot.state):  # our own state came back around a cycle
            return self._unchanged(slot, [], DROPPED_LOOP)
        state, out = self.core.fold(slot.state, record["state"], watermark)
        folded = (handoff_id, *slot.merge.folded)[:MAX_FOLDED]
        slot = Slot(state, replace(slot.merge, folded=folded))
        return self._result(slot, [out], MERGED)

    # -- internals ---------------------------------------------------------------------------------------

    def _apply_merge(self, slot: Slot[S], record: Mapping[str, Any]
                     ) -> tuple[Slot[S], list[tuple[str, dict[str, Any]]], str, list[O]]:
        survivor, ts = str(record["survivor"]), record_ts(record)
        ptr = slot.merge
        if ptr.survivor == survivor or (ptr.merged_at is not None and ts < ptr.merged_at):
            return slot, [], STALE, []
        me = self.core.person_of(slot.state)
        exported, state, out = self.core.hand_off(slot.state, ts)
        handoffs = []
        if exported is not None:
            handoffs.append((survivor, {"kind": HANDOFF, "type": "state", "from": me, "to": survivor,
                                        "id": merge_id(record), "hops": 0, "ts": ts, "state": exported}))
        return Slot(state, replace(ptr, survivor=survivor, merged_at=ts)), handoffs, MERGED_AWAY, [out]

    def _result(self, slot: Slot[S], outputs: list[O], *notes: str) -> Result[S, O]:
        return Result(slot, outputs, [], self.wakeup(slot), notes)

    def _unchanged(self, slot: Slot[S], handoffs: list[tuple[str, dict[str, Any]]], *notes: str) -> Result[S, O]:
        return Result(slot, [], handoffs, self.wakeup(slot), notes)
