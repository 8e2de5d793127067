"""Identity resolution quality against the generator's truth: `python -m tools.identity_report`.

The generator (tools/generate.py, tools/journeys.py) knows the true person behind every event. This tool
generates a dataset, runs its valid events (what `events.valid` would hold: malformed records and
redeliveries dropped, `ts_ms` derived) through the identity core (`IdentityService`, the reference semantics
of the keyed job) and compares the resolution with the truth, pairwise (as the FEBRL test does):

- **identifiers**: pairs of identifiers (typed keys, PII hashed) in one resolved person vs. in one true
  person (an identifier's true person is the one whose events carried it; identifiers seen with several
  true persons are counted in `shared_identifiers` and assigned to the most frequent);
- **events (final)**: pairs of events whose anchor identifier resolves to one person at the end;
- **events (annotated)**: the same with the person id each event was annotated with when it was processed
  (what `events.identified` carries; merges that happen later are not reflected);
- **identifiers (connected)**: the identifiers clustered by plain connectivity (every event's identifiers
  united, no merge protection, no matching): the best recall deterministic linking can reach on this data,
  and what linking everything would cost in precision.

Erased identifiers are not resolved at the end and are left out of the final measures. Blocked values
(e.g. the generator's `@example.com` emails) never link: they are not identifiers.

    python -m tools.identity_report --records 20000 --users 400 --seed 7 [--json report.json]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from tools.generate import VALID, GeneratorConfig, generate, take
from udfs.identity.engine import IdentityService
from udfs.identity.observe import observe
from udfs.identity.pii import PiiHasher
from udfs.identity.records import KafkaRecord, topic_name

ORIGIN_MS = 1_700_000_000_000
REPORT_KEY = b"identity-report-key-not-a-secret"  # any key: the report only compares hashes with each other


@dataclass(frozen=True)
class Quality:
    """Pairwise precision, recall and F1 of one clustering against the truth.

    Attributes:
        items: items clustered.
        true_pairs: pairs in one true person.
        predicted_pairs: pairs in one resolved person.
        correct_pairs: pairs in both.
    """

    items: int
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int

    @property
    def precision(self) -> float:
        """Share of predicted pairs that are true (1.0 when nothing was predicted)."""
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        """Share of true pairs predicted (1.0 when there is nothing to find)."""
        return self.correct_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Counts and rounded scores, JSON-ready."""
        return {**asdict(self), "precision": round(self.precision, 4), "recall": round(self.recall, 4),
                "f1": round(self.f1, 4)}


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pairwise(assignments: Iterable[tuple[str, str]]) -> Quality:
    """Pairwise quality of (true cluster, predicted cluster) per item, from the contingency table."""
    cells: Counter[tuple[str, str]] = Counter(assignments)
    truth: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    for (t, p), n in cells.items():
        truth[t] += n
        predicted[p] += n
    return Quality(sum(cells.values()), sum(_pairs(n) for n in truth.values()),
                   sum(_pairs(n) for n in predicted.values()), sum(_pairs(n) for n in cells.values()))


def connected_components(groups: Iterable[tuple[str, ...]]) -> dict[str, str]:
    """Item -> representative of its connected component, uniting the items of each group."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for group in groups:
        for item in group[1:]:
            parent[find(item)] = find(group[0])
        if group:
            find(group[0])
    return {x: find(x) for x in parent}


def valid_events(config: GeneratorConfig, count: int) -> list[tuple[dict[str, Any], str]]:
    """The generated dataset's valid events (first copies only) with their true person."""
    return [(orjson.loads(r.value), str(r.truth["person"]))
            for r in take(generate(config), count) if r.kind == VALID]


@dataclass
class Report:
    """What :func:`measure` found."""

    records: int
    events: int
    true_persons: int
    resolved_persons: int
    identifiers: Quality
    connected: Quality
    events_final: Quality
    events_annotated: Quality
    shared_identifiers: int
    split_true_persons: int
    mixed_resolved_persons: int
    merges: int
    refused: int
    reviews: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: v.as_dict() if isinstance(v, Quality) else v for k, v in self.__dict__.items()}


def measure(events: list[tuple[dict[str, Any], str]], records: int | None = None,
            service: IdentityService | None = None) -> Report:
    """Runs the events through the identity core and compares its resolution with the truth."""
    svc = service or IdentityService.from_files(PiiHasher(REPORT_KEY))
    identified, merges_topic = topic_name(svc.config, "identified"), topic_name(svc.config, "merges")
    seen_with: dict[str, Counter[str]] = {}
    anchors: list[tuple[str, str]] = []  # (anchor key, true person) per annotated event
    annotated: list[tuple[str, str]] = []
    kinds: Counter[str] = Counter()
    event_keys: list[tuple[str, ...]] = []
    for event, person in events:
        obs = observe(event, svc.config, svc.settings.policies, svc.settings.hasher)
        event_keys.append(obs.keys)
        for key in obs.keys:
            seen_with.setdefault(key, Counter())[person] += 1
        for out in svc.process(event):
            if not isinstance(out, KafkaRecord) or out.value is None:
                continue
            if out.topic == identified and obs.keys:
                anchors.append((obs.keys[0], person))
                annotated.append((person, out.value["person_id"]))
            elif out.topic == merges_topic:
                kinds[out.value["kind"]] += 1
    mapping = svc.mapping()
    owner = {key: counts.most_common(1)[0][0] for key, counts in seen_with.items()}
    ids = [(owner[k], p) for k, p in mapping.items() if k in owner]
    roots = connected_components(event_keys)
    connected = [(owner[k], roots[k]) for k in mapping if k in owner]
    final = [(person, mapping[key]) for key, person in anchors if key in mapping]
    truth_of: dict[str, set[str]] = {}
    persons_of: dict[str, set[str]] = {}
    for t, p in ids:
        truth_of.setdefault(t, set()).add(p)
        persons_of.setdefault(p, set()).add(t)
    def several(groups: Iterable[Counter[str] | set[str]]) -> int:
        return sum(1 for g in groups if len(g) > 1)

    return Report(records or len(events), len(events), len(truth_of), len(persons_of), pairwise(ids),
                  pairwise(connected), pairwise(final), pairwise(annotated), several(seen_with.values()),
                  several(truth_of.values()), several(persons_of.values()), kinds["merge"], kinds["refused"],
                  kinds["review"])


def generated_report(records: int, users: int, seed: int) -> Report:
    """The report of a generated dataset (deterministic: same arguments, same numbers)."""
    config = GeneratorConfig(seed=seed, users=users, origin_ms=ORIGIN_MS)
    return measure(valid_events(config, records), records)


def table(report: Report) -> str:
    """The report as a small text table."""
    rows = [("measure", "items", "true pairs", "predicted", "precision", "recall", "F1")]
    for name in ("identifiers", "connected", "events_final", "events_annotated"):
        q: Quality = getattr(report, name)
        rows.append((name, str(q.items), str(q.true_pairs), str(q.predicted_pairs), f"{q.precision:.4f}",
                     f"{q.recall:.4f}", f"{q.f1:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(f"{report.events} valid events of {report.records} records; {report.true_persons} true persons "
                 f"-> {report.resolved_persons} resolved; {report.merges} merges, {report.refused} refused links, "
                 f"{report.reviews} review candidates; "
                 f"{report.split_true_persons} true persons split, {report.mixed_resolved_persons} resolved "
                 f"persons mixing true ones, {report.shared_identifiers} identifiers seen with several persons")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Prints the report (and writes it as JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m tools.identity_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000, help="generated records (default 20000)")
    parser.add_argument("--users", type=int, default=400, help="person slots of the generator (default 400)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    report = generated_report(args.records, args.users, args.seed)
    print(table(report))
    if args.json:
        args.json.write_bytes(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
