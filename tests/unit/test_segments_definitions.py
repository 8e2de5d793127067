"""Segment definitions: schema, examples, compile errors, versions, tolerant hot-reload compile (tier 1)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.segments import DefinitionError, compile_catalog, load_directory, parse_documents, update_catalog
from udfs.segments.definitions import EXAMPLES_DIR, load_segment_schema, schema_errors, version_of
from udfs.segments.matching import Ev

CONSTRUCTS = {"count", "sum", "distinct", "recent", "dwell", "absent", "sequence", "not_followed_by", "trait",
              "segment", "all", "any", "not"}


def constructs(cond):
    found = set()
    if isinstance(cond, dict):
        found |= set(cond) & CONSTRUCTS
        for value in cond.values():
            found |= constructs(value)
    elif isinstance(cond, list):
        for value in cond:
            found |= constructs(value)
    return found


def one(text: str):
    return parse_documents(text)[0]


def test_schema_is_valid_json_schema_2020_12():
    schema = load_segment_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_examples_compile_and_cover_every_construct():
    docs = load_directory()
    catalog = compile_catalog(docs)
    assert len(docs) == len(list(EXAMPLES_DIR.glob("*.yaml")))
    used = set().union(*(constructs(d.get("condition")) for d in docs))
    assert used >= CONSTRUCTS - {"any"}  # `any` is shown in docs/segments.md
    assert catalog.placements["homepage_banner"].slot == "homepage_banner"
    assert catalog.segments["viewed_product"].tag(("p-1",)) == "viewed_product:p-1"
    for doc in docs:
        validator = jsonschema.Draft202012Validator(load_segment_schema())
        assert list(validator.iter_errors(doc)) == [], doc["name"]


def seg(condition: str, head: str = "name: x\n") -> str:
    return f"kind: segment\n{head}condition: {condition}"


SEARCH = "match: {type: search}, within: 5m"
BOUND = "match: {type: search, props: {a: '{p}'}}, within: 5m"


@pytest.mark.parametrize("text, needle", [
    (seg("{recent: {match: {type: nope}, within: 5m}}"), "unknown event type"),
    (seg("{recent: {match: {type: search}, within: 5x}}"), "schema"),
    (seg(f"{{count: {{{SEARCH}}}}}"), "schema"),
    (seg(f"{{count: {{{SEARCH}, gte: 1, gt: 2}}}}"), "schema"),
    (seg(f"{{recent: {{{SEARCH}}}, not: {{}}}}"), "schema"),
    (seg(f"{{recent: {{{SEARCH}}}}}", "name: X\n"), "schema"),
    (seg("{recent: {match: {type: search, props: {q: '{p}'}}, within: 5m}}"), "not a parameter"),
    (seg(f"{{recent: {{{SEARCH}}}}}", "name: x\nparams: [p]\n"), "needs a filter that binds"),
    (seg(f"{{recent: {{{BOUND}}}}}", "name: x\nparams: [p]\ntag: 'y:{p}'\n"), "must be the name"),
    (seg("{recent: {match: {type: search, props: {a: '{p}', b: '{q}'}}, within: 5m}}",
         "name: x\nparams: [p, q]\ntag: 'x:{p}'\n"), "missing q"),
    (seg(f"{{recent: {{{BOUND}}}}}", "name: x\nparams: [p, q]\n"), "all of them or none"),
    (seg(f"{{all: [{{recent: {{{BOUND}}}}}, {{absent: {{{BOUND.replace('search', 'purchase')}}}}}]}}",
         "name: x\nparams: [p]\n"), "absent cannot bind"),
    (seg("{segment: missing}"), "undefined or invalid"),
    (seg("{sum: {match: {type: purchase}, field: revenue, within: 1d, gte: 0}}"), "schema"),
])
def test_invalid_definitions_are_rejected_with_a_reason(text, needle):
    with pytest.raises(DefinitionError) as err:
        compile_catalog([one(text)])
    assert needle in str(err.value)
    assert err.value.problems[0][0] in ("x", "X")


def test_reference_cycles_are_rejected():
    docs = parse_documents("""
kind: segment
name: a
condition: {all: [{segment: b}, {recent: {match: {type: search}, within: 1m}}]}
---
kind: segment
name: b
condition: {any: [{segment: a}, {recent: {match: {type: login}, within: 1m}}]}
""")
    with pytest.raises(DefinitionError) as err:
        compile_catalog(docs)
    assert {name for name, _ in err.value.problems} == {"a", "b"}
    assert "cycle" in str(err.value)


def test_placement_errors():
    base = "kind: segment\nname: s\ncondition: {recent: {match: {type: search}, within: 1m}}"
    bad = [
        "kind: placement\nname: p\nrules: [{content: a}, {when: {segment: s}, content: b}]",
        "kind: placement\nname: p\nrules: [{when: {segment: nope}, content: a}]",
        "kind: placement\nname: p\nrules: [{when: {segment: s}, content: 'c:{category}'}]",
    ]
    for text in bad:
        with pytest.raises(DefinitionError):
            compile_catalog([one(base), one(text)])


def test_versions_are_content_hashes_that_follow_references():
    a = one("kind: segment\nname: a\ncondition: {recent: {match: {type: search}, within: 1m}}")
    b = one("kind: segment\nname: b\ncondition: {segment: a}")
    reordered = json.loads(json.dumps(a))
    assert version_of(a) == version_of(dict(reversed(list(reordered.items()))))
    v1 = compile_catalog([a, b])
    a2 = one("kind: segment\nname: a\ncondition: {recent: {match: {type: search}, within: 2m}}")
    v2 = compile_catalog([a2, b])
    assert v1.segments["a"].version != v2.segments["a"].version
    assert v1.segments["b"].version != v2.segments["b"].version  # b's meaning changed with a
    assert v1.version != v2.version
    again = compile_catalog([b, a])
    assert again.segments["b"].version == v1.segments["b"].version and again.version == v1.version


def test_equal_conditions_share_one_leaf_and_events_are_indexed_by_type():
    docs = parse_documents("""
kind: segment
name: a
condition: {recent: {match: {type: search}, within: 1m}}
---
kind: segment
name: b
condition:
  all: [{recent: {match: {type: search}, within: 1m}}, {recent: {match: {type: login}, within: 1h}}]
""")
    catalog = compile_catalog(docs)
    assert len(catalog.leaves) == 2
    assert set(catalog.by_type) == {"search", "login"}
    assert catalog.retention == {"search": 60_000, "login": 3_600_000}


def test_update_catalog_keeps_the_previous_version_of_a_broken_definition():
    good = one("kind: segment\nname: a\ncondition: {recent: {match: {type: search}, within: 1m}}")
    other = one("kind: segment\nname: c\ncondition: {recent: {match: {type: login}, within: 1m}}")
    previous = compile_catalog([good, other])
    broken = one("kind: segment\nname: a\ncondition: {recent: {match: {type: nope}, within: 1m}}")
    new_one = one("kind: segment\nname: n\ncondition: {segment: ghost}")
    catalog, issues = update_catalog(previous, [broken, other, new_one], updated_at=123)
    assert catalog.segments["a"].version == previous.segments["a"].version
    assert "n" not in catalog.segments and "c" in catalog.segments
    assert [(i.name, i.kept_version) for i in issues] == [("a", previous.segments["a"].version), ("n", None)]
    assert catalog.updated_at == 123
    assert issues[0].as_dict()["message"].startswith("unknown event type")


def test_schema_errors_point_at_the_problem():
    errors = schema_errors({"kind": "segment", "name": "x", "condition": {"recent": {"within": "1m"}}})
    assert errors and any("match" in e for e in errors)


# ---------------------------------------------------------------- the props-equality filter index
_VALUES = st.one_of(st.sampled_from(["a", "b", "c"]), st.sampled_from([1, 2]), st.sampled_from([1.0, 2.5]),
                    st.booleans())
_PREDICATES = st.one_of(_VALUES, st.fixed_dictionaries({"ne": _VALUES}), st.fixed_dictionaries({"gte": st.just(1)}),
                        st.fixed_dictionaries({"in": st.lists(_VALUES, min_size=1, max_size=2)}))


@settings(max_examples=200, deadline=None)
@given(filters=st.lists(st.dictionaries(st.sampled_from(["f", "g"]), _PREDICATES, max_size=2), min_size=1,
                        max_size=8),
       props=st.dictionaries(st.sampled_from(["f", "g", "h"]), _VALUES, max_size=3))
def test_filter_index_tries_every_filter_that_accepts_in_order(filters, props):
    docs = [{"kind": "segment", "name": f"s{i}",
             "condition": {"count": {"match": {"type": "page_view", "props": spec}, "within": "1m", "gte": 1}}}
            for i, spec in enumerate(filters)]
    catalog = compile_catalog(docs)
    ev = Ev(0, "e", "page_view", props)
    everything = [match for match, _ in catalog.by_type["page_view"]]
    assert catalog.routes is not None
    tried = [match for _, match, _ in catalog.routes["page_view"].candidates(props)]
    assert [m for m in tried if m.accepts(ev)] == [m for m in everything if m.accepts(ev)]
    assert tried == [m for m in everything if m in tried]  # the catalog's order


def test_filter_index_skips_filters_on_other_values():
    docs = [{"kind": "segment", "name": f"in_{c}",
             "condition": {"count": {"match": {"type": "page_view", "props": {"category": c}}, "within": "1m",
                                     "gte": 1}}} for c in ("shoes", "books", "tv")]
    catalog = compile_catalog(docs)
    assert catalog.routes is not None
    tried = catalog.routes["page_view"].candidates({"category": "books"})
    assert [match.text for _, match, _ in tried] == ['page_view[category="books"]']
