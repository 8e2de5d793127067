"""The synthetic clickstream generator: determinism, ground truth, fault mix, ordering, journeys (tier 1)."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter, defaultdict
from itertools import islice, pairwise
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.generate import DUPLICATE, MALFORMED, VALID, GeneratorConfig, Record, generate, take
from tools.generate_faults import FAULTS, FaultLimits, build
from tools.journeys import JourneyConfig
from udfs.contract import REASONS, Accepted, EventValidator, Rejected, event_types

ORIGIN = 1_790_000_000_000  # 2026-09-21T14:13:20Z
CONFIG = GeneratorConfig(seed=11, users=60, origin_ms=ORIGIN, bad_fraction=0.1, dup_fraction=0.05,
                         journey=JourneyConfig(erase_probability=0.02))
N = 6000
VALIDATOR = EventValidator()
SESSION_GAP_MS = 30 * 60 * 1000


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return list(take(generate(CONFIG), N))


@pytest.fixture(scope="module")
def valid_events(records) -> list[tuple[Record, dict]]:
    return [(r, orjson.loads(r.value)) for r in records if r.kind == VALID]


def _event_order(pair: tuple[Record, dict]) -> tuple[int, int]:
    return pair[0].truth["ts_ms"], pair[0].truth["seq"]


def by_person(valid_events) -> dict[str, list[tuple[int, dict]]]:
    """Each person's valid events as (ts_ms, event), in event-time order."""
    people: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for record, event in sorted(valid_events, key=_event_order):
        people[record.truth["person"]].append((record.truth["ts_ms"], event))
    return people


# -- determinism ----------------------------------------------------------------------------------------

def test_the_same_seed_gives_the_same_bytes():
    first, second = (list(take(generate(CONFIG), 500)) for _ in range(2))
    assert first == second


def test_another_seed_gives_other_records():
    other = GeneratorConfig(**{**CONFIG.__dict__, "seed": CONFIG.seed + 1})
    assert [r.value for r in take(generate(CONFIG), 50)] != [r.value for r in take(generate(other), 50)]


def test_an_unset_origin_is_the_wall_clock_and_resolves_once():
    config = GeneratorConfig(users=5)
    resolved = config.resolved(now_ms=ORIGIN)
    assert config.origin_ms is None and resolved.origin_ms == ORIGIN and resolved.resolved() is resolved
    first = next(generate(config))
    assert first.truth["sent_ms"] > ORIGIN  # "now" is later than the fixed test origin


# -- ground truth ---------------------------------------------------------------------------------------

def test_valid_records_pass_the_validator_as_their_truth_says(records):
    for record in (r for r in records if r.kind == VALID):
        result = VALIDATOR.check(record.value, record.truth["sent_ms"])
        assert isinstance(result, Accepted), (record.truth, result)
        assert result.event_id == record.truth["event_id"]
        assert result.ts_ms == record.truth["ts_ms"] <= record.truth["sent_ms"]
        assert result.event["type"] == record.truth["type"]


def test_malformed_records_are_rejected_with_exactly_their_truth_reason(records):
    for record in (r for r in records if r.kind == MALFORMED):
        result = VALIDATOR.check(record.value, record.truth["sent_ms"])
        assert isinstance(result, Rejected), record.truth
        assert result.reason == record.truth["reason"], (record.truth, result.detail)


def test_the_malformed_mix_covers_every_reason_code(records):
    assert {r.truth["reason"] for r in records if r.kind == MALFORMED} == set(REASONS)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_every_fault_gives_its_reason_on_every_event_type(fault, valid_events):
    templates = {event["type"]: (record.truth["sent_ms"], event) for record, event in valid_events}
    rng = random.Random(fault.name)
    limits = FaultLimits(max_event_bytes=64 * 1024, max_record_bytes=300 * 1024)  # small, to stay fast
    for sent_ms, event in templates.values():
        value = build(fault, event, sent_ms, rng, limits)
        result = VALIDATOR.check(value, sent_ms)
        assert isinstance(result, Rejected) and result.reason == fault.reason, (event["type"], value[:200])
        assert len(value) <= limits.max_record_bytes


def test_duplicates_repeat_an_earlier_valid_record_byte_for_byte(records):
    duplicates = [r for r in records if r.kind == DUPLICATE]
    assert duplicates
    for duplicate in duplicates:
        original = records[duplicate.truth["duplicate_of"]]
        assert original.kind == VALID and original.truth["seq"] < duplicate.truth["seq"]
        assert original.value == duplicate.value
        assert original.truth["event_id"] == duplicate.truth["event_id"]


def test_the_fractions_are_honoured_roughly(records):
    kinds = Counter(r.kind for r in records)
    assert kinds[MALFORMED] / N == pytest.approx(CONFIG.bad_fraction, abs=0.02)
    assert kinds[DUPLICATE] / N == pytest.approx(CONFIG.dup_fraction, abs=0.015)
    assert [r.truth["seq"] for r in records] == list(range(N))


# -- ordering -------------------------------------------------------------------------------------------

def test_send_times_never_decrease_and_start_at_the_origin(records):
    sent = [r.truth["sent_ms"] for r in records]
    assert sent == sorted(sent) and sent[0] >= ORIGIN


def test_event_time_is_in_order_apart_from_the_configured_disorder(records):
    late_by = []
    newest: dict[str | None, int] = defaultdict(int)
    for record in (r for r in records if r.kind == VALID):
        for scope in (None, record.truth["person"]):  # across everyone, and per person
            late_by.append(newest[scope] - record.truth["ts_ms"])
            newest[scope] = max(newest[scope], record.truth["ts_ms"])
    assert max(late_by) <= CONFIG.max_disorder_ms
    assert max(late_by) > 0  # there is some disorder for watermarks to absorb


def test_without_disorder_valid_events_come_in_event_time_order():
    config = GeneratorConfig(**{**CONFIG.__dict__, "max_disorder_ms": 0})
    ts = [r.truth["ts_ms"] for r in take(generate(config), 2000) if r.kind == VALID]
    assert ts == sorted(ts)


# -- journeys -------------------------------------------------------------------------------------------

def test_every_event_type_occurs(valid_events):
    assert {event["type"] for _, event in valid_events} == set(event_types())


def test_sessions_are_separated_by_gaps_some_longer_than_30_minutes(valid_events):
    gaps = [b - a for events in by_person(valid_events).values() for (a, _), (b, _) in pairwise(events)]
    assert sum(gap > SESSION_GAP_MS for gap in gaps) > 20
    assert sum(gap < 60_000 for gap in gaps) > len(gaps) / 2  # most steps are within a session


def test_logins_link_anonymous_browsing_to_a_user_id(valid_events):
    linked = 0
    for timeline in by_person(valid_events).values():
        events = [event for _, event in timeline]
        for i, event in enumerate(events):
            if event["type"] != "login":
                continue
            ids = event["ids"]
            assert "user_id" in ids and ({"anonymous_id", "device_id"} & ids.keys())
            device = ids.get("anonymous_id") or ids.get("device_id")
            linked += any(device in e["ids"].values() and "user_id" not in e["ids"] for e in events[:i])
    assert linked > 10


def test_people_come_back_on_other_devices_and_channels(valid_events):
    devices_per_user: dict[str, set[str]] = defaultdict(set)
    channels = Counter()
    for _, event in valid_events:
        ids = event["ids"]
        channels[event.get("channel")] += 1
        if "user_id" in ids and {"anonymous_id", "device_id"} & ids.keys():
            devices_per_user[ids["user_id"]].add(ids.get("anonymous_id") or ids["device_id"])
    assert any(len(devices) > 1 for devices in devices_per_user.values())
    assert channels["web"] and channels["app"]


def test_the_crm_sends_traits_that_sometimes_conflict_with_the_web_and_app(valid_events):
    crm, own = defaultdict(dict), defaultdict(dict)
    for _, event in valid_events:
        if event["type"] == "identify":
            (crm if event["source"] == "crm" else own)[event["ids"]["user_id"]].update(event["traits"])
    assert crm and own
    assert all({"first_name", "last_name", "dob", "city", "tier"} <= traits.keys() for traits in crm.values())
    conflicts = [user for user in crm.keys() & own.keys()
                 if any(crm[user][k] != v for k, v in own[user].items() if k in crm[user])]
    assert conflicts


def test_consent_is_withdrawn_and_later_granted_again(valid_events):
    for timeline in by_person(valid_events).values():
        flags = [e["consent"]["personalization"] for _, e in timeline if e["type"] == "consent"]
        if False in flags and True in flags[flags.index(False):]:
            return
    pytest.fail("no person withdrew and then granted consent")


def test_an_erased_person_leaves_and_a_newcomer_takes_the_slot(records, valid_events):
    people = by_person(valid_events)
    erased = [person for person, timeline in people.items() if any(e["type"] == "erase" for _, e in timeline)]
    assert erased
    for person in erased:
        assert people[person][-1][1]["type"] == "erase"
    assert len(people) > CONFIG.users  # newcomers got fresh person ids


def test_purchases_carry_an_order_revenue_and_currency(valid_events):
    purchases = [event["props"] for _, event in valid_events if event["type"] == "purchase"]
    assert purchases
    for props in purchases:
        assert props["order_id"] and props["currency"] in {"EUR", "GBP", "USD"}
        assert props["revenue"] == pytest.approx(sum(i["price"] * i["quantity"] for i in props["items"]))


# -- properties over seeds and parameters ---------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32), users=st.integers(1, 30), bad=st.floats(0, 0.5), dup=st.floats(0, 0.3))
def test_any_seed_and_mix_gives_truthful_deterministic_records(seed, users, bad, dup):
    config = GeneratorConfig(seed=seed, users=users, origin_ms=ORIGIN, bad_fraction=bad, dup_fraction=dup)
    batch = list(take(generate(config), 150))
    assert batch == list(take(generate(config), 150))
    for record in batch:
        result = VALIDATOR.check(record.value, record.truth["sent_ms"])
        if record.kind == MALFORMED:
            assert isinstance(result, Rejected) and result.reason == record.truth["reason"]
        else:
            assert isinstance(result, Accepted) and result.event_id == record.truth["event_id"]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), bad=st.floats(0, 0.6), dup=st.floats(0, 0.3))
def test_the_fault_mix_leaves_the_valid_stream_unchanged(seed, bad, dup):
    clean = GeneratorConfig(seed=seed, users=20, origin_ms=ORIGIN, bad_fraction=0, dup_fraction=0)
    noisy = GeneratorConfig(seed=seed, users=20, origin_ms=ORIGIN, bad_fraction=bad, dup_fraction=dup)

    def valid(config: GeneratorConfig) -> list[tuple[bytes, int]]:
        return list(islice(((r.value, r.truth["sent_ms"]) for r in generate(config) if r.kind == VALID), 100))

    assert valid(clean) == valid(noisy)


@pytest.mark.parametrize("changes", [{"bad_fraction": 0.7, "dup_fraction": 0.3}, {"bad_fraction": -0.1},
                                     {"origin_ms": 900_000_000_000}, {"disorder_fraction": 2.0}])
def test_bad_settings_are_refused(changes):
    with pytest.raises(ValueError):
        GeneratorConfig(**{**CONFIG.__dict__, **changes})


def test_the_core_imports_neither_kafka_nor_pyarrow():
    code = ("import sys, tools.generate, tools.journeys, tools.generate_faults; "
            "assert not {'kafka', 'pyarrow'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
