"""Every segment condition type end to end (tier 3): exact entry and exit times on `segment-changes`, the
Redis view and the DynamoDB items, through Kafka and the job submitted once with `flink run`.

One job runs for the whole module on private topics (the events topic has one partition, so the watermark
follows the test's events). Definitions (`segment_conditions.yaml`, seconds-scale windows) are applied with
the CLI; each condition type has its own person, whose events are all produced at the start (event times
are offsets from `T`, the module's origin). No input follows them: the exits (and the entries by time) come
from the idle clock. Tests that need a second step (late events, a trait update, a hot reload) send it
themselves, to their own person only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import store_clients
from tests.e2e.segments_support import TopicReader, definitions_read, event, now_ms, read_until, wait_for
from tools import segments_cli
from tools.flink_jobs import JOBS, cancel, last_exception, operator_metrics, submit
from tools.kafka_io import private_topics, produce
from udfs.segments import SegmentsConfig, compile_catalog, load_files, parse_documents, person_id_of
from udfs.segments.published import definition_text
from udfs.segments.records import redis_key
from udfs.stores.dynamo_store import DynamoStore
from udfs.stores.redis_store import RedisStore

pytestmark = pytest.mark.e2e

SEGMENTS = next(j for j in JOBS if j.key == "segments")
DEFINITIONS = Path(__file__).with_name("segment_conditions.yaml")
CATALOG = compile_catalog(load_files([DEFINITIONS]))
CONFIG = SegmentsConfig()
LATENESS_MS = 60_000
HOUR = 3_600_000
GARDEN = {"category": "garden"}

# Each person's events: (offset from T in ms, type, props, other top-level fields).
PLAN: dict[str, list[tuple[int, str, dict[str, Any], dict[str, Any]]]] = {
    "count": [(0, "product_view", {"category": "shoes", "product_id": "s1"}, {}),
              (500, "product_view", {"category": "books", "product_id": "b1"}, {}),
              (1000, "product_view", {"category": "shoes", "product_id": "s2"}, {})],
    "sum": [(0, "purchase", {"currency": "EUR", "revenue": 60}, {}),
            (500, "purchase", {"currency": "USD", "revenue": 500}, {}),
            (2000, "purchase", {"currency": "EUR", "revenue": 50}, {})],
    "distinct": [(0, "product_view", {"category": "tv", "product_id": "tv-a"}, {}),
                 (1000, "product_view", {"category": "tv", "product_id": "tv-a"}, {}),
                 (2000, "product_view", {"category": "tv", "product_id": "tv-b"}, {})],
    "param": [(0, "product_view", {"product_id": "p1"}, {}),
              (1000, "product_view", {"product_id": "p2"}, {}),
              (2000, "product_view", {"product_id": "p1"}, {})],
    "recency": [(0, "login", {}, {}), (3000, "login", {}, {})],
    "dwell": [(0, "page_view", {"category": "books", "dwell_ms": 2000}, {}),
              (1000, "page_view", {"category": "books", "dwell_ms": 1500}, {})],
    "sequence": [(0, "add_to_cart", {"product_id": "p9"}, {}),
                 (0, "add_to_cart", {"product_id": "p8"}, {}),
                 (1000, "product_view", {"product_id": "p9", "dwell_ms": 1000}, {}),
                 (2000, "product_view", {"product_id": "p9", "dwell_ms": 2500}, {}),
                 (6000, "product_view", {"product_id": "p8", "dwell_ms": 3000}, {})],
    "abandon": [(0, "add_to_cart", {"product_id": "q1"}, {})],
    "bought": [(0, "add_to_cart", {"product_id": "q2"}, {}), (1500, "purchase", {"revenue": 5}, {})],
    "absence": [(0, "page_view", {}, {}), (3000, "purchase", {"revenue": 5}, {})],
    "trait": [(0, "identify", {}, {"traits": {"tier": "gold"}}),
              (4000, "identify", {}, {"traits": {"tier": "silver"}})],
    "boolean": [(0, "identify", {}, {"traits": {"tier": "gold"}}), (1000, "search", {}, {}),
                (2000, "purchase", {"revenue": 5}, {}), (4500, "login", {}, {})],
    "placement": [(0, "identify", {}, {"traits": {"tier": "gold"}}), (500, "add_to_cart", {"product_id": "w1"}, {})],
    "consent": [(0, "login", {}, {}), (1000, "consent", {}, {"consent": {"personalization": False}}),
                (2000, "login", {}, {}), (3000, "consent", {}, {"consent": {"personalization": True}})],
    "late_exit": [(0, "search", {}, {}), (1000, "search", {}, {})],
    "late_entry": [(0, "search", {}, {}), (4000, "page_view", {}, {})],
    "reload": [(0, "page_view", GARDEN, {}), (1000, "page_view", GARDEN, {})],
}
# Changes due in the first phase, by person (tag, op, offset): the module waits for all of them.
PHASE_ONE = {
    "count": {("shoe_browser", "exit", 6000)}, "sum": {("big_spender", "exit", 8000)},
    "distinct": {("tv_comparer", "exit", 7000)}, "param": {("viewed:p1", "exit", 6000)},
    "recency": {("recent_login", "exit", 8000)}, "dwell": {("book_reader", "exit", 10000)},
    "sequence": {("cart_then_study:p9", "exit", 6000), ("viewed:p8", "exit", 10000)},
    "abandon": {("quick_abandoner:q1", "exit", 8000)}, "bought": {("lapsed_buyer", "enter", 5500)},
    "absence": {("lapsed_buyer", "enter", 7000)}, "trait": {("gold", "exit", 4000)},
    "boolean": {("gold_searcher", "exit", 6500), ("recent_login", "exit", 9500)},
    "placement": {("quick_abandoner:w1", "exit", 8500)}, "consent": {("recent_login", "exit", 5000)},
    "late_exit": {("double_search", "exit", 6000)}, "late_entry": {("lapsed_buyer", "enter", 2000)},
    "reload": {("lapsed_buyer", "enter", 2000)},
}


@dataclass
class Run:
    """The module's job, topics, stores and the origin `T` of all event times."""

    stack: Any
    topics: dict[str, str]
    job_id: str
    run: str
    origin: int
    redis: RedisStore
    dynamo: DynamoStore
    changes: TopicReader

    def user(self, label: str) -> str:
        return f"{label}-{self.run}"

    def person(self, label: str) -> str:
        person = person_id_of({"ids": {"user_id": self.user(label)}})
        assert person is not None
        return person

    def send(self, label: str, events: list[tuple[int, str, dict[str, Any], dict[str, Any]]], tag: str) -> None:
        """Produces events of one person (offsets from T) to the job's input."""
        user = self.user(label)
        produce(self.stack.ports.bootstrap, self.topics["events.valid"],
                [event(f"{user}-{tag}{i}", user, self.origin + offset, etype, fields, **props)
                 for i, (offset, etype, props, fields) in enumerate(events)],
                keys=[user.encode() for _ in events])

    def records(self, label: str) -> list[dict]:
        person = self.person(label)
        return [r for r in self.changes.records if r["person_id"] == person]

    def timeline(self, label: str, prefix: str) -> list[tuple[str, str, int, str]]:
        """The person's change records of tags starting with `prefix`, in emission order, as
        (tag, op, offset from T, cause); retractions left out."""
        return [(r["tag"], r["op"], r["ts_ms"] - self.origin, r["reason"]["cause"]) for r in self.records(label)
                if r["tag"].startswith(prefix) and not r["retraction"]]

    def wait_changes(self, label: str, wanted: set[tuple[str, str, int]]) -> list[dict]:
        """Reads changes until the person's records include every (tag, op, offset from T) of `wanted`."""
        def done(_: list[dict]) -> bool:
            return wanted <= {(r["tag"], r["op"], r["ts_ms"] - self.origin) for r in self.records(label)}

        self.changes.until(done)
        assert done([]), (label, wanted, self.timeline(label, ""), last_exception(self.stack.ports, self.job_id))
        return self.records(label)

    def view(self, label: str) -> dict[str, dict]:
        """The person's Redis hash, values decoded."""
        fields = self.redis.get_hash(redis_key(self.person(label), CONFIG)) or {}
        return {name: orjson.loads(value) for name, value in fields.items()}

    def items(self, label: str) -> dict[str, dict]:
        """The person's DynamoDB items by tag (expired ones too: only the job deletes them)."""
        return {i["tag"]: i for i in self.dynamo.query_live(CONFIG.dynamo_table, self.person(label), 0)}

    def settled(self, label: str, tags: set[str]) -> None:
        """Waits until the person's Redis view and DynamoDB items hold exactly `tags` (store writes follow
        the change records)."""
        def current() -> tuple[set[str], set[str]]:
            view = {name[4:] for name in self.view(label) if name.startswith("tag:")}
            return view, set(self.items(label))

        assert wait_for(lambda: current() == (tags, tags)), (label, current(), tags)

    def tag_view(self, label: str, tag: str) -> tuple[dict, dict]:
        """A current tag's Redis field and DynamoDB item."""
        return self.view(label)["tag:" + tag], self.items(label)[tag]


def version(name: str, catalog=CATALOG) -> str:
    return catalog.segments[name].version


@pytest.fixture(scope="module")
def run(stack) -> Iterator[Run]:
    """Applies the definitions, submits the job, produces every person's first events and waits until all
    their first-phase changes (exits by the idle clock included) are on `segment-changes`."""
    bootstrap = stack.ports.bootstrap
    topics = private_topics(bootstrap, "events.valid", "segment-definitions", "segment-changes", "events.late",
                            partitions=1)
    assert segments_cli.main(["--bootstrap", bootstrap, "--topic", topics["segment-definitions"], "apply",
                              str(DEFINITIONS)]) == 0
    tag = uuid.uuid4().hex[:6]
    job_id = submit(stack, SEGMENTS, [
        "--input-topic", topics["events.valid"], "--definitions-topic", topics["segment-definitions"],
        "--changes-topic", topics["segment-changes"], "--late-topic", topics["events.late"],
        "--group-id", f"segconds-{tag}", "--lateness", f"{LATENESS_MS}ms", "--out-of-orderness", "500ms",
        "--idle-timeout", "1s", "--checkpoint-interval", "2s"], reuse=False)
    reader = TopicReader(bootstrap, topics["segment-changes"])
    try:
        definitions = len(CATALOG.segments) + len(CATALOG.placements)
        assert wait_for(lambda: definitions_read(stack.ports, job_id) >= definitions, 120), \
            last_exception(stack.ports, job_id)
        with store_clients(stack) as (redis, dynamo):
            origin = -(-now_ms() // 1000) * 1000 + 1000
            run = Run(stack, topics, job_id, tag, origin, redis, dynamo, reader)
            firsts = sorted((offset, label, i) for label, events in PLAN.items()
                            for i, (offset, *_) in enumerate(events))
            values: list[bytes | None] = []
            keys: list[bytes | None] = []
            for offset, label, i in firsts:
                _, etype, props, fields = PLAN[label][i]
                user = run.user(label)
                values.append(event(f"{user}-{i}", user, origin + offset, etype, fields, **props))
                keys.append(user.encode())
            produce(bootstrap, topics["events.valid"], values, keys=keys)
            for label, wanted in PHASE_ONE.items():
                run.wait_changes(label, wanted)
            yield run
    finally:
        reader.close()
        cancel(stack.ports, job_id)


def _entry(run: Run, label: str, tag: str, offset: int) -> dict:
    """The person's (only) entry record of `tag` at `offset`."""
    found = [r for r in run.records(label) if r["tag"] == tag and r["op"] == "enter"
             and r["ts_ms"] == run.origin + offset and not r["retraction"]]
    assert len(found) == 1, (tag, offset, run.timeline(label, tag))
    return found[0]


def _active_view(run: Run, label: str, first: int, last: int) -> None:
    """The long-lived `active` tag (recency, 1 h) in Redis and DynamoDB: entered at the first event, expiring
    an hour after the last."""
    field, item = run.tag_view(label, "active")
    assert (field["entered_at"], field["expires_at"]) == (run.origin + first, run.origin + last + HOUR)
    assert (item["entered_at"], item["expires_at_ms"]) == (run.origin + first, run.origin + last + HOUR)
    assert field["version"] == item["definition_version"] == version("active")


# ------------------------------------------------------------------ sliding windows with props filters
def test_count_with_props_filter(run: Run):
    assert run.timeline("count", "shoe_browser") == [("shoe_browser", "enter", 1000, "event"),
                                                     ("shoe_browser", "exit", 6000, "time")]
    entry = _entry(run, "count", "shoe_browser", 1000)
    assert entry["expires_at_ms"] == run.origin + 6000 and entry["version"] == version("shoe_browser")
    assert entry["reason"]["event_type"] == "product_view"
    assert entry["reason"]["evidence"][0]["value"] == 2  # the books view does not count
    run.settled("count", {"active", "lapsed_buyer"})
    _active_view(run, "count", 0, 1000)


def test_sum_with_props_filter(run: Run):
    assert run.timeline("sum", "big_spender") == [("big_spender", "enter", 2000, "event"),
                                                  ("big_spender", "exit", 8000, "time")]  # 60 leaves: 50 < 100
    assert _entry(run, "sum", "big_spender", 2000)["expires_at_ms"] == run.origin + 8000  # USD 500 filtered out
    run.settled("sum", {"active", "lapsed_buyer"})
    _active_view(run, "sum", 0, 2000)


def test_distinct_count_with_props_filter(run: Run):
    assert run.timeline("distinct", "tv_comparer") == [("tv_comparer", "enter", 2000, "event"),
                                                       ("tv_comparer", "exit", 7000, "time")]  # tv-a last at 1000
    run.settled("distinct", {"active", "lapsed_buyer"})


# ------------------------------------------------------------------ parameterized, recency, dwell
def test_parameterized_tag_per_product(run: Run):
    assert sorted(run.timeline("param", "viewed:")) == [
        ("viewed:p1", "enter", 0, "event"), ("viewed:p1", "exit", 6000, "time"),
        ("viewed:p2", "enter", 1000, "event"), ("viewed:p2", "exit", 5000, "time")]
    assert _entry(run, "param", "viewed:p2", 1000)["params"] == {"product_id": "p2"}
    run.settled("param", {"active", "lapsed_buyer"})
    # a parameterized tag that stays: its params, entry and expiry in Redis and DynamoDB
    field, item = run.tag_view("sequence", "wishlist:p9")
    assert field["params"] == item["params"] == {"product_id": "p9"}
    assert (field["entered_at"], field["expires_at"]) == (run.origin, run.origin + HOUR)
    assert (item["entered_at"], item["expires_at_ms"], item["segment"]) == (run.origin, run.origin + HOUR, "wishlist")


def test_recency(run: Run):
    # the second login extends the membership: one entry, the exit 5 s after the newest login
    assert run.timeline("recency", "recent_login") == [("recent_login", "enter", 0, "event"),
                                                       ("recent_login", "exit", 8000, "time")]
    run.settled("recency", {"active", "lapsed_buyer"})
    _active_view(run, "recency", 0, 3000)


def test_dwell_sum_of_dwell_ms(run: Run):
    assert run.timeline("dwell", "book_reader") == [("book_reader", "enter", 1000, "event"),
                                                    ("book_reader", "exit", 10000, "time")]  # 3.5 s, then 1.5 s
    run.settled("dwell", {"active", "lapsed_buyer"})


# ------------------------------------------------------------------ sequences
def test_sequence_with_time_bound(run: Run):
    # add_to_cart, then more than 2 s on the product page within 5 s; held 4 s. For p8 the long view came
    # 6 s after the add_to_cart: too late, no tag.
    assert run.timeline("sequence", "cart_then_study") == [("cart_then_study:p9", "enter", 2000, "event"),
                                                           ("cart_then_study:p9", "exit", 6000, "time")]
    run.settled("sequence", {"active", "lapsed_buyer", "wishlist:p8", "wishlist:p9"})


def test_add_to_cart_not_followed_by_purchase(run: Run):
    assert run.timeline("abandon", "quick_abandoner") == [("quick_abandoner:q1", "enter", 3000, "time"),
                                                          ("quick_abandoner:q1", "exit", 8000, "time")]
    assert _entry(run, "abandon", "quick_abandoner:q1", 3000)["expires_at_ms"] == run.origin + 8000
    assert run.timeline("bought", "quick_abandoner") == []  # purchased 1.5 s after the add_to_cart
    run.settled("abandon", {"active", "lapsed_buyer", "wishlist:q1"})


# ------------------------------------------------------------------ absence, traits, composition
def test_absence_for_people_seen_before(run: Run):
    # seen at 0: no purchase for 4 s and seen for 2 s -> enters at 2 s by time; the purchase at 3 s ends it;
    # 4 s later it holds again, open-ended
    assert run.timeline("absence", "lapsed_buyer") == [
        ("lapsed_buyer", "enter", 2000, "time"), ("lapsed_buyer", "exit", 3000, "event"),
        ("lapsed_buyer", "enter", 7000, "time")]
    assert _entry(run, "absence", "lapsed_buyer", 7000)["expires_at_ms"] is None
    run.settled("absence", {"active", "lapsed_buyer"})
    field, item = run.tag_view("absence", "lapsed_buyer")
    assert (field["entered_at"], field["expires_at"]) == (run.origin + 7000, None)
    assert item["entered_at"] == run.origin + 7000 and "expires_at_ms" not in item and "expires_at" not in item


def test_profile_trait(run: Run):
    assert run.timeline("trait", "gold") == [("gold", "enter", 0, "event"), ("gold", "exit", 4000, "event")]
    assert _entry(run, "trait", "gold", 0)["expires_at_ms"] is None
    run.settled("trait", {"active", "lapsed_buyer"})
    field, item = run.tag_view("boolean", "gold")  # still gold: open-ended in Redis and DynamoDB
    assert (field["entered_at"], field["expires_at"], item["entered_at"]) == (run.origin, None, run.origin)


def test_all_any_not_and_segment_reference(run: Run):
    # gold AND (search in 4 s OR login in 2 s) AND NOT purchase in 3 s
    assert run.timeline("boolean", "gold_searcher") == [
        ("gold_searcher", "enter", 1000, "event"), ("gold_searcher", "exit", 2000, "event"),  # the purchase
        ("gold_searcher", "enter", 5000, "time"),  # the purchase left the window; the login at 4.5 s holds
        ("gold_searcher", "exit", 6500, "time")]
    assert _entry(run, "boolean", "gold_searcher", 5000)["expires_at_ms"] == run.origin + 6500
    run.settled("boolean", {"active", "gold", "lapsed_buyer"})


# ------------------------------------------------------------------ placements
def test_placement_rule_hierarchy(run: Run):
    run.settled("placement", {"active", "gold", "lapsed_buyer", "wishlist:w1"})
    assert run.view("placement")["placement:hero"] == {"content": "hero_gold", "rule": "gold", "tag": "gold",
                                                       "version": CATALOG.placements["hero"].version}
    # no gold, no wishlist: the lowest conditional rule
    assert run.view("count")["placement:hero"]["content"] == "hero_active"
    # the higher rule exits (tier no longer gold): the next rule, its content filled from the binding
    run.send("placement", [(12000, "identify", {}, {"traits": {"tier": "silver"}})], "silver")
    run.wait_changes("placement", {("gold", "exit", 12000)})
    assert wait_for(lambda: run.view("placement")["placement:hero"]["content"] == "hero_wish:w1"), \
        run.view("placement")
    assert run.view("placement")["placement:hero"]["rule"] == "wish"
    assert run.view("placement")["placement:hero"]["tag"] == "wishlist:w1"


# ------------------------------------------------------------------ consent
def test_consent_denied_leaves_all_and_blocks_until_granted(run: Run):
    timeline = run.timeline("consent", "")
    assert [c for c in timeline if c[1] == "exit" and c[2] == 1000] == [("active", "exit", 1000, "event"),
                                                                        ("recent_login", "exit", 1000, "event")]
    assert not [c for c in timeline if c[1] == "enter" and 1000 <= c[2] < 3000]  # nothing while denied
    # granted at 3 s: the login from before the denial counts again (inside its window), the login made while
    # denied never does (else recent_login would last until 7 s)
    assert [c for c in timeline if c[0] == "recent_login"] == [
        ("recent_login", "enter", 0, "event"), ("recent_login", "exit", 1000, "event"),
        ("recent_login", "enter", 3000, "event"), ("recent_login", "exit", 5000, "time")]
    run.settled("consent", {"active", "lapsed_buyer"})
    assert run.view("consent")["consent"] is True
    field, _ = run.tag_view("consent", "active")
    assert field["entered_at"] == run.origin + 3000


# ------------------------------------------------------------------ lateness
def test_late_event_within_lateness_corrects_exit_and_entry(run: Run):
    # an exit already emitted at 6 s is retracted by a search at 3 s: the real exit is at 7 s
    original = next(r for r in run.records("late_exit") if r["tag"] == "double_search" and r["op"] == "exit")
    run.send("late_exit", [(3000, "search", {}, {})], "late")
    # a person whose clock is at 4 s gets a search at -1 s: an entry at 0 s, corrected
    run.send("late_entry", [(-1000, "search", {}, {})], "late")
    # far behind the watermark: the late topic
    run.send("late_exit", [(-2 * LATENESS_MS, "search", {}, {})], "too-late")
    run.wait_changes("late_exit", {("double_search", "exit", 7000)})
    records = [r for r in run.records("late_exit") if r["tag"] == "double_search"]
    retractions = [r for r in records if r["retraction"]]
    assert [(r["op"], r["ts_ms"] - run.origin, r["retracts"]) for r in retractions] == \
        [("exit", 6000, original["key"])]
    assert run.timeline("late_exit", "double_search") == [
        ("double_search", "enter", 1000, "event"), ("double_search", "exit", 6000, "time"),
        ("double_search", "exit", 7000, "time")]
    entries = run.wait_changes("late_entry", {("double_search", "enter", 0), ("double_search", "exit", 5000)})
    entry = next(r for r in entries if r["tag"] == "double_search" and r["op"] == "enter")
    assert entry["correction"] is True and entry["reason"]["event_id"] == f"{run.user('late_entry')}-late0"
    assert entry["expires_at_ms"] == run.origin + 5000
    late = read_until(run.stack.ports.bootstrap, run.topics["events.late"], lambda rs: len(rs) >= 1, 60)
    assert [(r["event_id"], r["reason"], r["person_id"]) for r in late] == \
        [(f"{run.user('late_exit')}-too-late0", "too_late", run.person("late_exit"))]


# ------------------------------------------------------------------ hot reload
def test_hot_reload_add_change_remove(run: Run, tmp_path: Path):
    docs = {d["name"]: d for d in parse_documents(DEFINITIONS.read_text(encoding="utf-8"))}
    changed = dict(docs["reload_changed"], condition={"count": {"match": {"type": "page_view", "props": GARDEN},
                                                                "within": "1h", "gte": 2}})
    added = {"kind": "segment", "name": "reload_added",
             "condition": {"count": {"match": {"type": "page_view", "props": GARDEN}, "within": "1h", "gte": 2}}}
    new = compile_catalog([*(d for n, d in docs.items() if n not in ("reload_changed", "reload_removed")),
                           changed, added])
    before = definitions_read(run.stack.ports, run.job_id)
    cli = ["--bootstrap", run.stack.ports.bootstrap, "--topic", run.topics["segment-definitions"]]
    reloaded = tmp_path / "reload.yaml"
    reloaded.write_text(orjson.dumps(changed).decode(), encoding="utf-8")
    assert segments_cli.main([*cli, "apply", str(reloaded)]) == 0
    assert segments_cli.main([*cli, "remove", "reload_removed"]) == 0
    # A definition record's Kafka timestamp is no event time: one half an hour ahead must not move the
    # job's watermark (it did, making the nudge below too late).
    produce(run.stack.ports.bootstrap, run.topics["segment-definitions"], [definition_text(added).encode()],
            keys=[b"reload_added"], timestamps=[now_ms() + 30 * 60_000])
    assert wait_for(lambda: definitions_read(run.stack.ports, run.job_id) >= before + 3, 60)
    assert operator_metrics(run.stack.ports, run.job_id)["definition_issues"] == 0
    # persons are reconciled on their next event or timer: a logout (which no definition reads)
    run.send("reload", [(12000, "logout", {}, {})], "nudge")

    def reconciled(_: list[dict]) -> bool:
        seen = {(r["segment"], r["op"]) for r in run.records("reload")}
        return {("reload_added", "enter"), ("reload_changed", "enter"), ("reload_removed", "exit")} <= seen

    run.changes.until(reconciled)
    assert reconciled([]), (run.timeline("reload", ""), operator_metrics(run.stack.ports, run.job_id))
    records = run.records("reload")
    removed = [r for r in records if r["segment"] == "reload_removed"]
    assert (removed[0]["op"], removed[0]["ts_ms"] - run.origin, removed[0]["reason"]["cause"]) == ("enter", 0, "event")
    exit_ = removed[-1]
    assert (exit_["op"], exit_["reason"]["cause"]) == ("exit", "definition_removed")
    assert exit_["version"] == version("reload_removed")  # the version that ended
    added_entry = next(r for r in records if r["segment"] == "reload_added")
    changed_entry = next(r for r in records if r["segment"] == "reload_changed")
    # evaluated against the retained history (two garden views at 0 and 1 s), at the switch time: after the
    # person's clock, no later than the event that reconciled it
    for record, cause, name in ((added_entry, "definition_added", "reload_added"),
                                (changed_entry, "definition_changed", "reload_changed")):
        assert (record["op"], record["reason"]["cause"], record["version"]) == ("enter", cause, version(name, new))
        assert run.origin + 2000 < record["ts_ms"] <= run.origin + 12000
        assert record["ts_ms"] == exit_["ts_ms"]
    run.settled("reload", {"active", "lapsed_buyer", "reload_added", "reload_changed"})
    field, item = run.tag_view("reload", "reload_changed")
    assert field["version"] == item["definition_version"] == version("reload_changed", new)
    assert field["entered_at"] == item["entered_at"] == changed_entry["ts_ms"]
