"""The lookup service end to end (tier 3): events in Kafka, the segments job submitted with `flink run`, the
service (uvicorn, in this process, on a free port) answering from the real Redis, DynamoDB Local and Kafka.
The SSE stream delivers the entry and, with no further input (the job's idle clock), the exit; a reconnect
with Last-Event-ID resumes after the entry; an email resolves through an identity alias key; DynamoDB answers
when Redis has no view."""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn

from service.app import create_app
from service.config import LookupConfig
from tests.e2e.test_segments_e2e import QUICK, event, now_ms, wait_for
from tools import lookup as lookup_cli
from tools import segments_cli
from tools.flink_jobs import JOBS, cancel, last_exception, operator_metrics, submit
from tools.kafka_io import private_topics, produce
from udfs.identity.config import load_identity_config
from udfs.identity.observe import identifier_key
from udfs.identity.pii import PiiHasher
from udfs.identity.records import alias_key
from udfs.segments import SegmentsConfig, person_id_of
from udfs.segments.records import redis_key
from udfs.stores.ops import RedisDelete, RedisSet

pytestmark = pytest.mark.e2e

SEGMENTS = next(j for j in JOBS if j.key == "segments")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Events:
    """An SSE client in a thread: parsed events (dicts of `event`, `id`, `data`) in a queue, comments counted."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[dict[str, str]] = queue.Queue()
        self.comments = 0
        self.status: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, headers or {}), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=None)) as client, \
                client.stream("GET", url, headers=headers) as response:
            self.status = response.status_code
            current: dict[str, str] = {}
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith(":"):
                    self.comments += 1
                elif not line:
                    if current:
                        self.events.put(current)
                    current = {}
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    current[name] = f"{current[name]}\n{value}" if name in current else value

    def next(self, timeout_s: float = 60) -> dict[str, str]:
        return self.events.get(timeout=timeout_s)

    def until(self, predicate, timeout_s: float = 90) -> list[dict[str, str]]:
        """Events up to and including the first that satisfies `predicate`."""
        seen, deadline = [], time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                seen.append(self.events.get(timeout=1))
            except queue.Empty:
                continue
            if predicate(seen[-1]):
                return seen
        raise AssertionError(f"no matching event in {timeout_s} s; got {seen}")

    def close(self) -> None:
        self._stop.set()  # the reader returns at its next line (a heartbeat comes every second)
        if not self._thread.is_alive():
            return
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the SSE client did not stop"


@pytest.fixture
def service(stack, monkeypatch) -> Iterator[tuple[str, LookupConfig]]:
    """A URL to the lookup service on this stack (changes topic set per test) and its config holder."""
    monkeypatch.setenv("TAGSTREAM_PII_KEY", stack.layout.pii_key())
    topic = private_topics(stack.ports.bootstrap, "segment-changes")["segment-changes"]
    config = LookupConfig.for_profile(stack.profile, changes_topic=topic, heartbeat_s=1, poll_timeout_ms=300)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, 30), "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", config
    server.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive(), "the service did not shut down"


def test_lookup_service_serves_tags_and_streams_entry_and_exit(stack, stores, service, tmp_path: Path, capsys):
    url, config = service
    bootstrap = stack.ports.bootstrap
    topics = private_topics(bootstrap, "events.valid", "events.late")
    topics.update(private_topics(bootstrap, "segment-definitions", partitions=1))
    definitions = tmp_path / "lookup.yaml"
    definitions.write_text(QUICK, encoding="utf-8")  # quick_searcher, quick_viewer (4 s), hour_buyer (1 h)
    assert segments_cli.main(["--bootstrap", bootstrap, "--topic", topics["segment-definitions"], "apply",
                              str(definitions)]) == 0
    run = uuid.uuid4().hex[:6]
    user = f"u-{run}"
    person = person_id_of({"ids": {"user_id": user}})
    job_id = submit(stack, SEGMENTS, [
        "--input-topic", topics["events.valid"], "--definitions-topic", topics["segment-definitions"],
        "--changes-topic", config.changes_topic, "--late-topic", topics["events.late"],
        "--group-id", f"lookup-{run}", "--lateness", "3s", "--out-of-orderness", "500ms",
        "--idle-timeout", "1s", "--checkpoint-interval", "2s"])
    redis, _ = stores
    stream = Events(f"{url}/persons/user_id:{user}/segments/stream")
    resumed = None
    try:
        ready = stream.next()
        assert ready["event"] == "ready" and orjson.loads(ready["data"])["person_id"] == person
        assert wait_for(lambda: operator_metrics(stack.ports, job_id).get("definitions_loaded", 0) >= 3, 120), \
            last_exception(stack.ports, job_id)
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get(f"/persons/user_id:{user}/segments").status_code == 404  # nothing yet
            t0 = now_ms()
            plan = [("v1", t0 - 500, "product_view", {"product_id": "p1"}), ("b1", t0 - 400, "purchase", {})]
            produce(bootstrap, topics["events.valid"], [event(f"{run}-{i}", user, ts, etype, **props)
                                                        for i, ts, etype, props in plan],
                    keys=[user.encode()] * len(plan))

            # the stream delivers the entry ...
            got = stream.until(lambda e: orjson.loads(e["data"]).get("tag") == "quick_viewer:p1")
            enter = got[-1]
            record = orjson.loads(enter["data"])
            assert (enter["event"], record["op"], record["person_id"]) == ("segment_change", "enter", person)
            assert enter["id"].split(":")[0] == str(orjson.loads(ready["data"])["partition"])

            # ... the lookup answers it by the identifier, from Redis ...
            def tags() -> dict:
                return http.get(f"/persons/user_id:{user}/segments").json().get("tags", {})

            assert wait_for(lambda: {"quick_viewer:p1", "hour_buyer"} <= set(tags())), tags()
            body = http.get(f"/persons/user_id:{user}/segments").json()
            assert (body["person_id"], body["source"], body["resolved_via"]) == (person, "redis", "identifier")
            viewed = body["tags"]["quick_viewer:p1"]
            assert viewed["params"] == {"product_id": "p1"}
            assert (viewed["entered_at"], viewed["expires_at"]) == (t0 - 500, t0 - 500 + 4000)
            assert body["tags"]["hour_buyer"]["expires_at"] == t0 - 400 + 3_600_000
            assert http.get("/persons/not-an-id/segments").status_code == 400

            # ... and the exit comes with no further input (the job's idle clock)
            got = stream.until(lambda e: orjson.loads(e["data"]).get("op") == "exit")
            exit_record = orjson.loads(got[-1]["data"])
            assert (exit_record["tag"], exit_record["ts_ms"]) == ("quick_viewer:p1", t0 - 500 + 4000)
            assert exit_record["reason"]["cause"] == "time"
            assert wait_for(lambda: "quick_viewer:p1" not in tags())
            assert stream.comments >= 1  # heartbeats while waiting

            # a reconnect resumes right after the entry: the exit again, never the entry
            resumed = Events(f"{url}/persons/{person}/segments/stream", {"Last-Event-ID": enter["id"]})
            assert resumed.next()["event"] == "ready"
            again = resumed.until(lambda e: orjson.loads(e["data"]).get("op") == "exit")
            assert enter["id"] not in {e["id"] for e in again}
            assert all(int(e["id"].split(":")[1]) > int(enter["id"].split(":")[1]) for e in again)

            # an email the identity job linked to the person resolves through its alias key
            email_key = identifier_key("email", f"{run}@shop.io", load_identity_config(),
                                       PiiHasher(stack.layout.pii_key().encode()))[0]
            alias = alias_key(load_identity_config(), str(email_key))
            redis.apply([RedisSet(alias, person, now_ms())])
            by_email = http.get(f"/persons/email:{run.upper()}@Shop.io/segments").json()
            assert (by_email["person_id"], by_email["resolved_via"]) == (person, "alias")
            assert "hour_buyer" in by_email["tags"]

            # without the Redis view, DynamoDB answers (memberships only)
            redis.apply([RedisDelete(redis_key(person, SegmentsConfig()), now_ms() * 1000, erase=True)])
            from_dynamo = http.get(f"/persons/{person}/segments").json()
            assert from_dynamo["source"] == "dynamodb" and set(from_dynamo["tags"]) == {"hour_buyer"}
            redis.apply([RedisDelete(alias, now_ms() * 1000, erase=True)])

        # the CLI looks the person up the same way
        capsys.readouterr()
        assert lookup_cli.main(["--profile", stack.profile, "--no-dynamodb", f"user_id:{user}"]) == 1  # view gone
        assert lookup_cli.main(["--profile", stack.profile, person]) == 0
        assert "hour_buyer" in orjson.loads(capsys.readouterr().out)["tags"]
        # clients that go away end their streams (and Kafka consumers)
        assert httpx.get(f"{url}/healthz").json()["streams"] == 2
        stream.close()
        resumed.close()
        assert wait_for(lambda: httpx.get(f"{url}/healthz").json()["streams"] == 0, 30)
    finally:
        stream.close()
        if resumed is not None:
            resumed.close()
        cancel(stack.ports, job_id)
