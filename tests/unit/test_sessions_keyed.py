"""The sessions job's keyed logic (udfs/sessions/keyed.py on udfs/merges.py) and the interim person id."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.merges import DROPPED_LOOP, DUPLICATE, FORWARDED, HELD, MERGE, MERGED, STALE, SURVIVE, Pointer, route_merge
from udfs.persons import person_id_of
from udfs.sessions.config import MINUTE_MS, SessionConfig
from udfs.sessions.keyed import KeyedSessions, Slot, open_sessions, slot_from_json, slot_to_json
from udfs.sessions.model import PersonState
from udfs.sessions.reference import final_sessions, make_event
from udfs.sessions.sessionizer import session_id
from udfs.stores.keys import build_key
from udfs.stores.ops import DynamoErasePartition

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
    slot = Slot(slot.state, Pointer(B, 5, ("m-1",), (merge(A, C, 9),)))
    assert slot_from_json(slot_to_json(slot)) == slot


def test_only_kind_merge_is_routed_to_both_persons():
    assert route_merge(merge(A, B, 1)) == [(A, MERGE), (B, SURVIVE)]
    for record in ({**merge(A, B, 1), "kind": "split"}, {"kind": "review"}, merge(A, A, 1), {"kind": "merge"}):
        assert route_merge(record) == []


def records(result) -> list:
    return [o for e in result.outputs for o in e.outputs]


def ops(result) -> list:
    return [op for e in result.outputs for op in e.store_ops]


def merged_away(slot: Slot, record: dict):
    """Delivers a merge record to the absorbed person and lets event time reach it."""
    held = LOGIC.on_merge(slot, record)
    assert held.notes == (HELD,) and held.wakeup is not None and held.wakeup <= record["ts"]
    return LOGIC.on_time(held.slot, record["ts"])


def test_session_changes_write_the_stores_late_events_do_not():
    result = LOGIC.on_event(LOGIC.new_slot(A), make_event("e1", 0), 0)
    assert [(op.kind, op.op) for op in ops(result)] == [("redis", "set"), ("redis", "delete")]  # no recent yet
    assert result.wakeup == GAP
    closed = LOGIC.on_time(result.slot, GAP)
    assert [o.kind for o in records(closed)] == ["close"]
    assert [(op.kind, op.op) for op in ops(closed)] == [("redis", "delete"), ("redis", "set"), ("dynamodb", "put")]
    assert records(LOGIC.on_time(closed.slot, GAP)) == []  # a timer firing twice is harmless
    late = LOGIC.on_event(closed.slot, make_event("e0", -GAP), GAP)
    assert [o.kind for o in records(late)] == ["late"] and ops(late) == []


def test_a_merge_waits_for_event_time_to_reach_it():
    held = LOGIC.on_merge(fed(A, 0, 10), merge(A, B, 20 * MINUTE_MS))
    assert held.wakeup == 20 * MINUTE_MS and held.handoffs == [] and held.slot.merge.survivor is None
    early = LOGIC.on_time(held.slot, 20 * MINUTE_MS - 1)
    assert early.handoffs == [] and early.slot.merge.pending
    # an event of the absorbed person before the merge's time is still its own
    placed = LOGIC.on_event(early.slot, make_event("a-19", 19 * MINUTE_MS), 0)
    assert placed.slot.state.sessions[0].agg.events == 3 and placed.wakeup == 20 * MINUTE_MS
    due = LOGIC.on_time(placed.slot, 25 * MINUTE_MS)
    (target, handoff), = due.handoffs
    assert target == B and PersonState.from_dict(handoff["state"]).sessions[0].agg.events == 3
    assert due.slot.merge.pending == () and due.slot.merge.survivor == B
    # the same merge record delivered again is stale
    again = LOGIC.on_time(LOGIC.on_merge(due.slot, merge(A, B, 20 * MINUTE_MS)).slot, 30 * MINUTE_MS)
    assert again.notes == (STALE,) and again.handoffs == []


def test_merge_hands_off_forwards_and_folds_once():
    absorbed, survivor = fed(A, 0, 10), fed(B, 5)
    out = merged_away(absorbed, merge(A, B, 20 * MINUTE_MS))
    (target, handoff), = out.handoffs
    assert target == B and (handoff["type"], handoff["from"], handoff["id"]) == ("state", A, "m-1")
    assert out.slot.merge.survivor == B and open_sessions(out.slot) == 0 and out.wakeup is None
    assert [(op.op, op.version) for op in ops(out)] == [("delete", absorbed.state.seq + 1)]
    # later events of the absorbed person are forwarded
    forwarded = LOGIC.on_event(out.slot, make_event("late-a", 12 * MINUTE_MS), 0)
    assert forwarded.notes == (FORWARDED,) and forwarded.handoffs[0][1]["event"]["event_id"] == "late-a"
    # the survivor folds the state once, and places the forwarded event
    body = orjson.dumps(handoff)
    folded = LOGIC.handle(survivor, "handoff", body, 0)
    assert MERGED in folded.notes
    correction = next(o for o in records(folded) if o.kind == "correction")
    assert correction.record["cause"] == "person_merge" and correction.record["session_id"] == session_id(B, 0)
    assert LOGIC.handle(folded.slot, "handoff", body, 0).notes == (DUPLICATE,)
    placed = LOGIC.handle(folded.slot, "handoff", orjson.dumps(forwarded.handoffs[0][1]), 0)
    assert placed.slot.state.sessions[0].agg.events == 4


def test_merge_chains_cycles_and_stale_merges():
    a = merged_away(fed(A, 0), merge(A, B, 100)).slot
    assert merged_away(a, merge(A, C, 50, "old")).notes == (STALE,)  # older than the merge we followed
    b = merged_away(fed(B, 1), merge(B, A, 200, "m-2")).slot  # B re-keyed into A: a cycle
    handoff = {"kind": "handoff", "type": "event", "from": A, "to": B, "hops": 3, "event": make_event("x", 0)}
    assert LOGIC.on_handoff(b, handoff, 0).notes == (DROPPED_LOOP,)  # past max_hops
    handoff["hops"] = 1
    assert LOGIC.on_handoff(b, handoff, 0).handoffs[0][1]["hops"] == 2  # forwarded along the chain
    # A hears that it survived the newer merge: it stops forwarding and takes its events again
    revived = LOGIC.on_survive(a, merge(B, A, 200)).slot
    assert revived.merge.survivor is None
    assert LOGIC.on_survive(revived, merge(C, A, 150)).notes == (STALE,)
    assert LOGIC.on_event(revived, make_event("y", 0), 0).slot.state.sessions


def test_erase_deletes_the_sessions_everywhere_and_starts_over():
    slot = LOGIC.on_time(fed(A, 0, 10), GAP + 10 * MINUTE_MS).slot  # one closed session
    slot = LOGIC.on_event(slot, make_event("a-60", 60 * MINUTE_MS), GAP + 10 * MINUTE_MS).slot  # and an open one
    erase = {**make_event("erase-1", 61 * MINUTE_MS), "type": "erase"}
    out = LOGIC.on_event(slot, erase, GAP + 10 * MINUTE_MS)
    assert out.slot.state.sessions == () and out.slot.state.recent == () and out.wakeup is None
    deleted = ops(out)
    assert all(op.erase for op in deleted)
    assert {op.key for op in deleted if op.kind == "redis"} == {
        build_key("tagstream:session:live:{person_id}", person_id=A),
        build_key("tagstream:session:recent:{person_id}", person_id=A)}
    # the whole DynamoDB history, not only the sessions the state still knows
    assert [op for op in deleted if op.kind == "dynamodb"] == [
        DynamoErasePartition("tagstream_sessions", A, slot.state.seq + 1)]
    # forwarded to the survivor when the erased identifier's person was absorbed
    gone = merged_away(fed(A, 0), merge(A, B, 100)).slot
    assert LOGIC.on_event(gone, erase, 0).handoffs[0][0] == B


def _run_merge(a_events: list[dict], b_events: list[dict], merge_ts: int, order: list[int]) -> set:
    """Delivers A's events and the merge record (index len(a_events)) to A in `order`, with the watermark
    held back by every undelivered message (as Flink's minimum over the inputs does), then the handoffs to
    B after B's own events; returns the final sessions (person, start, last, count) of both."""
    record = merge(A, B, merge_ts)
    times = [e["ts_ms"] for e in a_events] + [merge_ts]
    slot, wm, outputs, handoffs = LOGIC.new_slot(A), None, [], []
    for n, i in enumerate(order):
        result = LOGIC.on_merge(slot, record) if i == len(a_events) else LOGIC.on_event(slot, a_events[i], wm)
        rest = [times[j] for j in order[n + 1:]]
        wm = max(wm or 0, (min(rest) - 1) if rest else FOREVER)
        timed = LOGIC.on_time(result.slot, wm, wm)
        slot = timed.slot
        for r in (result, timed):
            outputs += records(r)
            handoffs += [h for _, h in r.handoffs]
    survivor = LOGIC.new_slot(B)
    for event in b_events:
        step = LOGIC.on_event(survivor, event, 0)
        survivor, outputs = step.slot, outputs + records(step)
    for handoff in handoffs:
        step = LOGIC.on_handoff(survivor, handoff, merge_ts)
        survivor, outputs = step.slot, outputs + records(step)
    done = LOGIC.on_time(survivor, FOREVER, FOREVER)
    latest = final_sessions([*outputs, *records(done)]).values()
    return {(r["person_id"], r["start_ms"], r["last_activity_ms"], r["event_count"]) for r in latest}


FOREVER = 10**15
_MINUTES = st.lists(st.integers(0, 120), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(a_minutes=_MINUTES, b_minutes=_MINUTES, merge_minute=st.integers(0, 120), data=st.data())
def test_merge_delivered_before_or_after_the_absorbed_persons_events_gives_the_same_sessions(
        a_minutes, b_minutes, merge_minute, data):
    a_events = [make_event(f"a{i}", m * MINUTE_MS) for i, m in enumerate(a_minutes)]
    b_events = [make_event(f"b{i}", m * MINUTE_MS) for i, m in enumerate(b_minutes)]
    merge_ts = merge_minute * MINUTE_MS
    n = len(a_events) + 1
    in_time = sorted(range(n), key=lambda i: (([e["ts_ms"] for e in a_events] + [merge_ts])[i], i))
    shuffled = data.draw(st.permutations(range(n)))
    expected = _run_merge(a_events, b_events, merge_ts, in_time)
    assert _run_merge(a_events, b_events, merge_ts, shuffled) == expected
    assert {p for p, *_ in expected} <= {A, B}
