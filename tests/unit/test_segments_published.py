"""Published definitions (the `segment-definitions` records) and the CLI's publishing plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.segments_cli import lookup, person_of, plan
from udfs.segments import DefinitionError, SegmentsConfig, load_files, person_id_of
from udfs.segments.definitions import EXAMPLES_DIR
from udfs.segments.published import definition_set, definition_text, parse_published

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))
FREQUENT = load_files([EXAMPLES_DIR / "frequent_searcher.yaml"])[0]


def test_records_round_trip_and_tombstones_remove():
    text = definition_text(FREQUENT)
    assert parse_published("frequent_searcher", text) == FREQUENT
    docs, issues = definition_set([("frequent_searcher", text), ("gone", None)], base=[{**FREQUENT, "name": "gone"}])
    assert [d["name"] for d in docs] == ["frequent_searcher"] and issues == []


def test_unreadable_record_keeps_the_previous_document():
    docs, issues = definition_set([("frequent_searcher", "name: [unclosed")], previous={"frequent_searcher": FREQUENT})
    assert docs == [FREQUENT] and [i.name for i in issues] == ["frequent_searcher"]
    _, issues = definition_set([("other", definition_text(FREQUENT))])
    assert "differs from the definition's name" in issues[0].message


def test_plan_publishes_referenced_segments_first_and_only_changes():
    changes = plan({}, EXAMPLES, prune=False)
    order = list(changes)
    assert order.index("recent_purchaser") < order.index("gold_window_shopper")
    assert order[-1] == "homepage_banner"  # placements after every segment
    assert plan(changes, EXAMPLES, prune=False) == {}
    pruned = plan({**changes, "old": definition_text({**FREQUENT, "name": "old"})}, EXAMPLES, prune=True)
    assert pruned == {"old": None}


def test_plan_refuses_an_invalid_set(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: segment\nname: uses_missing\ncondition: {segment: nowhere}\n", encoding="utf-8")
    with pytest.raises(DefinitionError, match="uses_missing"):
        plan({}, [bad], prune=False)


class FakeRedis:
    def __init__(self, fields: dict[str, str]):
        self.fields = fields

    def get_hash(self, key: str) -> dict[str, str]:
        return self.fields


def test_lookup_drops_expired_tags():
    person = person_of("user_id:u1", SegmentsConfig())
    assert person == person_id_of({"ids": {"user_id": "u1"}})
    redis = FakeRedis({"tag:a": '{"expires_at": 100}', "tag:b": '{"expires_at": null}', "tag:c": '{"expires_at": 300}',
                       "consent": "true"})
    view = lookup(redis, person, now_ms=200)  # type: ignore[arg-type]
    assert set(view["tags"]) == {"b", "c"} and view["consent"] is True
