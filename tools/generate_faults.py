"""Malformed records for the synthetic clickstream: one family of faults per validator reason code.

Each fault turns a copy of a real event (with a fresh event id) into the bytes a buggy producer would send,
and knows the reason `udfs.contract.EventValidator` dead-letters it with, given the record's send time as
the validator's reference time. Pure Python and deterministic (one `random.Random`).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tools.journeys_world import rfc3339, seeded_uuid
from udfs.contract import (
    BAD_TIMESTAMP,
    INVALID_JSON,
    NOT_AN_OBJECT,
    NOT_UTF8,
    REASONS,
    SCHEMA,
    TIMESTAMP_OUT_OF_RANGE,
    TOO_LARGE,
    UNKNOWN_TYPE,
    event_types,
)

# How often each reason shows up among malformed records (schema violations are the most common bug).
REASON_WEIGHTS: dict[str, float] = {
    SCHEMA: 0.30, INVALID_JSON: 0.15, UNKNOWN_TYPE: 0.10, BAD_TIMESTAMP: 0.10, TIMESTAMP_OUT_OF_RANGE: 0.10,
    TOO_LARGE: 0.10, NOT_AN_OBJECT: 0.08, NOT_UTF8: 0.07,
}
DAY_MS = 86_400_000
_SCHEMA_MAX_TS = 32_503_680_000_000  # the schema's largest epoch-ms `ts` (3000-01-01)


@dataclass(frozen=True)
class FaultLimits:
    """The bounds faults are built against.

    Attributes:
        max_event_bytes: the validator's size limit; `too_large` records are just over it up to...
        max_record_bytes: ...this, the largest record the topic takes.
    """

    max_event_bytes: int
    max_record_bytes: int


@dataclass
class FaultInput:
    """What a fault works on: a private copy of a real event, the send time, the random stream."""

    event: dict[str, Any]
    sent_ms: int
    rng: random.Random
    limits: FaultLimits

    def fresh_copy(self) -> dict[str, Any]:
        """Another copy of the event, with its own fresh event id."""
        copy: dict[str, Any] = orjson.loads(orjson.dumps(self.event))
        copy["event_id"] = seeded_uuid(self.rng)
        return copy


Builder = Callable[[FaultInput], bytes]


@dataclass(frozen=True)
class Fault:
    """One way of getting a record wrong, and the reason the validator gives for it."""

    name: str
    reason: str
    weight: float
    build: Builder


FAULTS: list[Fault] = []


def _fault(reason: str, weight: float = 1.0) -> Callable[[Builder], Builder]:
    def register(build: Builder) -> Builder:
        FAULTS.append(Fault(build.__name__, reason, weight, build))
        return build
    return register


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _with_text(f: FaultInput, text: str) -> bytes:
    """The event with `props.query` set to `text`, serialized (the text appears once, JSON-escaped)."""
    props = f.event.get("props")
    if not isinstance(props, dict):
        props = f.event["props"] = {}
    props["query"] = text
    return _dumps(f.event)


# -- too_large: checked first, so the content does not matter -----------------------------------------

def _padded(f: FaultInput, size: int) -> bytes:
    """The event padded with a random base64 `props.blob` to exactly `size` bytes."""
    f.event.setdefault("props", {})["blob"] = ""
    need = size - len(_dumps(f.event))
    f.event["props"]["blob"] = base64.b64encode(f.rng.randbytes(need * 3 // 4 + 3)).decode()[:need]
    return _dumps(f.event)


@_fault(TOO_LARGE)
def just_over_the_limit(f: FaultInput) -> bytes:
    return _padded(f, f.limits.max_event_bytes + 1 + f.rng.randrange(64))


@_fault(TOO_LARGE)
def oversized_payload(f: FaultInput) -> bytes:
    low = f.limits.max_event_bytes + 1
    high = max(low, min(4 * f.limits.max_event_bytes, f.limits.max_record_bytes))
    return _padded(f, f.rng.randint(low, high))


@_fault(TOO_LARGE, weight=0.1)
def huge_payload(f: FaultInput) -> bytes:
    low = min(4 * f.limits.max_event_bytes, f.limits.max_record_bytes)
    return _padded(f, f.rng.randint(low, max(low, f.limits.max_record_bytes)))


# -- not_utf8 -----------------------------------------------------------------------------------------

@_fault(NOT_UTF8)
def latin1_encoded(f: FaultInput) -> bytes:
    text = f.rng.choice(("café crème", "jalapeño", "crème brûlée", "smørrebrød", "façade lamp"))
    return _with_text(f, text).decode("utf-8").encode("latin-1", errors="replace")


@_fault(NOT_UTF8)
def utf16_with_bom(f: FaultInput) -> bytes:
    return b"\xff\xfe" + _dumps(f.event).decode("utf-8").encode("utf-16-le")


@_fault(NOT_UTF8)
def cut_inside_a_character(f: FaultInput) -> bytes:
    raw = _with_text(f, "price in €")
    return raw[:raw.index("€".encode()) + 1]


@_fault(NOT_UTF8)
def cesu8_surrogates(f: FaultInput) -> bytes:
    emoji = "🛒"
    return _with_text(f, f"cart {emoji}").replace(emoji.encode("utf-8"), _cesu8(emoji))


def _cesu8(char: str) -> bytes:
    """A non-BMP character as CESU-8 (each UTF-16 surrogate as three bytes), which strict UTF-8 rejects."""
    units = char.encode("utf-16-be")
    return b"".join(chr(int.from_bytes(units[i:i + 2], "big")).encode("utf-8", "surrogatepass")
                    for i in range(0, len(units), 2))


@_fault(NOT_UTF8)
def gzip_body(f: FaultInput) -> bytes:
    return b"\x1f\x8b\x08\x00" + f.rng.randbytes(f.rng.randint(40, 400))


# -- invalid_json -------------------------------------------------------------------------------------

@_fault(INVALID_JSON)
def truncated(f: FaultInput) -> bytes:
    raw = _dumps(f.event)
    cut = f.rng.randrange(1, len(raw))
    while raw[cut] & 0xC0 == 0x80:  # keep whole UTF-8 characters
        cut -= 1
    return raw[:cut]


@_fault(INVALID_JSON)
def python_repr(f: FaultInput) -> bytes:
    return repr(f.event).encode("utf-8")


@_fault(INVALID_JSON)
def trailing_comma(f: FaultInput) -> bytes:
    return _dumps(f.event)[:-1] + b",}"


@_fault(INVALID_JSON)
def nan_literal(f: FaultInput) -> bytes:
    return _with_text(f, "\x00nan").replace(b'"\\u0000nan"', b"NaN")


@_fault(INVALID_JSON)
def concatenated_events(f: FaultInput) -> bytes:
    return _dumps(f.event) + _dumps(f.fresh_copy())


@_fault(INVALID_JSON)
def newline_delimited_batch(f: FaultInput) -> bytes:
    return _dumps(f.event) + b"\n" + _dumps(f.fresh_copy()) + b"\n"


@_fault(INVALID_JSON)
def empty_record(f: FaultInput) -> bytes:
    return b""


@_fault(INVALID_JSON)
def whitespace_only(f: FaultInput) -> bytes:
    return f.rng.choice((b" ", b"\n", b"\r\n", b"  \t "))


@_fault(INVALID_JSON)
def utf8_byte_order_mark(f: FaultInput) -> bytes:
    return b"\xef\xbb\xbf" + _dumps(f.event)


@_fault(INVALID_JSON)
def raw_control_character(f: FaultInput) -> bytes:
    return _with_text(f, "first line\nsecond line").replace(b"\\n", b"\n")


@_fault(INVALID_JSON)
def lone_surrogate_escape(f: FaultInput) -> bytes:
    return _with_text(f, "\x00surrogate").replace(b'"\\u0000surrogate"', b'"\\ud83d"')


# -- not_an_object ------------------------------------------------------------------------------------

@_fault(NOT_AN_OBJECT)
def array_of_events(f: FaultInput) -> bytes:
    return _dumps([f.event] + [f.fresh_copy() for _ in range(f.rng.randint(1, 2))])


@_fault(NOT_AN_OBJECT)
def double_encoded(f: FaultInput) -> bytes:
    return _dumps(_dumps(f.event).decode("utf-8"))


@_fault(NOT_AN_OBJECT)
def bare_scalar(f: FaultInput) -> bytes:
    return f.rng.choice((b"null", b"true", b"0", b"[]", b'"event"', str(f.sent_ms).encode()))


# -- edits of one event: unknown_type, schema, bad_timestamp, timestamp_out_of_range ------------------

_DELETE = object()
Edit = tuple[tuple[str, ...], Callable[[FaultInput], Any]]


def _apply(event: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = event
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is _DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def _edit_fault(name: str, reason: str, *edits: Edit) -> None:
    def build(f: FaultInput) -> bytes:
        for path, value in edits:
            _apply(f.event, path, value(f))
        return _dumps(f.event)
    FAULTS.append(Fault(name, reason, 1.0, build))


def _const(value: Any) -> Callable[[FaultInput], Any]:
    return lambda f: value


def _ts(fn: Callable[[FaultInput], Any]) -> Edit:
    return (("ts",), fn)


_UNKNOWN_TYPES = ("click", "PageView", "page-view", "pageview", "add_to_basket", "checkout_started", "",
                  "Purchase", "purchase ", "screen_view", "video_play")
assert not set(_UNKNOWN_TYPES) & set(event_types())
_edit_fault("unknown_type", UNKNOWN_TYPE, (("type",), lambda f: f.rng.choice(_UNKNOWN_TYPES)))

for _name, *_edits in (
    ("missing_event_id", (("event_id",), _const(_DELETE))),
    ("missing_type", (("type",), _const(_DELETE))),
    ("missing_ts", (("ts",), _const(_DELETE))),
    ("missing_ids", (("ids",), _const(_DELETE))),
    ("empty_ids", (("ids",), _const({}))),
    ("ids_not_an_object", (("ids",), lambda f: f.rng.choice(list(f.event["ids"].values())))),
    ("camel_case_id_name", (("ids", "anonymousId"), lambda f: seeded_uuid(f.rng))),
    ("empty_identifier", (("ids", "user_id"), _const(""))),
    ("numeric_identifier", (("ids", "user_id"), lambda f: f.rng.randint(1, 10**9))),
    ("identifier_with_newline", (("ids", "email"), _const("someone@example.com\n"))),
    ("identifier_too_long", (("ids", "device_id"), lambda f: "d" * f.rng.randint(257, 400))),
    ("too_many_ids", (("ids",), lambda f: {f"id_{i}": seeded_uuid(f.rng) for i in range(17)})),
    ("empty_event_id", (("event_id",), _const(""))),
    ("event_id_too_long", (("event_id",), lambda f: seeded_uuid(f.rng) * 4)),
    ("numeric_event_id", (("event_id",), lambda f: f.rng.getrandbits(53))),
    ("event_id_with_control_character", (("event_id",), lambda f: seeded_uuid(f.rng)[:8] + "\x07")),
    ("type_not_a_string", (("type",), lambda f: f.rng.choice((7, None, ["page_view"])))),
    ("ts_date_only", _ts(lambda f: rfc3339(f.sent_ms)[:10])),
    ("ts_boolean", _ts(_const(True))),
    ("ts_fractional_epoch", _ts(lambda f: f.sent_ms + 0.5)),
    ("ts_epoch_microseconds", _ts(lambda f: f.sent_ms * 1000)),
    ("ts_epoch_nanoseconds", _ts(lambda f: f.sent_ms * 1_000_000)),
    ("ts_text_too_long", _ts(lambda f: rfc3339(f.sent_ms)[:-1] + "123456789012345678+00:00")),
    ("negative_price", (("props", "price"), lambda f: -round(f.rng.uniform(0.01, 500), 2))),
    ("price_as_text", (("props", "price"), lambda f: f"{f.rng.uniform(1, 500):.2f}")),
    ("price_too_high", (("props", "price"), _const(1e10))),
    ("fractional_quantity", (("props", "quantity"), _const(1.5))),
    ("negative_quantity", (("props", "quantity"), _const(-1))),
    ("lower_case_currency", (("props", "currency"), lambda f: f.rng.choice(("eur", "usd", "gbp")))),
    ("currency_symbol", (("props", "currency"), lambda f: f.rng.choice(("€", "$", "£")))),
    ("negative_dwell", (("props", "dwell_ms"), lambda f: -f.rng.randint(1, 10_000))),
    ("dwell_over_a_day", (("props", "dwell_ms"), lambda f: DAY_MS + f.rng.randint(1, DAY_MS))),
    ("url_too_long", (("props", "url"), lambda f: "https://shop.example.com/?q=" + "x" * 2100)),
    ("props_not_an_object", (("props",), _const(["product_view"]))),
    ("too_many_props", (("props",), lambda f: {f"p{i}": i for i in range(65)})),
    ("upper_case_channel", (("channel",), lambda f: f.rng.choice(("Web", "APP", "Mobile App")))),
    ("empty_source", (("source",), _const(""))),
    ("source_too_long", (("source",), _const("s" * 65))),
    ("traits_not_an_object", (("traits",), _const("vip"))),
    ("consent_without_purposes", (("type",), _const("consent")), (("consent",), _const(_DELETE))),
    ("consent_empty", (("type",), _const("consent")), (("consent",), _const({}))),
    ("consent_not_boolean", (("type",), _const("consent")),
     (("consent",), lambda f: {"personalization": f.rng.choice(("no", 0, "false"))})),
):
    _edit_fault(_name, SCHEMA, *_edits)


def _us_date(f: FaultInput) -> str:  # 11/22/2026 10:00:00 AM +00:00
    t = rfc3339(f.sent_ms, millis=False)
    hour = int(t[11:13])
    return f"{t[5:7]}/{t[8:10]}/{t[:4]} {hour % 12 or 12:02d}{t[13:19]} {'AM' if hour < 12 else 'PM'} +00:00"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _rfc2822(f: FaultInput) -> str:  # Sun, 22 Nov 2026 10:00:00 +0000 (the weekday is not checked here)
    t = rfc3339(f.sent_ms, millis=False)
    month = _MONTHS[int(t[5:7]) - 1]
    return f"Mon, {t[8:10]} {month} {t[:4]} {t[11:19]} +0000"


for _name, _value in (
    ("ts_without_offset", lambda f: rfc3339(f.sent_ms)[:-1]),
    ("ts_us_date_format", _us_date),
    ("ts_rfc2822", _rfc2822),
    ("ts_offset_out_of_range", lambda f: rfc3339(f.sent_ms)[:-1] + "+25:00"),
    ("ts_impossible_date", lambda f: rfc3339(f.sent_ms)[:4] + "-02-30T10:00:00.000Z"),
    ("ts_hour_25", lambda f: rfc3339(f.sent_ms)[:11] + "25:00:00.000Z"),
    ("ts_free_text", lambda f: f.rng.choice(("yesterday around noon UTC", "just now (client clock)"))),
):
    _edit_fault(_name, BAD_TIMESTAMP, _ts(_value))


def _far_future(f: FaultInput) -> int | str:
    ms = min(f.sent_ms + f.rng.randint(20 * 365, 60 * 365) * DAY_MS, _SCHEMA_MAX_TS - DAY_MS)
    return ms if f.rng.random() < 0.5 else rfc3339(ms)


for _name, _value in (
    ("ts_epoch_zero", _const(0)),
    ("ts_epoch_seconds", lambda f: f.sent_ms // 1000),
    ("ts_year_1970", _const("1970-01-01T00:00:00.000Z")),
    ("ts_before_2000", lambda f: f"{f.rng.randint(1990, 1999)}-06-15T12:00:00.000+02:00"),
    ("ts_a_year_ahead", lambda f: rfc3339(f.sent_ms + f.rng.randint(365, 1100) * DAY_MS, 60)),
    ("ts_far_future", _far_future),
):
    _edit_fault(_name, TIMESTAMP_OUT_OF_RANGE, _ts(_value))

assert {fault.reason for fault in FAULTS} == set(REASONS), "every reason code needs at least one fault"


class FaultInjector:
    """Draws faults (reasons weighted by :data:`REASON_WEIGHTS`, variants by their weight) and builds them."""

    def __init__(self, rng: random.Random, limits: FaultLimits):
        self.rng = rng
        self.limits = limits
        totals = {reason: sum(f.weight for f in FAULTS if f.reason == reason) for reason in REASONS}
        self._faults = FAULTS
        self._weights = [REASON_WEIGHTS[f.reason] * f.weight / totals[f.reason] for f in FAULTS]

    def make(self, template: dict[str, Any], sent_ms: int) -> tuple[bytes, Fault]:
        """Builds a malformed record from a copy of a real event; returns its bytes and the fault."""
        fault = self.rng.choices(self._faults, self._weights)[0]
        return build(fault, template, sent_ms, self.rng, self.limits), fault


def build(fault: Fault, template: dict[str, Any], sent_ms: int, rng: random.Random,
          limits: FaultLimits) -> bytes:
    """Builds one record with a given fault from a copy of `template` (with a fresh event id)."""
    f = FaultInput(template, sent_ms, rng, limits)
    f.event = f.fresh_copy()
    return fault.build(f)
