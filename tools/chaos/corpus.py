"""The hostile-input corpus: over a thousand records a careless or malicious producer might send.

Deterministic code, not a data file: hand-written cases, one record per fault kind of
tools/generate_faults.py (twice, different seeds), and hypothesis-drawn cases (`derandomize=True`, so the
same hypothesis version draws the same cases). Every case declares what the ingest job must do with it:
accept it (`valid`), drop it as a repeated event id (`duplicate`), or dead-letter it with a reason code.
All cases are built against one record time (`now_ms`, sent as the Kafka timestamp).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tools.generate_faults import FAULTS, FaultLimits, build
from udfs.contract import (
    BAD_TIMESTAMP,
    INVALID_JSON,
    MAX_NESTING_DEPTH,
    NOT_AN_OBJECT,
    NOT_UTF8,
    SCHEMA,
    TIMESTAMP_OUT_OF_RANGE,
    TOO_LARGE,
    UNKNOWN_TYPE,
    ValidatorConfig,
)

VALID, DUPLICATE = "valid", "duplicate"
DAY_MS = 86_400_000
MIB = 1 << 20


@dataclass(frozen=True)
class Case:
    """One hostile record and the outcome the contract prescribes.

    Attributes:
        family: which group of cases it belongs to (for the report).
        value: the record value; None is a tombstone.
        expect: `valid`, `duplicate` or a dead-letter reason code.
        event_id: the accepted (or repeated) event id, for `valid` and `duplicate`.
    """

    family: str
    value: bytes | None
    expect: str
    event_id: str | None = None


class _Builder:
    """Collects cases; gives every event a unique id."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.cases: list[Case] = []
        self.n = 0

    def event(self, **fields: Any) -> dict[str, Any]:
        self.n += 1
        body: dict[str, Any] = {"event_id": f"hostile-{self.n}", "type": "page_view", "ts": self.now_ms - 60_000,
                                "ids": {"anonymous_id": f"anon-{self.n}"}}
        body.update(fields)
        return body

    def add(self, family: str, value: bytes | None, expect: str, event_id: str | None = None) -> None:
        self.cases.append(Case(family, value, expect, event_id))

    def accept(self, family: str, event: dict[str, Any]) -> None:
        self.add(family, orjson.dumps(event), VALID, event["event_id"])

    def reject(self, family: str, reason: str, **fields: Any) -> None:
        self.add(family, orjson.dumps(self.event(**fields)), reason)

    def reject_without(self, family: str, reason: str, *missing: str) -> None:
        event = self.event()
        for name in missing:
            event.pop(name)
        self.add(family, orjson.dumps(event), reason)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _invalid_json(b: _Builder) -> None:
    good = orjson.dumps(b.event()).decode()
    texts = ['{', '{"event_id": "x",', "{'event_id': 'x'}", '{"event_id": "x",}', "nul", "tru", '{"a" 1}', "[1,2",
             '"unterminated', '{"a":01}', '{"a":.5}', '{"a":1e}', '{"a":+1}', '{"a":0x10}', "// c\n{}", "{a:1}",
             '{"a":"\\x41"}', '{"a":"\\u12"}', '{"a":1}{"b":2}', good + good, good + "\n" + good, good[:-1],
             good.replace('"', "'"), "{}}", "\x00", '{"a":Infinity}', '{"a":-Infinity}', "NaN",
             good[:-1] + ',"props":{"price":NaN}}', good.replace(f'"ts":{b.now_ms - 60_000}', '"ts":NaN'),
             '{"a":1e400}', '{"a":"\\ud800"}', '{"a":"\\udc00\\ud800"}', '{"a":"' + "\t" + '"}']
    for text in texts:
        b.add("invalid_json", text.encode(), INVALID_JSON)
    for raw in (None, b"", b" ", b"\n", b"\r\n\t "):
        b.add("empty_or_tombstone", raw, INVALID_JSON)
    b.add("bom", b"\xef\xbb\xbf" + good.encode(), INVALID_JSON)
    b.add("deep_nesting", b"[" * 5000 + b"]" * 5000, INVALID_JSON)
    b.add("deep_nesting", f'{good[:-1]},"props":{{"x":{"[" * 2000}1{"]" * 2000}}}}}'.encode(), INVALID_JSON)


def _not_utf8(b: _Builder) -> None:
    good = orjson.dumps(b.event())
    raws = [b"\xff", b"\xc3\x28", b"\xa0\xa1", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
            b"\xfe\xff" + good.decode().encode("utf-16-be"), b"\xff\xfe" + good.decode().encode("utf-16-le"),
            good.decode().encode("utf-32"), good.replace(b"anon-", b"anon-\xe9"), good[:-3] + b"\xe2\x82" + b'"}}',
            good.replace(b"anon-", b"\xed\xa0\xbd\xed\xb8\x80")]  # CESU-8 surrogate pair
    for raw in raws:
        b.add("not_utf8", raw, NOT_UTF8)


def _not_an_object(b: _Builder) -> None:
    for value in ([], [b.event()], "page_view", 1, 1.5, True, None, -0.0, 0):
        b.add("not_an_object", orjson.dumps(value), NOT_AN_OBJECT)


def _too_large(b: _Builder) -> None:
    limit = ValidatorConfig().max_event_bytes
    for size in (limit + 1, MIB, 3 * MIB):
        event = b.event(props={"blob": ""})
        event["props"]["blob"] = "x" * (size - len(orjson.dumps(event)))
        b.add("too_large", orjson.dumps(event), TOO_LARGE)
    b.add("too_large", b"\xff" * MIB, TOO_LARGE)  # size is checked before anything else
    b.add("too_large", b"{" * MIB, TOO_LARGE)
    at_limit = b.event(props={"blob": ""})
    at_limit["props"]["blob"] = "y" * (limit - len(orjson.dumps(at_limit)))
    b.accept("size_at_limit", at_limit)


def _wrong_types(b: _Builder) -> None:
    for name, value in (("event_id", 7), ("event_id", None), ("event_id", ""), ("event_id", "   "),
                        ("event_id", "e" * 129), ("event_id", "a\u0000b"), ("event_id", "tab\tid"),
                        ("event_id", "del\u007f"), ("event_id", ["x"]), ("type", 3), ("type", None),
                        ("type", ["page_view"]), ("ts", True), ("ts", None), ("ts", [1]), ("ts", {"ms": 1}),
                        ("ts", -1), ("ts", 1.5), ("ts", "2026-11-22"), ("ts", 32_503_680_000_001),
                        ("ids", {}), ("ids", ["u"]), ("ids", {"user_id": 5}), ("ids", {"Bad-Key": "x"}),
                        ("ids", {"user_id": ""}), ("ids", {"user_id": "a\nb"}), ("ids", {"user_id": "x" * 257}),
                        ("ids", {f"t{i}": "x" for i in range(17)}), ("props", []), ("props", {"price": "free"}),
                        ("props", {"price": -1}), ("props", {"quantity": 1.5}), ("props", {"currency": "usd"}),
                        ("props", {f"k{i}": i for i in range(65)}), ("props", {"dwell_ms": 10**18}),
                        ("props", {"price": 1e300}), ("channel", "Web"), ("channel", ""), ("source", ""),
                        ("source", "s" * 65), ("traits", "vip"), ("consent", {"ads": "yes"})):
        b.reject(f"wrong_type.{name}", SCHEMA, **{name: value})
    for missing in ("event_id", "type", "ts", "ids"):
        b.reject_without("missing_field", SCHEMA, missing)
    b.reject("missing_field", SCHEMA, type="consent")
    for digits, reason in ((30, SCHEMA), (400, INVALID_JSON)):  # a float above the maximum; beyond a double
        huge = orjson.dumps(b.event(props={"dwell_ms": 0})).replace(b'"dwell_ms":0', b'"dwell_ms":' + b"9" * digits)
        b.add("huge_number", huge, reason)
    deep = orjson.dumps(b.event(props={"x": 0})).replace(
        b'"x":0', b'"x":' + b"[" * MAX_NESTING_DEPTH + b"1" + b"]" * MAX_NESTING_DEPTH)
    b.add("deep_nesting", deep, SCHEMA)  # parses, but could not be serialized again for events.valid
    for etype in ("click", "PAGE_VIEW", "", " page_view", "page_view\u0000", "x" * 10_000):
        b.reject("unknown_type", UNKNOWN_TYPE, type=etype)


def _timestamps(b: _Builder) -> None:
    now = b.now_ms
    for ts in (now + 2 * DAY_MS, now + DAY_MS + 1, 32_503_680_000_000, "2999-12-31T23:59:59Z",
               "2100-01-01T00:00:00.000+14:00", 0, 946_684_799_999, "1999-12-31T23:59:59.999Z",
               "1970-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00"):
        b.reject("timestamp_out_of_range", TIMESTAMP_OUT_OF_RANGE, ts=ts)
    for ts in ("2026-02-30T10:00:00Z", "2026-13-01T00:00:00Z", "2026-11-22T25:00:00Z", "2026-11-22T10:00:00+0100",
               "tomorrow morning, roughly", "2026-11-22T10:00:00 GMT", "22/11/2026 10:00:00 +00:00",
               "2026-11-22T10:00:00+25:00", "１２３４-11-22T10:00:00Z", "2026-11-22T10:00:00Z\u0000"):
        b.reject("bad_timestamp", BAD_TIMESTAMP, ts=ts)
    edges: tuple[Any, ...] = (946_684_800_000, now + DAY_MS, float(now - 1000), _rfc3339_ns(now - 1000))
    for ts in edges:
        b.accept("timestamp_edge", b.event(ts=ts))


def _rfc3339_ns(ms: int) -> str:
    """RFC 3339 text of epoch ms, with nanosecond digits and a +01:00 offset."""
    stamp = datetime.fromtimestamp(ms / 1000, timezone(timedelta(hours=1)))
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}456789+01:00"


_WEIRD_IDS = ("user:42:profile", "a|b|c", "u,1;2", "*", "user:*", "{tag}:x", "key?[ab]", "KEYS *", "FLUSHALL",
              "segment:{person}:*", "\\x00", "../../etc/passwd", "%s%n%x", "' OR 1=1 --", "<script>x</script>",
              "😀", "\u202etxet", "a\u200db", "\u2028", "null", "undefined", "0", "-1", "1e400", "NaN", " lead",
              "trail ", "\\", '"', "\u00a0x", "ß" * 256, "🙂" * 64, "x" * 256)


def _weird_but_valid(b: _Builder) -> None:
    for i, value in enumerate(_WEIRD_IDS):
        b.accept("weird_identifier", b.event(ids={"user_id": value, "email": value}, source=value[:64]))
        b.accept("weird_event_id", b.event(event_id=f"hostile-weird-{i}-{value[:100]}"))
    b.accept("weird_value", b.event(props={"x": _nested(MAX_NESTING_DEPTH - 2)}))
    b.accept("weird_value", b.event(props={"big": 2**63 - 1, "neg": -(2**63), "tiny": 5e-324, "price": 1e9}))
    b.accept("weird_value", b.event(traits={"a" * 1000: "b" * 10_000, "": None, "nested": {"k": [1, {}, []]}}))
    b.accept("weird_value", b.event(event_id="hostile-surrogate-pair-\U0001f600"))
    b.accept("weird_value", b.event(ts_ms=-5))  # a producer's ts_ms is overwritten
    text = orjson.dumps(b.event()).decode()
    eid = f"hostile-{b.n}"
    b.add("duplicate_json_key", text.replace(f'"event_id":"{eid}"', f'"event_id":"shadowed","event_id":"{eid}"')
          .encode(), VALID, eid)


def _duplicates(b: _Builder) -> None:
    for _ in range(10):
        first = b.event()
        b.accept("duplicate_id", first)
        b.add("duplicate_id", orjson.dumps(first), DUPLICATE, first["event_id"])
        changed = dict(first, type="search", props={"query": "changed"})
        b.add("duplicate_id", orjson.dumps(changed), DUPLICATE, first["event_id"])


def _generator_faults(b: _Builder) -> None:
    limits = FaultLimits(ValidatorConfig().max_event_bytes, 4 * MIB - 16 * 1024)
    for seed in (1, 2):
        rng = random.Random(f"tagstream:chaos-corpus:{seed}")
        for fault in FAULTS:
            template = b.event(type="product_view", props={"product_id": "p1", "price": 9.5},
                               ids={"user_id": "u1", "email": "a@example.com"}, channel="web", source="shop")
            b.add(f"fault.{fault.name}", build(fault, template, b.now_ms, rng, limits), fault.reason)


# -- hypothesis-drawn cases -------------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60).filter(
    lambda s: not s.isspace())
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                     | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4), max_leaves=12)


def _draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """Draws `count` examples deterministically (derandomized hypothesis, no example database)."""
    drawn: list[Any] = []

    @settings(derandomize=True, database=None, max_examples=count, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn[:count]


def _hypothesis_cases(b: _Builder, scale: int) -> None:
    for ids, props, etype in _draw(st.tuples(st.dictionaries(st.sampled_from(("user_id", "email", "phone",
                                                                               "crm_id")), _TEXT, min_size=1),
                                             st.dictionaries(st.text(max_size=10).filter(
                                                 lambda k: k not in _TYPED_PROPS), _JSON, max_size=5),
                                             st.sampled_from(("page_view", "search", "login", "identify"))),
                                   3 * scale):
        b.accept("hypothesis.valid", b.event(type=etype, ids=ids, props=props))
    for event_id in _draw(_TEXT, scale):
        b.accept("hypothesis.valid_event_id", b.event(event_id=f"hostile-h{b.n}-{event_id}"))
    wrong = st.one_of(st.tuples(st.just("event_id"), _JSON.filter(lambda v: not isinstance(v, str))),
                      st.tuples(st.just("ts"), _JSON.filter(lambda v: not isinstance(v, str | int | float))),
                      st.tuples(st.just("ids"), _JSON.filter(lambda v: not isinstance(v, dict) or not v)),
                      st.tuples(st.just("props"), _JSON.filter(lambda v: not isinstance(v, dict))))
    for name, value in _draw(wrong, 2 * scale):
        b.reject(f"hypothesis.wrong_type.{name}", SCHEMA, **{name: value})
    for raw in _draw(st.binary(min_size=1, max_size=200).filter(_not_utf8_bytes), scale):
        b.add("hypothesis.not_utf8", raw, NOT_UTF8)
    for cut in _draw(st.integers(min_value=0, max_value=10_000), scale):
        text = orjson.dumps(b.event(props={"query": "q"})).decode()
        b.add("hypothesis.truncated", text[: cut % len(text)].encode(), INVALID_JSON)
    for value in _draw(_JSON.filter(lambda v: not isinstance(v, dict)), scale):
        b.add("hypothesis.not_an_object", orjson.dumps(value), NOT_AN_OBJECT)
    for ts in _draw(st.text(st.characters(blacklist_categories=("Cs", "Cc", "Nd")), min_size=20, max_size=40),
                    scale // 2):
        b.reject("hypothesis.bad_timestamp", BAD_TIMESTAMP, ts=ts)


_TYPED_PROPS = ("product_id", "category", "price", "quantity", "currency", "url", "referrer", "query", "dwell_ms",
                "order_id", "revenue")


def _not_utf8_bytes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


FAMILIES: tuple[Callable[[_Builder], None], ...] = (
    _invalid_json, _not_utf8, _not_an_object, _too_large, _wrong_types, _timestamps, _weird_but_valid,
    _duplicates, _generator_faults)


def hostile_corpus(now_ms: int, scale: int = 100) -> list[Case]:
    """Builds the corpus (deterministic for a given `now_ms`, `scale` and hypothesis version).

    Args:
        now_ms: the record time every case is sent with (Kafka timestamp); event times are relative to it.
        scale: hypothesis cases per family unit (100 gives about 850 of them).

    Returns:
        The cases in sending order (a repeated id always follows its first occurrence).
    """
    b = _Builder(now_ms)
    for family in FAMILIES:
        family(b)
    _hypothesis_cases(b, scale)
    return b.cases


def summary(cases: list[Case]) -> dict[str, int]:
    """Counts cases per expected outcome."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.expect] = counts.get(case.expect, 0) + 1
    return dict(sorted(counts.items()))


def iter_families(cases: list[Case]) -> Iterator[tuple[str, int]]:
    """Yields (family, case count), families in first-seen order."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.family] = counts.get(case.family, 0) + 1
    yield from counts.items()
