"""The stores of a chaos run: an isolated Redis database and DynamoDB table copy per run, and their contents.

Each run of a suite that writes stores gets a namespace: a Redis database number (`redis://.../<db>`) and
a DynamoDB table prefix (`--dynamodb-table-prefix`, tables created from `udfs.topology.TABLES`), so that
runs prepared side by side never see each other's writes. At the end, :func:`snapshot` reads every live
entry, normalized for comparison with another run:

- the version guard's bookkeeping is dropped (Redis `_v`; DynamoDB `version`; profile hashes' `version`
  field; the segments items' `as_of`, the event-time clock at the write): versions order writes within one
  run (they pack event time with a per-component counter, which
  depends on the order in which the identity job's keyed stages saw their messages), the data is what must
  be identical;
- tombstones (Redis `_t`-only hashes, DynamoDB `_tombstone` items) are left out: they are the record of a
  deletion, not content; their expiry is wall-clock based;
- every entry keeps its expiry (epoch ms), so :func:`comparable` can leave out what expires between the two
  runs' snapshots (event times of the control stream lie two hours in the past: some live-session keys
  expire during the scenarios).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import redis

from tools.chaos.compare import OutputIndex
from tools.stack import Stack
from udfs.stores.dynamo_codec import from_attributes
from udfs.topology import TABLES

REDIS_DATABASES = 15  # 1..15: database 0 is the stack's own
_VOLATILE_REDIS_FIELDS = {b"_v", b"version"}
# `as_of` (segments items): the person's event-time clock at the write, which follows the watermark, so it
# depends on when the write happened relative to the input; the membership itself does not.
_VOLATILE_DYNAMO_ATTRS = {"version", "as_of"}
_next_db = itertools.count()
_db_lock = threading.Lock()


@dataclass(frozen=True)
class StoreNamespace:
    """Where one run's jobs write.

    Attributes:
        redis_db: the Redis database number.
        table_prefix: the DynamoDB table prefix.
    """

    redis_db: int
    table_prefix: str

    def flags(self, stack: Stack) -> list[str]:
        """The store flags of a job writing here."""
        return ["--redis-url", f"redis://127.0.0.1:{stack.ports.redis}/{self.redis_db}",
                "--dynamodb-table-prefix", self.table_prefix]


def allocate(stack: Stack) -> StoreNamespace:
    """A fresh namespace: an emptied Redis database and new DynamoDB tables."""
    with _db_lock:
        db = 1 + next(_next_db) % REDIS_DATABASES
    namespace = StoreNamespace(db, f"chaos{uuid.uuid4().hex[:8]}_")
    client = redis.Redis(port=stack.ports.redis, db=db)
    try:
        client.flushdb()
    finally:
        client.close()
    stack.ensure_tables(namespace.table_prefix)
    return namespace


def release(stack: Stack, namespace: StoreNamespace) -> None:
    """Empties the Redis database and drops the tables."""
    client = redis.Redis(port=stack.ports.redis, db=namespace.redis_db)
    try:
        client.flushdb()
    finally:
        client.close()
    stack.drop_tables(namespace.table_prefix)


Entry = tuple[Any, int | None]  # (normalized content, expiry epoch ms or None)


def _redis_entries(stack: Stack, db: int) -> dict[str, Entry]:
    client = redis.Redis(port=stack.ports.redis, db=db)
    out: dict[str, Entry] = {}
    try:
        now = int(time.time() * 1000)
        for key in client.scan_iter(count=1000):
            fields = cast(dict[bytes, bytes], client.hgetall(key))
            if not fields or (set(fields) <= {b"_t", b"_v"} and b"_t" in fields):
                continue  # gone meanwhile, or a tombstone
            ttl = cast(int, client.pttl(key))
            content = {k.decode(): v.decode() for k, v in sorted(fields.items()) if k not in _VOLATILE_REDIS_FIELDS}
            out[f"redis:{key.decode()}"] = (content, now + ttl if ttl >= 0 else None)
    finally:
        client.close()
    return out


def _dynamo_entries(stack: Stack, prefix: str) -> dict[str, Entry]:
    client = stack.dynamodb_client()
    out: dict[str, Entry] = {}
    for table in TABLES:
        for page in client.get_paginator("scan").paginate(TableName=prefix + table.name, ConsistentRead=True):
            for raw in page.get("Items", []):
                item = from_attributes(raw)
                if item.get("_tombstone"):
                    continue
                key = "/".join(str(item[k]) for k in (table.hash_key, table.range_key) if k)
                expires = item.get("expires_at_ms") or (int(item["expires_at"]) * 1000 if "expires_at" in item
                                                        else None)
                content = {k: v for k, v in sorted(item.items()) if k not in _VOLATILE_DYNAMO_ATTRS}
                out[f"dynamodb:{table.name}:{key}"] = (content, int(expires) if expires is not None else None)
    return out


@dataclass
class StoreSnapshot:
    """Everything live in one run's stores, normalized (see the module docstring).

    Attributes:
        entries: `redis:<key>` / `dynamodb:<table>:<key>` -> (content, expiry epoch ms).
        taken_ms: wall clock of the snapshot.
    """

    entries: dict[str, Entry]
    taken_ms: int


def snapshot(stack: Stack, namespace: StoreNamespace) -> StoreSnapshot:
    """Reads the namespace's Redis database and DynamoDB tables."""
    taken = int(time.time() * 1000)
    return StoreSnapshot({**_redis_entries(stack, namespace.redis_db),
                          **_dynamo_entries(stack, namespace.table_prefix)}, taken)


def settled_snapshot(stack: Stack, namespace: StoreNamespace, target: StoreSnapshot | None = None,
                     stable_s: float = 6, timeout_s: float = 120) -> StoreSnapshot:
    """A snapshot once the stores stopped changing for `stable_s` (or equal `target`'s comparable part)."""
    deadline = time.monotonic() + timeout_s
    last = snapshot(stack, namespace)
    since = time.monotonic()
    while time.monotonic() < deadline:
        if target is not None and not diff_keys(*comparable(target, last)):
            return last
        time.sleep(2)
        now = snapshot(stack, namespace)
        if _contents(now) != _contents(last):  # Redis expiries are read as relative times: compare contents
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= stable_s and target is None:
            return now
    return last


def _contents(snap: StoreSnapshot) -> dict[str, Any]:
    return {key: content for key, (content, _) in snap.entries.items()}


def comparable(a: StoreSnapshot, b: StoreSnapshot, margin_ms: int = 60_000) -> tuple[OutputIndex, OutputIndex]:
    """Both snapshots as output indexes by store key, without entries that expire before the later snapshot
    (plus `margin_ms`): those may be present in one run and expired in the other."""
    horizon = max(a.taken_ms, b.taken_ms) + margin_ms

    def index(snap: StoreSnapshot) -> OutputIndex:
        out = OutputIndex()
        for key, (content, expires) in snap.entries.items():
            if expires is None or expires > horizon:
                out.records[key] = content
                out.copies += 1
        return out

    return index(a), index(b)


def diff_keys(clean: OutputIndex, faulted: OutputIndex) -> list[str]:
    """Keys whose content differs or exists in one index only."""
    return sorted(k for k in clean.records.keys() | faulted.records.keys()
                  if clean.records.get(k) != faulted.records.get(k))
