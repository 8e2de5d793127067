"""The naive baseline: what a user would write instead of tagstream - one Python process, kafka-python +
redis-py, state in dicts, one Redis write per event, no checkpoints (a crash loses the state; offsets are
auto-committed every second).

Rules (the same key layout as the segments job, `tagstream:segments:{person_id}`, in its own Redis db):
`frequent_searcher` (at least 3 searches in 10 minutes), `viewed_product:{product_id}` (a product view in
the last 5 minutes) and the benchmark's probe segment (a search with `props.bench_probe`, 2 seconds). Each
event's tag is written with HSET; tags expire from a heap checked between polls (HDEL when due).

    python -m tools.bench.naive --bootstrap 127.0.0.1:9092 --topic events.valid --group-id naive \\
        --redis-url redis://127.0.0.1:6379/1
"""

from __future__ import annotations

import argparse
import heapq
import signal
import sys
import time
from collections import defaultdict, deque
from typing import Any

import orjson

from tools.bench.workload import PROBE_SEGMENT, PROBE_WINDOW_MS
from udfs.segments import SegmentsConfig, person_id_of
from udfs.segments.records import redis_key

SEARCH_WINDOW_MS, SEARCHES = 600_000, 3
VIEW_WINDOW_MS = 300_000


class NaiveSegments:
    """Dict state and the rules; `on_event` returns the (field, value, expires_at) to write, if any."""

    def __init__(self) -> None:
        self.searches: dict[str, deque[int]] = defaultdict(deque)

    def on_event(self, event: dict[str, Any]) -> tuple[str, dict[str, Any], int] | None:
        """The tag this event sets (field, view value, exit time), or None."""
        ts, etype, props = event.get("ts_ms"), event.get("type"), event.get("props") or {}
        person = person_id_of(event)
        if not isinstance(ts, int) or person is None:
            return None
        if etype == "search" and "bench_probe" in props:
            return self._tag(PROBE_SEGMENT, ts, ts + PROBE_WINDOW_MS)
        if etype == "search":
            recent = self.searches[person]
            recent.append(ts)
            while recent and recent[0] <= ts - SEARCH_WINDOW_MS:
                recent.popleft()
            if len(recent) >= SEARCHES:
                return self._tag("frequent_searcher", ts, recent[-SEARCHES] + SEARCH_WINDOW_MS)
            return None
        if etype == "product_view" and isinstance(props.get("product_id"), str):
            return self._tag(f"viewed_product:{props['product_id']}", ts, ts + VIEW_WINDOW_MS)
        return None

    @staticmethod
    def _tag(tag: str, ts: int, expires: int) -> tuple[str, dict[str, Any], int]:
        return f"tag:{tag}", {"segment": tag.split(":", 1)[0], "entered_at": ts, "expires_at": expires}, expires


def run(args: argparse.Namespace) -> int:
    """Consumes until SIGTERM; prints a summary line."""
    import redis
    from kafka import KafkaConsumer

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    consumer = KafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=args.group_id,
                             auto_offset_reset="earliest", enable_auto_commit=True,
                             auto_commit_interval_ms=int(args.commit_interval * 1000), fetch_max_wait_ms=20)
    client = redis.Redis.from_url(args.redis_url)
    rules, config = NaiveSegments(), SegmentsConfig()
    expiring: list[tuple[int, str, str]] = []
    events = writes = 0
    while not stop:
        for records in consumer.poll(timeout_ms=100, max_records=2000).values():
            for record in records:
                events += 1
                try:
                    event = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue
                tag = rules.on_event(event) if isinstance(event, dict) else None
                if tag is None:
                    continue
                field, value, expires = tag
                key = redis_key(str(person_id_of(event)), config)
                client.hset(key, field, orjson.dumps(value).decode())
                writes += 1
                heapq.heappush(expiring, (expires, key, field))
        now = int(time.time() * 1000)
        while expiring and expiring[0][0] <= now:
            _, key, field = heapq.heappop(expiring)
            client.hdel(key, field)
    consumer.close()
    print(orjson.dumps({"events": events, "writes": writes}).decode())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench.naive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--commit-interval", type=float, default=1.0, help="offset auto-commit period, seconds")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
