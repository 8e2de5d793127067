"""The ingest stage in a MiniCluster at parallelism 1 and 2, on a bounded collection of raw records."""

from __future__ import annotations

import orjson
import pytest
from pyflink.common import Row

from jobs.ingest import IngestConfig, build_ingest
from jobs.runtime import RAW_RECORD_TYPE

pytestmark = pytest.mark.pipeline

KAFKA_TS = 1_795_000_000_000


def event(event_id: str, etype: str = "page_view", **extra) -> bytes:
    body = {"event_id": event_id, "type": etype, "ts": KAFKA_TS - 1000, "ids": {"anonymous_id": "a-1"}, **extra}
    return orjson.dumps(body)


def raw_rows(values: list[bytes]) -> list[Row]:
    return [Row("events", i % 3, i, KAFKA_TS, value) for i, value in enumerate(values)]


def run(env, values: list[bytes]) -> tuple[list[dict], list[dict]]:
    source = env.from_collection(raw_rows(values), type_info=RAW_RECORD_TYPE)
    streams = build_ingest(source, IngestConfig())
    with streams.valid.union(streams.dead_letters).execute_and_collect() as results:
        docs = [orjson.loads(r) for r in results]
    dead = [d for d in docs if "dlq_id" in d]
    valid = [d for d in docs if "dlq_id" not in d]
    return valid, dead


def test_valid_duplicate_and_bad_records_are_routed(env):
    values = [
        event("e1"),
        event("e2", "product_view", props={"product_id": "p1", "price": 9.5}),
        event("e1"),  # duplicate
        b"{not json",
        b"\xff\xfe\x00",
        event("e3", "teleport"),
        event("e4", props={"price": "free"}),
        event("e5", ts="yesterday at noon"),
        event("e2", "product_view", props={"product_id": "p1", "price": 9.5}),  # duplicate
        b"[1, 2, 3]",
        event("e6", ts="2026-11-18T08:00:00+01:00"),
        event("e7", ts=KAFKA_TS + 2 * 86_400_000),  # too far in the future
    ]
    valid, dead = run(env, values)

    assert sorted(v["event_id"] for v in valid) == ["e1", "e2", "e6"]
    assert {v["event_id"]: v["ts_ms"] for v in valid}["e6"] == 1794985200000
    reasons = {d["origin"]["offset"]: d["reason"] for d in dead}
    assert reasons == {3: "invalid_json", 4: "not_utf8", 5: "unknown_type", 6: "schema", 7: "schema",
                       9: "not_an_object", 11: "timestamp_out_of_range"}
    by_offset = {d["origin"]["offset"]: d for d in dead}
    assert by_offset[4]["payload_base64"] == "//4A"
    assert by_offset[3]["payload"] == "{not json"
    assert by_offset[5]["event_id"] == "e3"
    assert by_offset[3]["origin"] == {"topic": "events", "partition": 0, "offset": 3, "timestamp": KAFKA_TS}
    # every input record is accounted for exactly once
    assert len(valid) + len(dead) + 2 == len(values)


def test_many_duplicates_across_partitions_leave_one_each(env):
    values = [event(f"e{i % 50}") for i in range(400)]
    valid, dead = run(env, values)
    assert sorted(v["event_id"] for v in valid) == sorted(f"e{i}" for i in range(50))
    assert dead == []
