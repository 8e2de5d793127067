"""A person's lifecycle through the whole suite (tier 3, issue #5's acceptance): raw events into Kafka, then
ingest -> identity -> sessions + segments, each submitted with `flink run` to the local cluster, with Redis and
DynamoDB Local.

Anonymous web browsing, then app activity on a device, then a login on the app that links the cookie, the
device and the user id: ONE person, whose segment tags (Redis, DynamoDB, `segment-changes`) include the
anonymous web activity and the device's (folded by the person merge), and whose session holds both channels.
Then an `erase` for the user id removes everything of that person in Redis and DynamoDB: aliases, profile,
sessions and tags.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from tests.e2e.segments_support import now_ms, read_until
from tests.e2e.waiting import wait_for
from tools import segments_cli
from tools.flink_jobs import JOBS, cancel, operator_metrics, submit
from tools.kafka_io import private_topics, produce
from udfs.identity.config import load_identity_config
from udfs.identity.observe import identifier_key
from udfs.identity.pii import PiiHasher
from udfs.identity.records import alias_key, profile_key
from udfs.stores.keys import build_key

pytestmark = pytest.mark.e2e

SPECS = {j.key: j for j in JOBS}
GAP = "60s"  # longer than the pause between the two phases: one session across the login
VIEWER = """\
kind: segment
name: lc_viewer
params: [product_id]
condition: {recent: {match: {type: product_view, props: {product_id: "{product_id}"}}, within: 30m}}
"""
LIVE, RECENT = "tagstream:session:live:{person_id}", "tagstream:session:recent:{person_id}"


def event(etype: str, ids: dict, channel: str, ts: int, **extra) -> bytes:
    return orjson.dumps({"event_id": uuid.uuid4().hex, "type": etype, "ts": ts, "ids": ids, "channel": channel,
                         "source": channel, **extra})


def test_anonymous_web_then_app_login_is_one_person_with_tags_and_session_and_erase_removes_it(
        stack, stores, tmp_path: Path):
    bootstrap = stack.ports.bootstrap
    topics = private_topics(bootstrap, "events", "events.valid", "events.dlq", "identity-loop", "events.identified",
                            "person-merges", "profiles", "erasures", "sessions", "sessions.handoff", "events.late",
                            "segment-changes", "segments.handoff")
    topics.update(private_topics(bootstrap, "segment-definitions", partitions=1))
    run = uuid.uuid4().hex[:8]
    anon, device, user = f"anon-{run}", f"dev-{run}", f"user-{run}"
    config = load_identity_config()
    hasher = PiiHasher(stack.layout.pii_key().encode())
    redis, dynamo = stores
    definitions = tmp_path / "viewer.yaml"
    definitions.write_text(VIEWER, encoding="utf-8")
    assert segments_cli.main(["--bootstrap", bootstrap, "--topic", topics["segment-definitions"], "apply",
                              str(definitions)]) == 0

    def person_of(id_type: str, value: str) -> str | None:
        typed, _ = identifier_key(id_type, value, config, hasher)
        return redis.get(alias_key(config, typed)) if typed else None

    fast = ["--checkpoint-interval", "2s"]
    timing = ["--out-of-orderness", "500ms", "--idle-timeout", "1s", "--lateness", "60s"]
    roles = {"identified": "events.identified", "merges": "person-merges", "review": "person-merges",
             "profiles": "profiles", "erasures": "erasures"}
    args = {
        "ingest": ["--input-topic", topics["events"], "--valid-topic", topics["events.valid"],
                   "--dlq-topic", topics["events.dlq"], "--group-id", f"ingest-{run}", *fast],
        "identity": ["--input-topic", topics["events.valid"], "--loop-topic", topics["identity-loop"],
                     "--group-id", f"identity-{run}", *fast,
                     *[a for role, topic in roles.items() for a in ("--topic", f"{role}={topics[topic]}")]],
        "sessions": ["--events-topic", topics["events.identified"], "--merges-topic", topics["person-merges"],
                     "--sessions-topic", topics["sessions"], "--late-topic", topics["events.late"],
                     "--handoff-topic", topics["sessions.handoff"], "--group-id", f"sessions-{run}",
                     "--gap", GAP, *timing, *fast],
        "segments": ["--input-topic", topics["events.identified"], "--merges-topic", topics["person-merges"],
                     "--handoff-topic", topics["segments.handoff"], "--definitions-topic",
                     topics["segment-definitions"], "--changes-topic", topics["segment-changes"],
                     "--late-topic", topics["events.late"], "--group-id", f"segments-{run}", *timing, *fast],
    }
    jobs: dict[str, str] = {}

    def until(probe, what: str):
        return wait_for(probe, what, stack.ports, *jobs.values(), timeout_s=150)

    try:
        for key, job_args in args.items():
            jobs[key] = submit(stack, SPECS[key], job_args, reuse=False)
        until(lambda: operator_metrics(stack.ports, jobs["segments"]).get("definitions_loaded", 0) >= 1,
                 "the segment definition")

        # Phase 1: anonymous web browsing, and app browsing on a device: two persons so far.
        t0 = now_ms()
        produce(bootstrap, topics["events"], [
            event("page_view", {"anonymous_id": anon}, "web", t0 - 3000, props={"url": "/"}),
            event("product_view", {"anonymous_id": anon}, "web", t0 - 2500, props={"product_id": "p-web"}),
            event("product_view", {"device_id": device}, "app", t0 - 2000, props={"product_id": "p-app"})])
        web_person, app_person = until(
            lambda: (person_of("anonymous_id", anon), person_of("device_id", device))
            if person_of("anonymous_id", anon) and person_of("device_id", device) else None,
            "a person for the cookie and one for the device")
        assert web_person != app_person

        def entered(records: list[dict]) -> bool:
            return {(r["person_id"], r["tag"]) for r in records if r["op"] == "enter"} >= {
                (web_person, "lc_viewer:p-web"), (app_person, "lc_viewer:p-app")}

        assert entered(read_until(bootstrap, topics["segment-changes"], entered)), jobs

        # Phase 2: a login on the app names the cookie, the device and the user: one person.
        t1 = now_ms()
        produce(bootstrap, topics["events"], [
            event("login", {"anonymous_id": anon, "device_id": device, "user_id": user}, "app", t1 - 1000,
                  traits={"tier": "gold"}),
            event("product_view", {"device_id": device}, "app", t1 - 500, props={"product_id": "p-after"})])
        person = until(lambda: len({person_of("anonymous_id", anon), person_of("device_id", device),
                                       person_of("user_id", user)}) == 1 and person_of("user_id", user),
                          "one person for all three identifiers")
        assert person == web_person  # the cookie was seen first: its person survives, the device's is absorbed
        tags = {"lc_viewer:p-web", "lc_viewer:p-app", "lc_viewer:p-after"}

        def tagged(records: list[dict]) -> bool:
            return {r["tag"] for r in records if r["op"] == "enter" and r["person_id"] == person} >= tags

        changes = read_until(bootstrap, topics["segment-changes"], tagged)
        assert tagged(changes), jobs
        # the device's tag came with the merge (p-after too when its event reached the device's key first)
        folded = {(r["tag"], r["op"], r["reason"]["from"]) for r in changes
                  if r["person_id"] == person and r["reason"]["cause"] == "merge"}
        assert ("lc_viewer:p-app", "enter", app_person) in folded
        assert folded <= {("lc_viewer:p-app", "enter", app_person), ("lc_viewer:p-after", "enter", app_person)}
        assert ("lc_viewer:p-app", "exit", "merge") in {(r["tag"], r["op"], r["reason"]["cause"])
                                                        for r in changes if r["person_id"] == app_person}
        until(lambda: tags <= set(segments_cli.lookup(redis, person, now_ms())["tags"]),
                 "the tags in the Redis view")
        until(lambda: tags <= {i["tag"] for i in dynamo.query_live("tagstream_segments", person, now_ms())},
                 "the tags in DynamoDB")
        assert dynamo.query_live("tagstream_segments", app_person, now_ms()) == []  # moved, not copied

        # The session closes (idle clock) with both channels and every event of the person.
        recent_key = build_key(RECENT, person_id=person)
        recent = until(lambda: redis.get(recent_key), "the closed session")
        (summary,) = orjson.loads(recent)
        assert summary["channels"] == ["app", "web"] and summary["event_count"] == 5, summary
        (item,) = until(lambda: dynamo.query_live("tagstream_sessions", person, now_ms()),
                           "the session in DynamoDB")
        assert item["session_id"] == summary["session_id"] and item["channels"] == ["app", "web"]
        profile = until(lambda: redis.get_hash(profile_key(config, person)), "the profile")
        assert profile["person_id"] == person

        # Erase by the user id: nothing of the person is left in Redis or DynamoDB.
        produce(bootstrap, topics["events"], [event("erase", {"user_id": user}, "app", now_ms())])

        def leftovers() -> list[str]:
            now = now_ms()
            found = [f"alias {t}" for t, v in (("anonymous_id", anon), ("device_id", device), ("user_id", user))
                     if person_of(t, v)]
            found += [k for k in (profile_key(config, person), build_key(LIVE, person_id=person), recent_key)
                      if redis.get_hash(k) or redis.get(k)]
            found += [f"view of {p}" for p in (person, app_person) if segments_cli.lookup(redis, p, now)["tags"]]
            found += [f"{table} item" for table in ("tagstream_segments", "tagstream_sessions")
                      if dynamo.query_live(table, person, now)]
            if dynamo.get_live("tagstream_profiles", {"person_id": person}, now) is not None:
                found.append("tagstream_profiles item")
            return found

        until(lambda: not leftovers(), "the erase to remove everything")
        erased = read_until(bootstrap, topics["segment-changes"],
                            lambda rs: any(r["reason"]["cause"] == "erase" for r in rs))
        assert {r["tag"] for r in erased if r["reason"]["cause"] == "erase" and r["op"] == "exit"} == tags
    finally:
        for job_id in jobs.values():
            cancel(stack.ports, job_id)
