"""Throughput of the segments core with 10, 100 and 1000 definitions (measured, not asserted).

The 10 are every tenth of the 100; the 1000 are the 100 plus 900 "dormant" copies whose filters name a
`brand` no event has: the events are the same, so the 100 and the 1000 differ only in catalog size (the
cost per event should not grow with definitions an event is not relevant to).

Skipped unless asked for: `pytest tests/unit/test_segments_bench.py --benchmark-only` (or `-m benchmark`).
"""

from __future__ import annotations

import copy
import random
import time
from typing import Any

import pytest

from udfs.segments import Engine, SegmentsConfig, compile_catalog
from udfs.segments.reference import event

pytestmark = pytest.mark.benchmark(group="segments")

S, M = 1000, 60_000
T0 = 1_795_000_000_000
CATEGORIES = [f"c{i}" for i in range(20)]
PERSONS = 200
EVENTS = 20_000


@pytest.fixture(autouse=True)
def _only_on_request(request):
    config = request.config
    if not (config.getoption("benchmark_only", False) or "bench" in (config.getoption("markexpr") or "")):
        pytest.skip("benchmark: run with --benchmark-only or -m benchmark")


def hundred_definitions() -> list[dict]:
    """100 realistic definitions: recency per product, dwell per category, counts, distinct counts,
    sequences, cart abandonment, absence and traits, with assorted windows and filters."""
    docs = []

    def seg(name, condition, params=None):
        doc = {"kind": "segment", "name": name, "condition": condition}
        if params:
            doc["params"] = params
        docs.append(doc)

    for i in range(20):
        seg(f"viewed_product_{i}", {"recent": {"match": {"type": "product_view", "props": {
            "product_id": "{product_id}", "category": CATEGORIES[i]}}, "within": f"{i + 1}m"}}, ["product_id"])
    for i in range(20):
        seg(f"category_dwell_{i}", {"dwell": {"match": {"type": ["page_view", "product_view"], "props": {
            "category": "{category}"}}, "within": f"{10 + i}m", "gt": f"{i + 1}m"}}, ["category"])
    for i in range(20):
        seg(f"views_in_{i}", {"count": {"match": {"type": "product_view", "props": {"category": CATEGORIES[i]}},
                                        "within": "10m", "gte": 3}})
    for i in range(10):
        seg(f"distinct_{i}", {"distinct": {"match": {"type": "product_view", "props": {"price": {"gte": i * 10}}},
                                           "field": "product_id", "within": f"{5 + i}m", "gte": 3}})
    for i in range(10):
        seg(f"considered_{i}", {"sequence": {"steps": [
            {"type": "product_view", "props": {"product_id": "{product_id}", "dwell_ms": {"gt": i * 10_000}}},
            {"type": "add_to_cart", "props": {"product_id": "{product_id}"}}],
            "within": f"{10 + i}m", "hold": "1h"}}, ["product_id"])
    for i in range(10):
        seg(f"abandoned_{i}", {"not_followed_by": {
            "trigger": {"type": "add_to_cart", "props": {"product_id": "{product_id}"}},
            "absent": {"type": "purchase"}, "within": f"{10 + i}m", "hold": "1d"}}, ["product_id"])
    for i in range(5):
        seg(f"no_purchase_{i}", {"absent": {"match": {"type": "purchase"}, "within": f"{i + 1}d"}})
    for i in range(5):
        seg(f"tier_{i}", {"all": [{"trait": {"name": "tier", "eq": f"t{i}"}},
                                  {"recent": {"match": {"type": "login"}, "within": "1h"}}]})
    assert len(docs) == 100
    return docs


def dormant_definitions(count: int) -> list[dict]:
    """Copies of the 100's window and sequence definitions whose filters also require a `brand` no event
    has (absence and trait definitions would hold without matching events, so they are not copied)."""
    base = [d for d in hundred_definitions() if not d["name"].startswith(("no_purchase", "tier_", "abandoned"))]

    def mark(node: Any, brand: str) -> Any:
        if isinstance(node, list):
            return [mark(v, brand) for v in node]
        if not isinstance(node, dict):
            return node
        marked = {k: mark(v, brand) for k, v in node.items()}
        if "type" in marked:  # an event filter
            marked["props"] = dict(marked.get("props") or {}, brand=brand)
        return marked

    docs = []
    for k in range(count):
        doc = mark(copy.deepcopy(base[k % len(base)]), f"b{k}")
        doc["name"] = f"{doc['name']}_dormant_{k}"
        docs.append(doc)
    return docs


CATALOGS = {10: lambda: hundred_definitions()[::10], 100: hundred_definitions,
            1000: lambda: hundred_definitions() + dormant_definitions(900)}


def workload() -> list[dict]:
    rng = random.Random(7)
    clock = {p: T0 + rng.randrange(0, 10 * M) for p in range(PERSONS)}
    events = []
    for i in range(EVENTS):
        person = rng.randrange(PERSONS)
        clock[person] += rng.randrange(1 * S, 60 * S)
        kind = rng.choices(["page_view", "product_view", "add_to_cart", "purchase", "login", "identify"],
                           [30, 50, 8, 2, 5, 5])[0]
        if kind == "identify":
            body = event(f"e{i}", kind, clock[person], f"u{person}", traits={"tier": f"t{rng.randrange(5)}"})
        else:
            body = event(f"e{i}", kind, clock[person], f"u{person}", product_id=f"p{rng.randrange(300)}",
                         category=rng.choice(CATEGORIES), price=rng.randrange(100),
                         dwell_ms=rng.randrange(0, 120_000))
        events.append(body)
    return events


@pytest.mark.parametrize("definitions", sorted(CATALOGS))
def test_throughput(benchmark, definitions: int):
    engine = Engine(compile_catalog(CATALOGS[definitions]()), SegmentsConfig())
    events = workload()

    cpu: list[float] = []

    def run() -> int:
        started = time.process_time()
        states: dict[str, object] = {}
        wakes: dict[str, int | None] = {}
        outputs = 0
        for body in events:
            person = body["ids"]["user_id"]
            state = states.get(person) or engine.new_state(person)
            watermark = body["ts_ms"] - 5 * S
            wake = wakes.get(person)
            while wake is not None and wake <= watermark:
                state, out, wake = engine.advance(state, wake, watermark)
                outputs += len(out.changes)
            state, out, wake = engine.on_event(state, body, watermark)
            outputs += len(out.changes)
            states[person], wakes[person] = state, wake
        cpu.append(time.process_time() - started)
        return outputs

    changes = benchmark.pedantic(run, rounds=3, iterations=1)
    seconds = benchmark.stats.stats.mean
    benchmark.extra_info["events"] = EVENTS
    benchmark.extra_info["definitions"] = definitions
    benchmark.extra_info["events_per_s"] = round(EVENTS / seconds)
    benchmark.extra_info["events_per_cpu_s"] = round(EVENTS / min(cpu))
    benchmark.extra_info["changes"] = changes
    print(f"\nsegments core, {definitions} definitions: {EVENTS / seconds:,.0f} events/s wall clock, "
          f"{EVENTS / min(cpu):,.0f} events per CPU second ({changes} changes)")
