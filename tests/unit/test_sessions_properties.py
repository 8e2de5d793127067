"""Property tests of the sessions core: delivery order, duplicates, ids and state serialization."""

from __future__ import annotations

from itertools import accumulate

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.sessions import PersonState, SessionConfig, Sessionizer, session_id
from udfs.sessions.config import DAY_MS
from udfs.sessions.model import MIN_WATERMARK
from udfs.sessions.reference import final_sessions, make_event, reference_sessions, replay

GAP, LATENESS = 100, 250
PERSON = "person-1"
FOREVER = 10**15
CFG = SessionConfig(gap_ms=GAP, allowed_lateness_ms=LATENESS, max_duration_ms=None)
CFG_DAY = SessionConfig(gap_ms=GAP, allowed_lateness_ms=LATENESS, max_duration_ms=None, day_boundary_tz="UTC")
PROPERTY = settings(max_examples=200, deadline=None)
EXTRA = settings(max_examples=100, deadline=None)  # for the supplementary properties

TYPES = ["page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "purchase"]


_EVENT_FIELDS = st.tuples(
    st.sampled_from(TYPES), st.sampled_from(["web", "app", None]), st.sampled_from(["sku-a", "sku-b"]),
    st.sampled_from(["shoes", "hats"]), st.integers(1, 10_000), st.integers(0, 5_000),
    st.sampled_from([None, "x", "y"]), st.one_of(st.none(), st.integers(0, 10_000)))


def _event(i, ts, fields):
    etype, channel, product, category, cents, dwell, campaign, revenue = fields
    props = {"product_id": product, "category": category, "price": cents / 100, "dwell_ms": dwell}
    if campaign is not None:
        props["url"] = f"https://shop.test/{i}?utm_campaign={campaign}"
    if revenue is not None:
        props["revenue"] = revenue / 100
    return make_event(f"e{i}", ts, etype, channel=channel, **props)


def event_sets(start=0, span=2_000, max_size=20):
    """A person's distinct events: random types, times (ties included), products, prices and campaigns."""
    fields = st.tuples(st.integers(start, start + span), _EVENT_FIELDS)
    return st.lists(fields, min_size=1, max_size=max_size).map(
        lambda drawn: [_event(i, ts, f) for i, (ts, f) in enumerate(drawn)])


@st.composite
def deliveries(draw, events, disorders=(0, GAP, 5 * GAP, FOREVER)):
    """The events in a shuffled order (from slightly to fully out of order), each with a watermark that
    never makes a later-delivered event too late: W_i <= min(ts of events i..n) + allowed lateness.
    Some steps are preceded by a bare `advance` (a timer firing)."""
    disorder = draw(st.sampled_from(disorders))
    delays = draw(st.lists(st.integers(0, disorder), min_size=len(events), max_size=len(events)))
    order = sorted(range(len(events)), key=lambda i: (events[i]["ts_ms"] + delays[i], i))
    shuffled = [events[i] for i in order]
    suffix_min = list(accumulate(reversed([e["ts_ms"] for e in shuffled]), min))[::-1]
    slack = draw(st.lists(st.integers(0, LATENESS + 3 * GAP), min_size=len(events), max_size=len(events)))
    watermarks = list(accumulate((m + LATENESS - s for m, s in zip(suffix_min, slack, strict=True)), max))
    timers = draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    plan = []
    for event, watermark, timer in zip(shuffled, watermarks, timers, strict=True):
        if timer:
            plan.append((None, watermark))
        plan.append((event, watermark))
    return plan


def in_order(events):
    return [(e, MIN_WATERMARK) for e in sorted(events, key=lambda e: (e["ts_ms"], e["event_id"]))]


def run(plan, config=CFG, final_time=FOREVER):
    sessionizer = Sessionizer(config)
    return replay(sessionizer, sessionizer.new_state(PERSON), plan, final_time)


def closed_sessions(outputs):
    """Final closed sessions as a consumer sees them, without the fields that depend on the delivery
    (record kind, version, and what a correction replaced)."""
    drop = ("kind", "key", "version", "replaces", "cause")
    latest = final_sessions(outputs)
    return {sid: {k: v for k, v in record.items() if k not in drop} for sid, record in latest.items()}


def session_records(outputs):
    return [o for o in outputs if o.kind != "late"]


@pytest.mark.parametrize(("config", "start"), [(CFG, 0), (CFG_DAY, DAY_MS - 1_000)], ids=["gap", "day"])
@PROPERTY
@given(data=st.data())
def test_any_delivery_within_lateness_gives_the_in_order_sessions(config, start, data):
    events = data.draw(event_sets(start=start))
    state, outputs = run(data.draw(deliveries(events)), config)
    assert [o for o in outputs if o.kind == "late"] == []
    assert state.idle and state.seen == {}
    got = closed_sessions(outputs)
    assert got == closed_sessions(run(in_order(events), config)[1])
    assert all(r["status"] == "closed" for r in got.values())
    reference = reference_sessions(events, GAP, day_of=config.day_of)
    assert sorted((r["start_ms"], r["end_ms"], r["event_count"]) for r in got.values()) == [
        (s.start_ms, s.last_ms, len(s.event_ids)) for s in reference]
    for output in session_records(outputs):  # ids derive from (person, start) only, whatever the delivery
        assert output.record["session_id"] == session_id(PERSON, output.record["start_ms"])
        assert output.key == f"{output.record['session_id']}:{output.kind}:{output.record['version']}"


@PROPERTY
@given(data=st.data())
def test_duplicates_after_the_original_change_no_session_record(data):
    events = data.draw(event_sets())
    plan = data.draw(deliveries(events))
    steps = [i for i, (event, _) in enumerate(plan) if event is not None]
    dups = data.draw(st.lists(st.tuples(st.sampled_from(steps), st.integers(1, len(plan))), max_size=8))
    with_dups = list(plan)
    for original, offset in sorted(dups, key=lambda d: -(d[0] + d[1])):
        position = min(original + offset, len(plan))
        with_dups.insert(position, (plan[original][0], plan[position - 1][1]))
    base, duplicated = run(plan)[1], run(with_dups)[1]
    assert session_records(duplicated) == session_records(base)
    late = [o.record for o in duplicated if o.kind == "late"]
    assert all(r["reason"] == "too_late" for r in late) and len(late) <= len(dups)


@EXTRA
@given(data=st.data())
def test_duplicates_anywhere_leave_the_closed_sessions_unchanged(data):
    events = data.draw(event_sets())
    copies = data.draw(st.lists(st.sampled_from(events), max_size=8))
    redelivered = data.draw(deliveries(events + copies))
    outputs = run(redelivered)[1]
    assert [o for o in outputs if o.kind == "late"] == []  # the watermarks respect every copy too
    assert closed_sessions(outputs) == closed_sessions(run(in_order(events))[1])


@PROPERTY
@given(person=st.text(min_size=1, max_size=40), start=st.integers(0, 2**45), other=st.integers(0, 2**45))
def test_session_id_depends_only_on_person_and_start(person, start, other):
    assert session_id(person, start) == session_id(person, start)
    assert (session_id(person, start) == session_id(person, other)) == (start == other)
    assert session_id(person, start) != session_id(person + "x", start)


@EXTRA
@given(data=st.data(), max_duration=st.sampled_from([GAP, 3 * GAP, 10 * GAP]))
def test_in_order_delivery_splits_at_max_duration_like_the_reference(data, max_duration):
    config = SessionConfig(gap_ms=GAP, allowed_lateness_ms=LATENESS, max_duration_ms=max_duration)
    events = data.draw(event_sets())
    ordered = [e for e, _ in in_order(events)]
    got = closed_sessions(run(data.draw(deliveries(ordered, disorders=(0,))), config)[1])
    reference = reference_sessions(events, GAP, max_duration_ms=max_duration)
    assert sorted((r["start_ms"], r["end_ms"], r["event_count"]) for r in got.values()) == [
        (s.start_ms, s.last_ms, len(s.event_ids)) for s in reference]


@EXTRA
@given(data=st.data())
def test_state_survives_json_serialization_between_any_two_steps(data):
    events = data.draw(event_sets())
    plan = data.draw(deliveries(events))
    sessionizer = Sessionizer(CFG)
    direct, outputs = replay(sessionizer, sessionizer.new_state(PERSON), plan, FOREVER)
    state, round_tripped = sessionizer.new_state(PERSON), []
    for event, watermark in [*plan, (None, FOREVER)]:
        state = PersonState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
        step = (sessionizer.advance(state, watermark) if event is None
                else sessionizer.on_event(state, event, watermark))
        state = step.state
        round_tripped.extend(step.outputs)
    assert round_tripped == outputs and state == direct
