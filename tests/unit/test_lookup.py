"""The lookup service's pure parts: id parsing and hashing, resolution through aliases (a fake Redis that
counts round trips), the readers' expiry filter, partitioning of the change stream, HTTP answers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from service.app import create_app
from service.changes import parse_event_id, partition_for
from service.clients import Clients
from service.config import LookupConfig
from service.resolve import LazyHasher, MalformedId, lookup, parse_query
from udfs.identity.config import load_identity_config
from udfs.identity.graph import person_id_for
from udfs.identity.observe import identifier_key
from udfs.identity.pii import PiiHasher, PiiKeyMissing
from udfs.identity.records import alias_key
from udfs.segments import SegmentsConfig, person_id_of
from udfs.segments.records import redis_key
from udfs.segments.views import view_from_hash, view_from_items

IDENTITY = load_identity_config()
KEY = {"TAGSTREAM_PII_KEY": "unit-test-pii-key-0123456789abcdef"}
HASHER = LazyHasher(KEY)
NOW = 1_795_000_000_000


def tag(segment: str, expires_at: int | None, entered_at: int = NOW - 1000, **params) -> str:
    return orjson.dumps({"segment": segment, "params": params, "version": "sha256:0", "entered_at": entered_at,
                         "expires_at": expires_at}).decode()


class FakeRedis:
    """`RedisStore`'s readers over dicts; counts round trips."""

    def __init__(self, values: dict[str, str] | None = None, hashes: dict[str, dict[str, str]] | None = None):
        self.values, self.hashes, self.trips = values or {}, hashes or {}, 0

    def read(self, value_keys=(), hash_keys=()):
        self.trips += 1
        return [self.values.get(k) for k in value_keys], [self.hashes.get(k) for k in hash_keys]

    def get(self, key: str):
        self.trips += 1
        return self.values.get(key)

    def get_hash(self, key: str):
        self.trips += 1
        return self.hashes.get(key)


class FakeDynamo:
    def __init__(self, items: dict[str, list[dict[str, Any]]] | None = None):
        self.items = items or {}

    def query_live(self, table: str, hash_value: str, now_ms: int):
        assert table == SegmentsConfig().dynamo_table
        return self.items.get(hash_value, [])


def view_key(person: str) -> str:
    return redis_key(person, SegmentsConfig())


# ------------------------------------------------------------------------------------------------ parsing


def test_person_ids_pass_as_they_are():
    assert parse_query("p-0123abcd", IDENTITY, HASHER).person_id == "p-0123abcd"


def test_identifiers_are_normalized_and_hashed_like_the_identity_job():
    hasher = PiiHasher(KEY["TAGSTREAM_PII_KEY"].encode())
    email = parse_query("email: Ada@Shop.IO ", IDENTITY, HASHER)
    assert email.typed_key == identifier_key("email", "ada@shop.io", IDENTITY, hasher)[0]
    assert email.typed_key == "email:" + hasher.digest("email", "ada@shop.io")
    phone = parse_query("phone:+44 20 7946 0018", IDENTITY, HASHER)
    assert phone.typed_key == "phone:" + hasher.digest("phone", "+442079460018")
    assert parse_query("user_id: u-42 ", IDENTITY, HASHER).typed_key == "user_id:u-42"
    assert parse_query("device_id:ABC-1", IDENTITY, HASHER).typed_key == "device_id:abc-1"
    assert parse_query("loyalty_card:LC 7", IDENTITY, HASHER).typed_key == "loyalty_card:LC 7"


def test_an_identifier_founds_the_person_the_segments_job_keys_on_events_valid():
    query = parse_query("user_id:u-42", IDENTITY, HASHER)
    assert query.own_person == person_id_for("user_id:u-42") == person_id_of({"ids": {"user_id": "u-42"}})


@pytest.mark.parametrize("text", ["", "u-42", "User:x", "user id:x", "1abc:x", "p-", "p-a/b", "p-" + "a" * 127,
                                  "email:not-an-address", "user_id:", "user_id:   ", "user_id:unknown",
                                  "email:test@example.com", "phone:12", "x" * 600])
def test_malformed_ids_are_refused_with_a_reason(text):
    with pytest.raises(MalformedId):
        parse_query(text, IDENTITY, HASHER)


def test_email_lookup_without_the_pii_key_says_so_and_others_still_work():
    keyless = LazyHasher({})
    with pytest.raises(PiiKeyMissing):
        parse_query("email:ada@shop.io", IDENTITY, keyless)
    assert parse_query("user_id:u-1", IDENTITY, keyless).typed_key == "user_id:u-1"


# ------------------------------------------------------------------------------------------------ resolution


def test_identifier_whose_alias_is_its_own_person_costs_one_round_trip():
    query = parse_query("user_id:u-1", IDENTITY, HASHER)
    own = query.own_person
    redis = FakeRedis({alias_key(IDENTITY, "user_id:u-1"): own},
                      {view_key(own): {"tag:gold_tier": tag("gold_tier", None), "consent": "true"}})
    found = lookup(query, redis, FakeDynamo(), NOW, IDENTITY)
    assert found is not None and redis.trips == found.redis_round_trips == 1
    assert (found.resolved_via, found.source, found.view["person_id"]) == ("alias", "redis", own)
    assert list(found.view["tags"]) == ["gold_tier"] and found.view["consent"] is True


def test_alias_to_a_merged_survivor_reads_the_survivors_view():
    query = parse_query("anonymous_id:a-9", IDENTITY, HASHER)
    redis = FakeRedis({alias_key(IDENTITY, "anonymous_id:a-9"): "p-survivor"},
                      {view_key(query.own_person): {"tag:stale": tag("stale", None)},
                       view_key("p-survivor"): {"tag:recent_purchaser": tag("recent_purchaser", NOW + 5)}})
    found = lookup(query, redis, FakeDynamo(), NOW, IDENTITY)
    assert found is not None and found.redis_round_trips == 2
    assert found.view["person_id"] == "p-survivor" and list(found.view["tags"]) == ["recent_purchaser"]


def test_without_alias_the_identifiers_own_person_is_read():
    query = parse_query("user_id:u-2", IDENTITY, HASHER)
    redis = FakeRedis(hashes={view_key(query.own_person): {"consent": "true"}})
    found = lookup(query, redis, None, NOW, IDENTITY)
    assert found is not None and (found.resolved_via, found.source) == ("identifier", "redis")
    assert found.view["tags"] == {}


def test_dynamodb_answers_when_redis_has_nothing_and_unknown_is_none():
    person = "p-abc"
    items = [{"person_id": person, "tag": "viewed_product:p1", "segment": "viewed_product",
              "definition_version": "sha256:1", "params": {"product_id": "p1"}, "entered_at": NOW - 10,
              "expires_at_ms": NOW + 10},
             {"person_id": person, "tag": "gone", "segment": "gone", "definition_version": "sha256:1",
              "params": {}, "entered_at": NOW - 10, "expires_at_ms": NOW}]
    query = parse_query(person, IDENTITY, HASHER)
    found = lookup(query, FakeRedis(), FakeDynamo({person: items}), NOW, IDENTITY)
    assert found is not None and found.source == "dynamodb" and found.view["consent"] is None
    assert found.view["tags"] == {"viewed_product:p1": {"segment": "viewed_product", "params": {"product_id": "p1"},
                                                        "version": "sha256:1", "entered_at": NOW - 10,
                                                        "expires_at": NOW + 10}}
    assert lookup(parse_query("p-nobody", IDENTITY, HASHER), FakeRedis(), FakeDynamo(), NOW, IDENTITY) is None


def test_a_person_known_only_by_alias_has_no_segments_but_exists():
    redis = FakeRedis({alias_key(IDENTITY, "user_id:u-3"): "p-x"})
    found = lookup(parse_query("user_id:u-3", IDENTITY, HASHER), redis, FakeDynamo(), NOW, IDENTITY)
    assert found is not None and found.source == "none" and found.view["tags"] == {}


# ------------------------------------------------------------------------------------------------ readers


def test_reader_drops_expired_tags_at_the_exact_millisecond_and_marks_stale_placements():
    fields = {"tag:a": tag("a", NOW + 1), "tag:b": tag("b", NOW), "tag:c": tag("c", None),
              "placement:banner": orjson.dumps({"content": "x", "rule": "r", "tag": "b", "version": "v"}).decode(),
              "placement:home": orjson.dumps({"content": "y", "rule": "r", "tag": "a", "version": "v"}).decode(),
              "consent": "true"}
    view = view_from_hash("p-1", fields, NOW)
    assert set(view["tags"]) == {"a", "c"} and view["consent"] is True and view["as_of"] == NOW
    assert view["placements"]["banner"]["stale"] is True and "stale" not in view["placements"]["home"]
    assert set(view_from_hash("p-1", fields, NOW - 1)["tags"]) == {"a", "b", "c"}
    denied = view_from_hash("p-1", {**fields, "consent": "false"}, NOW)
    assert denied["tags"] == {} and denied["consent"] is False
    assert view_from_items("p-1", [], NOW)["tags"] == {}


# ------------------------------------------------------------------------------------------------ stream


def test_partition_is_kafkas_default_partitioner():
    # Kafka's Java murmur2 test vectors (UtilsTest.testMurmur2), made positive the way the Java client does.
    vectors = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536, "abc": 479470107}
    for key, java in vectors.items():
        assert partition_for(key, 1000) == (java & 0x7FFFFFFF) % 1000


@given(st.text(min_size=1, max_size=40), st.integers(1, 64))
def test_partition_is_in_range(key, partitions):
    assert 0 <= partition_for(key, partitions) < partitions


def test_event_ids():
    assert parse_event_id("3:1200") == (3, 1200)
    for bad in (None, "", "3", "a:1", "3:-1", "3:1:2"):
        assert parse_event_id(bad) is None


# ------------------------------------------------------------------------------------------------ HTTP


def test_http_answers(monkeypatch):
    person = person_id_for("user_id:u-7")
    clients = Clients(LookupConfig(dynamodb=False))
    clients.hasher = HASHER
    monkeypatch.setattr(Clients, "redis", property(lambda self: FakeRedis(
        hashes={view_key(person): {"tag:gold_tier": tag("gold_tier", None)}})))
    with TestClient(create_app(LookupConfig(dynamodb=False), clients)) as client:
        ok = client.get("/persons/user_id:u-7/segments")
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert (body["person_id"], body["query"], body["resolved_via"]) == (person, "user_id:u-7", "identifier")
        assert list(body["tags"]) == ["gold_tier"]
        assert client.get(f"/persons/{person}/segments").json()["tags"] == body["tags"]
        assert client.get("/persons/user_id:u-8/segments").status_code == 404
        bad = client.get("/persons/nonsense/segments")
        assert bad.status_code == 400 and "TYPE:VALUE" in bad.json()["detail"]
        clients.hasher = LazyHasher({})
        assert client.get("/persons/email:a@b.io/segments").status_code == 503
