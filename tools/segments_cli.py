"""Manage segment definitions and look up a person's tags.

    python -m tools.segments_cli [--profile dev] apply segments/examples/*.yaml [--prune]
    python -m tools.segments_cli remove NAME [NAME ...]
    python -m tools.segments_cli lookup PERSON_OR_IDENTIFIER [--redis-url URL]

`apply` reads the definitions currently published on the compacted topic (`segment-definitions`), merges the
files' definitions into them, validates and compiles the whole set with the segments core (any problem:
nothing is published), then publishes each new or changed definition keyed by its name; `--prune` also
removes (tombstones) the published definitions the files do not hold. `remove` publishes tombstones.
`--profile` takes Kafka and Redis from a local stack profile (`make segments-apply` uses it). `lookup` reads
the person's Redis view hash (`tagstream:segments:{person_id}`) and prints the current tags,
dropping those whose `expires_at` has passed. A person is `p-…` or `TYPE:VALUE` of an identifier.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from tools.kafka_io import produce
from udfs.segments import DefinitionError, SegmentsConfig, compile_catalog, load_files, person_id_of
from udfs.segments.definitions import canonical
from udfs.segments.published import definition_set, definition_text
from udfs.segments.records import redis_key
from udfs.segments.views import view_from_hash
from udfs.stores.redis_store import RedisConfig, RedisStore
from udfs.topology import PROFILES

DEFAULT_TOPIC = "segment-definitions"


def published(bootstrap: str, topic: str, timeout_s: float = 30) -> dict[str, str | None]:
    """The latest value per key of the definitions topic (None: tombstone), read to its end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             isolation_level="read_committed")
    latest: dict[str, str | None] = {}
    deadline = time.monotonic() + timeout_s
    try:
        # a topic created a moment ago may not be in the client's metadata yet: ask again until it is
        while not (ids := consumer.partitions_for_topic(topic)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not ids:
            raise SystemExit(f"topic {topic!r} not found at {bootstrap}")
        partitions = [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        while any(consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    latest[record.key.decode("utf-8")] = None if record.value is None else record.value.decode()
    finally:
        consumer.close()
    return latest


def plan(current: dict[str, str | None], files: list[Path], prune: bool) -> dict[str, str | None]:
    """The records to publish (name -> text, None: remove) so the topic holds `files` (and, with `prune`,
    nothing else), in publishing order: referenced segments before the definitions using them, removals last,
    so the job never sees a definition before what it refers to.

    Raises:
        DefinitionError: listing every invalid definition of the resulting set (nothing may be published).
    """
    docs = load_files(files)
    names = [str(d.get("name", "")) for d in docs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DefinitionError([(n, "defined more than once in the files") for n in duplicates])
    live = {name: text for name, text in current.items() if text}
    removed = [name for name in sorted(live) if prune and name not in names]
    existing, _ = definition_set(live.items())  # unreadable published records: replaced, or the job reports them
    merged = {str(d["name"]): d for d in existing if str(d["name"]) not in removed}
    merged.update({str(d["name"]): d for d in docs})
    catalog = compile_catalog(merged.values())  # raises with every problem
    before = {str(d["name"]): d for d in existing}
    changes: dict[str, str | None] = {}
    for name in (*catalog.segments, *catalog.placements):  # dependency order
        doc = merged[name]
        if name in names and (name not in before or canonical(before[name]) != canonical(doc)):
            changes[name] = definition_text(doc)
    changes.update({name: None for name in reversed(removed)})
    return changes


def publish(bootstrap: str, topic: str, changes: dict[str, str | None]) -> None:
    """Produces the records keyed by name (None: a tombstone), in the given order."""
    if changes:
        names = list(changes)
        produce(bootstrap, topic, [None if (text := changes[n]) is None else text.encode("utf-8") for n in names],
                keys=[n.encode("utf-8") for n in names])


def apply(bootstrap: str, files: list[Path], topic: str = DEFAULT_TOPIC, prune: bool = False
          ) -> dict[str, str | None]:
    """Validates the files against what the topic holds and publishes the changes (see :func:`plan`).

    Raises:
        DefinitionError: nothing was published.
    """
    changes = plan(published(bootstrap, topic), files, prune)
    publish(bootstrap, topic, changes)
    return changes


def person_of(text: str, config: SegmentsConfig) -> str:
    """A person id from `p-…` or `TYPE:VALUE` (hashed like the jobs do)."""
    if text.startswith("p-"):
        return text
    id_type, sep, value = text.partition(":")
    person = person_id_of({"ids": {id_type: value}}, SegmentsConfig(person_id_types=(id_type,))) if sep else None
    if person is None:
        raise SystemExit(f"expected a person id (p-…) or TYPE:VALUE, got {text!r}")
    return person


def lookup(redis: RedisStore, person: str, now_ms: int, config: SegmentsConfig | None = None) -> dict[str, Any]:
    """The person's current view from Redis: live tags (expired ones dropped), placements and consent
    (`udfs.segments.views`; `python -m tools.lookup` also resolves any identifier and follows changes)."""
    return view_from_hash(person, redis.get_hash(redis_key(person, config or SegmentsConfig())) or {}, now_ms)


def main(argv: list[str] | None = None) -> int:
    """Command line: apply, remove, lookup."""
    parser = argparse.ArgumentParser(prog="segments_cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("TAGSTREAM_BOOTSTRAP", "127.0.0.1:9092"),
                        help="Kafka bootstrap servers (default $TAGSTREAM_BOOTSTRAP or 127.0.0.1:9092)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="a local stack profile: its Kafka and Redis (instead of --bootstrap / --redis-url)")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help=f"definitions topic (default {DEFAULT_TOPIC})")
    parser.add_argument("--redis-url", default=os.environ.get("TAGSTREAM_REDIS_URL", "redis://127.0.0.1:6379/0"),
                        help="Redis of the view hashes (default $TAGSTREAM_REDIS_URL or redis://127.0.0.1:6379/0)")
    commands = parser.add_subparsers(dest="command", required=True)
    apply_cmd = commands.add_parser("apply", help="validate and publish definition files")
    apply_cmd.add_argument("files", nargs="+", type=Path)
    apply_cmd.add_argument("--prune", action="store_true", help="remove published definitions not in the files")
    remove_cmd = commands.add_parser("remove", help="remove published definitions (tombstones)")
    remove_cmd.add_argument("names", nargs="+")
    lookup_cmd = commands.add_parser("lookup", help="a person's current tags from Redis")
    lookup_cmd.add_argument("person", help="p-… or TYPE:VALUE, e.g. user_id:u-1")
    args = parser.parse_args(argv)
    if args.profile:
        ports = PROFILES[args.profile]
        args.bootstrap, args.redis_url = ports.bootstrap, f"redis://127.0.0.1:{ports.redis}/0"
    if args.command == "lookup":
        redis = RedisStore(RedisConfig(url=args.redis_url))
        try:
            view = lookup(redis, person_of(args.person, SegmentsConfig()), time.time_ns() // 1_000_000)
        finally:
            redis.close()
        print(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
        return 0
    if args.command == "remove":
        changes: dict[str, str | None] = {name: None for name in args.names}
        publish(args.bootstrap, args.topic, changes)
    else:
        try:
            changes = apply(args.bootstrap, args.files, args.topic, args.prune)
        except DefinitionError as exc:
            for name, message in exc.problems:
                print(f"invalid: {name}: {message}", file=sys.stderr)
            return 1
    for name, text in changes.items():
        print(f"{'removed' if text is None else 'published'}: {name}")
    if not changes:
        print("nothing to publish: the topic already holds these definitions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
