"""Throughput of the store layer: ops/s of `RedisStore.apply` and `DynamoStore.apply` per batch size.

Usage (against a running stack; never the profile other people use):
    python -m tools.bench_stores --profile test2 [--ops 5000] [--batches 1,10,100,1000] [--workers 16]

Each measurement writes `--ops` fresh keys (new versions, so every op is applied, none skipped) in
batches of the given size, then replays the same ops (all skipped) and prints ops/s of both passes.
DynamoDB Local is a single Java process on SQLite: its numbers say nothing about DynamoDB itself.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable, Sequence

from udfs.stores.dynamo_store import DynamoConfig, DynamoStore
from udfs.stores.guard import ApplyResult
from udfs.stores.ops import DynamoPut, RedisSet, StoreOp
from udfs.topology import PROFILES


def measure(apply: Callable[[Sequence[StoreOp]], ApplyResult], ops: Sequence[StoreOp], batch: int) -> float:
    """ops/s of applying `ops` in batches of `batch`."""
    start = time.perf_counter()
    for i in range(0, len(ops), batch):
        apply(ops[i:i + batch])
    return len(ops) / (time.perf_counter() - start)


def redis_ops(n: int, now: int) -> list[StoreOp]:
    """Alias-sized and view-sized values, all expiring in an hour."""
    ns = uuid.uuid4().hex
    return [RedisSet(f"bench:{ns}:{i}", {"person_id": f"p-{i}", "tags": {"t": {"entered_at": now}}} if i % 2
                     else f"p-{i:032x}", 1, now + 3_600_000) for i in range(n)]


def dynamo_ops(n: int, now: int) -> list[StoreOp]:
    """Session-summary-sized items, 50 per person."""
    ns = uuid.uuid4().hex
    return [DynamoPut("tagstream_sessions", {"person_id": f"p-{ns}-{i // 50}", "session_key": f"{i:013d}#s"},
                      {"event_count": i, "revenue": i / 7, "channels": ["web"], "utm": {"source": "x"}}, 1,
                      now + 3_600_000) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    """Prints a table of ops/s per store and batch size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="test2", choices=sorted(PROFILES))
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--batches", default="1,10,100,1000")
    parser.add_argument("--workers", type=int, default=16, help="DynamoStore max_workers")
    parser.add_argument("--only", choices=("redis", "dynamodb"))
    args = parser.parse_args(argv)
    from udfs.stores.redis_store import RedisConfig, RedisStore

    ports = PROFILES[args.profile]
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    stores: dict[str, tuple[Callable[..., ApplyResult], Callable[[int, int], list[StoreOp]]]] = {
        "redis": (RedisStore(RedisConfig(url=f"redis://127.0.0.1:{ports.redis}/0")).apply, redis_ops),
        "dynamodb": (DynamoStore(DynamoConfig(endpoint_url=f"http://127.0.0.1:{ports.dynamodb}", region="us-east-1",
                                              max_workers=args.workers)).apply, dynamo_ops),
    }
    print(f"{'store':<10} {'batch':>6} {'ops':>6} {'write ops/s':>12} {'replay ops/s':>13}")
    for name, (apply, make) in stores.items():
        if args.only and name != args.only:
            continue
        for batch in (int(b) for b in args.batches.split(",")):
            ops = make(args.ops, time.time_ns() // 1_000_000)
            write, replay = measure(apply, ops, batch), measure(apply, ops, batch)
            print(f"{name:<10} {batch:>6} {len(ops):>6} {write:>12,.0f} {replay:>13,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
