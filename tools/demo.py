"""`make demo`: start the local stack, submit the job suite, run the generator, show what flows.

Everything keeps running when the demo returns (the tail is bounded); `make down` stops it all.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import cast

import orjson
import redis
from kafka import KafkaConsumer

from tools.flink_jobs import JOBS, operator_metrics, submit
from tools.segments_cli import apply as apply_definitions
from tools.segments_cli import lookup as segment_lookup
from tools.stack import Stack
from udfs.identity.config import load_identity_config
from udfs.identity.records import alias_key
from udfs.segments.definitions import EXAMPLES_DIR
from udfs.stores.dynamo_codec import from_attributes
from udfs.stores.ops import VALUE_FIELD
from udfs.stores.redis_store import RedisConfig, RedisStore
from udfs.topology import TOPICS

GENERATOR_PID = "generator.pid"
LOOKUP_PID = "lookup.pid"
LOOKUP_PORT = 8090


def start_background(stack: Stack, pid_name: str, argv: list[str]) -> int:
    """Starts a background process of the demo (once: a live one is kept); returns its pid. Its output goes
    to `.run/<profile>/<name>.log`."""
    pid_file = stack.run_dir / pid_name
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, 0)
            return pid
        except ProcessLookupError:
            pass
    log = open(stack.run_dir / pid_name.replace(".pid", ".log"), "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def stop_background(stack: Stack, pid_name: str) -> None:
    """Stops a background process of the demo, if one runs."""
    pid_file = stack.run_dir / pid_name
    if not pid_file.exists():
        return
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    pid_file.unlink(missing_ok=True)


def start_generator(stack: Stack, rate: int, seed: int) -> int:
    """Starts the clickstream generator in the background (once); returns its pid."""
    return start_background(stack, GENERATOR_PID, [
        "-m", "tools.generate", "--bootstrap", stack.ports.bootstrap, "--topic", "events", "--realtime",
        "--rate", str(rate), "--seed", str(seed), "--bad-fraction", "0.03", "--dup-fraction", "0.02"])


def start_lookup(stack: Stack) -> int:
    """Starts the lookup service (`service/`) on the stack in the background (once); returns its pid."""
    return start_background(stack, LOOKUP_PID, ["-m", "service", "--profile", stack.profile,
                                                 "--port", str(LOOKUP_PORT)])


def stop_generator(stack: Stack) -> None:
    """Stops the background generator and lookup service, if they run."""
    for name in (GENERATOR_PID, LOOKUP_PID):
        stop_background(stack, name)


# What the live tail shows: every job's output topics.
TAIL_TOPICS = ["events.valid", "events.dlq", "person-merges", "profiles", "sessions", "segment-changes",
               "events.late"]
# Redis key families the jobs write (schemas/README.md), counted after the tail.
REDIS_FAMILIES = ("alias", "profile", "session:live", "session:recent", "segments")


def tail(bootstrap: str, topics: list[str], seconds: float, per_topic: int,
         changes: list[dict] | None = None) -> collections.Counter:
    """Prints the first records of each output topic for a while; returns counts per topic (and DLQ reason,
    merge kind, segment change op). `changes` collects the segment-changes records read."""
    consumer = KafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                             group_id=None, enable_auto_commit=False)
    counts: collections.Counter = collections.Counter()
    shown: collections.Counter = collections.Counter()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for part, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    doc = orjson.loads(record.value) if record.value else {"tombstone": True}
                    label = part.topic
                    if part.topic == "events.dlq":
                        label = f"{part.topic} ({doc['reason']})"
                    elif part.topic == "person-merges":
                        label = f"{part.topic} ({doc.get('kind')})"
                    elif part.topic == "segment-changes":
                        label = f"{part.topic} ({doc.get('op')})"
                        if changes is not None and len(changes) < MAX_CHANGES_KEPT:
                            changes.append(doc)
                    counts[label] += 1
                    if shown[label] < per_topic:  # per kind: merges are not crowded out by refusals
                        shown[label] += 1
                        print(f"  {part.topic:<16} {_summary(doc)}")
    finally:
        consumer.close()
    return counts


def _summary(doc: dict) -> str:
    if doc.get("kind") == "merge":
        evidence = doc.get("evidence") or {}
        return (f"merge {doc['absorbed']} -> {doc['survivor']} ({doc['reason']}: {evidence.get('event_type')} "
                f"with {'+'.join(evidence.get('identifier_types', []))})")
    if doc.get("kind") == "profile":
        return (f"profile {doc['person_id']} v{doc['version']}: {len(doc['identifiers'])} identifiers, "
                f"changed {','.join(doc['changed'])}")[:120]
    if "dlq_id" in doc:
        return f"{doc['reason']}: {doc['detail'][:90]}"
    if "event_id" in doc and "ids" in doc:
        ids = ",".join(f"{k}={v}" for k, v in doc["ids"].items())
        return f"{doc.get('type')} {doc.get('event_id')} {ids}"[:120]
    scalars = [f"{k}={v}" for k, v in doc.items() if isinstance(v, str | int | float | bool)]
    return " ".join(scalars[:6])[:120]


def redis_snapshot(stack: Stack) -> None:
    """Prints how many keys of each family the jobs keep in Redis, and one person's segment tags."""
    client = redis.Redis(port=stack.ports.redis)
    for family in REDIS_FAMILIES:
        keys = list(client.scan_iter(match=f"tagstream:{family}:*", count=1000))
        print(f"  tagstream:{family}:*  {len(keys)} keys")
        if family == "segments" and keys:
            fields = cast(dict[bytes, bytes], client.hgetall(keys[0]))  # a sync client
            tags = {k.decode(): v.decode()[:100] for k, v in fields.items() if k.startswith(b"tag:")}
            print(f"    e.g. {keys[0].decode()}: " + ("; ".join(f"{k} {v}" for k, v in tags.items()) or "no tags"))
    client.close()


# The segments job's counters shown by the demo (docs/segments.md, The Flink job).
SEGMENTS_METRICS = ("events_in", "evaluations", "entries", "exits", "corrections", "retractions", "late",
                    "idle_advances", "store_applied")
MAX_CHANGES_KEPT = 100_000


def job_metrics(stack: Stack, job_id: str, wait_s: float = 30) -> dict[str, int]:
    """The job's operator metrics (Flink REST API), waiting a little for `events_in`: the JobManager fetches
    the metrics from the TaskManagers every few seconds, one vertex at a time."""
    deadline = time.monotonic() + wait_s
    while True:
        metrics = operator_metrics(stack.ports, job_id)
        if metrics.get("events_in") or time.monotonic() >= deadline:
            return metrics
        time.sleep(2)


def segments_snapshot(stack: Stack, job_id: str, changes: list[dict], seconds: float) -> None:
    """Prints the segments job's metrics (Flink REST API), the entry and exit rates of the tail and one
    generated person whose tags entered and exited during it, with their tags in Redis now."""
    metrics = job_metrics(stack, job_id)
    print("  metrics: " + ", ".join(f"{name} {metrics.get(name, 0)}" for name in SEGMENTS_METRICS))
    live = [c for c in changes if not c["retraction"]]
    entries = sum(1 for c in live if c["op"] == "enter")
    print(f"  segment-changes during the tail: {entries / seconds:.1f} entries/s, "
          f"{(len(live) - entries) / seconds:.1f} exits/s")
    by_person: dict[str, list[dict]] = collections.defaultdict(list)
    for change in live:
        by_person[change["person_id"]].append(change)
    if not by_person:
        return
    person = max(by_person, key=lambda p: (len({c["op"] for c in by_person[p]}), len(by_person[p])))
    print(f"  e.g. {person}:")
    for change in by_person[person][-8:]:
        expires = f", expires {_clock(change['expires_at_ms'])}" if change.get("expires_at_ms") else ""
        print(f"    {_clock(change['ts_ms'])} {change['op']:<5} {change['tag']} "
              f"({change['reason']['cause']}{expires})")
    store = RedisStore(RedisConfig(url=stack.redis_url))
    try:
        tags = segment_lookup(store, person, time.time_ns() // 1_000_000)["tags"]
    finally:
        store.close()
    print("    in Redis now: " + (", ".join(f"{tag} (until {_clock(v['expires_at']) if v['expires_at'] else 'open'})"
                                           for tag, v in sorted(tags.items())) or "no tags"))


def _clock(ts_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}"


# The identity job's counters and gauges shown by the demo (docs/identity.md, Metrics).
IDENTITY_METRICS = ("events_in", "identified", "links", "merges", "refused_merges", "review_candidates", "erasures",
                    "pending_observations", "pending_claims", "component_size_max", "store_applied")


def identity_snapshot(stack: Stack, job_id: str) -> None:
    """Prints the identity job's metrics and one resolved person: its DynamoDB item, Redis hash and aliases."""
    metrics = job_metrics(stack, job_id)
    print("  metrics: " + ", ".join(f"{name} {metrics.get(name, 0)}" for name in IDENTITY_METRICS))
    config = load_identity_config()
    items = stack.dynamodb_client().scan(TableName=config.stores.dynamodb_table, Limit=500).get("Items", [])
    profiles = [from_attributes(i) for i in items if "_tombstone" not in i]
    merged = [p for p in profiles if len({k.split(":")[0] for k in p.get("identifiers", [])}) > 1]
    if not merged:
        print(f"  {len(profiles)} profiles in DynamoDB, none merged from several identifier types yet")
        return
    person = max(merged, key=lambda p: (len(p["identifiers"]), len(p.get("attributes", {}))))
    pid = person["person_id"]
    print(f"  DynamoDB {config.stores.dynamodb_table}[{pid}] v{person['version']}: identifiers "
          f"{', '.join(k[:40] for k in person['identifiers'])}")
    for name, value in sorted(person.get("attributes", {}).items()):
        source = person.get("provenance", {}).get(name, {})
        print(f"    {name} = {str(value)[:60]}  ({source.get('policy')} from {source.get('source')})")
    client = redis.Redis(port=stack.ports.redis)
    fields = cast(dict[bytes, bytes], client.hgetall(f"tagstream:profile:{pid}"))
    print(f"  Redis tagstream:profile:{pid}: " + ", ".join(
        f"{k.decode()}={v.decode()[:30]}" for k, v in sorted(fields.items()) if not k.startswith(b"_")))
    for key in person["identifiers"]:
        raw = cast(bytes | None, client.hget(alias_key(config, key), VALUE_FIELD))
        print(f"  Redis {alias_key(config, key)[:70]} -> {raw.decode() if raw else None}")
    client.close()


def main(argv: list[str] | None = None) -> int:
    """Runs the demo (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="demo", description=__doc__)
    parser.add_argument("--rate", type=int, default=20,
                        help="generator events per second (default 20: what the whole suite keeps up with on a "
                             "2-core machine; see README Benchmark)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument("--tail-seconds", type=float, default=20, help="how long to show the live tail")
    parser.add_argument("--stop-generator", action="store_true",
                        help="only stop the background generator and lookup service")
    args = parser.parse_args(argv)
    stack = Stack()
    if args.stop_generator:
        stop_generator(stack)
        return 0
    print("== starting the local stack")
    stack.up()
    print("== applying the example segment definitions (segments/examples)")
    applied = apply_definitions(stack.ports.bootstrap, sorted(EXAMPLES_DIR.glob("*.yaml")))
    print(f"  {len(applied)} new or changed definitions published")
    print("== submitting the job suite with flink run")
    job_ids = {}
    for spec in JOBS:
        job_ids[spec.key] = submit(stack, spec)
        print(f"  {spec.name}: RUNNING as {job_ids[spec.key]}")
    pid = start_generator(stack, args.rate, args.seed)
    ports = stack.ports
    print(f"== generator running (pid {pid}, {args.rate} events/s, log {stack.run_dir / 'generator.log'})")
    lookup = f"http://127.0.0.1:{LOOKUP_PORT}"
    print(f"== lookup service running (pid {start_lookup(stack)}, {lookup}, log {stack.run_dir / 'lookup.log'})")
    print(f"""
Where to look
  Flink UI         http://127.0.0.1:{ports.flink_rest}   (jobs, metrics: operator group 'tagstream')
  Prometheus       http://127.0.0.1:{ports.prometheus_first}/metrics (JobManager), \
http://127.0.0.1:{ports.prometheus_first + 1}/metrics (TaskManager)
  Kafka            {ports.bootstrap}  topics: {', '.join(t.name for t in TOPICS)}
  Redis            127.0.0.1:{ports.redis}
  DynamoDB Local   http://127.0.0.1:{ports.dynamodb}
  Lookup service   {lookup}/persons/ID/segments, {lookup}/persons/ID/segments/stream (SSE), {lookup}/docs;
                   ID = p-… or TYPE:VALUE; CLI: python -m tools.lookup --profile {stack.profile} ID [--follow]
== live tail of the jobs' output topics ({args.tail_seconds:.0f} s)""")
    changes: list[dict] = []
    counts = tail(ports.bootstrap, TAIL_TOPICS, args.tail_seconds, per_topic=4, changes=changes)
    print("== in the last {:.0f} s: {}".format(
        args.tail_seconds, ", ".join(f"{n} {label}" for label, n in counts.most_common()) or "nothing yet"))
    print("== Redis now (segment tags: python -m tools.lookup ID)")
    redis_snapshot(stack)
    print("== segments: tags entering and exiting, the job's metrics")
    segments_snapshot(stack, job_ids["segments"], changes, args.tail_seconds)
    print("== identity: anonymous and known identifiers merged into one person, its resolved profile")
    identity_snapshot(stack, job_ids["identity"])
    print("Everything keeps running: `make status` to check, `make down` to stop.")
    return 0 if counts else 1


if __name__ == "__main__":
    sys.exit(main())
