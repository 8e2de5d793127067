"""Store writers without a server (tier 1): request shapes, retries and backoff, pickling, configuration.
The same writers against real Redis and DynamoDB Local: tests/e2e/test_stores.py."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis
from botocore.exceptions import ClientError, EndpointConnectionError

from udfs.stores.dynamo_codec import from_attributes, is_live, to_attributes
from udfs.stores.dynamo_store import DynamoConfig, DynamoStore
from udfs.stores.guard import ApplyResult
from udfs.stores.ops import DynamoDelete, DynamoPut, RedisDelete, RedisHash, RedisHashUpdate, RedisSet
from udfs.stores.redis_store import RedisConfig, RedisStore, _argv
from udfs.stores.retry import RetryPolicy, StoreError, StoreUnavailable, call_with_retry

NOW = 1_800_000_000_000
T = "tagstream_segments"
K = {"person_id": "p-1", "tag": "t"}


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutItem")


class FakeDynamo:
    """Records PutItem requests; raises the queued errors first (per call, across threads)."""

    def __init__(self, errors: list[BaseException] | None = None) -> None:
        self.errors = list(errors or [])
        self.requests: list[dict[str, Any]] = []
        self.items: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def put_item(self, **request: Any) -> dict[str, Any]:
        with self.lock:
            if self.errors:
                raise self.errors.pop(0)
            self.requests.append(request)
        return {}

    def get_item(self, **request: Any) -> dict[str, Any]:
        raw = self.items.get(request["Key"]["person_id"]["S"])
        return {"Item": raw} if raw else {}


def dynamo(fake: FakeDynamo, sleeps: list[float] | None = None, **config: Any) -> DynamoStore:
    record: Callable[[float], None] = (sleeps.append if sleeps is not None else lambda _: None)
    return DynamoStore(DynamoConfig(**{"max_retries": 3, **config}), sleep=record, clock_ms=lambda: NOW, client=fake)


# --- DynamoDB ---------------------------------------------------------------------------------------------

def test_put_is_a_conditional_put_item_with_decimals_version_and_ttl() -> None:
    fake = FakeDynamo()
    op = DynamoPut(T, K, {"score": 0.1, "xs": [1.5, 2], "m": {"f": 2.25}}, 7, expires_at_ms=NOW + 1_500)
    assert dynamo(fake).apply([op]) == ApplyResult(applied=1)
    (req,) = fake.requests
    assert req["ConditionExpression"] == "attribute_not_exists(#pk) OR #v < :v"
    assert req["ExpressionAttributeNames"] == {"#pk": "person_id", "#v": "version"}
    assert req["ExpressionAttributeValues"] == {":v": {"N": "7"}}
    item = req["Item"]
    assert item["score"] == {"N": "0.1"} and item["m"] == {"M": {"f": {"N": "2.25"}}}
    assert item["version"] == {"N": "7"} and item["expires_at"] == {"N": str(NOW // 1000 + 2)}
    assert item["tag"] == {"S": "t"}


def test_deletes_write_tombstones_and_erasures_are_unconditional() -> None:
    fake = FakeDynamo()
    result = dynamo(fake, tombstone_ttl_ms=10_000).apply(
        [DynamoDelete(T, K, 4), DynamoDelete(T, {**K, "tag": "u"}, 5, erase=True),
         DynamoPut(T, {**K, "tag": "v"}, {"x": 1}, 6, expires_at_ms=NOW)])
    assert result == ApplyResult(deleted=2, expired=1)
    by_tag = {r["Item"]["tag"]["S"]: r for r in fake.requests}
    tomb = from_attributes(by_tag["t"]["Item"])
    assert tomb == {**K, "version": 4, "_tombstone": True, "expires_at": NOW // 1000 + 10}
    assert "ConditionExpression" in by_tag["t"] and "ConditionExpression" not in by_tag["u"]
    assert "x" not in by_tag["v"]["Item"] and by_tag["v"]["Item"]["_tombstone"] == {"BOOL": True}


def test_condition_failure_is_skipped_not_an_error() -> None:
    fake = FakeDynamo([client_error("ConditionalCheckFailedException")])
    assert dynamo(fake).apply([DynamoPut(T, K, {}, 1)]) == ApplyResult(skipped=1)


@pytest.mark.parametrize("error", [client_error("ProvisionedThroughputExceededException"),
                                   client_error("ThrottlingException"), client_error("RequestLimitExceeded"),
                                   client_error("InternalServerError", 500),
                                   EndpointConnectionError(endpoint_url="http://x")])
def test_throttling_5xx_and_connection_errors_are_retried_with_backoff(error: BaseException) -> None:
    fake, sleeps = FakeDynamo([error, error]), []
    store = dynamo(fake, sleeps, base_backoff_ms=100, max_backoff_ms=150)
    assert store.apply([DynamoPut(T, K, {}, 1)]) == ApplyResult(applied=1)
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.1 and 0 <= sleeps[1] <= 0.15


def test_the_retry_budget_ends_with_a_clear_error() -> None:
    fake = FakeDynamo([client_error("ThrottlingException")] * 10)
    with pytest.raises(StoreUnavailable, match=r"PutItem tagstream_segments .*after 3 retries.*Throttling"):
        dynamo(fake).apply([DynamoPut(T, K, {}, 1)])
    assert len(fake.errors) == 10 - 4


def test_rejections_are_not_retried() -> None:
    fake = FakeDynamo([client_error("ValidationException")])
    with pytest.raises(StoreError, match="rejected PutItem"):
        dynamo(fake).apply([DynamoPut(T, K, {}, 1)])
    with pytest.raises(StoreError, match=r"not in DynamoConfig\.tables"):
        dynamo(FakeDynamo()).apply([DynamoDelete("elsewhere", K, 1)])
    with pytest.raises(TypeError, match="DynamoDB ops only"):
        dynamo(FakeDynamo()).apply([RedisDelete("k", 1)])  # type: ignore[list-item]


def test_ops_on_one_item_keep_their_order_while_items_run_concurrently() -> None:
    fake = FakeDynamo()
    ops = [DynamoPut(T, {**K, "tag": f"t{i % 7}"}, {"i": i}, i) for i in range(200)]
    assert dynamo(fake, max_workers=8).apply(ops) == ApplyResult(applied=200)
    for tag in {op.key["tag"] for op in ops}:
        seen = [int(r["Item"]["i"]["N"]) for r in fake.requests if r["Item"]["tag"]["S"] == tag]
        assert seen == sorted(seen) and len(seen) > 1


def test_get_live_hides_expired_items_and_tombstones() -> None:
    fake = FakeDynamo()
    fake.items["p-1"] = to_attributes({"person_id": "p-1", "version": 1, "expires_at": NOW // 1000 + 1, "x": 0.5})
    store = dynamo(fake, tables=(DynamoConfig().table("tagstream_profiles"),))
    assert store.get_live("tagstream_profiles", {"person_id": "p-1"}, NOW) == {
        "person_id": "p-1", "version": 1, "expires_at": NOW // 1000 + 1, "x": 0.5}
    assert store.get_live("tagstream_profiles", {"person_id": "p-1"}, NOW + 1000) is None
    assert store.get_live("tagstream_profiles", {"person_id": "p-2"}, NOW) is None
    assert not is_live({"_tombstone": True}, 0)
    assert is_live({"expires_at": 10, "expires_at_ms": 10_500}, 10_499) and not is_live({"expires_at_ms": 5}, 5)


def test_codec_refuses_non_finite_numbers() -> None:
    with pytest.raises(ValueError, match="nan"):
        to_attributes({"x": float("nan")})
    assert from_attributes(to_attributes({"a": Decimal("2"), "b": [0.5]})) == {"a": 2, "b": [0.5]}


def test_stores_pickle_without_connecting() -> None:
    store = DynamoStore(DynamoConfig(endpoint_url="http://127.0.0.1:1", region="us-east-1"))
    copy = pickle.loads(pickle.dumps(store))
    assert copy.config == store.config and copy._client is None and copy._pool is None
    rstore = RedisStore(RedisConfig(url="redis://127.0.0.1:1/0"))
    assert pickle.loads(pickle.dumps(rstore)).config == rstore.config


# --- Redis ------------------------------------------------------------------------------------------------

def test_redis_config_keeps_secrets_out_and_reads_the_password_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="TAGSTREAM_REDIS_PASSWORD"):
        RedisConfig(url="redis://:secret@127.0.0.1:6379/0")
    monkeypatch.setenv("TAGSTREAM_REDIS_PASSWORD", "s3cret")
    store = RedisStore(RedisConfig(url="redis://127.0.0.1:6399/2", socket_timeout_s=1.5))
    kwargs = store.client.connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["db"], kwargs["socket_timeout"]) == ("s3cret", 2, 1.5)
    assert "s3cret" not in repr(store.config) and "s3cret" not in str(pickle.dumps(store))


def test_redis_script_arguments() -> None:
    assert _argv(RedisSet("k", {"a": 1}, 3, 99), 500) == ["w", 3, 99, 500, "v", b'{"a":1}']
    assert _argv(RedisSet("k", "p-1", 3), 500) == ["w", 3, "", 500, "v", "p-1"]
    assert _argv(RedisHash("k", {"f": "1", "g": "2"}, 4), 500) == ["w", 4, "", 500, "f", "1", "g", "2"]
    assert _argv(RedisHashUpdate("k", {"f": {"x": 1}, "g": "s"}, ["h"], 6, 77), 500) == [
        "u", 6, 77, 500, 4, "f", b'{"x":1}', "g", "s", "h"]
    assert _argv(RedisDelete("k", 5), 500) == ["d", 5, "", 500]
    assert _argv(RedisDelete("k", 5, erase=True), 500) == ["e", 5, "", 500]


def test_redis_connection_errors_are_retried_then_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    store = RedisStore(RedisConfig(retry=RetryPolicy(max_retries=2, base_backoff_ms=10)), sleep=sleeps.append)
    calls: list[int] = []

    def down(batch: Any) -> Any:
        calls.append(len(batch))
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(store, "_run", down)
    with pytest.raises(StoreUnavailable, match="after 2 retries: ConnectionError"):
        store.apply([RedisSet("k", "v", 1)])
    assert calls == [1, 1, 1] and len(sleeps) == 2


def test_redis_batches_are_cut_at_max_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    store = RedisStore(RedisConfig(max_batch=4))
    sizes: list[int] = []
    monkeypatch.setattr(store, "_run", lambda batch: sizes.append(len(batch)) or [])
    store.apply([RedisSet(f"k{i}", "v", 1) for i in range(10)])
    assert sizes == [4, 4, 2]
    with pytest.raises(TypeError, match="Redis ops only"):
        store.apply([DynamoDelete(T, K, 1)])  # type: ignore[list-item]


def test_retry_policy_backoff_is_capped_full_jitter() -> None:
    policy = RetryPolicy(max_retries=9, base_backoff_ms=50, max_backoff_ms=400)
    assert [policy.backoff_s(r, lambda: 1.0) for r in range(5)] == [0.05, 0.1, 0.2, 0.4, 0.4]
    assert policy.backoff_s(3, lambda: 0.0) == 0.0
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(KeyError):  # not retryable: raised at once
        call_with_retry(lambda: {}["x"], lambda e: False, policy, "x", sleep=lambda _: None)
