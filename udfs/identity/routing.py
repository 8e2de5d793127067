"""The identity core run keyed: handlers of three keyed stages exchanging messages (no global task).

Stages and their keyed state:

- `directory`, keyed by typed identifier key: which component owns the identifier (and a tombstone
  after an erasure). It is the arbiter of ownership: the first component to claim an identifier gets it;
  a claim by a second component is passed to the owner, which decides how the two unite.
- `component`, keyed by component id: a :class:`Slot` holding the :class:`ComponentState` (graph, profile
  contributions), observations waiting for identifier claims, or a forward pointer once the component was
  shipped into another one.
- `blocks`, keyed by blocking key: the matching records of that key (Fellegi-Sunter candidates).

Every handler is `step(state, message, settings) -> (state, messages, outputs)`. The wrapper keys each
message by `(stage, key)`; messages to other keys go through a loopback Kafka topic (or a keyed
iteration), in any order. Because a component state is a CRDT (union of identifier sightings, link log
and per-identifier profile contributions) and persons are derived from it, the order in which claims,
unions and ships happen does not change the final persons and profiles; `tests/unit/test_identity_keyed.py`
runs the stages with random delivery order and compares with :class:`udfs.identity.engine.IdentityService`.

A claim of an identifier owned by another component goes to the owner (`join`), which refuses it when
both components together would exceed `max_component_identifiers` and otherwise orders the union. Unions
always ship the component with the larger id into the smaller one, so forward chains strictly decrease
and every message reaches a live component.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from udfs.identity.engine import ComponentState, Settings, apply_observation, fs_link_observation
from udfs.identity.erase import audit_unknown, erase_persons
from udfs.identity.graph import Refusal
from udfs.identity.matching import BlockRecord, blocking_keys, decide, score_pair
from udfs.identity.observe import Observation, observe
from udfs.identity.records import Output, refusal_record, review_record

DIRECTORY, COMPONENT, BLOCKS = "directory", "component", "blocks"


@dataclass(frozen=True)
class Message:
    """A message to the `stage` instance keyed by `key`; `body` is JSON-ready."""

    kind: str
    stage: str
    key: str
    body: dict[str, Any]

    def to_bytes(self) -> bytes:
        """Serialized form for the loopback topic."""
        return orjson.dumps({"kind": self.kind, "stage": self.stage, "key": self.key, "body": self.body})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Message:
        """Inverse of :meth:`to_bytes`."""
        data = orjson.loads(raw)
        return cls(data["kind"], data["stage"], data["key"], data["body"])


Step = tuple[Any, list[Message], list[Output]]


# --- directory stage -----------------------------------------------------------------------------


@dataclass
class Entry:
    """Directory state of one identifier: owning component and erasure tombstone (event time)."""

    component: str | None = None
    tombstone: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"component": self.component, "tombstone": self.tombstone}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Entry:
        """Inverse of :meth:`to_dict`."""
        return cls(data.get("component"), data.get("tombstone"))

    def erased_at_or_after(self, ts_ms: int) -> bool:
        """True when the identifier was erased by an erasure not older than `ts_ms`."""
        return self.tombstone is not None and self.tombstone >= ts_ms


def ingest(event: Mapping[str, Any], settings: Settings) -> list[Message]:
    """Turns a contract event into its first messages (to the directory of its anchor / of each erased id)."""
    obs = observe(event, settings.config, settings.policies, settings.hasher)
    if not obs.keys:
        return []
    if obs.type == "erase":  # visits the directory of each identifier in turn
        return [Message("erase", DIRECTORY, obs.keys[0], {"obs": obs.to_dict(), "todo": list(obs.keys[1:])})]
    return [route(obs, None, True)]


def route(obs: Observation, origin: Mapping[str, Any] | None, annotate: bool) -> Message:
    """The message that sends an observation to the directory of its anchor."""
    body = {"obs": obs.to_dict(), "origin": origin, "annotate": annotate}
    return Message("route", DIRECTORY, obs.keys[0], body)


def directory_step(entry: Entry | None, msg: Message, settings: Settings) -> Step:
    """Handles one message at the directory instance of `msg.key`."""
    entry = entry or Entry()
    body, key = msg.body, msg.key
    out: list[Message] = []
    outputs: list[Output] = []
    if msg.kind == "route":
        obs = Observation.from_dict(body["obs"])
        if not entry.erased_at_or_after(obs.ts_ms):
            granted = []
            if entry.component is None:
                entry.component, granted = f"c:{key}", [key]
            out.append(Message("apply", COMPONENT, entry.component, {**body, "granted": granted}))
    elif msg.kind == "claim":
        comp = body["component"]
        if entry.erased_at_or_after(body["ts"]):
            out.append(Message("denied", COMPONENT, comp, {"key": key, "event_id": body["event_id"]}))
        elif entry.component in (None, comp):
            entry.component = comp
            out.append(Message("granted", COMPONENT, comp, {"key": key}))
        else:  # owned by another component: the owner decides (size limit) how the two unite
            out.append(Message("join", COMPONENT, entry.component, {**body, "key": key}))
    elif msg.kind == "repoint":
        if entry.component == body["old"]:
            entry.component = body["new"]
    elif msg.kind == "erase":
        obs = Observation.from_dict(body["obs"])
        entry.tombstone = max(entry.tombstone or obs.ts_ms, obs.ts_ms)
        if entry.component is None:
            outputs.extend(audit_unknown(replace(obs, keys=(key,)), settings))
            out.extend(_next_erase(body["obs"], body["todo"]))
        else:
            out.append(Message("erase_in", COMPONENT, entry.component, {**body, "key": key}))
    elif msg.kind == "drop":
        entry.tombstone = max(entry.tombstone or body["ts"], body["ts"])
        if entry.component == body["component"]:
            entry.component = None
    elif msg.kind == "review" and entry.component is not None:
        out.append(Message("review", COMPONENT, entry.component, body))
    return entry, out, outputs


# --- component stage -----------------------------------------------------------------------------


@dataclass
class Slot:
    """Component stage state.

    Attributes:
        state: the component (None before the first observation arrives).
        forward: the component this one was shipped into (then nothing else is kept).
        pending: observations waiting for identifier claims, by event id (message bodies).
        granted: identifiers the directory granted that no applied observation has used yet.
        claiming: identifiers claimed and not yet answered (they count against the size limit).
    """

    state: ComponentState | None = None
    forward: str | None = None
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    granted: set[str] = field(default_factory=set)
    claiming: set[str] = field(default_factory=set)

    def identifiers(self) -> set[str]:
        """Identifiers present or granted."""
        return set(self.state.graph.first_seen if self.state else ()) | self.granted

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"state": self.state.to_dict() if self.state else None, "forward": self.forward,
                "pending": self.pending, "granted": sorted(self.granted), "claiming": sorted(self.claiming)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Slot:
        """Inverse of :meth:`to_dict`."""
        state = ComponentState.from_dict(data["state"]) if data.get("state") else None
        return cls(state, data.get("forward"), dict(data.get("pending", {})), set(data.get("granted", ())),
                   set(data.get("claiming", ())))


_FORWARDED = ("apply", "granted", "denied", "ship", "erase_in", "review", "join")


def component_step(slot: Slot | None, msg: Message, settings: Settings) -> Step:
    """Handles one message at the component instance `msg.key`."""
    slot = slot or Slot()
    me, body = msg.key, msg.body
    if slot.forward is not None:
        if msg.kind in _FORWARDED:
            return slot, [replace(msg, key=slot.forward)], []
        if msg.kind == "unite" and body["into"] != slot.forward:
            winner, loser = sorted((body["into"], slot.forward))
            return slot, [Message("unite", COMPONENT, loser, {"into": winner})], []
        return slot, [], []
    out: list[Message] = []
    outputs: list[Output] = []
    if msg.kind == "join":
        return slot, _join(slot, body, me, settings), []
    if msg.kind == "unite":
        if body["into"] < me:
            out.append(Message("ship", COMPONENT, body["into"], {"slot": slot.to_dict(), "from": me}))
            return Slot(forward=body["into"]), out, []
        if body["into"] > me:
            out.append(Message("unite", COMPONENT, body["into"], {"into": me}))
        return slot, out, []
    if msg.kind == "ship":
        shipped = Slot.from_dict(body["slot"])
        if shipped.state is not None:
            if slot.state is None:
                slot.state = ComponentState()
            slot.state.merge(shipped.state, settings.policies, settings.config)
        slot.pending.update(shipped.pending)
        slot.granted |= shipped.granted
        slot.claiming |= shipped.claiming
        out += [Message("repoint", DIRECTORY, k, {"old": body["from"], "new": me})
                for k in sorted(shipped.identifiers())]
        # a no-op at a forward pointer; a shipper restored to a checkpoint before its ship (a redelivered
        # ship) is live again and still owns the identifiers repointed here: it ships again
        out.append(Message("unite", COMPONENT, body["from"], {"into": me}))
    elif msg.kind == "apply":
        slot.granted.update(body["granted"])
        out += _claim(slot, body, me, settings)
    elif msg.kind == "granted":
        slot.granted.add(body["key"])
        slot.claiming.discard(body["key"])
    elif msg.kind == "denied":
        key = body["key"]
        slot.claiming.discard(key)
        waiting = [eid for eid, b in slot.pending.items() if key in b["obs"]["keys"]]
        if body.get("reason") == "component_limit":  # every observation waiting for it goes on without it
            for eid in waiting:
                _refuse(slot, eid, key)
        else:  # an identifier erased after the event: the event stays erased, later ones claim again
            slot.pending.pop(body["event_id"], None)
            out += _claim_again(slot, key, me)
    elif msg.kind == "erase_in":
        outputs, out = _erase_in(slot, body, me, settings)
    elif msg.kind == "review":
        outputs, out = _review(slot, body, settings)
    slot.claiming -= slot.identifiers()  # claims answered by a unite (the owner shipped the identifier here)
    ready_out, ready_outputs = _apply_ready(slot, me, settings)
    return slot, out + ready_out, outputs + ready_outputs


def _claim(slot: Slot, body: dict[str, Any], me: str, settings: Settings) -> list[Message]:
    """Keeps an observation pending and claims its missing identifiers, within the component size limit.

    Identifiers beyond the room left are refused (`component_limit`); a refused identifier nobody owns yet
    still gets its own person through a single-identifier observation.
    """
    obs = Observation.from_dict(body["obs"])
    have = slot.identifiers()
    missing = [k for k in obs.keys if k not in have and k not in slot.claiming]
    room = max(settings.config.max_component_identifiers - len(have) - len(slot.claiming), 0)
    if len(obs.keys) == 1:
        room = len(missing)
    slot.pending[obs.event_id] = body
    out = []
    for key in missing[room:]:
        _refuse(slot, obs.event_id, key)
        single = replace(obs, keys=(key,), contributions={}, consent={}, features={})
        out.append(route(single, None, False))
    slot.claiming.update(missing[:room])
    size = len(have) + len(slot.claiming)
    out += [Message("claim", DIRECTORY, key, {"component": me, "event_id": obs.event_id, "ts": obs.ts_ms,
                                              "size": size}) for key in missing[:room]]
    return out


def _claim_again(slot: Slot, key: str, me: str) -> list[Message]:
    """Claims an identifier again for the earliest other observation still waiting for it."""
    waiting = sorted((b["obs"]["ts"], eid, len(b["obs"]["keys"])) for eid, b in slot.pending.items()
                     if key in b["obs"]["keys"])
    if not waiting or key in slot.identifiers():
        return []
    ts, eid, _ = waiting[0]
    slot.claiming.add(key)
    size = len(slot.identifiers()) + len(slot.claiming)
    return [Message("claim", DIRECTORY, key, {"component": me, "event_id": eid, "ts": ts, "size": size})]


def _join(slot: Slot, body: dict[str, Any], me: str, settings: Settings) -> list[Message]:
    """The owner of a claimed identifier decides: refuse (size limit) or unite (the larger id ships)."""
    claimant = body["component"]
    if claimant == me:
        return []
    if len(slot.identifiers()) + body["size"] > settings.config.max_component_identifiers:
        return [Message("denied", COMPONENT, claimant, {"key": body["key"], "event_id": body["event_id"],
                                                        "reason": "component_limit"})]
    return [Message("unite", COMPONENT, max(me, claimant), {"into": min(me, claimant)})]


def _refuse(slot: Slot, event_id: str, key: str) -> None:
    """Drops an identifier from a pending observation, remembering it for the refusal record."""
    body = slot.pending.get(event_id)
    if body is None:
        return
    keys = [k for k in body["obs"]["keys"] if k != key]
    slot.pending[event_id] = {**body, "obs": {**body["obs"], "keys": keys},
                              "refused": [*body.get("refused", []), key]}
    if not keys:
        del slot.pending[event_id]


def _apply_ready(slot: Slot, me: str, settings: Settings) -> tuple[list[Message], list[Output]]:
    """Applies, in event-time order, every pending observation whose identifiers are all here."""
    out: list[Message] = []
    outputs: list[Output] = []
    have = slot.identifiers()
    ready = sorted((b for b in slot.pending.values() if set(b["obs"]["keys"]) <= have),
                   key=lambda b: (b["obs"]["ts"], b["obs"]["event_id"]))
    for body in ready:
        obs = Observation.from_dict(body["obs"])
        del slot.pending[obs.event_id]
        if slot.state is None:
            slot.state = ComponentState()
        outputs += apply_observation(slot.state, obs, settings, body.get("origin"),
                                     body.get("annotate", True))
        slot.granted -= set(obs.keys)
        person_of = slot.state.graph.partition(settings.config).person_of
        outputs += [refusal_record(settings.config, Refusal(obs.event_id, obs.keys[0], k, "component_limit"),
                                   person_of[obs.keys[0]], "", obs.ts_ms) for k in body.get("refused", ())]
        matching = settings.config.matching
        if len(obs.features) >= matching.min_fields:
            record = BlockRecord(obs.event_id, obs.keys[0], obs.ts_ms, obs.features)
            keys = blocking_keys(obs.features, matching)
            slot.state.indexed[record.record_id] = [record.anchor, *keys]
            out += [Message("probe", BLOCKS, k, {"record": record.to_list()}) for k in keys]
    return out, outputs


def _next_erase(obs: dict[str, Any], todo: list[str]) -> list[Message]:
    return [Message("erase", DIRECTORY, todo[0], {"obs": obs, "todo": todo[1:]})] if todo else []


def _erase_in(slot: Slot, body: dict[str, Any], me: str,
              settings: Settings) -> tuple[list[Output], list[Message]]:
    """Erases the persons of the erase event's identifiers held here, then passes the rest on."""
    obs, key, todo = Observation.from_dict(body["obs"]), body["key"], list(body["todo"])
    if slot.state is None or key not in slot.state.graph.first_seen:
        return audit_unknown(replace(obs, keys=(key,)), settings), _next_erase(body["obs"], todo)
    here = tuple(k for k in (key, *todo) if k in slot.state.graph.first_seen)
    plan = erase_persons(slot.state, replace(obs, keys=here), settings)
    for eid in [e for e, b in slot.pending.items() if set(b["obs"]["keys"]) & plan.keys]:
        del slot.pending[eid]
    slot.granted -= plan.keys
    out = [Message("drop", DIRECTORY, k, {"ts": obs.ts_ms, "component": me}) for k in sorted(plan.keys)]
    out += [Message("purge", BLOCKS, b, {"anchors": sorted(plan.keys), "ts": obs.ts_ms})
            for b in sorted(plan.block_keys)]
    return plan.outputs, out + _next_erase(body["obs"], [t for t in todo if t not in plan.keys])


def _review(slot: Slot, body: dict[str, Any], settings: Settings) -> tuple[list[Output], list[Message]]:
    """Resolves the persons of a review candidate; travels to the second identifier's component if needed."""
    if slot.state is None:
        return [], []
    person_of = slot.state.graph.partition(settings.config).person_of
    a, b = body["anchors"]
    persons = dict(body.get("persons", {}))
    for anchor in (a, b):
        if anchor in person_of:
            persons[anchor] = person_of[anchor]
    if b not in persons:
        return [], [Message("review", DIRECTORY, b, {**body, "persons": persons})]
    if a not in persons or persons[a] == persons[b]:
        return [], []
    rec = review_record(settings.config, persons[a], persons[b], body["records"][0], body["records"][1],
                        body["score"], body["evidence"], body["ts"])
    return [rec], []


# --- blocks stage --------------------------------------------------------------------------------


@dataclass
class Block:
    """Blocks stage state: the records of one blocking key and erased identifiers (event time)."""

    records: dict[str, BlockRecord] = field(default_factory=dict)
    erased: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"records": [r.to_list() for r in self.records.values()], "erased": self.erased}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Block:
        """Inverse of :meth:`to_dict`."""
        records = [BlockRecord.from_list(r) for r in data.get("records", [])]
        return cls({r.record_id: r for r in records}, dict(data.get("erased", {})))


def blocks_step(block: Block | None, msg: Message, settings: Settings) -> Step:
    """Handles one message at the blocking-key instance `msg.key`."""
    block = block or Block()
    out: list[Message] = []
    matching = settings.config.matching
    if msg.kind == "purge":
        for anchor in msg.body["anchors"]:
            block.erased[anchor] = max(block.erased.get(anchor, msg.body["ts"]), msg.body["ts"])
        block.records = {rid: r for rid, r in block.records.items() if r.anchor not in block.erased}
    elif msg.kind == "probe":
        record = BlockRecord.from_list(msg.body["record"])
        if block.erased.get(record.anchor, -1) >= record.ts_ms or record.record_id in block.records:
            return block, [], []
        for other in sorted(block.records.values(), key=lambda r: r.record_id):
            score, evidence = score_pair(record.features, other.features, matching)
            decision = decide(score, matching)
            if decision == "link":
                link, origin = fs_link_observation(record, other, score, evidence, settings.config)
                if len(link.keys) > 1:
                    out.append(route(link, origin, False))
            elif decision == "review" and record.anchor != other.anchor:
                out.append(Message("review", DIRECTORY, record.anchor, {
                    "anchors": [record.anchor, other.anchor],
                    "records": sorted((record.record_id, other.record_id)),
                    "score": score, "evidence": evidence, "ts": max(record.ts_ms, other.ts_ms)}))
        block.records[record.record_id] = record
        if len(block.records) > matching.max_block_size:
            latest = max(block.records.values(), key=lambda r: (r.ts_ms, r.record_id))
            del block.records[latest.record_id]
    return block, out, []


STEPS: dict[str, Callable[[Any, Message, Settings], Step]] = {
    DIRECTORY: directory_step, COMPONENT: component_step, BLOCKS: blocks_step}


def step(state: Any, msg: Message, settings: Settings) -> Step:
    """Dispatches a message to its stage's handler."""
    return STEPS[msg.stage](state, msg, settings)

