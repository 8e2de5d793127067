"""The identity job's core: component state in, observation in → component state and outputs out.

- :class:`ComponentState` is everything kept for one connected component of identifiers (the Flink
  keyed state of the component stage): identity graph, per-identifier profile contributions, matching
  records indexed, a version counter. It serializes to JSON (:meth:`ComponentState.to_bytes`) and two
  states merge with :meth:`ComponentState.merge` (associative, commutative, idempotent).
- :func:`apply_observation` applies one observation to a component and returns the outputs: merge /
  split / refused records, alias writes, profile writes and deletions, the annotated event.
- :class:`IdentityService` composes them in one process: an identifier directory, the components, the
  blocking index and the tombstones of erased identifiers. It is the reference semantics of the keyed
  job (docs/identity.md) and what the tests drive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from udfs.identity import erase as erase_mod
from udfs.identity.config import (
    IDENTITY_CONFIG_PATH,
    PROFILE_POLICIES_PATH,
    IdentityConfig,
    ProfilePolicies,
    load_identity_config,
    load_profile_policies,
)
from udfs.identity.graph import IdentityGraph, Link, Partition, Refusal, canonical_keys, key_type, stable_id
from udfs.identity.matching import BlockIndex, BlockRecord, blocking_keys
from udfs.identity.observe import Observation, identifier_key, observe
from udfs.identity.pii import PiiHasher
from udfs.identity.profile import ProfileState
from udfs.identity.records import (
    STORE_OPS,
    Output,
    alias_outputs,
    identified_event,
    merge_record,
    next_version,
    profile_deletion,
    profile_document,
    profile_outputs,
    refusal_record,
    review_record,
)

FS_MATCH = "fs_match"


@dataclass(frozen=True)
class Settings:
    """The configuration and secrets the core runs with."""

    config: IdentityConfig
    policies: ProfilePolicies
    hasher: PiiHasher


@dataclass
class ComponentState:
    """Keyed state of one connected component.

    Attributes:
        graph: identifiers (first sightings) and the link log.
        profiles: typed identifier key → profile contributions of the events anchored on it; a person's
            profile is the CRDT merge over its identifiers, so splits and merges never lose data.
        indexed: matching record id → [anchor key, blocking keys...] (to purge the index on erasure).
        seq: version of the component's last store write (:func:`next_version`: event time packed with a
            counter; monotone; merged by max).
    """

    graph: IdentityGraph = field(default_factory=IdentityGraph)
    profiles: dict[str, ProfileState] = field(default_factory=dict)
    indexed: dict[str, list[str]] = field(default_factory=dict)
    seq: int = 0

    def merge(self, other: ComponentState, policies: ProfilePolicies,
              config: IdentityConfig | None = None) -> None:
        """Unions another component into this one (`config` lets the graph keep its derived persons)."""
        self.graph.merge(other.graph, config)
        for key, prof in other.profiles.items():
            self.profiles.setdefault(key, ProfileState()).merge(prof, policies)
        self.indexed.update(other.indexed)
        self.seq = max(self.seq, other.seq)

    def person_profile(self, members: Iterable[str], policies: ProfilePolicies) -> ProfileState:
        """The merged profile state of a person's identifiers (read-only: it may be a stored state)."""
        states = [self.profiles[k] for k in members if k in self.profiles]
        if len(states) == 1:
            return states[0]
        merged = ProfileState()
        for state in states:
            merged.merge(state, policies)
        return merged

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the wrapper stores)."""
        return {"g": self.graph.to_dict(), "p": {k: v.to_dict() for k, v in self.profiles.items()},
                "i": self.indexed, "s": self.seq}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComponentState:
        """Inverse of :meth:`to_dict`."""
        return cls(IdentityGraph.from_dict(data["g"]),
                   {k: ProfileState.from_dict(v) for k, v in data.get("p", {}).items()},
                   {k: list(v) for k, v in data.get("i", {}).items()}, int(data.get("s", 0)))

    def to_bytes(self) -> bytes:
        """Serialized state."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, raw: bytes) -> ComponentState:
        """Inverse of :meth:`to_bytes`."""
        return cls.from_dict(orjson.loads(raw))


def _documents(state: ComponentState, part: Partition, persons: Iterable[str], settings: Settings,
               version: int) -> dict[str, dict[str, Any]]:
    docs = {}
    for pid in persons:
        members = part.members[pid]
        prof = state.person_profile(members, settings.policies)
        attrs = prof.resolve(settings.policies)
        consent = prof.resolve_consent()
        updated = max([state.graph.first_seen[k][0] for k in members]
                      + [a["provenance"]["ts"] for a in attrs.values()]
                      + [c["provenance"]["ts"] for c in consent.values()])
        docs[pid] = profile_document(pid, version, updated, members, attrs, consent)
    return docs


def _content(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("version", "updated_ts")}


def _has_content(doc: dict[str, Any]) -> bool:
    """Profiles without attributes or consent are not written (anonymous traffic); aliases still are."""
    return bool(doc["attributes"] or doc["consent"])


def _changed(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Names of attributes (and `consent.<purpose>`) whose value differs."""
    out: list[str] = []
    for section, prefix in (("attributes", ""), ("consent", "consent.")):
        a, b = (old or {}).get(section, {}), new[section]
        out.extend(prefix + k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return sorted(out)


def _evidence(obs: Observation, origin: Mapping[str, Any]) -> dict[str, Any]:
    evidence = {"event_type": obs.type, "source": obs.source,
                "identifier_types": sorted({key_type(k) for k in obs.keys})}
    evidence.update({k: v for k, v in origin.items() if k in ("score", "fields", "records")})
    return evidence


def _identity_diff(before: Partition, after: Partition, obs: Observation, origin: Mapping[str, Any],
                   settings: Settings, version: int) -> tuple[list[Output], set[str]]:
    """Merge / split / refused records and alias writes (at `version`) between two partitions; returns the
    persons whose membership changed."""
    config = settings.config
    outputs: list[Output] = []
    changed: set[str] = set()
    reason = origin.get("kind", "identifier_link") if len(obs.keys) > 1 else "survivor_rekey"
    for pid, keys in sorted(before.members.items()):
        targets = sorted({after.person_of[k] for k in keys if k in after.person_of})
        if targets == [pid] and after.members.get(pid) == keys:
            continue
        changed.update(targets)
        if not targets or targets == [pid]:
            continue
        kind = "merge" if len(targets) == 1 else "split"
        outputs.append(merge_record(config, kind, pid, targets, reason if kind == "merge" else "relinked",
                                    obs.event_id, obs.ts_ms, _evidence(obs, origin)))
        if pid not in after.members:
            outputs.extend(profile_deletion(config, pid, version))
    changed.update(pid for pid in after.members if pid not in before.members)
    known = {r.idempotency_key for r in before.refusals}
    for refusal in after.refusals:
        if refusal.idempotency_key not in known:
            outputs.append(refusal_record(config, refusal, after.person_of[refusal.anchor],
                                          after.person_of[refusal.refused], obs.ts_ms))
    aliases = {k: p for k, p in after.person_of.items() if before.person_of.get(k) != p}
    outputs.extend(alias_outputs(config, aliases, version))
    return outputs, changed


def apply_observation(state: ComponentState, obs: Observation, settings: Settings,
                      origin: Mapping[str, Any] | None = None, annotate: bool = True) -> list[Output]:
    """Applies one observation to a component (updated in place) and returns the outputs.

    Args:
        state: the component holding (or about to hold) every identifier of the observation.
        obs: the observation; its first key is the anchor that receives its profile contributions.
        settings: configuration, policies and hasher.
        origin: provenance of the link it asserts (default: an event link).
        annotate: emit the annotated event (False for synthetic links such as probabilistic matches).
    """
    if not obs.keys:
        return []
    config, policies = settings.config, settings.policies
    origin = dict(origin or {"kind": "identifier_link", "event_type": obs.type, "source": obs.source})
    before = state.graph.partition(config)
    touched_before = sorted({before.person_of[k] for k in obs.keys if k in before.person_of})
    docs_before = _documents(state, before, touched_before, settings, state.seq)

    state.graph.observe(obs.keys, obs.ts_ms, obs.event_id, config)
    if len(obs.keys) > 1:
        state.graph.add_link(Link(obs.event_id, obs.ts_ms, obs.keys, origin), config)
    anchor = obs.keys[0]
    if obs.contributions or obs.consent:
        prof = state.profiles.setdefault(anchor, ProfileState())
        for name, cand in obs.contributions.items():
            prof.add(policies.for_trait(name), cand, policies)
        for purpose, cand in obs.consent.items():
            prof.add_consent(purpose, cand)
    after = state.graph.partition(config)

    version = next_version(state.seq, obs.ts_ms)
    outputs, changed = _identity_diff(before, after, obs, origin, settings, version)
    touched = sorted(changed | {after.person_of[k] for k in obs.keys})
    docs = _documents(state, after, touched, settings, version)
    updates = [pid for pid in touched if _has_content(docs[pid])
               and (pid not in docs_before or _content(docs_before[pid]) != _content(docs[pid]))]
    if updates or any(isinstance(o, STORE_OPS) for o in outputs):
        state.seq = version
    for pid in updates:
        changed_names = _changed(docs_before.get(pid), docs[pid])
        outputs.extend(profile_outputs(config, docs[pid], changed_names, obs.event_id))
    if annotate:
        outputs.append(identified_event(config, obs.sanitized, after.person_of[anchor]))
    return outputs


def fs_link_observation(record: BlockRecord, other: BlockRecord, score: float, evidence: dict[str, Any],
                        config: IdentityConfig) -> tuple[Observation, dict[str, Any]]:
    """The synthetic link of a probabilistic match: deterministic id and time from the pair of records."""
    records = sorted((record.record_id, other.record_id))
    obs = Observation(event_id="fs:" + stable_id(*records), ts_ms=max(record.ts_ms, other.ts_ms),
                      type=FS_MATCH, source="identity.matching",
                      keys=canonical_keys([record.anchor, other.anchor], config))
    origin = {"kind": "probabilistic_match", "score": round(score, 4), "fields": evidence, "records": records}
    return obs, origin


@lru_cache(maxsize=8)
def _load_files(identity_path: Path, policies_path: Path) -> tuple[IdentityConfig, ProfilePolicies]:
    return load_identity_config(identity_path), load_profile_policies(policies_path)


class IdentityService:
    """The whole identity job in one process (reference semantics; the tests' entry point).

    Args:
        config: identity configuration.
        policies: profile policies.
        hasher: PII hasher (`PiiHasher.from_env()` in production).
    """

    def __init__(self, config: IdentityConfig, policies: ProfilePolicies, hasher: PiiHasher):
        self.settings = Settings(config, policies, hasher)
        self.directory: dict[str, str] = {}
        self.components: dict[str, ComponentState] = {}
        self.tombstones: dict[str, int] = {}
        self.blocks = BlockIndex()

    @classmethod
    def from_files(cls, hasher: PiiHasher, identity_path: Path = IDENTITY_CONFIG_PATH,
                   policies_path: Path = PROFILE_POLICIES_PATH) -> IdentityService:
        """A service configured from `identity.yaml` and `profile-policies.yaml` (parsed once per process)."""
        return cls(*_load_files(identity_path, policies_path), hasher)

    @property
    def config(self) -> IdentityConfig:
        """The identity configuration."""
        return self.settings.config

    def process(self, event: Mapping[str, Any]) -> list[Output]:
        """Processes one valid contract event and returns its outputs."""
        obs = observe(event, self.config, self.settings.policies, self.settings.hasher)
        if obs.type == "erase":
            return self._erase(obs)
        if any(self.tombstones.get(k, -1) >= obs.ts_ms for k in obs.keys):
            return []  # an event from before an erasure of one of its identifiers (a replay)
        outputs = self._apply(obs, None, annotate=True)
        outputs.extend(self._match(obs))
        return outputs

    def lookup(self, typed_key: str) -> str | None:
        """The person id an identifier resolves to (always the survivor), or None."""
        comp = self.directory.get(typed_key)
        if comp is None:
            return None
        return self.components[comp].graph.partition(self.config).person_of[typed_key]

    def key_of(self, id_type: str, raw_value: str) -> str | None:
        """The typed key of a raw identifier (hashing it when its type is hashed)."""
        return identifier_key(id_type, raw_value, self.config, self.settings.hasher)[0]

    def mapping(self) -> dict[str, str]:
        """Every identifier → person id."""
        out: dict[str, str] = {}
        for comp in self.components.values():
            out.update(comp.graph.partition(self.config).person_of)
        return out

    def profiles(self) -> dict[str, dict[str, Any]]:
        """Every person's profile document without its version (content only)."""
        out: dict[str, dict[str, Any]] = {}
        for comp in self.components.values():
            part = comp.graph.partition(self.config)
            docs = _documents(comp, part, part.members, self.settings, 0)
            out.update({pid: _content(doc) for pid, doc in docs.items()})
        return out

    def refusals(self) -> set[Refusal]:
        """Every refused link currently derived."""
        return {r for comp in self.components.values() for r in comp.graph.partition(self.config).refusals}

    # --- internals --------------------------------------------------------------------------------

    def _component_for(self, obs: Observation) -> tuple[str, Observation, list[str]]:
        """Merges the components of the observation's identifiers into one and registers new identifiers.

        When the merged component would exceed `max_component_identifiers`, only the anchor's component
        (or, for a new anchor, the new identifiers) takes part; the other identifiers are returned as
        refused (`component_limit`).
        """
        comps = sorted({self.directory[k] for k in obs.keys if k in self.directory})
        new = [k for k in obs.keys if k not in self.directory]
        size = sum(len(self.components[c].graph.first_seen) for c in comps) + len(new)
        refused: list[str] = []
        if len(obs.keys) > 1 and size > self.config.max_component_identifiers:
            home = self.directory.get(obs.keys[0])
            kept = [k for k in obs.keys if self.directory.get(k) == home]
            refused = [k for k in obs.keys if k not in kept]
            obs = replace(obs, keys=tuple(kept))
            comps = [home] if home else []
        if not comps:
            comp_id = "c:" + obs.keys[0]
            self.components[comp_id] = ComponentState()
        else:
            comp_id = comps[0]
            for other in comps[1:]:
                absorbed = self.components.pop(other)
                self.components[comp_id].merge(absorbed, self.settings.policies, self.config)
                for key in absorbed.graph.first_seen:
                    self.directory[key] = comp_id
        for key in obs.keys:
            self.directory[key] = comp_id
        return comp_id, obs, refused

    def _apply(self, obs: Observation, origin: Mapping[str, Any] | None, annotate: bool) -> list[Output]:
        if not obs.keys:
            return []
        anchor = obs.keys[0]
        comp_id, obs, refused = self._component_for(obs)
        outputs = apply_observation(self.components[comp_id], obs, self.settings, origin, annotate)
        for key in refused:
            if key not in self.directory:  # a new identifier still gets its person at once
                single = Observation(obs.event_id, obs.ts_ms, obs.type, obs.source, (key,))
                outputs.extend(self._apply(single, origin, annotate=False))
            refusal = Refusal(obs.event_id, anchor, key, "component_limit")
            outputs.append(refusal_record(self.config, refusal, self.lookup(anchor) or "",
                                          self.lookup(key) or "", obs.ts_ms))
        return outputs

    def _match(self, obs: Observation) -> list[Output]:
        matching = self.config.matching
        if not obs.keys or len(obs.features) < matching.min_fields:
            return []
        record = BlockRecord(obs.event_id, obs.keys[0], obs.ts_ms, obs.features)
        keys = blocking_keys(obs.features, matching)
        results = sorted(self.blocks.probe(record, keys, matching), key=lambda r: r.other.record_id)
        self.blocks.add(record, keys, matching.max_block_size)
        self.components[self.directory[record.anchor]].indexed[record.record_id] = [record.anchor, *keys]
        outputs: list[Output] = []
        for res in results:
            if res.decision == "link":
                link, origin = fs_link_observation(record, res.other, res.score, res.evidence, self.config)
                if len(link.keys) > 1:
                    outputs.extend(self._apply(link, origin, annotate=False))
            elif res.decision == "review":
                pa, pb = self.lookup(record.anchor), self.lookup(res.other.anchor)
                if pa and pb and pa != pb:
                    outputs.append(review_record(self.config, pa, pb, record.record_id, res.other.record_id,
                                                 res.score, res.evidence, max(record.ts_ms, res.other.ts_ms)))
        return outputs

    def _erase(self, obs: Observation) -> list[Output]:
        outputs: list[Output] = []
        comps = sorted({self.directory[k] for k in obs.keys if k in self.directory})
        erased_keys: set[str] = set()
        for comp_id in comps:
            state = self.components[comp_id]
            plan = erase_mod.erase_persons(state, obs, self.settings)
            outputs.extend(plan.outputs)
            erased_keys |= plan.keys
            self.blocks.remove_anchors(plan.keys)
            if not state.graph.first_seen:
                del self.components[comp_id]
        if not comps:
            outputs.extend(erase_mod.audit_unknown(obs, self.settings))
        for key in erased_keys | set(obs.keys):
            self.directory.pop(key, None)
            self.tombstones[key] = max(self.tombstones.get(key, obs.ts_ms), obs.ts_ms)
        return outputs
