"""Profiles: policies, provenance, CRDT laws, and the order-independence guarantee of the whole core.

Guarantee proven here (docs/identity.md): for any finite set of events without `erase`, processed in any
order and with any redelivery, the final identifier → person mapping, the person ids, the refused links,
and every profile (values, provenance, consent) are identical — as long as no connected component reaches
`max_component_identifiers` and no blocking key exceeds `max_block_size` (both far above these tests).
Outputs along the way (annotations, merge records, versions) do depend on the order.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udfs.identity.config import load_profile_policies
from udfs.identity.engine import IdentityService
from udfs.identity.pii import PiiHasher
from udfs.identity.profile import Candidate, ProfileState

HASHER = PiiHasher(b"unit-test-key-0123456789")
POLICIES = load_profile_policies()
T0 = 1_700_000_000_000


def one_person(events: list[dict[str, Any]]) -> dict[str, Any]:
    svc = IdentityService.from_files(HASHER)
    for e in events:
        svc.process(e)
    (profile,) = svc.profiles().values()
    return profile


def identify(eid: str, ts: int, source: str = "web", etype: str = "identify",
             **traits: Any) -> dict[str, Any]:
    return {"event_id": eid, "type": etype, "ts": T0 + ts, "source": source, "ids": {"user_id": "u1"},
            "traits": traits}


def test_source_priority_beats_recency_and_keeps_provenance() -> None:
    prof = one_person([identify("e1", 0, "crm", city="Berlin"), identify("e2", 50, "web", city="Bonn")])
    assert prof["attributes"]["city"] == "Berlin"
    assert prof["provenance"]["city"] == {"policy": "source_priority", "source": "crm", "ts": T0,
                                          "event_id": "e1"}


def test_most_recent_first_seen_non_empty_and_null_clears() -> None:
    prof = one_person([
        identify("e1", 0, plan="free", signup_at="2024-01-01", language="de"),
        identify("e2", 10, plan="gold", signup_at="2024-05-01", language=""),
        identify("e3", 10, timezone="Europe/Berlin"),
        identify("e4", 20, timezone=None),
    ])
    attrs = prof["attributes"]
    assert attrs["plan"] == "gold" and attrs["signup_at"] == "2024-01-01" and attrs["language"] == "de"
    assert "timezone" not in attrs  # the most recent value is null: cleared


def test_tie_on_time_is_broken_by_event_id() -> None:
    prof = one_person([identify("b", 0, plan="B"), identify("a", 0, plan="A")])
    assert prof["attributes"]["plan"] == "B"


def test_sum_max_min_from_props_and_union() -> None:
    purchases = [{"event_id": f"o{i}", "type": "purchase", "ts": T0 + i, "ids": {"user_id": "u1"},
                  "props": {"revenue": r}} for i, r in enumerate([10, 2.5, 7])]
    prof = one_person([*purchases, purchases[0], identify("e9", 0, interests=["shoes", "hats"]),
                       identify("e10", 1, interests="shoes")])
    attrs = prof["attributes"]
    assert attrs["lifetime_revenue"] == 19.5  # the redelivered o0 counts once
    assert attrs["max_order_value"] == 10 and attrs["min_order_value"] == 2.5
    assert attrs["interests"] == ["hats", "shoes"]
    assert prof["provenance"]["lifetime_revenue"]["count"] == 3


def test_consent_is_kept_per_purpose_and_emitted() -> None:
    svc = IdentityService.from_files(HASHER)
    svc.process({"event_id": "c1", "type": "consent", "ts": T0, "ids": {"user_id": "u1"},
                 "consent": {"personalization": True, "marketing": False}})
    out = svc.process({"event_id": "c2", "type": "consent", "ts": T0 + 5, "ids": {"user_id": "u1"},
                       "consent": {"personalization": False}})
    changelog = [o.value for o in out if getattr(o, "topic", None) == "profiles"]
    assert changelog[0]["consent"] == {"marketing": False, "personalization": False}
    assert changelog[0]["changed"] == ["consent.personalization"]
    redis = [o for o in out if getattr(o, "op", None) == "replace_hash"]
    assert redis[0].fields["consent"] == '{"marketing":false,"personalization":false}'


def test_profile_outputs_shapes() -> None:
    svc = IdentityService.from_files(HASHER)
    out = svc.process(identify("e1", 0, "crm", city="Berlin", plan="gold"))
    redis, dynamo, changelog = (next(o for o in out if o.as_dict()["kind"] == k)
                                for k in ("redis", "dynamodb", "kafka"))
    pid = svc.lookup("user_id:u1")
    version = T0 * 1000  # event time, packed with a per-millisecond counter
    assert redis.as_dict() == {"kind": "redis", "op": "set", "key": "tagstream:alias:user_id:u1",
                               "value": pid, "version": version, "expires_at_ms": None}
    hashes = [o for o in out if getattr(o, "op", None) == "replace_hash"]
    assert hashes[0].key == f"tagstream:profile:{pid}"
    assert hashes[0].fields["attr:city"] == '"Berlin"' and hashes[0].fields["version"] == str(version)
    assert dynamo.item["person_id"] == pid and dynamo.item["version"] == version
    assert dynamo.item["expires_at"] == (T0 // 1000) + 400 * 86400
    assert dynamo.version == hashes[0].version == version
    assert dynamo.expires_at_ms == hashes[0].expires_at_ms == dynamo.item["expires_at"] * 1000
    assert dynamo.item["provenance"]["plan"]["source"] == "crm"
    profiles = [o for o in out if getattr(o, "topic", None) == "profiles"]
    assert profiles[0].key == pid and profiles[0].value["changed"] == ["city", "plan"]
    assert changelog.topic in ("profiles", "events.identified")


# --- CRDT laws of ProfileState -------------------------------------------------------------------

values = st.one_of(st.integers(-5, 5), st.sampled_from(["x", "y", ""]), st.none(),
                   st.floats(-3, 3, allow_nan=False), st.lists(st.sampled_from(["p", "q", "r"]), max_size=2))
candidates = st.builds(Candidate, values, st.integers(0, 3), st.sampled_from(["e1", "e2", "e3", "e4"]),
                       st.sampled_from(["crm", "web", "app"]))
ATTRS = ["city", "plan", "language", "signup_at", "max_order_value", "min_order_value", "lifetime_revenue",
         "interests"]
contribs = st.lists(st.tuples(st.sampled_from(ATTRS), candidates), max_size=8)


def state_of(items: list[tuple[str, Candidate]]) -> ProfileState:
    state = ProfileState()
    for name, cand in items:
        # one event offers one value per attribute: derive the value from (attribute, event id)
        state.add(POLICIES.for_trait(name), cand, POLICIES)
    return state


def consistent(items: list[tuple[str, Candidate]]) -> list[tuple[str, Candidate]]:
    """Keeps the first value per (attribute, event id), as real events would carry."""
    seen: dict[tuple[str, str], Candidate] = {}
    for name, cand in items:
        seen.setdefault((name, cand.event_id), cand)
    return [(n, seen[(n, c.event_id)]) for n, c in items]


@settings(max_examples=60, deadline=None)
@given(contribs, contribs, contribs)
def test_profile_merge_is_associative_commutative_idempotent(a: list[Any], b: list[Any],
                                                             c: list[Any]) -> None:
    items = consistent(a + b + c)
    a, b, c = items[:len(a)], items[len(a):len(a) + len(b)], items[len(a) + len(b):]
    sa, sb, sc = state_of(a), state_of(b), state_of(c)

    def merged(*states: ProfileState) -> dict[str, Any]:
        out = ProfileState()
        for s in states:
            out.merge(s, POLICIES)
        return out.resolve(POLICIES)

    ab_c = state_of(a)
    ab_c.merge(sb, POLICIES)
    ab_c.merge(sc, POLICIES)
    bc = state_of(b)
    bc.merge(sc, POLICIES)
    a_bc = state_of(a)
    a_bc.merge(bc, POLICIES)
    assert ab_c.resolve(POLICIES) == a_bc.resolve(POLICIES) == merged(sc, sb, sa)
    assert merged(sa, sa) == sa.resolve(POLICIES)
    assert state_of(items).resolve(POLICIES) == ab_c.resolve(POLICIES)  # adding one by one == merging


# --- the whole core under permutations -----------------------------------------------------------

ID_POOL = [("user_id", "u1"), ("user_id", "u2"), ("email", "Ann@Shop.io"), ("email", "bob@shop.io"),
           ("phone", "0171 2345678"), ("device_id", "d1"), ("device_id", "d2"), ("device_id", "d3"),
           ("anonymous_id", "a1"), ("anonymous_id", "a2"), ("anonymous_id", "a3")]
TRAITS = {
    "city": st.sampled_from(["Berlin", "Bonn", None]),
    "plan": st.sampled_from(["free", "gold", ""]),
    "language": st.sampled_from(["de", "en", ""]),
    "signup_at": st.sampled_from(["2024-01-01", "2023-06-01"]),
    "interests": st.lists(st.sampled_from(["shoes", "hats", "bags"]), max_size=2),
    "first_name": st.sampled_from(["Anna", "Ana", "Bob"]),
    "last_name": st.sampled_from(["Schmidt", "Schmitt"]),
    "dob": st.sampled_from(["1980-02-03"]),
    "zip": st.sampled_from(["10115", "10117"]),
}


@st.composite
def event_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 14))
    events = []
    for i in range(n):
        etype = draw(st.sampled_from(["identify", "identify", "login", "page_view", "purchase", "consent"]))
        event: dict[str, Any] = {
            "event_id": f"e{i:02d}", "type": etype, "ts": T0 + draw(st.integers(0, 6)) * 1000,
            "source": draw(st.sampled_from(["crm", "web", "app"])),
            "ids": dict(draw(st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=3))),
        }
        if etype == "identify":
            keys = draw(st.lists(st.sampled_from(sorted(TRAITS)), max_size=5, unique=True))
            # names and dob most of the time, so probabilistic matches happen often
            keys = sorted(set(keys) | ({"first_name", "last_name", "dob"} if draw(st.booleans()) else set()))
            event["traits"] = {k: draw(TRAITS[k]) for k in keys}
        elif etype == "purchase":
            event["props"] = {"revenue": draw(st.sampled_from([1, 2.5, 0.1, 0.2]))}
        elif etype == "consent":
            event["consent"] = {"personalization": draw(st.booleans())}
        events.append(event)
    return events


def final_state(events: list[dict[str, Any]]) -> tuple[Any, ...]:
    svc = IdentityService.from_files(HASHER)
    types = {n: replace(t, max_per_person={"user_id": 1, "device_id": 2, "email": 1}.get(n, t.max_per_person))
             for n, t in svc.config.identifier_types.items()}
    matching = replace(svc.config.matching, upper_threshold=10.0, lower_threshold=5.0, min_fields=2)
    config = replace(svc.config, identifier_types=types, matching=matching)
    svc.settings = replace(svc.settings, config=config)
    for e in events:
        svc.process(e)
    return svc.mapping(), svc.profiles(), svc.refusals()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_sets(), st.randoms(use_true_random=False), st.data())
def test_any_permutation_and_redelivery_gives_identical_identity_and_profiles(
        events: list[dict[str, Any]], rnd: Any, data: st.DataObject) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    redelivered = data.draw(st.lists(st.sampled_from(events), max_size=3))
    assert final_state(events) == final_state(shuffled + redelivered)
