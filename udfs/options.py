"""Parsing of repeatable `KEY=VALUE` command-line options (jobs' `--kafka-property`, the lookup service's
`--kafka-option`)."""

from __future__ import annotations

from collections.abc import Iterable


def key_values(items: Iterable[str], flag: str) -> dict[str, str]:
    """`["a=1", "b=x=y"]` -> `{"a": "1", "b": "x=y"}` (a later key wins).

    Raises:
        SystemExit: an item without `=` or with an empty key (a usage error of `flag`).
    """
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} expects KEY=VALUE, got {item!r}")
        values[key] = value
    return values
