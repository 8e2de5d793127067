"""Identity resolution quality against the generator's truth (tools/identity_report.py), with thresholds.

Mirrors the FEBRL quality test: a deterministic generated dataset goes through the whole identity core and
the resolution is compared pairwise with the true persons. The numbers for larger runs are in
docs/identity.md ("Measured quality").
"""

from __future__ import annotations

import pytest

from tools.identity_report import Quality, connected_components, generated_report, pairwise

# (records, users, seed) -> minimum (precision, recall, F1) of identifiers and of events (final)
MIN_QUALITY = {(8000, 200, 3): ((0.99, 0.72, 0.84), (0.99, 0.90, 0.95))}


def test_pairwise_counts_pairs_from_the_contingency_table() -> None:
    # truth: {a, b, c}, {d}; predicted: {a, b}, {c, d}
    q = pairwise([("T1", "P1"), ("T1", "P1"), ("T1", "P2"), ("T2", "P2")])
    assert q == Quality(items=4, true_pairs=3, predicted_pairs=2, correct_pairs=1)
    assert (q.precision, q.recall) == (0.5, pytest.approx(1 / 3))
    assert pairwise([("T", "P")]).f1 == 1.0  # nothing to find, nothing predicted


def test_connected_components_unite_every_group() -> None:
    roots = connected_components([("a", "b"), ("c",), ("b", "d"), ("e", "c")])
    assert roots["a"] == roots["b"] == roots["d"] and roots["c"] == roots["e"] != roots["a"]


@pytest.mark.parametrize("dataset", sorted(MIN_QUALITY))
def test_resolution_quality_on_generated_truth(dataset: tuple[int, int, int]) -> None:
    report = generated_report(*dataset)
    print(report.as_dict())
    (ip, ir, if1), (ep, er, ef1) = MIN_QUALITY[dataset]
    ids, events = report.identifiers, report.events_final
    assert ids.true_pairs > 100 and report.merges > 10, "the dataset must exercise linking"
    assert (ids.precision, ids.recall, ids.f1) >= (ip, 0, 0) and ids.recall >= ir and ids.f1 >= if1
    assert events.precision >= ep and events.recall >= er and events.f1 >= ef1
    # merge protection costs no reachable recall here and buys precision over linking everything
    assert ids.recall >= report.connected.recall - 0.02 and ids.precision >= report.connected.precision
    assert report.mixed_resolved_persons == 0
