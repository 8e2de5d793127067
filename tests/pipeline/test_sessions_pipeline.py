"""The sessions stage in a MiniCluster at parallelism 1 and 2, on bounded collections with event time.

Watermarks are generated in SQL after every record (`runtime.with_event_time`), and each person's records
reach the keyed operator in source order, so late and bridging events are deterministic at any parallelism.
"""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest
from pyflink.common import Row, Types
from pyflink.table import DataTypes, Schema

from jobs.runtime import KAFKA_RECORD_TYPE, TIMED_VALUE_TYPE, table_env, with_event_time
from jobs.sessions import SessionsJobConfig, build_sessions
from udfs.persons import person_id_of
from udfs.sessions.config import HOUR_MS, MINUTE_MS, SessionConfig
from udfs.sessions.records import Output
from udfs.sessions.reference import final_sessions, make_event, reference_sessions
from udfs.sessions.sessionizer import session_id
from udfs.stores.keys import build_key

pytestmark = pytest.mark.pipeline

BASE = 1_795_000_000_000
GAP = 30 * MINUTE_MS
LATENESS = 20 * MINUTE_MS
# The idle clock is on but never triggers here (a bounded job drops pending processing-time timers).
CONFIG = SessionsJobConfig(SessionConfig(gap_ms=GAP, allowed_lateness_ms=LATENESS), idle_timeout_ms=HOUR_MS)
A, B = "user_id:a", "user_id:b"


def ev(event_id: str, user: str, minute: float, etype: str = "page_view") -> dict:
    event = make_event(event_id, BASE + int(minute * MINUTE_MS), etype)
    event["ids"] = {"user_id": user}
    return event


def at(minute: float) -> int:
    return BASE + int(minute * MINUTE_MS)


def timed(t_env, env, docs: list[dict], time_field: str, out_of_orderness_ms: int = 0):
    rows = [Row(orjson.dumps(d), d[time_field]) for d in docs]
    return with_event_time(t_env, env.from_collection(rows, type_info=TIMED_VALUE_TYPE), out_of_orderness_ms)


def run(env, events: list[dict], merges: list[dict] | None = None, handoffs: list[dict] | None = None,
        out_of_orderness_ms: int = 0) -> tuple[list[tuple[str, str, dict]], list[dict]]:
    """Runs the stage; returns the Kafka records as (topic, key, value) and the store ops."""
    t_env = table_env(env)
    streams = build_sessions(timed(t_env, env, events, "ts_ms", out_of_orderness_ms), CONFIG,
                             timed(t_env, env, merges, "ts") if merges else None,
                             timed(t_env, env, handoffs, "ts") if handoffs else None)
    ops = streams.store_ops.map(lambda op: Row("store", "", op), output_type=KAFKA_RECORD_TYPE)
    with streams.kafka.union(ops).execute_and_collect() as results:
        rows = [(r[0], r[1], orjson.loads(r[2])) for r in results]
    return [r for r in rows if r[0] != "store"], [r[2] for r in rows if r[0] == "store"]


def on(records, topic: str) -> list[dict]:
    return [value for t, _, value in records if t == topic]


def final(records) -> dict[str, dict]:
    """The latest record per session id, as a consumer of `sessions` keeps them."""
    return final_sessions(Output(d["kind"], d["key"], d) for d in on(records, "sessions"))


def closed_sessions(records) -> set[tuple[str, int, int, int]]:
    """(person, start, last activity, event count) of the final sessions, all of which must be closed."""
    latest = final(records).values()
    assert all(r["status"] == "closed" for r in latest)
    return {(r["person_id"], r["start_ms"], r["last_activity_ms"], r["event_count"]) for r in latest}


def expected_sessions(events: list[dict]) -> set[tuple[str, int, int, int]]:
    by_person: dict[str, list[dict]] = {}
    for event in events:
        by_person.setdefault(person_id_of(event), []).append(event)
    return {(person, s.start_ms, s.last_ms, len(s.event_ids))
            for person, evs in by_person.items() for s in reference_sessions(evs, GAP, max_duration_ms=4 * HOUR_MS)}


def journeys(seed: int = 7, persons: int = 6) -> list[dict]:
    """Time-ordered events of a few persons: steps shorter than, equal to and longer than the gap."""
    rnd = random.Random(seed)
    events = []
    for p in range(persons):
        minute = rnd.uniform(0, 20)
        for i in range(rnd.randint(5, 8)):  # at most 7 steps of 30 min: no 4 h split (SQL has none)
            events.append(ev(f"p{p}-e{i}", f"u{p}", minute, rnd.choice(["page_view", "product_view", "search"])))
            minute += rnd.choice([1, 5, 29, 30, 31, 45, 90])
    return sorted(events, key=lambda e: (e["ts_ms"], e["event_id"]))


def sql_session_windows(env, events: list[dict]) -> set[tuple[str, int, int, int]]:
    """Flink SQL's SESSION window TVF over the same events and person ids.

    The watermark lags an hour (more than the gap), so no row is late for Flink either: Flink fires a
    window at last + gap - 1 and would open a new session for an on-time row exactly at last + gap.
    """
    t_env = table_env(env)
    rows = env.from_collection([Row(person_id_of(e), e["ts_ms"]) for e in events],
                               type_info=Types.ROW_NAMED(["person", "ts_ms"], [Types.STRING(), Types.LONG()]))
    schema = Schema.new_builder().column("person", DataTypes.STRING()).column("ts_ms", DataTypes.BIGINT()) \
        .column_by_expression("rowtime", "TO_TIMESTAMP_LTZ(ts_ms, 3)") \
        .watermark("rowtime", "rowtime - INTERVAL '1' HOUR").build()
    t_env.create_temporary_view("session_input", t_env.from_data_stream(rows, schema))
    windows = t_env.sql_query(f"""
        SELECT person, MIN(ts_ms), MAX(ts_ms), COUNT(*)
        FROM TABLE(SESSION(TABLE session_input PARTITION BY person, DESCRIPTOR(rowtime),
                           INTERVAL '{GAP // MINUTE_MS}' MINUTE))
        GROUP BY person, window_start, window_end""")
    with windows.execute().collect() as results:
        return {(r[0], r[1], r[2], r[3]) for r in results}


def test_in_order_sessions_equal_flink_sql_session_windows(env):
    events = journeys()
    records, ops = run(env, events)

    got = closed_sessions(records)
    assert got == sql_session_windows(env, events)
    assert got == expected_sessions(events)
    assert on(records, "events.late") == []
    kinds = Counter(r["kind"] for r in on(records, "sessions"))
    assert kinds["open"] == kinds["close"] == len(got) and kinds["update"] == len(events) - len(got)
    for topic, key, value in records:  # keyed by person, idempotency keys as documented
        assert topic == "sessions" and key == value["person_id"]
        assert value["key"] == f"{value['session_id']}:{value['kind']}:{value['version']}"
        assert value["session_id"] == session_id(value["person_id"], value["start_ms"])
    puts = [op for op in ops if op["kind"] == "dynamodb" and op["op"] == "put"]
    assert len(puts) == len(got)
    assert {op["key"] for op in ops if op["kind"] == "redis"} == {
        build_key(f"tagstream:session:{view}:{{person_id}}", person_id=person)
        for view in ("live", "recent") for person, *_ in got}


def test_out_of_order_input_gives_the_same_sessions(env):
    events = journeys()
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    # The watermark lags the whole span, so every event is on time whatever its position.
    records, _ = run(env, shuffled, out_of_orderness_ms=48 * HOUR_MS)
    assert closed_sessions(records) == expected_sessions(events)
    assert on(records, "events.late") == []


def test_bridging_late_event_corrects_and_too_late_event_goes_to_the_late_topic(env):
    events = [
        ev("a1", "a", 0), ev("a2", "a", 40),  # two sessions (40 min apart, gap 30)
        ev("b1", "b", 41),
        ev("a3", "a", 22),  # late (watermark 41) but within lateness: bridges both sessions of a
        ev("b2", "b", 100),
        ev("a4", "a", 30),  # watermark 100: older than 100 - 20 -> too late
        ev("a5", "a", 160),
    ]
    records, _ = run(env, events)

    (late,) = on(records, "events.late")
    assert (late["reason"], late["event_id"], late["person_id"], late["watermark"]) == ("too_late", "a4", A, at(100))
    corrections = [r for r in on(records, "sessions") if r["kind"] == "correction"]
    assert len(corrections) == 1
    (correction,) = corrections
    assert correction["session_id"] == session_id(A, at(0)) and correction["event_count"] == 3
    assert correction["replaces"] == [{"person_id": A, "session_id": session_id(A, at(40)), "start_ms": at(40)}]
    assert correction["cause"] == "late_event"
    assert closed_sessions(records) == {(A, at(0), at(40), 3), (A, at(160), at(160), 1),
                                        (B, at(41), at(41), 1), (B, at(100), at(100), 1)}


def test_person_merge_folds_open_sessions_into_the_survivor(env):
    # The merge is held until the watermark passes its time, so at any parallelism the absorbed person's
    # events up to the merge are in the state it hands off (a3, after the merge, may be forwarded instead).
    events = [ev("a1", "a", 0), ev("b1", "b", 5), ev("a2", "a", 10), ev("b2", "b", 15), ev("a3", "a", 25)]
    merge = {"kind": "merge", "absorbed": A, "survivor": B, "ts": at(20), "idempotency_key": "m-1"}

    # Pass 1: the absorbed person hands its state off (keyed by the survivor) and clears its live view.
    records, ops = run(env, events, merges=[merge])
    handoffs = on(records, "sessions.handoff")
    assert handoffs and all(h["to"] == B and h["from"] == A for h in handoffs)
    assert [h["id"] for h in handoffs if h["type"] == "state"] == ["m-1"]
    live_a = build_key("tagstream:session:live:{person_id}", person_id=A)
    assert [op["op"] for op in ops if op["key"] == live_a][-1] == "delete"
    # a's open session moved: it is not closed under a (the survivor's correction will replace it)
    assert not [r for r in on(records, "sessions") if r["person_id"] == A and r["kind"] == "close"]

    # Pass 2: the loop topic brings the handoff(s) back to the survivor, which folds them.
    for handoff in handoffs:
        handoff["ts"] = at(20)
    survivor_events = [e for e in events if e["ids"]["user_id"] == "b"]
    records, _ = run(env, survivor_events, handoffs=handoffs + handoffs)  # redelivered: folded once
    merged = [r for r in on(records, "sessions") if r.get("cause") == "person_merge"]
    assert merged and {"person_id": A, "session_id": session_id(A, at(0)), "start_ms": at(0)} in \
        [r for m in merged for r in m["replaces"]]
    assert closed_sessions(records) == {(B, at(0), at(25), 5)}
