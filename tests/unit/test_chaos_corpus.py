"""The hostile corpus: deterministic, large enough, and each case's declared outcome is the contract's (tier 1)."""

from __future__ import annotations

import pytest

from tools.chaos.corpus import DUPLICATE, VALID, hostile_corpus, summary
from udfs.contract import REASONS, Accepted, EventValidator

NOW = 1_795_000_000_000


@pytest.fixture(scope="module")
def cases():
    return hostile_corpus(NOW)


def test_corpus_is_large_deterministic_and_covers_every_reason(cases):
    assert len(cases) >= 1000
    assert [(c.value, c.expect) for c in cases] == [(c.value, c.expect) for c in hostile_corpus(NOW)]
    assert set(summary(cases)) == {*REASONS, VALID, DUPLICATE}
    assert any(c.value is None for c in cases)  # a tombstone
    assert any(c.value and len(c.value) >= 1 << 20 for c in cases)  # 1 MiB payloads


def test_every_case_gets_its_declared_outcome_from_the_validator(cases):
    validator, seen, wrong = EventValidator(), set(), []
    for i, case in enumerate(cases):
        result = validator.check(case.value or b"", NOW)
        if isinstance(result, Accepted):
            result.to_json()  # an accepted event must be serializable again (no poison pill)
            got = DUPLICATE if result.event_id in seen else VALID
            seen.add(result.event_id)
            ok = got == case.expect and result.event_id == case.event_id
        else:
            got, ok = result.reason, result.reason == case.expect
        if not ok:
            wrong.append(f"#{i} {case.family}: expected {case.expect}, got {got}")
    assert wrong == []
