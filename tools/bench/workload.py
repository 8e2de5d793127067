"""The benchmark's input: generator events as send-time templates, stamped probe events, the probe segment.

The load producer (`LoadProducer.java`) sends each template as a fresh event: a unique `event_id` and the
wall clock at sending as `ts` and `ts_ms` are spliced in front of the template, so event time follows the
wall clock (as in production) and the same pool can be replayed at any rate without duplicates. Templates are
the generator's valid events (`tools/generate.py`, seeded), i.e. what ingest writes to `events.valid`.

Probes measure latency: each is a `search` of a person of its own (`user_id` bench-probe-<run>-<n>) carrying
`props.bench_probe`; the probe segment `bench_probe` (2 s recency) makes it enter the person's Redis view
(`tag:bench_probe`) and exit exactly 2 s (event time) later.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from tools.generate import VALID, GeneratorConfig, generate
from tools.generate_kafka import record_key
from udfs.segments import SegmentsConfig, person_id_of
from udfs.segments.records import redis_key

PROBE_SEGMENT = "bench_probe"
PROBE_WINDOW_MS = 2000
PROBE_DEFINITION = f"""\
kind: segment
name: {PROBE_SEGMENT}
description: Benchmark probe (tools/bench) - a search carrying props.bench_probe, held for 2 seconds.
condition:
  recent:
    match: {{type: search, props: {{bench_probe: {{exists: true}}}}}}
    within: {PROBE_WINDOW_MS}ms
"""
SEQUENCE_PLACEHOLDER = "%N%"  # LoadProducer replaces it with the record's sequence number
STATE_TEMPLATE = ('"type":"page_view","ids":{"user_id":"bench-state-%N%"},"channel":"web","source":"bench",'
                  '"props":{"url":"https://shop.example.com/","dwell_ms":1000}}')
ORIGIN_MS = 1_790_000_000_000  # the generator's origin; templates drop its timestamps anyway


def template_lines(count: int, seed: int = 7, users: int = 5000) -> Iterator[str]:
    """`key<TAB>rest` lines of the first `count` valid generator events (see the module docstring)."""
    config = GeneratorConfig(seed=seed, users=users, bad_fraction=0.0, dup_fraction=0.0, origin_ms=ORIGIN_MS)
    made = 0
    for record in generate(config):
        if record.kind != VALID:
            continue
        event = orjson.loads(record.value)
        for name in ("event_id", "ts", "ts_ms"):
            event.pop(name, None)
        key = (record_key(record) or b"").decode("utf-8")
        yield f"{key}\t{orjson.dumps(event).decode('utf-8')[1:]}"
        made += 1
        if made >= count:
            return


def ensure_templates(directory: Path, count: int, seed: int = 7, users: int = 5000) -> Path:
    """The template file of this size and seed under `directory`, generated once (cached)."""
    path = directory / f"templates-s{seed}-u{users}-n{count}.tsv"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text("".join(f"{line}\n" for line in template_lines(count, seed, users)), encoding="utf-8")
        partial.rename(path)
    return path


def state_templates(directory: Path) -> Path:
    """A one-line template file whose every record is a new person (`user_id` from the sequence number)."""
    path = directory / "templates-state.tsv"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(f"bench-state-{SEQUENCE_PLACEHOLDER}\t{STATE_TEMPLATE}\n", encoding="utf-8")
    return path


def probe_user(run: str, n: int) -> str:
    """The user id of probe `n` of a run (one person per probe keeps every probe's state tiny)."""
    return f"bench-probe-{run}-{n}"


def probe_event(run: str, n: int, now_ms: int) -> bytes:
    """Probe `n` of a run as an `events.valid` record value, stamped `now_ms`."""
    return orjson.dumps({"event_id": f"probe-{run}-{n}", "type": "search", "ts": now_ms, "ts_ms": now_ms,
                         "ids": {"user_id": probe_user(run, n)}, "channel": "web", "source": "bench",
                         "props": {"query": "bench probe", "bench_probe": n}})


def probe_key(run: str, n: int, config: SegmentsConfig | None = None) -> str:
    """The Redis hash where the segments job shows probe `n`'s tag (the person id the identity job derives)."""
    person = person_id_of({"ids": {"user_id": probe_user(run, n)}})
    assert person is not None
    return redis_key(person, config or SegmentsConfig())


def probe_field() -> str:
    """The hash field of the probe tag in a segments view."""
    return f"tag:{PROBE_SEGMENT}"
