"""The segments engine: output records, view and stores, consent, duplicates, lateness, hot reload,
bounded memory (tier 1)."""

from __future__ import annotations

import copyreg
import hashlib
import io
import pickle

from udfs.segments import (
    Engine,
    SegmentsConfig,
    compile_catalog,
    load_directory,
    parse_documents,
    person_id_of,
    update_catalog,
)
from udfs.segments.reference import event, net_intervals, replay
from udfs.stores.ops import DynamoDelete, DynamoPut, RedisHashUpdate, op_from_dict

S, M, H, D = 1000, 60_000, 3_600_000, 86_400_000
T0 = 1_795_000_000_000
DOCS = load_directory()
EXAMPLES = compile_catalog(DOCS)
CONFIG = SegmentsConfig(allowed_lateness_ms=5 * M)


def at(offset: int) -> int:
    return T0 + offset


def ev(event_id, etype, offset, **fields):
    return event(event_id, etype, at(offset), **fields)


def changes_of(out, tag=None):
    return [(c["op"], c["tag"], c["ts_ms"] - T0) for c in out.changes
            if not c["retraction"] and (tag is None or c["tag"].startswith(tag))]


def engine(catalog=EXAMPLES):
    return Engine(catalog, CONFIG)


def eng_view(state):
    return engine().view(state)


def only(docs_text: str):
    return compile_catalog(parse_documents(docs_text))


# ---------------------------------------------------------------- outputs
def test_change_records_carry_everything_and_keys_are_deterministic():
    events = [ev("v1", "product_view", 0, product_id="p1"), ev("v2", "product_view", 1 * M, product_id="p1")]
    _, out = replay(engine(), events, until=at(H))
    _, again = replay(engine(), events, until=at(H))
    assert [c["key"] for c in out.changes] == [c["key"] for c in again.changes]
    assert len({c["key"] for c in out.changes}) == len(out.changes)
    enter, exit_ = [c for c in out.changes if c["tag"] == "viewed_product:p1"]
    assert enter == {
        "kind": "segment_change", "key": enter["key"], "person_id": "p", "segment": "viewed_product",
        "version": EXAMPLES.segments["viewed_product"].version, "tag": "viewed_product:p1",
        "params": {"product_id": "p1"}, "op": "enter", "ts_ms": at(0), "correction": False,
        "retraction": False, "retracts": None, "expires_at_ms": at(5 * M),
        "reason": {"cause": "event", "event_id": "v1", "event_type": "product_view",
                   "condition": "count(product_view[product_id={product_id}]) >= 1 within 5m",
                   "evidence": [{"condition": "count(product_view[product_id={product_id}]) >= 1 within 5m",
                                 "value": 1, "event_ids": ["v1"]}]}}
    assert (exit_["op"], exit_["ts_ms"], exit_["reason"]["cause"]) == ("exit", at(6 * M), "time")
    assert exit_["reason"]["evidence"][0]["value"] == 0


def test_view_redis_and_dynamo_follow_membership_and_expiry():
    eng = engine()
    state = eng.new_state("p")
    state, out, wake = eng.on_event(state, ev("v1", "product_view", 0, product_id="p1"))
    view_of_p1 = {"segment": "viewed_product", "params": {"product_id": "p1"},
                  "version": EXAMPLES.segments["viewed_product"].version, "entered_at": at(0),
                  "expires_at": at(5 * M)}
    assert eng.view(state)["tags"]["viewed_product:p1"] == view_of_p1
    (write,) = out.redis
    assert isinstance(write, RedisHashUpdate) and write.key == "tagstream:segments:p"
    assert write.fields["tag:viewed_product:p1"] == view_of_p1 and write.remove == []
    assert write.fields["consent"] is True
    assert write.fields["placement:homepage_banner"]["content"] == "banner_generic"
    first_version = write.version
    assert first_version >= at(0) * 1000
    put = next(w for w in out.dynamo if w.key["tag"] == "viewed_product:p1")
    assert isinstance(put, DynamoPut) and put.table == "tagstream_segments" and put.key["person_id"] == "p"
    assert put.expires_at_ms == at(5 * M) and put.stored_item()["expires_at"] == -(-at(5 * M) // 1000)
    assert put.item["expires_at_ms"] == at(5 * M) and put.item["as_of"] == at(0)
    assert put.version == first_version
    assert wake == at(5 * M)
    # a second view extends the expiry: only that field and item are rewritten, with a newer version
    state, out, wake = eng.on_event(state, ev("v2", "product_view", 2 * M, product_id="p1"))
    (write,) = out.redis
    assert list(write.fields) == ["tag:viewed_product:p1"] and write.version > first_version
    assert write.fields["tag:viewed_product:p1"]["expires_at"] == at(7 * M)
    assert write.fields["tag:viewed_product:p1"]["entered_at"] == at(0)
    assert [w.version for w in out.dynamo if w.key["tag"] == "viewed_product:p1"] == [write.version]
    # an event changing nothing rewrites nothing
    state, out, _ = eng.on_event(state, ev("s1", "search", 3 * M))
    assert out.redis == [] and out.dynamo == []
    # the exit deletes the item and the field
    state, out, _ = eng.advance(state, at(7 * M))
    (delete,) = out.dynamo
    assert isinstance(delete, DynamoDelete) and delete.key == {"person_id": "p", "tag": "viewed_product:p1"}
    assert not delete.erase and out.redis[0].remove == ["tag:viewed_product:p1"]
    assert "viewed_product:p1" not in eng.view(state)["tags"]
    # open-ended tags have no TTL
    state, out, _ = eng.on_event(state, ev("i", "identify", 8 * M, traits={"tier": "gold"}))
    gold = next(w for w in out.dynamo if w.key["tag"] == "gold_tier")
    assert gold.expires_at_ms is None and "expires_at" not in gold.stored_item()
    assert out.fields()["tag:gold_tier"]["expires_at"] is None


def test_store_versions_grow_strictly_even_within_one_millisecond():
    eng = engine(COUNT3)
    state, out = replay(eng, [ev("a", "search", 0), ev("b", "search", 0), ev("c", "search", 0)])
    versions = [op.version for op in (*out.redis, *out.dynamo)]
    state, late, _ = eng.on_event(state, ev("d", "search", 0))
    more = [op.version for op in (*late.redis, *late.dynamo)]
    assert versions == sorted(versions) and all(v > max(versions) for v in more)
    assert all(op_from_dict(op.as_dict()) == op for op in (*out.redis, *out.dynamo))


def test_state_is_picklable():
    state, _ = replay(engine(), [ev("v1", "product_view", 0, product_id="p1", category="c", dwell_ms=5)])
    restored = pickle.loads(pickle.dumps(state))
    _, out, _ = engine().advance(restored, at(5 * M))
    assert changes_of(out, "viewed") == [("exit", "viewed_product:p1", 5 * M)]


class _DefaultForm(pickle.Pickler):
    """Pickles every object in Python's default form (slot dictionaries), as states were written before the
    hot classes got their compact `__reduce__`."""

    def reducer_override(self, obj):
        if isinstance(obj, type) or type(obj).__module__ == "builtins" or isinstance(obj, tuple):
            return NotImplemented
        return copyreg.__newobj__, (type(obj),), object.__getstate__(obj)


def test_compact_pickles_are_smaller_and_default_form_pickles_still_read_back():
    events = [ev("v1", "product_view", 0, product_id="p1", category="c", dwell_ms=5),
              ev("s1", "search", S), ev("s2", "search", 2 * S), ev("s3", "search", 3 * S)]
    state, _ = replay(engine(), events)
    buffer = io.BytesIO()
    _DefaultForm(buffer, 4).dump(state)
    compact = pickle.dumps(state)
    assert len(compact) < len(buffer.getvalue())
    outputs = []
    for blob in (compact, buffer.getvalue()):
        _, out, wake = engine().advance(pickle.loads(blob), at(20 * M))
        outputs.append((out.changes, [op.as_dict() for op in (*out.redis, *out.dynamo)], wake))
    _, out, wake = engine().advance(state, at(20 * M))
    assert outputs[0] == outputs[1] == (out.changes, [op.as_dict() for op in (*out.redis, *out.dynamo)], wake)


def test_events_with_rfc3339_time_and_key_selector():
    body = {"event_id": "x", "type": "purchase", "ts": "2026-11-18T08:00:00.250+01:00",
            "ids": {"anonymous_id": "a1", "user_id": "u1"}}
    _, out, _ = engine().on_event(engine().new_state("u"), body)
    assert ("enter", "recent_purchaser", 1794985200250 - T0) in changes_of(out)
    assert person_id_of({**body, "person_id": "p-123"}) == "p-123"
    assert person_id_of(body) == "p-" + hashlib.sha256(b"user_id:u1").hexdigest()[:32]
    assert person_id_of({"ids": {"anonymous_id": "a1"}}).startswith("p-")
    assert person_id_of({"ids": {"email": "x@y"}}) is None


def test_erase_exits_every_tag_and_forgets_the_person():
    eng = engine()
    state, _ = replay(eng, [ev("v1", "product_view", 0, product_id="p1"),
                            ev("i", "identify", 0, traits={"tier": "gold"})])
    state, out, wake = eng.on_event(state, ev("x", "erase", 1 * M))
    assert sorted(changes_of(out)) == [("exit", "gold_tier", 1 * M), ("exit", "viewed_product:p1", 1 * M)]
    assert {c["reason"]["cause"] for c in out.changes} == {"erase"}
    assert [(type(op).__name__, op.key, op.erase) for op in out.redis] == [
        ("RedisDelete", "tagstream:segments:p", True)]
    assert sorted((w.key["tag"], w.erase) for w in out.dynamo) == [("gold_tier", True), ("viewed_product:p1", True)]
    assert wake is None and state.history == {} and state.instances == {} and state.stores == {}


# ---------------------------------------------------------------- consent
def test_denied_consent_exits_everything_and_blocks_new_tags_until_granted():
    events = [ev("v1", "product_view", 0, product_id="p1"), ev("i1", "identify", 0, traits={"tier": "gold"}),
              ev("c1", "consent", 1 * M, consent={"personalization": False}),
              ev("v2", "product_view", 2 * M, product_id="p2"),
              ev("i2", "identify", 2 * M, traits={"tier": "silver"}),
              ev("c2", "consent", 3 * M, consent={"personalization": True, "marketing": False})]
    state, out = replay(engine(), events[:3])
    exits = [c for c in out.changes if c["op"] == "exit"]
    assert {(c["tag"], c["ts_ms"] - T0) for c in exits} == {("viewed_product:p1", 1 * M), ("gold_tier", 1 * M)}
    assert {c["reason"]["event_id"] for c in exits} == {"c1"}
    assert out.fields()["consent"] is False and eng_view(state)["tags"] == {}
    state, out = replay(engine(), events[3:4], state=state)
    assert changes_of(out) == []
    state, out = replay(engine(), events[4:], state=state, until=at(H))
    # on a new grant, evidence from before the denial that is still in its window counts again; what
    # happened while denied (the p2 view, the silver tier) never does
    assert net_intervals(out.changes) == {"gold_tier": [(at(3 * M), None)],
                                          "viewed_product:p1": [(at(3 * M), at(5 * M))]}


def test_consent_other_purposes_do_not_matter():
    events = [ev("v1", "product_view", 0, product_id="p1"), ev("c1", "consent", 1 * M, consent={"marketing": False})]
    _, out = replay(engine(), events, until=at(H))
    assert net_intervals(out.changes)["viewed_product:p1"] == [(at(0), at(5 * M))]


def test_default_consent_can_be_denied():
    eng = Engine(EXAMPLES, SegmentsConfig(default_consent=False))
    _, out = replay(eng, [ev("v1", "product_view", 0, product_id="p1")], until=at(H))
    assert out.changes == []
    _, out = replay(eng, [ev("c", "consent", 0, consent={"personalization": True}),
                          ev("v1", "product_view", 1, product_id="p1")], until=at(H))
    assert net_intervals(out.changes)["viewed_product:p1"] == [(at(1), at(5 * M + 1))]


# ---------------------------------------------------------------- duplicates and lateness
def test_duplicated_event_ids_change_nothing():
    eng = engine()
    first = ev("v1", "product_view", 0, product_id="p1")
    state, out, _ = eng.on_event(eng.new_state("p"), first)
    assert out.changes
    for dup in (first, {**first, "ts_ms": at(2 * M)}, {**first, "props": {"product_id": "p9"}}):
        state, out, wake = eng.on_event(state, dup)
        assert (out.changes, out.redis, out.dynamo, out.duplicates) == ([], [], [], 1)
        assert wake == at(5 * M)
    # also when the duplicate arrives after later events
    state, out, _ = eng.on_event(state, ev("v2", "product_view", 1 * M, product_id="p2"))
    state, out, _ = eng.on_event(state, first)
    assert out.duplicates == 1 and out.changes == []


COUNT3 = only("kind: segment\nname: c3\ncondition: {count: {match: {type: search}, within: 10m, gte: 3}}")


def test_out_of_order_event_within_lateness_is_a_correction():
    eng = engine(COUNT3)
    events = [ev("a", "search", 0), ev("c", "search", 2 * M), ev("l", "login", 3 * M), ev("b", "search", 1 * M)]
    _, out = replay(eng, events, watermark_lag=5 * M)
    (enter,) = out.changes
    assert (enter["op"], enter["ts_ms"], enter["correction"]) == ("enter", at(2 * M), True)
    assert enter["reason"]["cause"] == "event" and enter["reason"]["event_id"] == "b"
    assert enter["expires_at_ms"] == at(10 * M)


def test_late_evidence_retracts_a_wrong_exit():
    eng = engine(COUNT3)
    state, out = replay(eng, [ev("a", "search", 0), ev("b", "search", 1 * M), ev("c", "search", 2 * M)])
    state, out, _ = eng.advance(state, at(10 * M), watermark=at(10 * M))
    (wrong,) = out.changes
    assert (wrong["op"], wrong["ts_ms"]) == ("exit", at(10 * M))
    # a search at 9m arrives late (horizon 10m - 5m): at 10m the window still holds 1m, 2m and 9m
    state, out, wake = eng.on_event(state, ev("d", "search", 9 * M), at(10 * M))
    (retraction,) = out.changes
    assert retraction["retraction"] and retraction["retracts"] == wrong["key"]
    assert retraction["correction"] and (retraction["op"], retraction["ts_ms"]) == ("exit", at(10 * M))
    assert out.fields()["tag:c3"]["expires_at"] == at(11 * M) and wake == at(11 * M)
    state, out, _ = eng.advance(state, at(11 * M))
    assert changes_of(out) == [("exit", "c3", 11 * M)]


def test_late_evidence_retracts_a_wrong_entry():
    eng = engine()
    state, out = replay(eng, [ev("c", "add_to_cart", 0, product_id="p")], until=at(31 * M))
    assert ("enter", "cart_abandoner:p", 30 * M) in changes_of(out)
    state, out, _ = eng.on_event(state, ev("b", "purchase", 29 * M), at(31 * M))
    retractions = [c for c in out.changes if c["retraction"]]
    assert [(c["tag"], c["op"], c["ts_ms"] - T0) for c in retractions] == [("cart_abandoner:p", "enter", 30 * M)]
    assert "tag:cart_abandoner:p" in out.redis[0].remove and "cart_abandoner:p" not in eng.view(state)["tags"]
    assert any(isinstance(w, DynamoDelete) and w.key["tag"] == "cart_abandoner:p" for w in out.dynamo)


def test_events_older_than_watermark_minus_lateness_are_late_outputs():
    eng = engine()
    state, _ = replay(eng, [ev("v1", "product_view", 10 * M, product_id="p1")])
    body = ev("v0", "product_view", 4 * M, product_id="p0")
    state, out, wake = eng.on_event(state, body, at(10 * M - 1))
    assert out.changes == [] and out.redis == [] and wake == at(15 * M)
    (late,) = out.late
    assert late["reason"] == "too_late" and late["job"] == "segments" and late["event_id"] == "v0"
    assert late["watermark"] == at(10 * M - 1) and late["allowed_lateness_ms"] == 5 * M
    assert late["event"] == body and late["key"] == "segments:v0"
    # exactly at the horizon it is still accepted
    state, out, _ = eng.on_event(state, ev("v3", "product_view", 5 * M - 1, product_id="p3"), at(10 * M - 1))
    assert ("enter", "viewed_product:p3", 5 * M - 1) in changes_of(out) and not out.late


# ---------------------------------------------------------------- hot reload
TWO = """
kind: segment
name: two_views
condition: {count: {match: {type: product_view}, within: 10m, gte: 2}}
"""


def test_added_definition_is_evaluated_against_history_at_once():
    base = engine()
    history = [ev("v1", "product_view", 0, product_id="a"), ev("v2", "product_view", 1 * M, product_id="b")]
    state, _ = replay(base, history)
    catalog, issues = update_catalog(EXAMPLES, [*DOCS, *parse_documents(TWO)], updated_at=at(2 * M))
    assert issues == []
    reloaded = base.with_catalog(catalog)
    state, out, wake = reloaded.apply_definitions(state)
    (enter,) = out.changes
    assert (enter["tag"], enter["op"], enter["ts_ms"]) == ("two_views", "enter", at(2 * M))
    assert enter["reason"]["cause"] == "definition_added"
    assert enter["reason"]["evidence"][0]["event_ids"] == ["v2", "v1"]
    assert enter["version"] == catalog.segments["two_views"].version and enter["expires_at_ms"] == at(10 * M)
    assert wake == at(5 * M)  # viewed_product:a exits first
    state, out = replay(reloaded, [], state=state, until=at(H))
    assert ("exit", "two_views", 10 * M) in changes_of(out)


def test_removed_definition_exits_and_changed_one_keeps_continuing_tags():
    base = engine()
    state, _ = replay(base, [ev("v1", "product_view", 0, product_id="a"),
                             ev("i", "identify", 0, traits={"tier": "gold"})])
    longer = [d if d["name"] != "viewed_product" else
              {**d, "condition": {"recent": {**d["condition"]["recent"], "within": "10m"}}}
              for d in DOCS if d["name"] != "gold_tier" and d["name"] != "gold_window_shopper"]
    catalog, issues = update_catalog(EXAMPLES, longer, updated_at=at(1 * M))
    assert issues == []
    state, out, wake = base.with_catalog(catalog).apply_definitions(state)
    assert [(c["tag"], c["op"], c["ts_ms"] - T0, c["reason"]["cause"]) for c in out.changes] == [
        ("gold_tier", "exit", 1 * M, "definition_removed")]
    assert out.changes[0]["version"] == EXAMPLES.segments["gold_tier"].version  # the version that ended
    tag = out.fields()["tag:viewed_product:a"]
    assert tag["entered_at"] == at(0) and tag["expires_at"] == at(10 * M)
    assert tag["version"] == catalog.segments["viewed_product"].version != EXAMPLES.segments["viewed_product"].version
    assert {type(w).__name__ for w in out.dynamo} == {"DynamoPut", "DynamoDelete"}
    assert wake == at(10 * M)


def test_changed_definition_that_no_longer_holds_exits():
    base = engine()
    state, _ = replay(base, [ev("v1", "product_view", 0, product_id="a")])
    shorter = [d if d["name"] != "viewed_product" else
               {**d, "condition": {"recent": {**d["condition"]["recent"], "within": "1m"}}} for d in DOCS]
    catalog, _ = update_catalog(EXAMPLES, shorter, updated_at=at(2 * M))
    state, out, _ = base.with_catalog(catalog).apply_definitions(state)
    assert [(c["tag"], c["op"], c["ts_ms"] - T0, c["reason"]["cause"]) for c in out.changes] == [
        ("viewed_product:a", "exit", 2 * M, "definition_changed")]


def test_reload_is_applied_lazily_and_without_the_old_catalog():
    base = engine()
    state, _ = replay(base, [ev("v1", "product_view", 0, product_id="a"),
                             ev("i", "identify", 0, traits={"tier": "gold"})])
    catalog = compile_catalog([d for d in DOCS if d["name"] not in ("gold_tier", "gold_window_shopper")]
                              + parse_documents(TWO))
    fresh = Engine(catalog, CONFIG)  # e.g. after a restart: it never saw the old catalog
    state, out, _ = fresh.on_event(state, ev("v2", "product_view", 1 * M, product_id="b"))
    assert sorted(changes_of(out)) == [("enter", "two_views", 1 * M), ("enter", "viewed_product:b", 1 * M),
                                       ("exit", "gold_tier", 1)]
    assert state.catalog_version == catalog.version
    # continuing tags were not re-entered
    assert not any(c["tag"] == "viewed_product:a" for c in out.changes)


# ---------------------------------------------------------------- bounded memory
def test_memory_is_bounded_by_the_longest_window_plus_lateness():
    eng = engine()
    state = eng.new_state("p")
    for i in range(2000):
        ts = at(i * 10 * S)
        body = ev(f"v{i}", "product_view", i * 10 * S, product_id=f"p{i % 7}", category=f"c{i % 3}",
                  dwell_ms=1000)
        state, _, wake = eng.on_event(state, body, ts - 1)
        while wake is not None and wake <= ts - 1:
            state, _, wake = eng.advance(state, wake, ts - 1)
    retention = max(EXAMPLES.retention["product_view"], CONFIG.min_history_ms) + CONFIG.allowed_lateness_ms
    bound = retention // (10 * S) + 2 + CONFIG.evict_every_ms // (10 * S)
    assert len(state.history["product_view"]) <= bound
    assert len(state.seen) <= bound
    for per_key in state.stores.values():
        for store in per_key.values():
            for series in store.slots:
                assert series is None or len(series) <= bound
    assert sum(len(insts) for insts in state.instances.values()) <= 40
    assert len(state.heap) <= 60


def test_retained_history_can_be_replayed_into_another_person():
    eng = engine()
    absorbed, _ = replay(eng, [ev("v1", "product_view", 0, product_id="p1"),
                               ev("i", "identify", 0, traits={"tier": "gold"})])
    survivor, _ = replay(eng, [ev("s1", "search", 30 * S)], person_id="q")
    replayed = [e.to_event() for e in absorbed.retained()]
    survivor, out = replay(eng, replayed, state=survivor)
    assert sorted(changes_of(out)) == [("enter", "gold_tier", 0), ("enter", "viewed_product:p1", 0)]
    assert all(c["correction"] and c["person_id"] == "q" for c in out.changes)
