"""The identity job's keyed stages in a MiniCluster at parallelism 1 and 2, with a directory as the loopback.

`tests/pipeline/loop_harness.py` feeds events in phases and feeds the loop messages back until nothing
moves; outputs are the job's Kafka records and store ops. Assertions are on what the stages converge to
(annotations along the way depend on the interleaving, the final store state does not).
"""

from __future__ import annotations

import orjson
import pytest

from jobs.identity import IdentityJobConfig, build_identity
from tests.pipeline.loop_harness import LoopRun, directory_source, write_to

pytestmark = pytest.mark.pipeline

T0 = 1_795_000_000_000
MATCH_TRAITS = {"first_name": "Annabelle", "last_name": "Schmidtke", "dob": "1981-04-17", "zip": "10115",
                "street": "Hauptstrasse 5", "city": "Berlin", "email": "Anna.Schmidt@Mail.shop.de"}
PII = ["Annabelle", "Annabele", "Schmidtke", "1981-04-17", "19810417", "Hauptstrasse", "10115",
       "Anna.Schmidt@Mail.shop.de", "anna.schmidt@mail.shop.de", "anna.schmidt", "ann@shop.io",
       "+491712345678", "01712345678", "1712345678", "1975-02-03"]


def ev(event_id: str, etype: str, ts: int, ids: dict, **extra) -> dict:
    return {"event_id": event_id, "type": etype, "ts": T0 + ts, "ts_ms": T0 + ts, "ids": ids,
            "channel": "web", "source": "web", **extra}


@pytest.fixture
def run(env, tmp_path):
    loop_run = LoopRun(tmp_path)
    streams = build_identity(directory_source(env, loop_run.events, "events"),
                             directory_source(env, loop_run.loop, "loop"), IdentityJobConfig())
    write_to(streams.loop, loop_run.loop, "write-loop")
    write_to(streams.kafka, loop_run.out, "write-kafka")
    write_to(streams.store_ops, loop_run.out, "write-store-ops")
    loop_run.start(env, "identity-pipeline-test")
    yield loop_run
    loop_run.stop()


def kafka(outputs: list[dict], topic: str) -> list[dict]:
    return [o for o in outputs if o.get("topic") == topic]


def values(outputs: list[dict], topic: str) -> list[dict]:
    return [orjson.loads(o["value"]) for o in kafka(outputs, topic) if o["value"] is not None]


def redis_view(outputs: list[dict]) -> dict[str, object]:
    """What Redis holds after the version-guarded ops: per key the op of the highest version (None: deleted)."""
    best: dict[str, dict] = {}
    for op in (o for o in outputs if o.get("kind") == "redis"):
        held = best.get(op["key"])
        if held is None or op["version"] > held["version"] or (op.get("erase") and op["op"] == "delete"):
            best[op["key"]] = op
    return {k: (None if op["op"] == "delete" else op.get("value", op.get("fields"))) for k, op in best.items()}


def alias(view: dict[str, object], id_type: str, value: str) -> object:
    return view.get(f"tagstream:alias:{id_type}:{value}")


def test_links_protection_blocking_matching_and_no_pii(run):
    events = [
        ev("v1", "page_view", 0, {"anonymous_id": "anon-1"}, props={"url": "/shoes"}),
        ev("v2", "product_view", 1, {"anonymous_id": "anon-1"}, props={"product_id": "p1"}),
        ev("a1", "page_view", 5, {"device_id": "dev-1"}, channel="app", source="app"),
        ev("l1", "login", 10, {"device_id": "dev-1", "anonymous_id": "anon-1", "user_id": "u-1"}, channel="app",
           source="app"),
        ev("l2", "login", 20, {"anonymous_id": "anon-1", "user_id": "u-2"}),  # a second user_id: refused
        ev("b1", "page_view", 30, {"anonymous_id": "anon-7", "device_id": "00000000000000000000000000000000"}),
        ev("b2", "page_view", 31, {"anonymous_id": "anon-8", "device_id": "00000000000000000000000000000000"}),
        ev("m1", "identify", 40, {"anonymous_id": "anon-m1"}, traits=MATCH_TRAITS, source="crm"),
        ev("m2", "identify", 41, {"anonymous_id": "anon-m2"}, traits={**MATCH_TRAITS, "first_name": "Annabele",
                                                                      "email": None, "phone": "0171 2345678"}),
        ev("r1", "identify", 42, {"anonymous_id": "anon-r1"},
           traits={"first_name": "Annabelle", "last_name": "Schmidtke", "city": "Hamburg", "dob": "1975-02-03"}),
    ]
    run.feed(events)

    def converged(outputs):
        view = redis_view(outputs)
        kinds = {v["kind"] for v in values(outputs, "person-merges")}
        return {"merge", "refused", "review"} <= kinds and len(values(outputs, "events.identified")) == 10 \
            and alias(view, "anonymous_id", "anon-m2") == alias(view, "anonymous_id", "anon-m1")

    outputs = run.settle(converged)
    view = redis_view(outputs)

    # anonymous web browsing, app browsing, then a login: one person, which every identifier resolves to
    person = alias(view, "user_id", "u-1")
    assert person and alias(view, "anonymous_id", "anon-1") == person == alias(view, "device_id", "dev-1")
    merges = [v for v in values(outputs, "person-merges") if v["kind"] == "merge"]
    assert any(m["survivor"] == person and m["reason"] == "identifier_link" for m in merges)
    identified = {v["event_id"]: v for v in values(outputs, "events.identified")}
    assert identified["l1"]["person_id"] == person
    assert all(o["key"] == orjson.loads(o["value"])["person_id"] for o in kafka(outputs, "events.identified"))
    # merge protection: u-2 keeps its own person, the refusal is recorded
    refused = [v for v in values(outputs, "person-merges") if v["kind"] == "refused"]
    assert [(r["reason"], r["event_id"]) for r in refused] == [("limit:user_id", "l2")]
    assert alias(view, "user_id", "u-2") not in (None, person)
    # blocked values never link (and never get an alias)
    assert alias(view, "anonymous_id", "anon-7") != alias(view, "anonymous_id", "anon-8")
    assert not any(k.startswith("tagstream:alias:device_id:000") for k in view)
    # probabilistic matching: a strong identify merges, a weaker one is a review candidate
    matched = alias(view, "anonymous_id", "anon-m1")
    assert matched == alias(view, "anonymous_id", "anon-m2")
    assert any(m["reason"] == "probabilistic_match" and m["survivor"] == matched for m in merges)
    reviews = [v for v in values(outputs, "person-merges") if v["kind"] == "review"]
    weak = alias(view, "anonymous_id", "anon-r1")
    assert weak not in (None, matched) and reviews  # one per stored record it resembles (m1, m2)
    assert all("r1" in r["records"] and weak in r["persons"] for r in reviews)
    profiles = {v["person_id"]: v for v in values(outputs, "profiles")}
    assert matched in profiles and profiles[matched]["provenance"]
    # no raw PII in any output record (Kafka and store ops)
    text = "\n".join(orjson.dumps(o).decode() for o in outputs).lower()
    for raw in PII:
        assert raw.lower() not in text, f"raw PII {raw!r} leaked"


def test_erase_removes_everything(run):
    run.feed([ev("v1", "page_view", 0, {"anonymous_id": "anon-9"}),
              ev("i1", "identify", 5, {"anonymous_id": "anon-9", "user_id": "u-9"},
                 traits={"email": "ann@shop.io", "plan": "gold"}),
              ev("c1", "consent", 6, {"user_id": "u-9"}, consent={"personalization": True}),
              ev("o1", "page_view", 7, {"anonymous_id": "anon-other"})])
    before = run.settle(lambda out: any(p["person_id"] == alias(redis_view(out), "user_id", "u-9")
                                        and p["consent"] for p in values(out, "profiles")))
    person = alias(redis_view(before), "user_id", "u-9")
    assert alias(redis_view(before), "anonymous_id", "anon-9") == person

    run.feed([ev("x1", "erase", 100, {"user_id": "u-9"})])
    after = run.settle(lambda out: values(out, "erasures"))
    audit = values(after, "erasures")
    assert len(audit) == 1 and audit[0]["person_id"] == person and audit[0]["deleted"]["identifiers"] >= 3
    assert not any(raw in orjson.dumps(audit).decode() for raw in ("u-9", "anon-9", "ann@shop.io"))
    view = redis_view(after)
    gone = [k for k in view if person in k or k.endswith(("anon-9", "u-9"))]
    assert gone and all(view[k] is None for k in gone)
    assert alias(view, "anonymous_id", "anon-other") not in (None, person)
    dynamo = [o for o in after if o.get("kind") == "dynamodb" and o["key"] == {"person_id": person}]
    assert dynamo and dynamo[-1]["op"] == "delete" and dynamo[-1]["erase"]
    assert [o["value"] for o in kafka(after, "profiles") if o["key"] == person][-1] is None
    # the erase goes on to events.identified with the erased person's id (for sessions and segments)
    erased = [v for v in values(after, "events.identified") if v["type"] == "erase"]
    assert [(v["event_id"], v["person_id"]) for v in erased] == [("x1", person)]

    # a replayed event from before the erasure stays erased: nothing mentions the person any more
    seen = len(after)
    run.feed([ev("v1-replay", "page_view", 1, {"anonymous_id": "anon-9"}),
              ev("o2", "page_view", 200, {"anonymous_id": "anon-other"})])
    later = run.settle(lambda out: len(values(out, "events.identified")) > len(values(after, "events.identified")))
    assert later[seen:] or len(later) > seen
    assert not any(person in orjson.dumps(o).decode() for o in later if o not in after)
