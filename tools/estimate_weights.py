"""Offline estimation of Fellegi-Sunter m/u probabilities for the identity job's matcher.

Two methods over the candidate pairs the job itself would compare (same features, same blocking keys):

- `em`: expectation-maximization over unlabelled pairs (latent match class, conditional independence of
  fields, multi-level outcomes);
- `labelled`: direct frequencies from labelled pairs — m from the known matches, u from the candidate
  pairs that are not matches (Laplace-smoothed) — plus the upper threshold that maximizes F1.

Input records are JSON lines, either contract events (`event_id`, `traits`, `ids`) or `{"id", "traits"}`.
Labelled matches are CSV lines `id_a,id_b`. The output is a YAML weights file that `identity.yaml`
references with `matching.weights_file`.

Usage:
    python -m tools.estimate_weights em --records recs.jsonl --out weights.yaml
    python -m tools.estimate_weights labelled --records recs.jsonl --matches pairs.csv --out weights.yaml
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from udfs.identity.config import IDENTITY_CONFIG_PATH, IdentityConfig, MatchingConfig, load_identity_config
from udfs.identity.matching import blocking_keys, comparison_vector, extract_features, score_vector
from udfs.identity.pii import PII_KEY_ENV, PiiHasher

MISSING = -1
Pattern = tuple[int, ...]


@dataclass(frozen=True)
class Estimate:
    """Estimated parameters.

    Attributes:
        method: `em` or `labelled`.
        m: field → P(outcome | match) per outcome.
        u: field → P(outcome | non-match) per outcome.
        prevalence: share of matches among the candidate pairs.
        pairs: number of candidate pairs used.
        iterations: EM iterations run (0 for labelled).
        upper_threshold: threshold maximizing F1 on the labelled pairs (labelled only).
        observed: fields compared in at least one pair.
    """

    method: str
    m: dict[str, list[float]]
    u: dict[str, list[float]]
    prevalence: float
    pairs: int
    iterations: int = 0
    upper_threshold: float | None = None
    observed: frozenset[str] = frozenset()

    def to_yaml_dict(self) -> dict[str, Any]:
        """The weights file content (fields never observed on both sides of a pair are left out, so the
        configured m/u stay in force for them)."""
        fields = {}
        for name in self.m:
            if name not in self.observed:
                continue
            weights = [round(math.log2(a / b), 4) for a, b in zip(self.m[name], self.u[name], strict=True)]
            fields[name] = {"m": [round(x, 6) for x in self.m[name]],
                            "u": [round(x, 6) for x in self.u[name]], "weights": weights}
        out: dict[str, Any] = {"method": self.method, "pairs": self.pairs,
                               "prevalence": round(self.prevalence, 6), "iterations": self.iterations,
                               "fields": fields}
        if self.upper_threshold is not None:
            out["suggested_upper_threshold"] = round(self.upper_threshold, 3)
        return out


def load_records(path: Path, matching: MatchingConfig, hasher: PiiHasher,
                 country_code: str) -> dict[str, dict[str, str]]:
    """Reads JSON-lines records and returns id → features."""
    out: dict[str, dict[str, str]] = {}
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = orjson.loads(line)
            rid = rec.get("event_id", rec.get("id"))
            if rid is None:
                raise ValueError(f"{path}:{n}: a record needs `event_id` or `id`")
            out[str(rid)] = extract_features(rec, matching, hasher, country_code)
    return out


def load_matches(path: Path) -> set[frozenset[str]]:
    """Reads labelled matches (CSV `id_a,id_b`; a header line is skipped)."""
    pairs: set[frozenset[str]] = set()
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            if len(row) >= 2 and row[0].strip() and row[0].strip().lower() not in ("id_a", "a", "left"):
                pairs.add(frozenset((row[0].strip(), row[1].strip())))
    return pairs


def candidate_pairs(records: Mapping[str, Mapping[str, str]],
                    matching: MatchingConfig) -> set[tuple[str, str]]:
    """Pairs sharing a blocking key, as the job would compare them (blocks over `max_block_size` skipped)."""
    blocks: dict[str, list[str]] = {}
    for rid, feats in records.items():
        if len(feats) >= matching.min_fields:
            for key in blocking_keys(feats, matching):
                blocks.setdefault(key, []).append(rid)
    pairs: set[tuple[str, str]] = set()
    for ids in blocks.values():
        if len(ids) > matching.max_block_size:
            continue
        ordered = sorted(ids)
        pairs.update((a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:])
    return pairs


def patterns(records: Mapping[str, Mapping[str, str]], pairs: Iterable[tuple[str, str]],
             matching: MatchingConfig) -> Counter[Pattern]:
    """Counts comparison patterns (outcome per field in config order, -1 when missing)."""
    names = list(matching.fields)
    counts: Counter[Pattern] = Counter()
    for a, b in pairs:
        vector = comparison_vector(records[a], records[b], matching)
        counts[tuple(vector.get(n, MISSING) for n in names)] += 1
    return counts


def _normalize(counts: Sequence[float], smoothing: float) -> list[float]:
    total = sum(counts) + smoothing * len(counts)
    probs = [(c + smoothing) / total for c in counts]
    return [min(max(p, 1e-6), 1 - 1e-6) for p in probs]


def frequencies(counts: Mapping[Pattern, int], matching: MatchingConfig,
                smoothing: float) -> list[list[float]]:
    """Per-field outcome distributions of a set of patterns (Laplace-smoothed)."""
    acc = [[0.0] * s.outcomes for s in matching.fields.values()]
    for pat, c in counts.items():
        for f, level in enumerate(pat):
            if level != MISSING:
                acc[f][level] += c
    return [_normalize(a, smoothing) for a in acc]


def em(counts: Mapping[Pattern, int], matching: MatchingConfig, prevalence: float = 0.1, max_iter: int = 200,
       tol: float = 1e-7, fixed_u: list[list[float]] | None = None) -> Estimate:
    """Fellegi-Sunter EM over comparison patterns.

    Args:
        counts: pattern → number of pairs.
        matching: the matcher config (fields and their outcome counts; m/u there are not used).
        prevalence: initial share of matches.
        max_iter: iteration cap.
        tol: stop when no parameter moves more than this.
        fixed_u: u estimated elsewhere (e.g. on random pairs) and kept fixed; None estimates u too.

    The class whose level-0 (full agreement) probabilities are higher on average is reported as the
    match class, so a label-swapped optimum (matches in the majority) is still read correctly.
    """
    specs = list(matching.fields.values())
    items = [(p, c) for p, c in counts.items() if any(x != MISSING for x in p)]
    m = [_normalize([0.9 * 0.2 ** i for i in range(s.outcomes)], 0.0) for s in specs]
    u = [list(x) for x in fixed_u] if fixed_u else frequencies(dict(items), matching, 1.0)
    p = prevalence
    total = sum(c for _, c in items)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
        m_acc = [[0.0] * s.outcomes for s in specs]
        u_acc = [[0.0] * s.outcomes for s in specs]
        matched = 0.0
        for pat, c in items:
            lm, lu = p, 1 - p
            for f, level in enumerate(pat):
                if level != MISSING:
                    lm *= m[f][level]
                    lu *= u[f][level]
            w = lm / (lm + lu)
            matched += c * w
            for f, level in enumerate(pat):
                if level != MISSING:
                    m_acc[f][level] += c * w
                    u_acc[f][level] += c * (1 - w)
        new_p = min(max(matched / total, 1e-6), 1 - 1e-6)
        new_m = [_normalize(acc, 0.01) for acc in m_acc]
        new_u = u if fixed_u else [_normalize(acc, 0.01) for acc in u_acc]
        delta = max([abs(new_p - p)] + [abs(a - b) for x, y in zip(new_m + new_u, m + u, strict=True)
                                        for a, b in zip(x, y, strict=True)])
        p, m, u = new_p, new_m, new_u
        if delta < tol:
            break
    if not fixed_u and sum(mf[0] - uf[0] for mf, uf in zip(m, u, strict=True)) < 0:
        m, u, p = u, m, 1 - p
    names = [s.name for s in specs]
    return Estimate("em", dict(zip(names, m, strict=True)), dict(zip(names, u, strict=True)), p, total,
                    iterations, observed=observed_fields(counts, matching))


def observed_fields(counts: Mapping[Pattern, int], matching: MatchingConfig) -> frozenset[str]:
    """Fields present on both sides of at least one pair."""
    names = list(matching.fields)
    return frozenset(names[f] for pat in counts for f, level in enumerate(pat) if level != MISSING)


def random_pairs(ids: Sequence[str], n: int, seed: int = 0) -> set[tuple[str, str]]:
    """Up to n distinct random pairs (seeded, so runs are reproducible)."""
    rng, ordered = random.Random(seed), sorted(ids)
    out: set[tuple[str, str]] = set()
    if len(ordered) < 2:
        return out
    for _ in range(n):
        a, b = rng.sample(ordered, 2)
        out.add((min(a, b), max(a, b)))
    return out


def labelled(records: Mapping[str, Mapping[str, str]], pairs: set[tuple[str, str]],
             matches: set[frozenset[str]], matching: MatchingConfig, u_pairs: set[tuple[str, str]],
             smoothing: float = 0.5) -> Estimate:
    """Direct estimation: m over every labelled match, u over `u_pairs` that are not matches (random pairs
    are the unbiased choice: blocked pairs agree on their blocking fields by construction)."""
    specs = list(matching.fields.values())
    match_pairs = [(a, b) for a, b in (sorted(pair) for pair in matches if len(pair) == 2)
                   if a in records and b in records]
    non_matches = [pair for pair in u_pairs if frozenset(pair) not in matches]
    match_counts = patterns(records, match_pairs, matching)
    m = frequencies(match_counts, matching, smoothing)
    u = frequencies(patterns(records, non_matches, matching), matching, smoothing)
    est = Estimate("labelled", {s.name: m[f] for f, s in enumerate(specs)},
                   {s.name: u[f] for f, s in enumerate(specs)},
                   len([p for p in pairs if frozenset(p) in matches]) / max(len(pairs), 1), len(pairs))
    threshold = best_threshold(records, pairs, matches, with_weights(matching, est))
    return Estimate(est.method, est.m, est.u, est.prevalence, est.pairs, 0, threshold,
                    observed_fields(match_counts, matching))


def with_weights(matching: MatchingConfig, est: Estimate) -> MatchingConfig:
    """A copy of the matcher config with estimated m/u."""
    from dataclasses import replace

    fields = {n: replace(s, m=tuple(est.m[n]), u=tuple(est.u[n])) for n, s in matching.fields.items()}
    return replace(matching, fields=fields)


def prf(predicted: set[frozenset[str]], truth: set[frozenset[str]]) -> tuple[float, float, float]:
    """Pairwise precision, recall and F1."""
    tp = len(predicted & truth)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def best_threshold(records: Mapping[str, Mapping[str, str]], pairs: Iterable[tuple[str, str]],
                   matches: set[frozenset[str]], matching: MatchingConfig) -> float:
    """The score threshold maximizing pairwise F1 over the candidate pairs (matches outside them count as
    misses)."""
    scored = sorted(((score_vector(comparison_vector(records[a], records[b], matching), matching),
                      frozenset((a, b)) in matches) for a, b in pairs), reverse=True)
    best, best_f1, tp = (scored[0][0] if scored else 0.0), -1.0, 0
    for i, (score, is_match) in enumerate(scored, 1):
        tp += is_match
        precision, recall = tp / i, tp / max(len(matches), 1)
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        if f1 > best_f1:
            best, best_f1 = score, f1
    return best


def _hasher() -> PiiHasher:
    """The job's hasher when the key is set, else an ephemeral one (only equality of hashes matters)."""
    return PiiHasher.from_env() if os.environ.get(PII_KEY_ENV) else PiiHasher(os.urandom(32))


def run(argv: Sequence[str] | None = None) -> Estimate:
    """Parses arguments, estimates and writes the weights file; returns the estimate."""
    parser = argparse.ArgumentParser(prog="estimate_weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("method", choices=("em", "labelled"))
    parser.add_argument("--records", type=Path, required=True, help="JSON-lines records")
    parser.add_argument("--matches", type=Path, help="CSV of matching id pairs (labelled)")
    parser.add_argument("--config", type=Path, default=IDENTITY_CONFIG_PATH, help="identity.yaml")
    parser.add_argument("--out", type=Path, required=True, help="weights YAML to write")
    parser.add_argument("--prevalence", type=float, default=0.1, help="EM: initial match share")
    parser.add_argument("--max-iter", type=int, default=200, help="EM: iteration cap")
    parser.add_argument("--u-pairs", type=int, default=20000,
                        help="random pairs (seeded) u is estimated on; 0: EM estimates u on the "
                             "candidate pairs")
    args = parser.parse_args(argv)
    config: IdentityConfig = load_identity_config(args.config)
    matching = config.matching
    records = load_records(args.records, matching, _hasher(), config.default_country_code)
    pairs = candidate_pairs(records, matching)
    u_pairs = random_pairs(list(records), args.u_pairs)
    if args.method == "em":
        fixed_u = frequencies(patterns(records, u_pairs, matching), matching, 0.5) if u_pairs else None
        est = em(patterns(records, pairs, matching), matching, args.prevalence, args.max_iter,
                 fixed_u=fixed_u)
    else:
        if args.matches is None:
            parser.error("labelled needs --matches")
        est = labelled(records, pairs, load_matches(args.matches), matching, u_pairs or pairs)
    text = yaml.safe_dump(est.to_yaml_dict(), sort_keys=False, default_flow_style=None, width=120)
    header = f"# written by tools/estimate_weights.py ({est.method}) from {args.records.name}\n"
    args.out.write_text(header + text, encoding="utf-8")
    return est


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    est = run(argv)
    print(f"{est.method}: {est.pairs} candidate pairs, prevalence {est.prevalence:.4f}, "
          f"{est.iterations} iterations" + (f", suggested upper threshold {est.upper_threshold:.2f}"
                                             if est.upper_threshold is not None else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
