"""Redis key building: values are embedded only when harmless, otherwise as a digest (no I/O).

A key part is kept as is when it is 1-128 characters of `[A-Za-z0-9_.-]` (ids, HMAC hex digests, person
ids). Anything else (delimiters such as `:`, Redis glob or hash-tag characters `* ? [ ] { }`, spaces,
non-ASCII, empty or long values) becomes `~` + the first 32 hex digits of its SHA-256: a kept part never
contains `~`, so an encoded part cannot collide with a kept one, and no value can add a key segment or a
cluster hash tag. PII never reaches a key in clear: cores HMAC it first (`udfs.identity.pii`).
"""

from __future__ import annotations

import hashlib
import re

_SAFE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
ENCODED_MARK = "~"


def key_part(value: object) -> str:
    """The form of one value inside a key (see the module docstring)."""
    text = str(value)
    if _SAFE.fullmatch(text):
        return text
    return ENCODED_MARK + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def build_key(template: str, **parts: object) -> str:
    """Formats a key template (e.g. `tagstream:profile:{person_id}`) with every part made safe."""
    return template.format(**{name: key_part(value) for name, value in parts.items()})
