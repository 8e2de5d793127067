"""Which person an event belongs to, until the identity job's person-annotated stream is wired.

The identity job (`udfs/identity/`) will publish every event with its canonical `person_id` (topic
`events.identified`); jobs keyed by person then read that topic and use the annotated id as is. Until then
they call :func:`person_id_of`, which takes the event's `person_id` when present and otherwise the primary
identifier of `ids`: `user_id`, else `email`, else `phone`, else `device_id`, else `anonymous_id`, else
the first user-defined type by name, prefixed with its type (`user_id:u-42`). Email and phone never appear
raw (keys of Kafka, Redis and DynamoDB must not carry PII): they are normalized (trimmed; email
lower-cased, phone reduced to `+` and digits) and replaced by a SHA-256 digest. Unlike the identity job's
keyed HMAC this pseudonym is unkeyed: good enough as an interim store key, not as protection against
someone who can guess the address. Pure Python.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

PRIMARY_ID_TYPES = ("user_id", "email", "phone", "device_id", "anonymous_id")
HASHED_ID_TYPES = frozenset({"email", "phone"})


def person_id_of(event: Mapping[str, Any]) -> str | None:
    """Returns the person id of an event (see the module doc), or None when it has no usable identifier."""
    annotated = event.get("person_id")
    if isinstance(annotated, str) and annotated.strip():
        return annotated.strip()
    ids = event.get("ids")
    if not isinstance(ids, Mapping):
        return None
    others = sorted(k for k in ids if isinstance(k, str) and k not in PRIMARY_ID_TYPES)
    for id_type in (*PRIMARY_ID_TYPES, *others):
        value = ids.get(id_type)
        if isinstance(value, str) and value.strip():
            return f"{id_type}:{_value(id_type, value.strip())}"
    return None


def _value(id_type: str, value: str) -> str:
    if id_type not in HASHED_ID_TYPES:
        return value
    normalized = value.lower() if id_type == "email" else "".join(c for c in value if c.isdigit() or c == "+")
    return hashlib.sha256(f"{id_type}\x1f{normalized}".encode()).hexdigest()[:32]
