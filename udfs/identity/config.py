"""Typed configuration of the identity job, loaded from `flink-conf/identity.yaml` and
`flink-conf/profile-policies.yaml`.

Every field is documented on its dataclass; the YAML files carry the same names. Loading validates
eagerly and raises :class:`ConfigError` naming the offending path, so a bad file fails the job at start.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parents[2] / "flink-conf"
IDENTITY_CONFIG_PATH = CONF_DIR / "identity.yaml"
PROFILE_POLICIES_PATH = CONF_DIR / "profile-policies.yaml"

ID_NORMALIZERS = ("trim", "lower", "email", "phone")
COMPARATORS = ("exact", "jaro_winkler", "numeric", "edit_distance")
FEATURE_NORMALIZERS = ("text", "name", "digits", "date", "zip", "email", "phone")
BLOCK_TRANSFORMS = ("exact", "soundex", "initial", "year", "prefix3")
POLICIES = ("source_priority", "most_recent", "first_seen", "max", "min", "sum", "union", "non_empty")
PII_MODES = ("plain", "hash", "omit")
ANY_TYPE = "*"


class ConfigError(ValueError):
    """A configuration file is missing a field, has a wrong type or an inconsistent value."""


@dataclass(frozen=True)
class IdentifierType:
    """How one identifier type is normalized, protected and limited.

    Attributes:
        name: the key in the event's `ids` object.
        priority: lower is stronger. Orders the identifiers of an event (the strongest is its anchor),
            decides which link is dropped when a limit would be exceeded (the weaker one) and breaks
            first-seen ties in the survivor rule.
        max_per_person: at most this many identifiers of this type in one person (None: unlimited).
        normalize: `trim`, `lower`, `email` (trim + lower-case, must look like an address) or `phone`
            (E.164 with the default country code).
        hashed: the normalized value is replaced by its keyed HMAC everywhere (state and outputs).
    """

    name: str
    priority: int
    max_per_person: int | None
    normalize: str = "trim"
    hashed: bool = False


@dataclass(frozen=True)
class Blocklist:
    """Identifier values that never link anything.

    Attributes:
        values: exact values, compared case-insensitively after trimming.
        patterns: regular expressions searched in the trimmed value (case-insensitive).
    """

    values: frozenset[str] = frozenset()
    patterns: tuple[re.Pattern[str], ...] = ()

    def blocks(self, value: str) -> bool:
        """Tells whether the value is blocked."""
        text = value.strip()
        return text.lower() in self.values or any(p.search(text) for p in self.patterns)


@dataclass(frozen=True)
class FieldSpec:
    """One compared field of the Fellegi-Sunter model.

    Attributes:
        name: field name (also the trait it is read from unless `source` says otherwise).
        source: `traits.<name>` or `ids.<type>`.
        normalize: feature normalizer (`text`, `name`, `digits`, `date`, `zip`, `email`, `phone`);
            `email` and `phone` values are hashed, so they only support the `exact` comparator.
        comparator: `exact`, `jaro_winkler` (levels are minimum similarities), `numeric` (levels are
            maximum absolute differences) or `edit_distance` (levels are maximum edit distances).
        levels: agreement levels, strongest first; `exact` has the single implicit level.
        m: P(outcome | match) for each level then for disagreement (len(levels) + 1 values).
        u: P(outcome | non-match), same shape.
    """

    name: str
    source: str
    normalize: str
    comparator: str
    levels: tuple[float, ...]
    m: tuple[float, ...]
    u: tuple[float, ...]

    @property
    def outcomes(self) -> int:
        """Number of comparison outcomes (agreement levels plus disagreement)."""
        return len(self.levels) + 1

    @cached_property
    def weights(self) -> tuple[float, ...]:
        """Log2-likelihood weight of each outcome."""
        return tuple(math.log2(m / u) for m, u in zip(self.m, self.u, strict=True))


@dataclass(frozen=True)
class MatchingConfig:
    """Probabilistic (Fellegi-Sunter) matching of `identify` events.

    Attributes:
        enabled: matching on or off.
        event_types: event types whose traits are matched.
        upper_threshold: a pair scoring at or above this (log2 units) is linked.
        lower_threshold: a pair scoring in [lower, upper) is emitted as a review candidate.
        max_block_size: a blocking key keeps at most this many records (the earliest by event time).
        min_fields: a record with fewer non-empty compared fields is neither indexed nor probed.
        blocking: blocking keys, each a tuple of (transform, field) parts.
        fields: compared fields by name.
    """

    enabled: bool
    event_types: frozenset[str]
    upper_threshold: float
    lower_threshold: float
    max_block_size: int
    min_fields: int
    blocking: tuple[tuple[tuple[str, str], ...], ...]
    fields: dict[str, FieldSpec]


@dataclass(frozen=True)
class StoreConfig:
    """Names of the keys and tables the wrapper writes.

    Attributes:
        redis_profile_key: Redis hash of a profile, formatted with `person_id`.
        redis_alias_key: Redis string identifier → person id, formatted with `id_type` and `id_value`.
        dynamodb_table: DynamoDB profile table (hash key `person_id`).
        profile_ttl_days: DynamoDB `expires_at` is the person's latest event time plus this (0: none).
    """

    redis_profile_key: str = "tagstream:profile:{person_id}"
    redis_alias_key: str = "tagstream:alias:{id_type}:{id_value}"
    dynamodb_table: str = "tagstream_profiles"
    profile_ttl_days: int = 400


@dataclass(frozen=True)
class IdentityConfig:
    """Everything the identity graph and matcher need.

    Attributes:
        identifier_types: the well-known types by name.
        default_type: rule for user-defined types (its name is ignored).
        blocked: blocklists by identifier type; `*` applies to every type.
        traits_as_identifiers: trait name → identifier type; such traits also link (e.g. traits.email).
        default_country_code: digits prepended to national phone numbers (E.164).
        max_component_identifiers: a link that would grow a connected component beyond this is refused
            (`component_limit`), bounding the state one key holds.
        erase_tombstone_days: how long an erased identifier's hash is kept to drop replayed old events.
        matching: probabilistic matching settings.
        stores: Redis / DynamoDB names.
        topics: output topic names by role (`merges`, `profiles`, `erasures`, `identified`, `review`).
    """

    identifier_types: dict[str, IdentifierType]
    default_type: IdentifierType
    blocked: dict[str, Blocklist]
    traits_as_identifiers: dict[str, str]
    default_country_code: str
    max_component_identifiers: int
    erase_tombstone_days: int
    matching: MatchingConfig
    stores: StoreConfig = field(default_factory=StoreConfig)
    topics: dict[str, str] = field(default_factory=dict)

    def type_rule(self, id_type: str) -> IdentifierType:
        """Returns the rule of an identifier type (the default rule for user-defined types)."""
        return self.identifier_types.get(id_type) or IdentifierType(
            id_type, self.default_type.priority, self.default_type.max_per_person,
            self.default_type.normalize, self.default_type.hashed)

    def is_blocked(self, id_type: str, value: str) -> bool:
        """Tells whether a (normalized, unhashed) identifier value is blocked for its type."""
        return any(bl.blocks(value) for name in (ANY_TYPE, id_type) if (bl := self.blocked.get(name)))


@dataclass(frozen=True)
class AttributePolicy:
    """How one profile attribute is resolved and protected.

    Attributes:
        name: attribute name in the profile.
        policy: one of POLICIES.
        source: where values come from: `traits.<name>` (default) or `props.<name>`.
        event_types: only events of these types contribute (empty: all).
        normalize: `email` / `phone` normalize the value before hashing (used with `pii: hash`).
        pii: `plain` (emitted as is), `hash` (kept and emitted as keyed HMAC), `omit` (never kept in the
            profile nor emitted; such traits serve matching only).
    """

    name: str
    policy: str
    source: str
    event_types: frozenset[str] = frozenset()
    normalize: str | None = None
    pii: str = "plain"


@dataclass(frozen=True)
class ProfilePolicies:
    """Conflict resolution of profile attributes.

    Attributes:
        source_scores: trust score by `source`; higher wins under `source_priority`.
        default_source_score: score of unlisted sources.
        default: policy of traits not listed in `attributes` (its name and source are ignored).
        attributes: listed attributes by name.
        max_union_elements: a `union` attribute keeps the earliest-seen elements up to this count.
        consent_purposes: purposes kept from `consent` events (empty: any).
    """

    source_scores: dict[str, float]
    default_source_score: float
    default: AttributePolicy
    attributes: dict[str, AttributePolicy]
    max_union_elements: int = 100
    consent_purposes: frozenset[str] = frozenset()

    def for_trait(self, name: str) -> AttributePolicy:
        """Returns the policy of a trait (the default one when not listed)."""
        listed = self.attributes.get(name)
        if listed is not None:
            return listed
        d = self.default
        return AttributePolicy(name, d.policy, f"traits.{name}", d.event_types, d.normalize, d.pii)

    def source_score(self, source: str) -> float:
        """Returns a source's trust score."""
        return self.source_scores.get(source, self.default_source_score)


# --- loading -------------------------------------------------------------------------------------


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # a safe loader (C if built)
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _get(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
         default: Any = ...) -> Any:
    if key not in data or data[key] is None:
        if default is ...:
            raise ConfigError(f"{where}.{key} is required")
        return default
    value = data[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{where}.{key} must be {kind}, not a boolean")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}.{key} must be {kind}, not {type(value).__name__}")
    return value


def _choice(value: str, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{where} is {value!r}; expected one of {', '.join(allowed)}")
    return value


def _identifier_type(name: str, raw: dict[str, Any], where: str) -> IdentifierType:
    limit = _get(raw, "max_per_person", int, where, None)
    if limit is not None and limit < 1:
        raise ConfigError(f"{where}.max_per_person must be at least 1")
    return IdentifierType(
        name=name,
        priority=_get(raw, "priority", int, where),
        max_per_person=limit,
        normalize=_choice(_get(raw, "normalize", str, where, "trim"), ID_NORMALIZERS, f"{where}.normalize"),
        hashed=_get(raw, "hashed", bool, where, False),
    )


def _blocklists(raw: dict[str, Any], where: str) -> dict[str, Blocklist]:
    out: dict[str, Blocklist] = {}
    for id_type, spec in raw.items():
        w = f"{where}.{id_type}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{w} must be a mapping with `values` and/or `patterns`")
        values = [str(v).strip().lower() for v in _get(spec, "values", list, w, [])]
        try:
            patterns = tuple(re.compile(str(p), re.IGNORECASE) for p in _get(spec, "patterns", list, w, []))
        except re.error as err:
            raise ConfigError(f"{w}.patterns: {err}") from None
        out[str(id_type)] = Blocklist(frozenset(values), patterns)
    return out


def _field_spec(name: str, raw: dict[str, Any], where: str) -> FieldSpec:
    comparator = _choice(_get(raw, "comparator", str, where), COMPARATORS, f"{where}.comparator")
    levels = tuple(float(x) for x in _get(raw, "levels", list, where, []))
    if comparator == "exact":
        levels = (0.0,)
    elif not levels:
        raise ConfigError(f"{where}.levels must list at least one agreement level for {comparator}")
    m = tuple(float(x) for x in _get(raw, "m", list, where))
    u = tuple(float(x) for x in _get(raw, "u", list, where))
    for label, probs in (("m", m), ("u", u)):
        if len(probs) != len(levels) + 1:
            raise ConfigError(f"{where}.{label} needs {len(levels) + 1} probabilities "
                              "(levels, then disagreement)")
        if any(not 0 < p < 1 for p in probs):
            raise ConfigError(f"{where}.{label} probabilities must be in (0, 1)")
    normalize = _choice(_get(raw, "normalize", str, where, "text"), FEATURE_NORMALIZERS, f"{where}.normalize")
    if normalize in ("email", "phone") and comparator != "exact":
        raise ConfigError(f"{where}: {normalize} features are hashed and support only the exact comparator")
    source = _get(raw, "source", str, where, f"traits.{name}")
    if not source.startswith(("traits.", "ids.")):
        raise ConfigError(f"{where}.source must start with `traits.` or `ids.`")
    return FieldSpec(name, source, normalize, comparator, levels, m, u)


def _matching(raw: dict[str, Any], base: Path) -> MatchingConfig:
    where = "matching"
    fields_raw = dict(_get(raw, "fields", dict, where))
    weights_file = _get(raw, "weights_file", str, where, None)
    if weights_file:
        weights = _read_yaml(base / weights_file)  # an absolute path stays absolute
        for fname, mu in _get(weights, "fields", dict, "weights_file").items():
            if fname in fields_raw:
                fields_raw[fname] = {**fields_raw[fname], **{k: mu[k] for k in ("m", "u") if k in mu}}
    fields = {str(n): _field_spec(str(n), spec, f"{where}.fields.{n}") for n, spec in fields_raw.items()}
    blocking: list[tuple[tuple[str, str], ...]] = []
    for i, key in enumerate(_get(raw, "blocking", list, where)):
        parts = []
        for part in key:
            transform, _, fname = str(part).partition(":")
            _choice(transform, BLOCK_TRANSFORMS, f"{where}.blocking[{i}]")
            if fname not in fields:
                raise ConfigError(f"{where}.blocking[{i}] uses unknown field {fname!r}")
            parts.append((transform, fname))
        blocking.append(tuple(parts))
    upper = float(_get(raw, "upper_threshold", (int, float), where))
    lower = float(_get(raw, "lower_threshold", (int, float), where))
    if lower > upper:
        raise ConfigError(f"{where}.lower_threshold must not exceed upper_threshold")
    return MatchingConfig(
        enabled=_get(raw, "enabled", bool, where, True),
        event_types=frozenset(_get(raw, "event_types", list, where, ["identify"])),
        upper_threshold=upper,
        lower_threshold=lower,
        max_block_size=_get(raw, "max_block_size", int, where, 50),
        min_fields=_get(raw, "min_fields", int, where, 2),
        blocking=tuple(blocking),
        fields=fields,
    )


def identity_config_from_dict(data: dict[str, Any], base: Path = CONF_DIR) -> IdentityConfig:
    """Builds an :class:`IdentityConfig` from parsed YAML.

    Args:
        data: the parsed document.
        base: directory that relative file references (`matching.weights_file`) are resolved against.
    """
    types_raw = _get(data, "identifier_types", dict, "")
    types = {str(n): _identifier_type(str(n), spec, f"identifier_types.{n}") for n, spec in types_raw.items()}
    default_type = _identifier_type(ANY_TYPE, _get(data, "default_identifier_type", dict, ""),
                                    "default_identifier_type")
    traits_ids = {str(k): str(v) for k, v in _get(data, "traits_as_identifiers", dict, "", {}).items()}
    cc = str(_get(data, "default_country_code", (str, int), "", "1"))
    if not cc.isdigit() or not 1 <= len(cc) <= 3:
        raise ConfigError("default_country_code must be 1 to 3 digits")
    stores_raw = _get(data, "stores", dict, "", {})
    return IdentityConfig(
        identifier_types=types,
        default_type=default_type,
        blocked=_blocklists(_get(data, "blocked", dict, "", {}), "blocked"),
        traits_as_identifiers=traits_ids,
        default_country_code=cc,
        max_component_identifiers=_get(data, "max_component_identifiers", int, "", 1000),
        erase_tombstone_days=_get(data, "erase_tombstone_days", int, "", 400),
        matching=_matching(_get(data, "matching", dict, ""), base),
        stores=StoreConfig(**{k: v for k, v in stores_raw.items() if k in StoreConfig.__dataclass_fields__}),
        topics={str(k): str(v) for k, v in _get(data, "topics", dict, "", {}).items()},
    )


def _attribute(name: str, raw: dict[str, Any] | str, where: str) -> AttributePolicy:
    if isinstance(raw, str):
        raw = {"policy": raw}
    normalize = _get(raw, "normalize", str, where, None)
    if normalize is not None:
        _choice(normalize, ("email", "phone"), f"{where}.normalize")
    source = _get(raw, "source", str, where, f"traits.{name}")
    if not source.startswith(("traits.", "props.")):
        raise ConfigError(f"{where}.source must start with `traits.` or `props.`")
    return AttributePolicy(
        name=name,
        policy=_choice(_get(raw, "policy", str, where), POLICIES, f"{where}.policy"),
        source=source,
        event_types=frozenset(_get(raw, "event_types", list, where, [])),
        normalize=normalize,
        pii=_choice(_get(raw, "pii", str, where, "plain"), PII_MODES, f"{where}.pii"),
    )


def profile_policies_from_dict(data: dict[str, Any]) -> ProfilePolicies:
    """Builds :class:`ProfilePolicies` from parsed YAML."""
    scores = {str(k): float(v) for k, v in _get(data, "source_priority", dict, "", {}).items()}
    attrs = {str(n): _attribute(str(n), spec, f"attributes.{n}")
             for n, spec in _get(data, "attributes", dict, "", {}).items()}
    return ProfilePolicies(
        source_scores=scores,
        default_source_score=float(_get(data, "default_source_score", (int, float), "", 0)),
        default=_attribute("*", _get(data, "default", (dict, str), "", "most_recent"), "default"),
        attributes=attrs,
        max_union_elements=_get(data, "max_union_elements", int, "", 100),
        consent_purposes=frozenset(_get(data, "consent_purposes", list, "", [])),
    )


def load_identity_config(path: Path = IDENTITY_CONFIG_PATH) -> IdentityConfig:
    """Loads and validates `identity.yaml`."""
    return identity_config_from_dict(_read_yaml(path), path.parent)


def load_profile_policies(path: Path = PROFILE_POLICIES_PATH) -> ProfilePolicies:
    """Loads and validates `profile-policies.yaml`."""
    return profile_policies_from_dict(_read_yaml(path))
