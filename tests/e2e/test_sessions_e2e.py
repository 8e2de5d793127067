"""Sessions end to end: Kafka in, the job submitted with `flink run` to the local cluster, Kafka, Redis and
DynamoDB out (tier 3). No input follows the sessions: they close through the idle clock alone."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import orjson
import pytest
from kafka import KafkaConsumer

from tools.flink_jobs import JOBS, cancel, last_exception, operator_metrics, submit
from tools.kafka_io import private_topics, produce
from udfs.sessions.sessionizer import session_id
from udfs.stores.keys import build_key

pytestmark = pytest.mark.e2e

SESSIONS = next(j for j in JOBS if j.key == "sessions")
GAP_MS = 15_000  # long enough for the merge to travel the loop topic before the survivor closes, even under load


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def event(event_id: str, user: str, ts_ms: int, etype: str = "page_view") -> bytes:
    return orjson.dumps({"event_id": event_id, "type": etype, "ts": ts_ms, "ts_ms": ts_ms, "channel": "web",
                         "ids": {"user_id": user}, "props": {"url": f"https://shop.example/{event_id}"}})


def read_until(bootstrap: str, topic: str, done: Callable[[list[dict]], bool], timeout_s: float = 120) -> list[dict]:
    """Reads a topic from the start until `done(records)` holds (or the timeout passes)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, isolation_level="read_committed")
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not done(records):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(orjson.loads(r.value) for r in batch)
    finally:
        consumer.close()
    return records


def test_sessions_open_close_without_further_input_merge_and_reach_the_stores(stack, stores):
    bootstrap = stack.ports.bootstrap
    topics = private_topics(bootstrap, "events.valid", "person-merges", "sessions", "events.late",
                            "sessions.handoff")
    run = uuid.uuid4().hex[:6]
    x, y, m1, m2 = (f"{name}-{run}" for name in ("x", "y", "m1", "m2"))
    px, py, pm1, pm2 = (f"user_id:{u}" for u in (x, y, m1, m2))
    job_id = submit(stack, SESSIONS, [
        "--events-topic", topics["events.valid"], "--merges-topic", topics["person-merges"],
        "--sessions-topic", topics["sessions"], "--late-topic", topics["events.late"],
        "--handoff-topic", topics["sessions.handoff"], "--group-id", f"sessions-{run}",
        "--gap", f"{GAP_MS}ms", "--lateness", "3s", "--out-of-orderness", "500ms", "--idle-timeout", "1s",
        "--checkpoint-interval", "2s"])
    redis, dynamo = stores
    try:
        t0 = now_ms()
        plan = [(x, t0 - 2000), (y, t0 - 1800), (m1, t0 - 1700), (m2, t0 - 1600), (x, t0 - 1500), (y, t0 - 1200),
                (m1, t0 - 1100), (m2, t0 - 1000), (x, t0 - 900)]
        produce(bootstrap, topics["events.valid"], [event(f"{u}-{i}", u, ts) for i, (u, ts) in enumerate(plan)],
                keys=[u.encode() for u, _ in plan])

        def opened(records: list[dict]) -> bool:
            return {r["person_id"] for r in records if r["kind"] == "open"} >= {px, py, pm1, pm2}

        assert opened(read_until(bootstrap, topics["sessions"], opened)), last_exception(stack.ports, job_id)
        # m1 is absorbed by m2 while both sessions are open: m1's state travels the loop topic to m2
        merge = {"kind": "merge", "absorbed": pm1, "survivor": pm2, "reason": "identifier_link", "ts": t0,
                 "event_id": f"link-{run}", "idempotency_key": f"merge-{run}"}
        produce(bootstrap, topics["person-merges"], [orjson.dumps(merge)], keys=[pm1.encode()])
        time.sleep(2)  # the watermark has moved past the events: this one is far too late
        produce(bootstrap, topics["events.valid"], [event(f"{x}-late", x, t0 - 60_000)], keys=[x.encode()])

        # No more input: the sessions close by the idle clock alone.
        def closed(records: list[dict]) -> bool:
            return {r["person_id"] for r in records if r["kind"] == "close"} >= {px, py, pm2} and \
                any(r.get("cause") == "person_merge" for r in records)

        records = read_until(bootstrap, topics["sessions"], closed)
        assert closed(records), last_exception(stack.ports, job_id)
        late = read_until(bootstrap, topics["events.late"], lambda rs: len(rs) >= 1, timeout_s=30)

        # What a consumer keeps: the latest record per session, minus replaced ones. One person's records share
        # a partition (in order); a merge replaces another person's session, whose records may be read later.
        latest: dict[str, dict] = {}
        foreign: set[str] = set()
        for record in records:
            for gone in record.get("replaces", []):
                if gone["person_id"] == record["person_id"]:
                    latest.pop(gone["session_id"], None)
                else:
                    foreign.add(gone["session_id"])
            latest[record["session_id"]] = record
        final = {(r["person_id"], r["start_ms"], r["event_count"], r["status"]) for r in latest.values()
                 if r["session_id"] not in foreign}
        assert final == {(px, t0 - 2000, 3, "closed"), (py, t0 - 1800, 2, "closed"), (pm2, t0 - 1700, 4, "closed")}
        (fold,) = [r for r in records if r.get("cause") == "person_merge"]
        assert {"person_id": pm1, "session_id": session_id(pm1, t0 - 1700), "start_ms": t0 - 1700} in fold["replaces"]
        assert [(r["event_id"], r["reason"], r["person_id"]) for r in late] == [(f"{x}-late", "too_late", px)]

        # Redis: no live session left; the closed summary is in the person's recent list. DynamoDB: history.
        sid = session_id(px, t0 - 2000)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and redis.get(build_key("tagstream:session:recent:{person_id}",
                                                                  person_id=px)) is None:
            time.sleep(0.5)
        for person in (px, py, pm1, pm2):
            assert redis.get(build_key("tagstream:session:live:{person_id}", person_id=person)) is None
        recent = orjson.loads(redis.get(build_key("tagstream:session:recent:{person_id}", person_id=px)))
        assert [(r["session_id"], r["event_count"], r["end_ms"]) for r in recent] == [(sid, 3, t0 - 900)]
        (item,) = dynamo.query_live("tagstream_sessions", px, now_ms())
        assert item["session_key"] == f"{t0 - 2000:013d}#{sid}" and item["event_count"] == 3
        assert item["expires_at"] > now_ms() // 1000 and item["version"] >= 2
        merged_items = dynamo.query_live("tagstream_sessions", pm2, now_ms())
        assert [i["event_count"] for i in merged_items] == [4]

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            metrics = operator_metrics(stack.ports, job_id)
            if metrics.get("closed", 0) >= 3 and metrics.get("store_applied", 0) > 0:
                break
            time.sleep(2)
        assert metrics["events_in"] == len(plan) + 1 and metrics["late"] == metrics["late_too_late"] == 1
        assert metrics["merged"] == 1 and metrics["merged_away"] == 1
        assert metrics["closed"] == metrics["idle_closed"] >= 3
        assert metrics["open_sessions"] == 0
    finally:
        cancel(stack.ports, job_id)
