"""DynamoDB attribute values and item liveness (no I/O).

Items are JSON-ready dicts on the tagstream side; DynamoDB wants typed attribute values and takes numbers
as Decimal: floats go through their shortest repr (`0.1` stays `0.1`), NaN and infinities are refused.
Reading back, integral numbers become int and the others float.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

VERSION_ATTR, EXPIRES_ATTR, EXPIRES_MS_ATTR, TOMBSTONE_ATTR = "version", "expires_at", "expires_at_ms", "_tombstone"

_SERIALIZER, _DESERIALIZER = TypeSerializer(), TypeDeserializer()


def _decimalize(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"DynamoDB cannot store {value!r}")
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {str(k): _decimalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_decimalize(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_attributes(item: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready item as DynamoDB attribute values (floats as Decimal)."""
    return {k: _SERIALIZER.serialize(_decimalize(v)) for k, v in item.items()}


def from_attributes(raw: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB attribute values as a plain item (numbers as int or float)."""
    return {k: _plain(_DESERIALIZER.deserialize(v)) for k, v in raw.items()}


def is_live(item: Mapping[str, Any], now_ms: int) -> bool:
    """Whether a stored item is visible at `now_ms`: not a tombstone, and not past `expires_at_ms` (when
    the item has it) or `expires_at` (epoch seconds). DynamoDB removes expired items only eventually and
    DynamoDB Local never does, so every reader applies this."""
    if item.get(TOMBSTONE_ATTR):
        return False
    if item.get(EXPIRES_MS_ATTR) is not None:
        return now_ms < int(item[EXPIRES_MS_ATTR])
    if item.get(EXPIRES_ATTR) is not None:
        return now_ms < int(item[EXPIRES_ATTR]) * 1000
    return True
