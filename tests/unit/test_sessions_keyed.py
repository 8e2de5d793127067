"""The sessions job's keyed logic (udfs/sessions/keyed.py) and the interim person id (udfs/persons.py)."""

from __future__ import annotations

import orjson

from udfs.persons import person_id_of
from udfs.sessions.config import MINUTE_MS, SessionConfig
from udfs.sessions.keyed import (
    DROPPED_LOOP,
    DUPLICATE,
    FORWARDED,
    MERGE,
    MERGED,
    STALE,
    SURVIVE,
    KeyedSessions,
    Slot,
    open_sessions,
    route_merge,
)
from udfs.sessions.reference import make_event
from udfs.sessions.sessionizer import session_id

GAP = 30 * MINUTE_MS
LOGIC = KeyedSessions(SessionConfig(gap_ms=GAP), max_hops=3)
A, B, C = "user_id:a", "user_id:b", "user_id:c"


def merge(absorbed: str, survivor: str, ts: int, key: str = "m-1") -> dict:
    return {"kind": "merge", "absorbed": absorbed, "survivor": survivor, "ts": ts, "idempotency_key": key}


def fed(person: str, *minutes: int) -> Slot:
    slot = LOGIC.new_slot(person)
    for m in minutes:
        slot = LOGIC.on_event(slot, make_event(f"{person}-{m}", m * MINUTE_MS), 0).slot
    return slot


def test_person_id_prefers_annotation_then_primary_identifier_and_hides_pii():
    assert person_id_of({"person_id": "p-1", "ids": {"user_id": "u"}}) == "p-1"
    assert person_id_of({"ids": {"anonymous_id": "x", "user_id": " u-42 "}}) == "user_id:u-42"
    assert person_id_of({"ids": {"anonymous_id": "x", "device_id": "d"}}) == "device_id:d"
    assert person_id_of({"ids": {"zz_id": "z", "crm_id": "c"}}) == "crm_id:c"
    email = person_id_of({"ids": {"email": " Ann@Example.org ", "phone": "+49 170 1234567"}})
    assert email == person_id_of({"ids": {"email": "ann@example.org"}}) and email.startswith("email:")
    assert "ann" not in email and len(email) == len("email:") + 32
    phone = person_id_of({"ids": {"phone": "+49 170 1234567"}})
    assert phone == person_id_of({"ids": {"phone": "+491701234567"}}) and "170" not in phone
    assert person_id_of({"ids": {}}) is None and person_id_of({"ids": {"user_id": "  "}}) is None


def test_slot_round_trips_through_json():
    slot = fed(A, 0, 10)
    slot = Slot(slot.state, B, 5, ("m-1",))
    assert Slot.from_json(slot.to_json()) == slot


def test_only_kind_merge_is_routed_to_both_persons():
    assert route_merge(merge(A, B, 1)) == [(A, MERGE), (B, SURVIVE)]
    for record in ({**merge(A, B, 1), "kind": "split"}, {"kind": "review"}, merge(A, A, 1), {"kind": "merge"}):
        assert route_merge(record) == []


def test_session_changes_write_the_stores_late_events_do_not():
    result = LOGIC.on_event(LOGIC.new_slot(A), make_event("e1", 0), 0)
    assert [(op.kind, op.op) for op in result.store_ops] == [("redis", "set"), ("redis", "delete")]  # no recent yet
    assert result.wakeup == GAP
    closed = LOGIC.on_time(result.slot, GAP)
    assert [o.kind for o in closed.outputs] == ["close"]
    assert [(op.kind, op.op) for op in closed.store_ops] == [("redis", "delete"), ("redis", "set"), ("dynamodb", "put")]
    assert LOGIC.on_time(closed.slot, GAP).outputs == []  # a timer firing twice is harmless
    late = LOGIC.on_event(closed.slot, make_event("e0", -GAP), GAP)
    assert [o.kind for o in late.outputs] == ["late"] and late.store_ops == []


def test_merge_hands_off_forwards_and_folds_once():
    absorbed, survivor = fed(A, 0, 10), fed(B, 5)
    out = LOGIC.on_merge(absorbed, merge(A, B, 20 * MINUTE_MS))
    (target, handoff), = out.handoffs
    assert target == B and (handoff["type"], handoff["from"], handoff["id"]) == ("state", A, "m-1")
    assert out.slot.survivor == B and open_sessions(out.slot) == 0 and out.wakeup is None
    assert [(op.op, op.version) for op in out.store_ops] == [("delete", absorbed.state.seq + 1)]
    # later events of the absorbed person are forwarded
    forwarded = LOGIC.on_event(out.slot, make_event("late-a", 12 * MINUTE_MS), 0)
    assert forwarded.notes == (FORWARDED,) and forwarded.handoffs[0][1]["event"]["event_id"] == "late-a"
    # the survivor folds the state once, and places the forwarded event
    body = orjson.dumps(handoff)
    folded = LOGIC.handle(survivor, "handoff", body, 0)
    assert MERGED in folded.notes
    correction = next(o for o in folded.outputs if o.kind == "correction")
    assert correction.record["cause"] == "person_merge" and correction.record["session_id"] == session_id(B, 0)
    assert LOGIC.handle(folded.slot, "handoff", body, 0).notes == (DUPLICATE,)
    placed = LOGIC.handle(folded.slot, "handoff", orjson.dumps(forwarded.handoffs[0][1]), 0)
    assert placed.slot.state.sessions[0].agg.events == 4


def test_merge_chains_cycles_and_stale_merges():
    a = LOGIC.on_merge(fed(A, 0), merge(A, B, 100)).slot
    assert LOGIC.on_merge(a, merge(A, C, 50, "old")).notes == (STALE,)  # older than the merge we followed
    b = LOGIC.on_merge(fed(B, 1), merge(B, A, 200, "m-2")).slot  # B re-keyed into A: a cycle
    handoff = {"kind": "handoff", "type": "event", "from": A, "to": B, "hops": 3, "event": make_event("x", 0)}
    assert LOGIC.on_handoff(b, handoff, 0).notes == (DROPPED_LOOP,)  # past max_hops
    handoff["hops"] = 1
    assert LOGIC.on_handoff(b, handoff, 0).handoffs[0][1]["hops"] == 2  # forwarded along the chain
    # A hears that it survived the newer merge: it stops forwarding and takes its events again
    revived = LOGIC.on_survive(a, merge(B, A, 200)).slot
    assert revived.survivor is None
    assert LOGIC.on_survive(revived, merge(C, A, 150)).notes == (STALE,)
    assert LOGIC.on_event(revived, make_event("y", 0), 0).slot.state.sessions
