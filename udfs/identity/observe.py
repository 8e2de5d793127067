"""Turns a contract event into an :class:`Observation`: typed identifier keys, profile contributions,
consent, matching features and a sanitized copy — with every email and phone already a keyed hash.

Nothing after this step sees raw identifiers of hashed types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from udfs.contract import parse_event_time
from udfs.identity.config import IdentityConfig, ProfilePolicies
from udfs.identity.graph import canonical_keys
from udfs.identity.matching import extract_features
from udfs.identity.pii import PiiHasher, normalize_email, normalize_phone, redact_emails
from udfs.identity.profile import Candidate

BLOCKED = "blocked_value"
INVALID = "invalid_value"


@dataclass(frozen=True)
class Observation:
    """What the identity job takes from one event.

    Attributes:
        event_id: the event's id.
        ts_ms: event time in epoch milliseconds.
        type: event type.
        source: producing system (`unknown` when absent).
        keys: typed identifier keys (`type:value`, hashed for hashed types), canonical order.
        dropped: (identifier type, reason) of identifiers that were blocked or invalid.
        contributions: attribute → candidate, PII already hashed, `omit` attributes excluded.
        consent: purpose → candidate (boolean value).
        features: matching features (empty unless the event type is matched).
        sanitized: the event without raw PII, for the annotated output.
    """

    event_id: str
    ts_ms: int
    type: str
    source: str
    keys: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...] = ()
    contributions: dict[str, Candidate] = field(default_factory=dict)
    consent: dict[str, Candidate] = field(default_factory=dict)
    features: dict[str, str] = field(default_factory=dict)
    sanitized: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the keyed job's messages)."""
        return {"event_id": self.event_id, "ts": self.ts_ms, "type": self.type, "source": self.source,
                "keys": list(self.keys), "dropped": [list(d) for d in self.dropped],
                "contributions": {k: c.to_list() for k, c in self.contributions.items()},
                "consent": {k: c.to_list() for k, c in self.consent.items()},
                "features": self.features, "sanitized": self.sanitized}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observation:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["event_id"]), int(data["ts"]), str(data["type"]), str(data["source"]),
                   tuple(data["keys"]), tuple((str(a), str(b)) for a, b in data.get("dropped", ())),
                   {k: Candidate.from_list(v) for k, v in data.get("contributions", {}).items()},
                   {k: Candidate.from_list(v) for k, v in data.get("consent", {}).items()},
                   dict(data.get("features", {})), dict(data.get("sanitized", {})))


def normalize_identifier(id_type: str, raw: Any, config: IdentityConfig) -> tuple[str | None, str | None]:
    """Normalizes one identifier value (not yet hashed).

    Returns:
        (value, None) when usable, else (None, reason) with reason `invalid_value` or `blocked_value`.
    """
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        return None, INVALID
    text = str(raw).strip()
    rule = config.type_rule(id_type)
    if not text:
        return None, INVALID
    if config.is_blocked(id_type, text):
        return None, BLOCKED
    value: str | None
    if rule.normalize == "email":
        value = normalize_email(text)
    elif rule.normalize == "phone":
        value = normalize_phone(text, config.default_country_code)
    else:
        value = text.lower() if rule.normalize == "lower" else text
    if value is None:
        return None, INVALID
    if config.is_blocked(id_type, value):
        return None, BLOCKED
    return value, None


def identifier_key(id_type: str, raw: Any, config: IdentityConfig,
                   hasher: PiiHasher) -> tuple[str | None, str | None]:
    """Returns (typed key, None) for a usable identifier, or (None, reason)."""
    value, reason = normalize_identifier(id_type, raw, config)
    if value is None:
        return None, reason
    if config.type_rule(id_type).hashed:
        value = hasher.digest(id_type, value)
    return f"{id_type}:{value}", None


def event_time(event: Mapping[str, Any]) -> int:
    """The event time in epoch ms: the ingest-derived `ts_ms` when present, else `ts` parsed."""
    ts_ms = event.get("ts_ms")
    if isinstance(ts_ms, int) and not isinstance(ts_ms, bool):
        return ts_ms
    return parse_event_time(event["ts"])


def _attribute_value(name: str, raw: Any, normalize: str | None, pii: str, config: IdentityConfig,
                     hasher: PiiHasher) -> Any:
    """Applies an attribute's PII rule; returns the value to keep, or None to keep nothing."""
    if pii == "omit":
        return None
    if pii == "plain":
        return raw
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        return None
    text = str(raw).strip()
    if normalize == "email":
        text = normalize_email(text) or ""
    elif normalize == "phone":
        text = normalize_phone(text, config.default_country_code) or ""
    return hasher.digest(normalize or name, text) if text else None


def observe(event: Mapping[str, Any], config: IdentityConfig, policies: ProfilePolicies,
            hasher: PiiHasher) -> Observation:
    """Builds the observation of a valid contract event (see the module docstring)."""
    event_id = str(event["event_id"])
    ts_ms = event_time(event)
    etype = str(event.get("type", ""))
    source = str(event.get("source") or "unknown")
    ids = event.get("ids") or {}
    traits = event.get("traits") if isinstance(event.get("traits"), Mapping) else {}
    props = event.get("props") if isinstance(event.get("props"), Mapping) else {}
    assert isinstance(traits, Mapping) and isinstance(props, Mapping)

    keys: list[str] = []
    dropped: list[tuple[str, str]] = []
    clean_ids: dict[str, str] = {}
    for id_type, raw in sorted(ids.items()):
        key, reason = identifier_key(str(id_type), raw, config, hasher)
        if key is None:
            dropped.append((str(id_type), reason or INVALID))
        else:
            keys.append(key)
            clean_ids[str(id_type)] = key.partition(":")[2]
    for trait, id_type in sorted(config.traits_as_identifiers.items()):
        if trait in traits:
            key, reason = identifier_key(id_type, traits[trait], config, hasher)
            if key is not None:
                keys.append(key)
            elif reason == BLOCKED:
                dropped.append((id_type, reason))

    contributions: dict[str, Candidate] = {}
    clean_traits: dict[str, Any] = {}
    for name, raw in traits.items():
        policy = policies.for_trait(str(name))
        if policy.pii == "omit":
            continue
        value = _attribute_value(policy.name, raw, policy.normalize, policy.pii, config, hasher)
        if value is None and raw is not None:
            continue
        clean_traits[str(name)] = value
        if policy.source == f"traits.{name}" and (not policy.event_types or etype in policy.event_types):
            contributions[policy.name] = Candidate(value, ts_ms, event_id, source)
    for policy in policies.attributes.values():
        section, _, field_name = policy.source.partition(".")
        if section != "props" or field_name not in props:
            continue
        if not policy.event_types or etype in policy.event_types:
            value = _attribute_value(policy.name, props[field_name], policy.normalize, policy.pii, config,
                                     hasher)
            if value is not None:
                contributions[policy.name] = Candidate(value, ts_ms, event_id, source)

    consent: dict[str, Candidate] = {}
    if etype == "consent" and isinstance(event.get("consent"), Mapping):
        for purpose, granted in event["consent"].items():
            wanted = not policies.consent_purposes or purpose in policies.consent_purposes
            if isinstance(granted, bool) and wanted:
                consent[str(purpose)] = Candidate(granted, ts_ms, event_id, source)

    features: dict[str, str] = {}
    if config.matching.enabled and etype in config.matching.event_types and traits:
        features = extract_features(event, config.matching, hasher, config.default_country_code)

    sanitized = {k: v for k, v in event.items() if k not in ("ids", "traits", "props")}
    sanitized["ids"] = clean_ids
    if traits:
        sanitized["traits"] = clean_traits
    if props:
        sanitized["props"] = {k: redact_emails(v) if isinstance(v, str) else v for k, v in props.items()}
    return Observation(event_id, ts_ms, etype, source, canonical_keys(keys, config), tuple(dropped),
                       contributions, consent, features, sanitized)
