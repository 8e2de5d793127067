"""Ingest end to end: real Kafka broker, job submitted with `flink run` to the local cluster (tier 3)."""

from __future__ import annotations

import time

import orjson
import pytest

from tools.flink_jobs import JOBS, cancel, last_exception, operator_metrics, submit
from tools.kafka_io import consume, private_topics, produce

pytestmark = pytest.mark.e2e

INGEST = next(j for j in JOBS if j.key == "ingest")


def event(event_id: str, etype: str = "page_view", **extra) -> bytes:
    body = {"event_id": event_id, "type": etype, "ts": int(time.time() * 1000) - 1000,
            "ids": {"anonymous_id": f"anon-{event_id}"}, **extra}
    return orjson.dumps(body)


def test_good_bad_and_duplicate_events_reach_the_right_topics(stack):
    bootstrap = stack.ports.bootstrap
    topics = private_topics(bootstrap, "events", "events.valid", "events.dlq")
    good = [event(f"ok-{i}", "product_view", props={"product_id": f"p{i}", "price": i}) for i in range(20)]
    bad = {
        "invalid_json": b'{"event_id": "x",',
        "not_utf8": b"\xff\xfe\xfa",
        "unknown_type": event("bad-type", "teleport"),
        "schema": event("bad-schema", props={"price": "free"}),
        "too_large": b'{"pad": "' + b"x" * 70_000 + b'"}',
        "bad_timestamp": event("bad-ts", ts="tomorrow morning, roughly"),
        "not_an_object": b"[1,2,3]",
        "timestamp_out_of_range": event("bad-future", ts=int(time.time() * 1000) + 3 * 86_400_000),
    }
    duplicates = [good[0], good[5], good[5]]
    values = good[:10] + list(bad.values()) + duplicates + good[10:]

    job_id = submit(stack, INGEST, ["--input-topic", topics["events"], "--valid-topic", topics["events.valid"],
                                    "--dlq-topic", topics["events.dlq"], "--group-id", topics["events"],
                                    "--checkpoint-interval", "2s"])
    try:
        produce(bootstrap, topics["events"], values)
        valid = [orjson.loads(v) for v in consume(bootstrap, topics["events.valid"], len(good))]
        dead = [orjson.loads(v) for v in consume(bootstrap, topics["events.dlq"], len(bad))]

        assert sorted(v["event_id"] for v in valid) == sorted(f"ok-{i}" for i in range(20)), \
            last_exception(stack.ports, job_id)
        for record in valid:
            original = orjson.loads(good[int(record.pop("event_id").split("-")[1])])
            assert record.pop("ts_ms") == original["ts"]
            original.pop("event_id")
            assert record == original
        assert sorted(d["reason"] for d in dead) == sorted(bad)
        for record in dead:
            raw = bad[record["reason"]]
            assert record["origin"]["topic"] == topics["events"]
            assert record["payload_size"] == len(raw)
            if record["reason"] == "not_utf8":
                assert record["payload_base64"] == "//76"
            elif record["reason"] != "too_large":
                assert record["payload"].encode() == raw

        deadline = time.monotonic() + 60
        metrics: dict[str, int] = {}
        while time.monotonic() < deadline:
            metrics = operator_metrics(stack.ports, job_id)
            if metrics.get("records_in") == len(values) and metrics.get("valid") == len(good):
                break
            time.sleep(2)
        assert metrics["records_in"] == len(values)
        assert metrics["valid"] == len(good)
        assert metrics["duplicates"] == len(duplicates)
        assert metrics["dead_lettered"] == len(bad)
        assert metrics["records_in"] == metrics["valid"] + metrics["duplicates"] + metrics["dead_lettered"]
        assert all(metrics[f"dead_lettered_{reason}"] == 1 for reason in bad)
    finally:
        cancel(stack.ports, job_id)
