"""Store operations: the typed, JSON-ready writes every core emits and `udfs.stores` executes (no I/O).

| op | store | effect when its `version` is above the stored one |
| --- | --- | --- |
| :class:`RedisSet` | Redis | replace the key's value (a `str` as is, anything else as JSON) |
| :class:`RedisHash` | Redis | replace the key's hash fields (the old `replace_hash`) |
| :class:`RedisHashUpdate` | Redis | set some hash fields and remove others, keeping the rest |
| :class:`RedisDelete` | Redis | remove the key, keep a short-lived tombstone |
| :class:`DynamoPut` | DynamoDB | replace the item (conditional write) |
| :class:`DynamoDelete` | DynamoDB | remove the item, keep a short-lived tombstone |
| :class:`DynamoErasePartition` | DynamoDB | privacy erasure of every item under one hash key |

Every op carries `version`: the event-time version (or per-key monotone counter) of the state it writes.
Writers skip an op whose version is not above the stored one, so replays and reordering never regress
state. A delete with `erase=True` (privacy erasure) is unconditional instead. Writes may carry
`expires_at_ms` (epoch ms): Redis key TTL and the DynamoDB `expires_at` attribute. The exact rules are in
`udfs.stores.guard`; layouts in `schemas/README.md` ("Store layouts").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import orjson

from udfs.topology import TABLES

MAX_VERSION = 2**53 - 1
"""Versions are compared as doubles in Redis Lua: they must be exact there."""

RESERVED_PREFIX = "_"
"""Redis hash fields starting with this belong to the store (version marker `_v`, tombstone `_t`)."""

VALUE_FIELD = "v"
"""The Redis hash field holding the value of a :class:`RedisSet`."""


def _check_version(version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise ValueError(f"version must be an int in [0, 2**53), not {version!r}")


def _check_expiry(expires_at_ms: object) -> None:
    if expires_at_ms is not None and (isinstance(expires_at_ms, bool) or not isinstance(expires_at_ms, int)
                                      or expires_at_ms < 0):
        raise ValueError(f"expires_at_ms must be None or a non-negative int, not {expires_at_ms!r}")


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string, not {key!r}")


def expires_at_s(expires_at_ms: int) -> int:
    """The DynamoDB `expires_at` (epoch seconds, rounded up: never before the exact expiry)."""
    return -(-expires_at_ms // 1000)


@dataclass(frozen=True)
class RedisSet:
    """Replace the value of a Redis key.

    Attributes:
        key: the Redis key (without the store's `key_prefix`).
        value: a `str` (stored as is) or any JSON-ready value (stored as compact JSON).
        version: version of this value.
        expires_at_ms: absolute key expiry (epoch ms), or None for no expiry.
    """

    kind: ClassVar[str] = "redis"
    op: ClassVar[str] = "set"
    key: str
    value: Any
    version: int
    expires_at_ms: int | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_version(self.version)
        _check_expiry(self.expires_at_ms)

    @property
    def ident(self) -> tuple[str, ...]:
        """What the version guard is kept for: the key."""
        return ("redis", self.key)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse: :func:`op_from_dict`)."""
        return {"kind": self.kind, "op": self.op, "key": self.key, "value": self.value,
                "version": self.version, "expires_at_ms": self.expires_at_ms}


@dataclass(frozen=True)
class RedisHash:
    """Replace all fields of a Redis hash (fields not given are removed).

    Attributes:
        key: the Redis key (without the store's `key_prefix`).
        fields: field → string value; names starting with `_` are reserved for the store.
        version: version of this hash.
        expires_at_ms: absolute key expiry (epoch ms), or None for no expiry.
    """

    kind: ClassVar[str] = "redis"
    op: ClassVar[str] = "replace_hash"
    key: str
    fields: Mapping[str, str]
    version: int
    expires_at_ms: int | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_version(self.version)
        _check_expiry(self.expires_at_ms)
        _check_fields(self.fields)
        bad = [f for f, v in self.fields.items() if not isinstance(v, str)]
        if bad:
            raise ValueError(f"hash field values must be strings: {bad[:3]!r}")

    @property
    def ident(self) -> tuple[str, ...]:
        """What the version guard is kept for: the key."""
        return ("redis", self.key)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse: :func:`op_from_dict`)."""
        return {"kind": self.kind, "op": self.op, "key": self.key, "fields": dict(self.fields),
                "version": self.version, "expires_at_ms": self.expires_at_ms}


@dataclass(frozen=True)
class RedisDelete:
    """Remove a Redis key.

    Attributes:
        key: the Redis key (without the store's `key_prefix`).
        version: version of the deletion (a tombstone with it blocks older writes for a while).
        erase: privacy erasure: delete whatever the stored version (unconditional).
    """

    kind: ClassVar[str] = "redis"
    op: ClassVar[str] = "delete"
    key: str
    version: int
    erase: bool = False

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_version(self.version)

    @property
    def ident(self) -> tuple[str, ...]:
        """What the version guard is kept for: the key."""
        return ("redis", self.key)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse: :func:`op_from_dict`)."""
        return {"kind": self.kind, "op": self.op, "key": self.key, "version": self.version, "erase": self.erase}


def _check_fields(names: Iterable[object]) -> None:
    bad = [f for f in names if not isinstance(f, str) or not f or f.startswith(RESERVED_PREFIX)]
    if bad:
        raise ValueError(f"hash field names must be non-empty strings not starting with {RESERVED_PREFIX!r}: "
                         f"{bad[:3]!r}")


@dataclass(frozen=True)
class RedisHashUpdate:
    """Set some fields of a Redis hash and remove others; the other fields stay.

    Unlike the whole-value ops, partial updates do not commute: the guard makes replays harmless (an update
    not above the stored version is skipped, its effect being already there) as long as each key's updates
    are emitted in version order by one writer, which is what a keyed operator does.

    Attributes:
        key: the Redis key (without the store's `key_prefix`).
        fields: field → value to set (a `str` as is, anything else as JSON); names starting with `_` are
            reserved for the store.
        remove: fields to remove.
        version: version of the hash after this update.
        expires_at_ms: new absolute key expiry (epoch ms); None leaves the key's expiry as it is.
    """

    kind: ClassVar[str] = "redis"
    op: ClassVar[str] = "update_hash"
    key: str
    fields: Mapping[str, Any]
    remove: Sequence[str]
    version: int
    expires_at_ms: int | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_version(self.version)
        _check_expiry(self.expires_at_ms)
        _check_fields([*self.fields, *self.remove])

    @property
    def ident(self) -> tuple[str, ...]:
        """What the version guard is kept for: the key."""
        return ("redis", self.key)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse: :func:`op_from_dict`)."""
        return {"kind": self.kind, "op": self.op, "key": self.key, "fields": dict(self.fields),
                "remove": list(self.remove), "version": self.version, "expires_at_ms": self.expires_at_ms}


def _check_item_key(table: str, key: Mapping[str, str]) -> None:
    if not isinstance(table, str) or not table:
        raise ValueError(f"table must be a non-empty string, not {table!r}")
    if not key or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in key.items()):
        raise ValueError(f"a DynamoDB key maps attribute names to non-empty strings, not {key!r}")


def _key_ident(table: str, key: Mapping[str, str]) -> tuple[str, ...]:
    return ("dynamodb", table, *(f"{k}={v}" for k, v in sorted(key.items())))


@dataclass(frozen=True)
class DynamoPut:
    """Replace a DynamoDB item.

    Attributes:
        table: table name (one of `udfs.topology.TABLES`).
        key: key attributes (hash key, and range key when the table has one) → string values.
        item: the other attributes, JSON-ready (floats become Decimal). It may repeat the key, `version`
            and `expires_at`, which must then agree with the op.
        version: version of the item (stored as the `version` attribute).
        expires_at_ms: expiry (epoch ms): the store writes `expires_at` = this in seconds, rounded up.
    """

    kind: ClassVar[str] = "dynamodb"
    op: ClassVar[str] = "put"
    table: str
    key: Mapping[str, str]
    item: Mapping[str, Any]
    version: int
    expires_at_ms: int | None = None

    def __post_init__(self) -> None:
        _check_item_key(self.table, self.key)
        _check_version(self.version)
        _check_expiry(self.expires_at_ms)
        expected: dict[str, Any] = {**self.key, "version": self.version}
        if self.expires_at_ms is not None:
            expected["expires_at"] = expires_at_s(self.expires_at_ms)
        elif "expires_at" in self.item:
            raise ValueError("item has expires_at but the op has no expires_at_ms")
        clash = {k: self.item[k] for k, v in expected.items() if k in self.item and self.item[k] != v}
        if clash:
            raise ValueError(f"item attributes disagree with the op: {clash!r} vs {expected!r}")

    @property
    def ident(self) -> tuple[str, ...]:
        """What the version guard is kept for: table and key."""
        return _key_ident(self.table, self.key)

    def stored_item(self) -> dict[str, Any]:
        """The attributes the store writes: the item, the key, `version` and `expires_at` (when expiring)."""
        item: dict[str, Any] = {**self.item, **self.key, "version": self.version}
        if self.expires_at_ms is not None:
            item["expires_at"] = expires_at_s(self.expires_at_ms)
        return item

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse: :func:`op_from_dict`)."""
        return {"kind": self.kind, "op": self.op, "table": self.table, "key": dict(self.key),
                "item": dict(self.item), "version": self.version, "expires_at_ms": self.expires_at_ms}


@dataclass(frozen=True)
class DynamoDelete:
    """Remove a DynamoDB item.

    Attributes:
        table: table name (one of `udfs.topology.TABLES`).
        key: key attributes → string values.
        version: version of the deletion (a tombstone item with it blocks older writes for a while).
        erase: privacy erasure: delete whatever the stored version (unconditional).
    """

    kind: ClassVar[str] = "dynamodb"
    op: ClassVar[str] = "delete"
    table: str
    key: Mapping[str, str]
    version: int
    erase: bool = False

    def __post_init__(self) -> None:
        _check_item_key(self.table, self.key)
        _check_version(self.version)

    @property
    def ident(self) -> tuple[str, ...]:
        """What the version guard is kept for: table and key."""
        return _key_ident(self.table, self.key)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse: :func:`op_from_dict`)."""
        return {"kind": self.kind, "op": self.op, "table": self.table, "key": dict(self.key),
                "version": self.version, "erase": self.erase}


@dataclass(frozen=True)
class DynamoErasePartition:
    """Privacy erasure of every item under one hash key (e.g. a person's whole session history, most of
    which the writer no longer knows item by item).

    The store reads the partition and erases each item it holds as a :class:`DynamoDelete` with
    `erase=True` would (unconditional, tombstone with this version). Items written after it are new lives.

    Attributes:
        table: table name (one of `udfs.topology.TABLES`, with a range key).
        hash_value: the hash key value (e.g. the person id).
        version: version of the tombstones.
    """

    kind: ClassVar[str] = "dynamodb"
    op: ClassVar[str] = "erase_partition"
    erase: ClassVar[bool] = True
    table: str
    hash_value: str
    version: int

    def __post_init__(self) -> None:
        _check_item_key(self.table, {"hash": self.hash_value})
        _check_version(self.version)

    @property
    def ident(self) -> tuple[str, ...]:
        """What it is ordered by: the table's partition."""
        return ("dynamodb-partition", self.table, self.hash_value)

    def covers(self, ident: tuple[str, ...]) -> bool:
        """Whether an item op's `ident` names an item of this partition."""
        hash_part = f"{hash_key_of(self.table)}={self.hash_value}"
        return ident[:2] == ("dynamodb", self.table) and hash_part in ident[2:]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse: :func:`op_from_dict`)."""
        return {"kind": self.kind, "op": self.op, "table": self.table, "hash_value": self.hash_value,
                "version": self.version}


RedisOp = RedisSet | RedisHash | RedisHashUpdate | RedisDelete
DynamoOp = DynamoPut | DynamoDelete | DynamoErasePartition
StoreOp = RedisOp | DynamoOp
REDIS_OPS = (RedisSet, RedisHash, RedisHashUpdate, RedisDelete)
DYNAMO_OPS = (DynamoPut, DynamoDelete, DynamoErasePartition)


def hash_key_of(table: str) -> str:
    """The hash key attribute of a registered table (`udfs.topology.TABLES`)."""
    for t in TABLES:
        if t.name == table:
            return t.hash_key
    raise KeyError(f"no table {table!r} in udfs.topology.TABLES")


def table_key(table: str, item: Mapping[str, Any]) -> dict[str, str]:
    """The key attributes of an item of a registered table (`udfs.topology.TABLES`)."""
    for t in TABLES:
        if t.name == table:
            names = [t.hash_key] + ([t.range_key] if t.range_key else [])
            return {n: item[n] for n in names}
    raise KeyError(f"no table {table!r} in udfs.topology.TABLES")


def op_from_dict(data: Mapping[str, Any]) -> StoreOp:
    """Parses an op from its JSON-ready form.

    Accepts :meth:`as_dict` output and the plain-dict shapes of `udfs/segments/records.py`: an op with a
    `table` is a DynamoDB op; a put may omit `key` (taken from the item with the table's key schema) and
    `version` / `expires_at_ms` (taken from the item's `version` / `expires_at_ms` / `expires_at`); Redis
    `hupdate` is `update_hash`, and Redis `del` an erasure.
    """
    op = data["op"]
    if "table" not in data:
        key, version, expires = data["key"], data["version"], data.get("expires_at_ms")
        if op == "set":
            return RedisSet(key, data["value"], version, expires)
        if op == "replace_hash":
            return RedisHash(key, dict(data["fields"]), version, expires)
        if op == "update_hash":
            return RedisHashUpdate(key, dict(data["fields"]), list(data["remove"]), version, expires)
        if op == "hupdate":
            return RedisHashUpdate(key, dict(data.get("set", {})), list(data.get("del", [])), version, expires)
        if op in ("delete", "del"):
            return RedisDelete(key, version, op == "del" or bool(data.get("erase", False)))
        raise ValueError(f"unknown Redis op {op!r}")
    table = data["table"]
    if op == "delete":
        return DynamoDelete(table, dict(data["key"]), data["version"], bool(data.get("erase", False)))
    if op == "erase_partition":
        return DynamoErasePartition(table, str(data["hash_value"]), data["version"])
    if op != "put":
        raise ValueError(f"unknown DynamoDB op {op!r}")
    item = dict(data["item"])
    expires = data.get("expires_at_ms", item.get("expires_at_ms"))
    if expires is None and item.get("expires_at") is not None:
        expires = int(item["expires_at"]) * 1000
    key = dict(data.get("key") or table_key(table, item))
    return DynamoPut(table, key, item, data.get("version", item.get("version")), expires)


def ops_from_json(text: str | bytes) -> list[StoreOp]:
    """Parses what a store writer receives: one op (a JSON object) or a batch of ops (a JSON array).

    Raises:
        ValueError / KeyError / TypeError: not JSON, or not the JSON of store ops.
    """
    data = orjson.loads(text)
    return [op_from_dict(item) for item in data] if isinstance(data, list) else [op_from_dict(data)]


def ops_to_json(ops: Iterable[StoreOp]) -> str:
    """A batch of ops as one JSON array (:func:`ops_from_json` reads it back)."""
    return orjson.dumps([op.as_dict() for op in ops]).decode("utf-8")


def split_by_store(ops: Iterable[StoreOp]) -> tuple[list[RedisOp], list[DynamoOp]]:
    """The Redis ops and the DynamoDB ops of a batch, each in input order."""
    redis: list[RedisOp] = []
    dynamo: list[DynamoOp] = []
    for op in ops:
        if isinstance(op, REDIS_OPS):
            redis.append(op)
        else:
            dynamo.append(op)
    return redis, dynamo


T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items (the batches of one round trip each)."""
    if size < 1:
        raise ValueError(f"batch size must be positive, not {size}")
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _Keyed(Protocol):
    @property
    def ident(self) -> tuple[str, ...]: ...


K = TypeVar("K", bound=_Keyed)


def group_by_ident(ops: Iterable[K]) -> list[list[K]]:
    """Ops grouped by what they write (`ident`), each group in input order, groups by first appearance.

    Ops of one group must run one after the other (erasures do not commute); groups may run concurrently.
    """
    groups: dict[tuple[str, ...], list[K]] = {}
    for op in ops:
        groups.setdefault(op.ident, []).append(op)
    return list(groups.values())
