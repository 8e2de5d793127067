"""Redis writer: version-guarded, pipelined execution of :mod:`udfs.stores.ops` Redis ops.

Every key tagstream writes is a hash (layouts: `schemas/README.md`, "Store layouts"): the data fields
(`v` = the value of a :class:`RedisSet`, or the fields of a :class:`RedisHash` / :class:`RedisHashUpdate`)
plus `_v`, the version that wrote them. A deletion leaves a tombstone hash holding only `_t` (its
version) that expires after `tombstone_ttl_ms`. :data:`GUARD_LUA` applies :func:`udfs.stores.guard.decide`
atomically on the server; key TTLs are set with PEXPIREAT to the op's `expires_at_ms`, so stale keys
vanish even while the job is down.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis
from redis.exceptions import NoScriptError

from udfs.stores.guard import ApplyResult, Outcome
from udfs.stores.ops import REDIS_OPS, VALUE_FIELD, RedisDelete, RedisHash, RedisOp, RedisSet, chunks
from udfs.stores.retry import RetryPolicy, StoreError, call_with_retry

PASSWORD_ENV = "TAGSTREAM_REDIS_PASSWORD"
VERSION_FIELD, TOMBSTONE_FIELD = "_v", "_t"

GUARD_LUA = """
-- tagstream version guard (udfs/stores/guard.py: decide). One key: KEYS[1].
-- ARGV: mode (w write | u update | d delete | e erase), version, expires_at_ms ('' none), tombstone ttl ms,
--       then for w: field, value pairs; for u: n, n/2 field, value pairs, fields to remove.
-- Returns 1 applied, 0 skipped, 2 deleted, 3 expired.
local key, mode, v = KEYS[1], ARGV[1], ARGV[2]
if mode ~= 'e' then
  local m = redis.call('HMGET', key, '_v', '_t')
  local s = m[1] or m[2]
  if s and tonumber(s) >= tonumber(v) then return 0 end
end
local outcome = 2
if mode == 'w' or mode == 'u' then
  local exp = ARGV[3]
  local live = exp == ''
  if not live then
    local t = redis.call('TIME')
    live = tonumber(exp) > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  if live then
    if mode == 'w' then
      redis.call('DEL', key)
      redis.call('HSET', key, '_v', v, unpack(ARGV, 5))
    else
      local n = tonumber(ARGV[5])
      if redis.call('HEXISTS', key, '_t') == 1 then redis.call('DEL', key) end
      redis.call('HSET', key, '_v', v, unpack(ARGV, 6, 5 + n))
      if #ARGV > 5 + n then redis.call('HDEL', key, unpack(ARGV, 6 + n)) end
    end
    if exp ~= '' then redis.call('PEXPIREAT', key, exp) end
    return 1
  end
  outcome = 3
end
redis.call('DEL', key)
redis.call('HSET', key, '_t', v)
redis.call('PEXPIRE', key, ARGV[4])
return outcome
"""
GUARD_SHA = hashlib.sha1(GUARD_LUA.encode()).hexdigest()
_OUTCOMES = {0: Outcome.SKIPPED, 1: Outcome.APPLIED, 2: Outcome.DELETED, 3: Outcome.EXPIRED}


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)


@dataclass(frozen=True)
class RedisConfig:
    """Where and how the Redis store writes.

    Attributes:
        url: `redis://host:port/db` (or `rediss://` for TLS). Never put a password here: it comes from the
            environment variable `password_env` when the client is created.
        key_prefix: prepended to every key the store touches (e.g. `staging:`); empty by default.
        socket_timeout_s: timeout of one round trip (a whole batch).
        connect_timeout_s: TCP connect timeout.
        max_batch: ops per pipelined round trip.
        tombstone_ttl_ms: lifetime of a deletion's tombstone; older writes replayed within it stay deleted.
            Must exceed how far back a restart replays (checkpoint interval + restart time).
        retry: retries of connection errors and timeouts (a whole batch is re-sent: ops are idempotent).
        password_env: environment variable holding the password (unset or empty: no AUTH).
    """

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = ""
    socket_timeout_s: float = 5.0
    connect_timeout_s: float = 2.0
    max_batch: int = 1000
    tombstone_ttl_ms: int = 3_600_000
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    password_env: str = PASSWORD_ENV

    def __post_init__(self) -> None:
        if urlsplit(self.url).password:
            raise ValueError(f"no password in the Redis URL: set ${self.password_env} instead")
        if self.max_batch < 1 or self.tombstone_ttl_ms < 1:
            raise ValueError("max_batch and tombstone_ttl_ms must be positive")


def encode_value(value: Any) -> str | bytes:
    """The stored form of a :class:`RedisSet` value: a `str` as is, anything else as compact JSON."""
    return value if isinstance(value, str) else orjson.dumps(value)


def _argv(op: RedisOp, tombstone_ttl_ms: int) -> list[Any]:
    if isinstance(op, RedisDelete):
        return ["e" if op.erase else "d", op.version, "", tombstone_ttl_ms]
    expires = "" if op.expires_at_ms is None else op.expires_at_ms
    if isinstance(op, RedisSet):
        return ["w", op.version, expires, tombstone_ttl_ms, VALUE_FIELD, encode_value(op.value)]
    if isinstance(op, RedisHash):
        return ["w", op.version, expires, tombstone_ttl_ms, *(x for kv in op.fields.items() for x in kv)]
    pairs = [x for f, value in op.fields.items() for x in (f, encode_value(value))]
    return ["u", op.version, expires, tombstone_ttl_ms, len(pairs), *pairs, *op.remove]


class RedisStore:
    """Executes Redis ops with one pipelined round trip per batch of `max_batch`.

    The client is created on first use, so a store pickles into a Flink operator. Connection errors and
    timeouts are retried per `config.retry` (re-sending the whole batch is safe: applying ops twice equals
    applying them once); after the budget :class:`StoreUnavailable` is raised, which fails the Flink job so
    it restarts from its last checkpoint and replays the ops, which the version guard makes harmless.

    Args:
        config: connection and batching settings.
        sleep: the backoff sleep (tests pass a fake).
    """

    def __init__(self, config: RedisConfig | None = None, sleep: Callable[[float], None] = time.sleep):
        self.config = config or RedisConfig()
        self._sleep = sleep
        self._client: redis.Redis | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "sleep": self._sleep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config, self._sleep, self._client = state["config"], state["sleep"], None

    @property
    def client(self) -> redis.Redis:
        """The Redis client (created on first use)."""
        if self._client is None:
            cfg = self.config
            self._client = redis.Redis.from_url(
                cfg.url, password=os.environ.get(cfg.password_env) or None, socket_timeout=cfg.socket_timeout_s,
                socket_connect_timeout=cfg.connect_timeout_s)
        return self._client

    def close(self) -> None:
        """Closes the connection pool (a later call reconnects)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def apply(self, ops: Iterable[RedisOp]) -> ApplyResult:
        """Applies ops in order, one round trip per `max_batch` ops.

        Raises:
            TypeError: an op that is not a Redis op.
            StoreUnavailable: Redis unreachable through the retry budget.
            StoreError: Redis rejected an op (e.g. a key of another type).
        """
        ops = list(ops)
        bad = [type(op).__name__ for op in ops if not isinstance(op, REDIS_OPS)]
        if bad:
            raise TypeError(f"RedisStore.apply takes Redis ops only, got {bad[:3]}")
        prefix, ttl = self.config.key_prefix, self.config.tombstone_ttl_ms
        calls = [(prefix + op.key, _argv(op, ttl)) for op in ops]
        outcomes: list[Outcome] = []
        for batch in chunks(calls, self.config.max_batch):
            outcomes += call_with_retry(partial(self._run, batch), _transient, self.config.retry,
                                        f"Redis {self.config.url}", self._sleep)
        return ApplyResult.of(outcomes)

    def _run(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Outcome]:
        replies = self._evalsha(calls)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:  # first use, or the server restarted / flushed its scripts: nothing of those ran
            self.client.script_load(GUARD_LUA)
            for i, reply in zip(missing, self._evalsha([calls[i] for i in missing]), strict=True):
                replies[i] = reply
        errors = [(calls[i][0], r) for i, r in enumerate(replies) if isinstance(r, Exception)]
        if errors:
            raise StoreError(f"Redis rejected {len(errors)} of {len(calls)} ops, e.g. key "
                             f"{errors[0][0]!r}: {errors[0][1]}")
        return [_OUTCOMES[int(r)] for r in replies]

    def _evalsha(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for key, argv in calls:
            pipe.execute_command("EVALSHA", GUARD_SHA, 1, key, *argv)
        return pipe.execute(raise_on_error=False)

    # ----------------------------------------------------------------------------------------- readers

    def get(self, key: str) -> str | None:
        """The value of a :class:`RedisSet` key (JSON values as text), or None (absent, deleted, expired)."""
        raw = self.client.execute_command("HGET", self.config.key_prefix + key, VALUE_FIELD)
        return None if raw is None else raw.decode()

    def get_hash(self, key: str) -> dict[str, str] | None:
        """The fields of a hash key without the store's (JSON values as text), or None (absent, deleted,
        expired)."""
        return _hash_fields(self.client.execute_command("HGETALL", self.config.key_prefix + key))

    def read(self, value_keys: Sequence[str] = (), hash_keys: Sequence[str] = ()
             ) -> tuple[list[str | None], list[dict[str, str] | None]]:
        """:meth:`get` of every `value_keys` and :meth:`get_hash` of every `hash_keys` in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        prefix = self.config.key_prefix
        for key in value_keys:
            pipe.execute_command("HGET", prefix + key, VALUE_FIELD)
        for key in hash_keys:
            pipe.execute_command("HGETALL", prefix + key)
        replies = pipe.execute()
        values = [None if raw is None else raw.decode() for raw in replies[:len(value_keys)]]
        return values, [_hash_fields(raw) for raw in replies[len(value_keys):]]

    def stored_version(self, key: str) -> int | None:
        """The version a key holds (data or tombstone), or None."""
        value, tomb = self.client.execute_command("HMGET", self.config.key_prefix + key, VERSION_FIELD,
                                                  TOMBSTONE_FIELD)
        raw = value or tomb
        return None if raw is None else int(raw)


def _hash_fields(raw: dict[bytes, bytes]) -> dict[str, str] | None:
    """HGETALL's reply without the store's fields; None without a version (absent or a tombstone)."""
    if VERSION_FIELD.encode() not in raw:
        return None
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"_")}
