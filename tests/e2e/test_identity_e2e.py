"""Identity end to end: Kafka, the identity job via `flink run`, Redis and DynamoDB Local (tier 3).

Anonymous web browsing, then a login on the app, ends as one person whose identifiers all resolve to it
in Redis, with a profile in Redis and DynamoDB and a `person-merges` record; an erase removes it all.
"""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from tests.e2e.waiting import wait_for
from tools.flink_jobs import JOBS, cancel, submit
from tools.kafka_io import consume, private_topics, produce
from udfs.identity.config import load_identity_config
from udfs.identity.observe import identifier_key
from udfs.identity.pii import PiiHasher
from udfs.identity.records import alias_key, profile_key

pytestmark = pytest.mark.e2e

IDENTITY = next(j for j in JOBS if j.key == "identity")


def event(etype: str, ids: dict, channel: str, **extra) -> bytes:
    now = int(time.time() * 1000)
    body = {"event_id": uuid.uuid4().hex, "type": etype, "ts": now, "ts_ms": now, "ids": ids,
            "channel": channel, "source": channel, **extra}
    return orjson.dumps(body)


def test_anonymous_browsing_then_app_login_is_one_person_and_erase_removes_it(stack, stores):
    bootstrap = stack.ports.bootstrap
    topics = private_topics(bootstrap, "events.valid", "identity-loop", "events.identified", "person-merges",
                            "profiles", "erasures")
    run = uuid.uuid4().hex[:8]
    anon, device, user = f"anon-{run}", f"dev-{run}", f"user-{run}"
    config = load_identity_config()
    hasher = PiiHasher(stack.layout.pii_key().encode())
    redis_store, dynamo = stores

    def person_of(id_type: str, value: str) -> str | None:
        typed, _ = identifier_key(id_type, value, config, hasher)
        return redis_store.get(alias_key(config, typed)) if typed else None

    roles = {"identified": "events.identified", "merges": "person-merges", "review": "person-merges",
             "profiles": "profiles", "erasures": "erasures"}
    job_id = submit(stack, IDENTITY, [
        "--input-topic", topics["events.valid"], "--loop-topic", topics["identity-loop"],
        "--group-id", f"identity-{run}", "--checkpoint-interval", "2s",
        *[arg for role, topic in roles.items() for arg in ("--topic", f"{role}={topics[topic]}")]], reuse=False)
    try:
        produce(bootstrap, topics["events.valid"],
                [event("page_view", {"anonymous_id": anon}, "web", props={"url": "/"}) for _ in range(3)]
                + [event("product_view", {"device_id": device}, "app", props={"product_id": "p-1"})])
        wait_for(lambda: person_of("anonymous_id", anon) and person_of("device_id", device),
                 "both identifiers to get a person", stack.ports, job_id)
        assert person_of("anonymous_id", anon) != person_of("device_id", device)

        produce(bootstrap, topics["events.valid"],
                [event("login", {"anonymous_id": anon, "device_id": device, "user_id": user}, "app",
                       traits={"first_name": "Ada", "tier": "gold"})])
        person = wait_for(lambda: len({person_of("anonymous_id", anon), person_of("device_id", device),
                                       person_of("user_id", user)} - {None}) == 1 and person_of("user_id", user),
                          "one person for all three identifiers", stack.ports, job_id)
        merges = [orjson.loads(v) for v in consume(bootstrap, topics["person-merges"], 1)]
        assert any(m.get("survivor") == person or m.get("person_id") == person for m in merges), merges
        profile = wait_for(lambda: redis_store.get_hash(profile_key(config, person)), "the Redis profile",
                           stack.ports, job_id)
        assert profile["person_id"] == person
        item = wait_for(lambda: dynamo.get_live("tagstream_profiles", {"person_id": person},
                                                int(time.time() * 1000)), "the DynamoDB profile", stack.ports, job_id)
        assert item["person_id"] == person
        identified = [orjson.loads(v) for v in consume(bootstrap, topics["events.identified"], 5)]
        assert [e["person_id"] for e in identified if e["type"] == "login"] == [person]  # no order across partitions

        produce(bootstrap, topics["events.valid"], [event("erase", {"user_id": user}, "app")])
        wait_for(lambda: not any((person_of("anonymous_id", anon), person_of("device_id", device),
                                  person_of("user_id", user), redis_store.get_hash(profile_key(config, person)))),
                 "the erase to remove aliases and profile from Redis", stack.ports, job_id)
        wait_for(lambda: dynamo.get_live("tagstream_profiles", {"person_id": person},
                                         int(time.time() * 1000)) is None,
                 "the erase to remove the DynamoDB profile", stack.ports, job_id)
        audits = consume(bootstrap, topics["erasures"], 1)
        assert audits and all(raw not in a.decode() for a in audits for raw in (anon, device, user, "Ada"))
    finally:
        cancel(stack.ports, job_id)
