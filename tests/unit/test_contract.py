"""The event contract core: time parsing, validation reasons, dead-letter records (tier 1)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.contract import (
    REASONS,
    SCHEMA_DIR,
    Accepted,
    EventValidator,
    Origin,
    Rejected,
    ValidatorConfig,
    epoch_ms,
    event_types,
    load_event_schema,
    parse_event_time,
)

NOW = 1_795_000_000_000
VALIDATOR = EventValidator()


def make(**overrides) -> dict:
    body = {"event_id": "e-1", "type": "product_view", "ts": NOW - 5000, "ids": {"anonymous_id": "anon-1"},
            "channel": "web", "source": "web-sdk", "props": {"product_id": "p-1", "price": 12.5}}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def check(body: object, reference: int = NOW) -> Accepted | Rejected:
    return VALIDATOR.check(orjson.dumps(body), reference)


def test_schema_is_valid_json_schema_2020_12():
    schema = load_event_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_contract_has_the_required_event_types():
    required = {"page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "purchase",
                "login", "identify", "consent", "erase"}
    assert required <= set(event_types())


def test_valid_event_is_accepted_with_ts_ms():
    result = check(make(ts="2026-11-18T08:00:00.250+01:00"))
    assert isinstance(result, Accepted)
    assert result.ts_ms == 1794985200250
    assert orjson.loads(result.to_json())["ts_ms"] == 1794985200250


@pytest.mark.parametrize(("raw", "reason"), [
    (b"x" * 70_000, "too_large"),
    (b"\xc3\x28", "not_utf8"),
    (b"{", "invalid_json"),
    (b'{"a": NaN}', "invalid_json"),
    (b"", "invalid_json"),
    (b'"just a string"', "not_an_object"),
    (b"null", "not_an_object"),
])
def test_raw_level_rejections(raw, reason):
    result = VALIDATOR.check(raw, NOW)
    assert isinstance(result, Rejected)
    assert result.reason == reason


@pytest.mark.parametrize(("body", "reason"), [
    (make(type="teleport"), "unknown_type"),
    (make(type=7), "schema"),
    (make(event_id=None), "schema"),
    (make(event_id="x" * 129), "schema"),
    (make(event_id="bad\nid"), "schema"),
    (make(ids={}), "schema"),
    (make(ids={"anonymous_id": ""}), "schema"),
    (make(ids={"anonymous_id": "a\x00b"}), "schema"),
    (make(ids={"Bad-Type": "x"}), "schema"),
    (make(props={"price": -1}), "schema"),
    (make(props={"price": "1.00"}), "schema"),
    (make(props={"dwell_ms": 1.5}), "schema"),
    (make(type="consent"), "schema"),
    (make(consent={"personalization": "no"}, type="consent"), "schema"),
    (make(ts=True), "schema"),
    (make(ts=-1), "schema"),
    (make(ts="2026-11-18T08:00:00"), "schema"),  # too short to be RFC 3339 with an offset
    (make(ts="2026-11-18T08:00:00.000000"), "bad_timestamp"),  # no offset
    (make(ts="not a timestamp at all!"), "bad_timestamp"),
    (make(ts=0), "timestamp_out_of_range"),
    (make(ts=NOW + 86_400_001), "timestamp_out_of_range"),
])
def test_event_level_rejections(body, reason):
    result = check(body)
    assert isinstance(result, Rejected), body
    assert result.reason == reason, result.detail


@pytest.mark.parametrize("text", [
    "2026-11-18T08:00:00+01", "2026-11-18T08:00:00+01:00:30", "2026-W47-7T08:00:00Z", "2026-11-18T08:00:00,5Z",
    " 2026-11-18T08:00:00Z", "2026-11-18T08:00:00Z ", "2026-11-18T25:00:00Z", "2026-02-30T08:00:00Z",
])
def test_only_rfc3339_text_is_a_timestamp(text):
    with pytest.raises(ValueError):
        parse_event_time(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-18T07:00:00Z", 1794985200000),
    ("2026-11-18 07:00:00.5z", 1794985200500),
    ("2026-11-18T08:00:00.123456789+01:00", 1794985200123),
    ("2026-11-18t02:30:00.1-04:30", 1794985200100),
])
def test_rfc3339_variants(text, expected):
    assert parse_event_time(text) == expected


def test_whole_number_float_ts_is_epoch_ms_like_the_schema_says():
    assert isinstance(check(make(ts=float(NOW - 5000))), Accepted)
    assert check(make(ts=NOW - 0.5)).reason == "schema"  # type: ignore[union-attr]


def test_event_id_of_only_spaces_is_rejected():
    assert check(make(event_id="   ")).reason == "schema"  # type: ignore[union-attr]
    assert isinstance(check(make(event_id=" a b ")), Accepted)


def test_identifier_values_that_look_like_redis_patterns_are_plain_values():
    assert isinstance(check(make(ids={"anonymous_id": "user:*{x}[a-z]?", "custom_crm": "a b"})), Accepted)


def test_future_bound_is_relative_to_the_record_time():
    body = make(ts=NOW + 86_400_000)
    assert isinstance(check(body), Accepted)
    assert isinstance(check(body, reference=NOW - 1), Rejected)


def test_reasons_are_listed():
    assert set(REASONS) == {"too_large", "not_utf8", "invalid_json", "not_an_object", "unknown_type", "schema",
                            "bad_timestamp", "timestamp_out_of_range"}


def test_dead_letter_keeps_text_payload_and_origin():
    raw = b'{"event_id": "e-9", "type": "teleport"}'
    rejected = VALIDATOR.check(raw, NOW)
    assert isinstance(rejected, Rejected)
    record = VALIDATOR.dead_letter(raw, rejected, Origin("events", 2, 41, NOW), NOW + 1)
    assert record["payload"] == raw.decode()
    assert record["reason"] == "unknown_type"
    assert record["event_id"] == "e-9"
    assert record["dlq_id"] == "events:2:41"
    assert record["origin"] == {"topic": "events", "partition": 2, "offset": 41, "timestamp": NOW}
    assert record["payload_sha256"] == hashlib.sha256(raw).hexdigest()
    assert record["payload_truncated"] is False


def test_dead_letter_of_binary_payload_is_base64():
    raw = b"\xff\x00\xfe"
    record = VALIDATOR.dead_letter(raw, VALIDATOR.check(raw, NOW), Origin("events", 0, 1), NOW)  # type: ignore[arg-type]
    assert "payload" not in record
    assert base64.b64decode(record["payload_base64"]) == raw


def test_dead_letter_of_huge_payload_is_cut_but_fingerprinted():
    validator = EventValidator(ValidatorConfig(dlq_payload_max_bytes=1000))
    raw = ("é" * 1_000_000).encode()
    rejected = validator.check(raw, NOW)
    assert isinstance(rejected, Rejected) and rejected.reason == "too_large"
    record = validator.dead_letter(raw, rejected, Origin("events", 0, 1), NOW)
    assert record["payload_truncated"] is True
    assert record["payload_size"] == len(raw)
    assert len(record["payload"].encode()) <= 1000
    assert record["payload_sha256"] == hashlib.sha256(raw).hexdigest()


DEAD_LETTER_SCHEMA = jsonschema.Draft202012Validator(
    orjson.loads((SCHEMA_DIR / "dead-letter.schema.json").read_bytes()))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)))
def test_any_bytes_are_accepted_or_rejected_with_a_conforming_dead_letter(raw):
    result = VALIDATOR.check(raw, NOW)
    assert isinstance(result, Accepted | Rejected)
    if isinstance(result, Rejected):
        assert result.reason in REASONS
        record = VALIDATOR.dead_letter(raw, result, Origin("events", 0, 0), NOW)
        DEAD_LETTER_SCHEMA.validate(orjson.loads(orjson.dumps(record)))


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2999, 12, 31)),
       st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_rfc3339_parsing_is_exact_for_any_offset(moment, offset_minutes):
    tz = timezone(timedelta(minutes=offset_minutes))
    aware = moment.replace(tzinfo=tz)
    text = aware.isoformat(timespec="milliseconds")
    expected = (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert parse_event_time(text) == expected
    assert parse_event_time(text.replace("+00:00", "Z")) == expected
    assert parse_event_time(expected) == expected


_identifier = st.text(min_size=0, max_size=8)
_events = st.fixed_dictionaries(
    {"event_id": st.one_of(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1)),
     "type": st.sampled_from(["page_view", "consent", "purchase"]),
     "ts": st.one_of(st.integers(min_value=-1, max_value=NOW), st.just("2026-11-18T08:00:00Z"), st.booleans()),
     "ids": st.dictionaries(st.sampled_from(["anonymous_id", "user_id", "Bad", "x1"]), _identifier, max_size=3)},
    optional={"props": st.dictionaries(st.sampled_from(["price", "product_id", "dwell_ms", "other"]),
                                       st.one_of(st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=3)),
                                       max_size=3),
              "consent": st.dictionaries(st.sampled_from(["personalization", "Ads"]), st.booleans(), max_size=2),
              "channel": st.sampled_from(["web", "App", "pos"])})


@settings(max_examples=300, deadline=None)
@given(_events)
def test_compiled_validator_agrees_with_the_reference_implementation(body):
    reference = jsonschema.Draft202012Validator(load_event_schema())
    ours = EventValidator().check(orjson.dumps(body), NOW)
    schema_ok = reference.is_valid(body)
    if schema_ok:
        assert not (isinstance(ours, Rejected) and ours.reason in ("schema", "unknown_type"))
    else:
        assert isinstance(ours, Rejected) and ours.reason in ("schema", "unknown_type")


def test_epoch_ms_of_kafka_timestamps():
    class Instant:
        def to_epoch_milli(self) -> int:
            return 42

    assert epoch_ms(None) is None
    assert epoch_ms(7) == 7
    assert epoch_ms(Instant()) == 42
    assert epoch_ms(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == 1000
