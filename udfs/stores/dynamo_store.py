"""DynamoDB writer and reader: version-conditional writes of :mod:`udfs.stores.ops` DynamoDB ops.

**Why not BatchWriteItem.** It takes no condition expressions, so it cannot skip an older version; it
would let a replay regress state. Instead each op is one conditional PutItem, and a batch runs its ops
concurrently on a bounded thread pool (`max_workers`): ops on the same item run in order in one task,
different items in parallel. Throughput scales with `max_workers` up to the table's capacity (measured
numbers: `schemas/README.md`).

Writes (:func:`udfs.stores.guard.decide`):

- put: PutItem of item + key + `version` (+ `expires_at`, epoch s) with
  `attribute_not_exists(<hash key>) OR #v < :v`; a failed condition is counted as skipped (not an error);
- delete: PutItem of a *tombstone* (key, `version`, `_tombstone` = true, `expires_at` = now +
  `tombstone_ttl_ms`) with the same condition, so an older write replayed later stays deleted. A plain
  DeleteItem would let `attribute_not_exists` accept that older write;
- erase: the same tombstone PutItem without condition; a put already past its expiry: the tombstone too.

Readers must use :meth:`DynamoStore.get_live` / :meth:`DynamoStore.query_live`: they hide tombstones and
items past `expires_at` (DynamoDB Local never expires items, DynamoDB only eventually).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from udfs.stores.dynamo_codec import (
    EXPIRES_ATTR,
    TOMBSTONE_ATTR,
    VERSION_ATTR,
    from_attributes,
    is_live,
    to_attributes,
)
from udfs.stores.guard import ApplyResult, Outcome
from udfs.stores.ops import (
    DYNAMO_OPS,
    DynamoDelete,
    DynamoErasePartition,
    DynamoOp,
    DynamoPut,
    expires_at_s,
    group_by_ident,
    table_key,
)
from udfs.stores.retry import RetryPolicy, StoreError, StoreUnavailable, call_with_retry
from udfs.topology import TABLES, Table

THROTTLING = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"})
CONDITION_FAILED = "ConditionalCheckFailedException"
GUARD_CONDITION = "attribute_not_exists(#pk) OR #v < :v"


@dataclass(frozen=True)
class DynamoConfig:
    """Where and how the DynamoDB store writes. Credentials come from the boto3 chain only (environment,
    shared config, instance or pod role), never from here.

    Attributes:
        endpoint_url: e.g. `http://127.0.0.1:8000` for DynamoDB Local; None: AWS.
        region: AWS region; None: the boto3 chain's (`AWS_REGION`, `AWS_DEFAULT_REGION`, config).
        tables: the tables ops may target, with their key schemas (default `udfs.topology.TABLES`).
        max_workers: concurrent requests of one `apply` (and HTTP connections in the pool).
        max_retries: retries of a throttled, 5xx or connection-failed request.
        base_backoff_ms: backoff cap of the first retry (doubling, full jitter, up to `max_backoff_ms`).
        max_backoff_ms: upper bound of the backoff cap.
        connect_timeout_s: HTTP connect timeout.
        read_timeout_s: HTTP read timeout.
        tombstone_ttl_ms: lifetime of a deletion's tombstone item (its `expires_at`).
        table_prefix: prefixed to every table name in requests (ops keep the logical name): several
            isolated copies of the tables in one account or DynamoDB Local (e.g. one per chaos run).
    """

    endpoint_url: str | None = None
    region: str | None = None
    tables: tuple[Table, ...] = TABLES
    max_workers: int = 16
    max_retries: int = 8
    base_backoff_ms: int = 25
    max_backoff_ms: int = 5_000
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 5.0
    tombstone_ttl_ms: int = 3_600_000
    table_prefix: str = ""

    def __post_init__(self) -> None:
        if self.max_workers < 1 or self.tombstone_ttl_ms < 1:
            raise ValueError("max_workers and tombstone_ttl_ms must be positive")

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of one request."""
        return RetryPolicy(self.max_retries, self.base_backoff_ms, self.max_backoff_ms)

    def table(self, name: str) -> Table:
        """The registered table `name`, under its physical name (with :attr:`table_prefix`)."""
        for t in self.tables:
            if t.name == name:
                return replace(t, name=self.table_prefix + t.name) if self.table_prefix else t
        raise StoreError(f"DynamoDB table {name!r} is not in DynamoConfig.tables")


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def transient(exc: BaseException) -> bool:
    """Throttling, a 5xx answer, or a connection failure: worth retrying."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return exc.response.get("Error", {}).get("Code") in THROTTLING or status >= 500
    return isinstance(exc, BotoConnectionError | HTTPClientError)


class DynamoStore:
    """Executes DynamoDB ops as concurrent conditional writes; reads live items.

    The boto3 client and the thread pool are created on first use, so a store pickles into a Flink
    operator. After the retry budget of a request :class:`StoreUnavailable` is raised (the Flink job fails
    and restarts from its checkpoint; replayed ops are skipped by version).

    Args:
        config: endpoint, tables, concurrency and retry settings.
        sleep: the backoff sleep (tests pass a fake).
        clock_ms: wall clock in epoch ms (tombstone expiry, expired writes).
        client: a ready boto3 DynamoDB client (tests); default: one built from `config`.
    """

    def __init__(self, config: DynamoConfig | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock_ms: Callable[[], int] | None = None, client: Any = None):
        self.config = config or DynamoConfig()
        self._sleep, self._clock_ms = sleep, clock_ms or _wall_clock_ms
        self._client = client
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "sleep": self._sleep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config, self._sleep, self._clock_ms = state["config"], state["sleep"], _wall_clock_ms
        self._client, self._pool, self._lock = None, None, threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 DynamoDB client (created on first use)."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                cfg = self.config
                self._client = boto3.session.Session().client(
                    "dynamodb", endpoint_url=cfg.endpoint_url, region_name=cfg.region,
                    config=Config(connect_timeout=cfg.connect_timeout_s, read_timeout=cfg.read_timeout_s,
                                  max_pool_connections=cfg.max_workers,
                                  retries={"total_max_attempts": 1, "mode": "standard"}))
            return self._client

    def close(self) -> None:
        """Stops the thread pool (a later call starts a new one)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def apply(self, ops: Iterable[DynamoOp]) -> ApplyResult:
        """Applies ops: per item in order, items concurrently on up to `max_workers` threads.

        Raises:
            TypeError: an op that is not a DynamoDB op.
            StoreUnavailable: a request still throttled / failing after the retry budget.
            StoreError: a request DynamoDB rejected (validation, missing table...), or an unknown table.
        """
        ops = list(ops)
        bad = [type(op).__name__ for op in ops if not isinstance(op, DYNAMO_OPS)]
        if bad:
            raise TypeError(f"DynamoStore.apply takes DynamoDB ops only, got {bad[:3]}")
        groups = group_by_ident(ops)
        client = self.client
        if len(groups) <= 1 or self.config.max_workers == 1:
            return ApplyResult.of(o for g in groups for o in self._run_group(client, g))
        futures = [self._executor().submit(self._run_group, client, g) for g in groups]
        outcomes: list[Outcome] = []
        errors: list[BaseException] = []
        for future in futures:
            exc = future.exception()
            if exc is None:
                outcomes += future.result()
            else:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            cls = StoreUnavailable if all(isinstance(e, StoreUnavailable) for e in errors) else StoreError
            raise cls(f"{len(errors)} of {len(groups)} items failed; first: {errors[0]}") from errors[0]
        return ApplyResult.of(outcomes)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.config.max_workers, thread_name_prefix="tagstream-dynamo")
            return self._pool

    def _run_group(self, client: Any, group: list[DynamoOp]) -> list[Outcome]:
        return [self._apply_one(client, op) for op in group]

    def _apply_one(self, client: Any, op: DynamoOp) -> Outcome:
        if isinstance(op, DynamoErasePartition):  # every item of the partition, as single erasures
            for item in self._items(op.table, op.hash_value):
                if not item.get(TOMBSTONE_ATTR):
                    self._apply_one(client, DynamoDelete(op.table, table_key(op.table, item), op.version, True))
            return Outcome.DELETED
        table = self.config.table(op.table)
        now_ms = self._clock_ms()
        outcome = Outcome.DELETED
        if isinstance(op, DynamoPut):
            expired = op.expires_at_ms is not None and op.expires_at_ms <= now_ms
            outcome = Outcome.EXPIRED if expired else Outcome.APPLIED
        if isinstance(op, DynamoPut) and outcome is Outcome.APPLIED:
            item = op.stored_item()
        else:
            item = {**op.key, VERSION_ATTR: op.version, TOMBSTONE_ATTR: True,
                    EXPIRES_ATTR: expires_at_s(now_ms + self.config.tombstone_ttl_ms)}
        request: dict[str, Any] = {"TableName": table.name, "Item": to_attributes(item)}
        if not (isinstance(op, DynamoDelete) and op.erase):
            request.update(ConditionExpression=GUARD_CONDITION,
                           ExpressionAttributeNames={"#pk": table.hash_key, "#v": VERSION_ATTR},
                           ExpressionAttributeValues={":v": {"N": str(op.version)}})
        try:
            self._call(lambda: client.put_item(**request), f"PutItem {table.name} {dict(op.key)}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == CONDITION_FAILED:
                return Outcome.SKIPPED
            raise StoreError(f"DynamoDB rejected PutItem {table.name} {dict(op.key)}: {exc}") from exc
        return outcome

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        return call_with_retry(fn, transient, self.config.retry, f"DynamoDB {what}", self._sleep)

    # ----------------------------------------------------------------------------------------- readers

    def get_live(self, table: str, key: Mapping[str, str], now_ms: int) -> dict[str, Any] | None:
        """The item at `key` if it is live at `now_ms` (see `dynamo_codec.is_live`), else None."""
        name = self.config.table(table).name
        raw = self._call(lambda: self.client.get_item(TableName=name, Key=to_attributes(key),
                                                      ConsistentRead=True), f"GetItem {name}")
        item = from_attributes(raw["Item"]) if "Item" in raw else None
        return item if item is not None and is_live(item, now_ms) else None

    def query_live(self, table: str, hash_value: str, now_ms: int) -> list[dict[str, Any]]:
        """The live items under one hash key, in sort-key order (e.g. a person's sessions)."""
        return [i for i in self._items(table, hash_value) if is_live(i, now_ms)]

    def _items(self, table: str, hash_value: str) -> Iterator[dict[str, Any]]:
        """Every stored item under one hash key (tombstones and expired ones included), in sort-key order."""
        spec = self.config.table(table)
        request: dict[str, Any] = {
            "TableName": spec.name, "KeyConditionExpression": "#pk = :pk", "ConsistentRead": True,
            "ExpressionAttributeNames": {"#pk": spec.hash_key},
            "ExpressionAttributeValues": {":pk": {"S": hash_value}}}
        while True:
            page = self._call(partial(self.client.query, **request), f"Query {spec.name}")
            yield from map(from_attributes, page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
