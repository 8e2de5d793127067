"""Probabilistic record linkage (Fellegi-Sunter) of `identify` traits.

A record is the normalized features of one event. Candidates come from blocking keys (e.g.
soundex(last_name)+year(dob)); each candidate pair is compared field by field into an outcome level
(agreement levels, then disagreement); the pair's score is the sum of log2(m/u) over the fields present
on both sides. Scores at or above the upper threshold link; scores in [lower, upper) are review candidates.

Comparators (Jaro-Winkler, edit distance, Soundex) are implemented here in pure Python.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from udfs.identity.config import FieldSpec, MatchingConfig
from udfs.identity.pii import PiiHasher, normalize_email, normalize_phone

# --- string comparators ---------------------------------------------------------------------------


def jaro(a: str, b: str) -> float:
    """Jaro similarity in [0, 1] (symmetric: the greedy matching runs on the ordered pair)."""
    return _jaro(a, b) if a <= b else _jaro(b, a)


@lru_cache(maxsize=65536)
def _jaro(a: str, b: str) -> float:
    if a == b:
        return 1.0 if a else 0.0
    la, lb = len(a), len(b)
    if not la or not lb:
        return 0.0
    window = max(max(la, lb) // 2 - 1, 0)
    a_flags = [False] * la
    b_flags = [False] * lb
    matches = 0
    for i, ch in enumerate(a):
        lo, hi = max(0, i - window), min(lb, i + window + 1)
        for j in range(lo, hi):
            if not b_flags[j] and b[j] == ch:
                a_flags[i] = b_flags[j] = True
                matches += 1
                break
    if not matches:
        return 0.0
    b_matched = [b[j] for j in range(lb) if b_flags[j]]
    transpositions = sum(ch != b_matched[k] for k, ch in enumerate(c for i, c in enumerate(a) if a_flags[i]))
    m = float(matches)
    return (m / la + m / lb + (m - transpositions / 2) / m) / 3


def jaro_winkler(a: str, b: str, prefix_scale: float = 0.1) -> float:
    """Jaro-Winkler similarity in [0, 1] (common prefix of up to 4 characters boosts the Jaro score)."""
    sim = jaro(a, b)
    prefix = 0
    for ca, cb in zip(a[:4], b[:4], strict=False):
        if ca != cb:
            break
        prefix += 1
    return sim + prefix * prefix_scale * (1 - sim)


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance (Levenshtein plus adjacent transpositions)."""
    return _edit_distance(a, b) if a <= b else _edit_distance(b, a)


@lru_cache(maxsize=65536)
def _edit_distance(a: str, b: str) -> int:
    if a == b:
        return 0
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


_SOUNDEX_GROUPS = ("", "bfpv", "cgjkqsxz", "dt", "l", "mn", "r")
_SOUNDEX = {c: str(d) for d, letters in enumerate(_SOUNDEX_GROUPS) for c in letters}


@lru_cache(maxsize=65536)
def soundex(name: str) -> str:
    """American Soundex code (letter + 3 digits) of a name; empty for a name without letters."""
    letters = [c for c in name.lower() if "a" <= c <= "z"]
    if not letters:
        return ""
    code, last = letters[0].upper(), _SOUNDEX.get(letters[0], "")
    for c in letters[1:]:
        digit = _SOUNDEX.get(c, "")
        if digit and digit != last:
            code += digit
        if c not in "hw":
            last = digit
    return (code + "000")[:4]


# --- features -------------------------------------------------------------------------------------

_NON_ALNUM = re.compile(r"[^a-z0-9 ]+")
_SPACES = re.compile(r"\s+")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def normalize_feature(kind: str, raw: Any, hasher: PiiHasher, country_code: str) -> str | None:
    """Normalizes one raw trait for comparison; email and phone become keyed hashes.

    Returns:
        The feature, or None when the value is missing or unusable.
    """
    if raw is None or isinstance(raw, bool | dict | list):
        return None
    text = str(raw).strip()
    if not text:
        return None
    if kind == "email":
        email = normalize_email(text)
        return hasher.digest("email", email) if email else None
    if kind == "phone":
        phone = normalize_phone(text, country_code)
        return hasher.digest("phone", phone) if phone else None
    if kind == "digits":
        value = re.sub(r"\D", "", text)
    elif kind == "date":
        value = re.sub(r"\D", "", text)[:8]
        value = value if len(value) == 8 else ""
    elif kind == "zip":
        value = re.sub(r"[\s-]", "", text).upper()
    elif kind == "name":
        value = _SPACES.sub(" ", _NON_ALNUM.sub("", _fold(text).replace("-", " "))).strip()
    else:
        value = _SPACES.sub(" ", _NON_ALNUM.sub(" ", _fold(text))).strip()
    return value or None


def extract_features(event: Mapping[str, Any], config: MatchingConfig, hasher: PiiHasher,
                     country_code: str) -> dict[str, str]:
    """Builds the feature record of an event from its traits / ids as the matching fields say."""
    out: dict[str, str] = {}
    for spec in config.fields.values():
        section, _, name = spec.source.partition(".")
        container = event.get(section)
        if isinstance(container, Mapping):
            value = normalize_feature(spec.normalize, container.get(name), hasher, country_code)
            if value is not None:
                out[spec.name] = value
    return out


def _block_part(transform: str, value: str) -> str:
    if transform == "soundex":
        return soundex(value)
    if transform == "initial":
        return value[:1]
    if transform == "year":
        return value[:4]
    if transform == "prefix3":
        return value[:3]
    return value


def blocking_keys(features: Mapping[str, str], config: MatchingConfig) -> list[str]:
    """Returns the blocking keys of a record (a key is skipped when one of its parts is missing)."""
    keys = []
    for i, parts in enumerate(config.blocking):
        values = [_block_part(t, features[f]) if f in features else "" for t, f in parts]
        if all(values):
            keys.append(f"b{i}:" + "|".join(values))
    return keys


# --- scoring --------------------------------------------------------------------------------------


def compare_field(spec: FieldSpec, a: str, b: str) -> int:
    """Returns the outcome index of one field: 0..len(levels)-1 agreement levels, len(levels) disagreement."""
    if spec.comparator == "exact":
        return 0 if a == b else 1
    if spec.comparator == "jaro_winkler":
        sim = jaro_winkler(a, b)
        return next((i for i, lvl in enumerate(spec.levels) if sim >= lvl), len(spec.levels))
    if spec.comparator == "edit_distance":
        dist = edit_distance(a, b)
        return next((i for i, lvl in enumerate(spec.levels) if dist <= lvl), len(spec.levels))
    try:
        diff = abs(float(a) - float(b))
    except ValueError:
        return len(spec.levels)
    return next((i for i, lvl in enumerate(spec.levels) if diff <= lvl), len(spec.levels))


def comparison_vector(a: Mapping[str, str], b: Mapping[str, str], config: MatchingConfig) -> dict[str, int]:
    """Outcome index per field present on both records."""
    return {name: compare_field(spec, a[name], b[name])
            for name, spec in config.fields.items() if name in a and name in b}


def score_vector(vector: Mapping[str, int], config: MatchingConfig) -> float:
    """Sum of log2-likelihood weights of a comparison vector."""
    return sum(config.fields[name].weights[level] for name, level in vector.items())


@dataclass(frozen=True)
class MatchResult:
    """A scored candidate pair. `evidence` holds field → [level, weight], never a value."""

    other: BlockRecord
    score: float
    evidence: dict[str, list[float]]
    decision: str  # "link" | "review" | "none"


def score_pair(a: Mapping[str, str], b: Mapping[str, str],
               config: MatchingConfig) -> tuple[float, dict[str, list[float]]]:
    """Scores a pair and returns (score, evidence)."""
    vector = comparison_vector(a, b, config)
    evidence = {name: [level, round(config.fields[name].weights[level], 4)] for name, level in vector.items()}
    return score_vector(vector, config), evidence


def decide(score: float, config: MatchingConfig) -> str:
    """`link` at or above the upper threshold, `review` in [lower, upper), else `none`."""
    if score >= config.upper_threshold:
        return "link"
    return "review" if score >= config.lower_threshold else "none"


# --- blocking index -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockRecord:
    """One indexed record: the event it came from, the identifier it belongs to, its features."""

    record_id: str
    anchor: str
    ts_ms: int
    features: dict[str, str]

    def to_list(self) -> list[Any]:
        """Serializes to a JSON-ready list."""
        return [self.record_id, self.anchor, self.ts_ms, self.features]

    @classmethod
    def from_list(cls, data: list[Any]) -> BlockRecord:
        """Inverse of :meth:`to_list`."""
        return cls(str(data[0]), str(data[1]), int(data[2]), dict(data[3]))


@dataclass
class BlockIndex:
    """Blocking key → records. In the keyed job each blocking key is its own Flink key.

    A block keeps the `max_block_size` earliest records by (event time, record id), so its content is a
    function of the set of records offered, whatever their order.
    """

    blocks: dict[str, dict[str, BlockRecord]] = field(default_factory=dict)

    def probe(self, record: BlockRecord, keys: list[str], config: MatchingConfig) -> Iterator[MatchResult]:
        """Scores the record against every other record sharing a blocking key (each pair once)."""
        seen: set[str] = {record.record_id}
        for key in keys:
            for other in self.blocks.get(key, {}).values():
                if other.record_id in seen:
                    continue
                seen.add(other.record_id)
                score, evidence = score_pair(record.features, other.features, config)
                yield MatchResult(other, score, evidence, decide(score, config))

    def add(self, record: BlockRecord, keys: list[str], max_block_size: int) -> None:
        """Indexes the record under its blocking keys."""
        for key in keys:
            block = self.blocks.setdefault(key, {})
            block[record.record_id] = record
            if len(block) > max_block_size:
                latest = max(block.values(), key=lambda r: (r.ts_ms, r.record_id))
                del block[latest.record_id]

    def remove_anchors(self, anchors: set[str]) -> int:
        """Deletes every record of these identifiers; returns how many entries were removed."""
        removed = 0
        for key in list(self.blocks):
            block = self.blocks[key]
            for rid in [rid for rid, r in block.items() if r.anchor in anchors]:
                del block[rid]
                removed += 1
            if not block:
                del self.blocks[key]
        return removed
