"""Compiles validated definitions into a `Catalog`: interned filters and leaf conditions, per-segment
condition trees (references inlined), and the indexes the engine uses so that an event only touches the
conditions that can use it.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from udfs.contract import event_types
from udfs.segments.conditions import (
    UNBOUND,
    AbsentLeaf,
    AllNode,
    AnyNode,
    Key,
    Leaf,
    LiveNode,
    Node,
    NotFollowedByLeaf,
    NotNode,
    RefNode,
    SequenceLeaf,
    Slot,
    TraitLeaf,
    WindowLeaf,
)
from udfs.segments.config import parse_duration
from udfs.segments.definitions import DefinitionError, Issue, canonical, schema_errors, version_of
from udfs.segments.matching import PREDICATE_OPS, Match, compile_predicate, micro_units
from udfs.segments.placements import Placement, compile_placement

_PARAM = re.compile(r"^\{([a-z][a-z0-9_]*)\}$")
_TEMPLATE_PARAM = re.compile(r"\{([^{}]*)\}")
_EVENT_TYPES = frozenset(event_types())


@dataclass(frozen=True)
class Segment:
    """A compiled segment definition.

    Attributes:
        name: segment name (tags start with it).
        version: content hash of the definition and of the segments it references.
        params: parameter names; a binding is the tuple of their values (empty for a plain segment).
        tag_template: e.g. `viewed_product:{product_id}`.
        condition: the tree evaluated per binding (with the liveness guard for parameterized segments).
        summary: human-readable condition.
        own_sources: ids of the leaves whose filters bind this segment's parameters.
        uses_first_seen: the value can change when the person's first-seen time changes.
        description: free text from the definition.
    """

    name: str
    version: str
    params: tuple[str, ...]
    tag_template: str
    condition: Node
    summary: str
    own_sources: tuple[str, ...]
    uses_first_seen: bool
    description: str = ""

    def tag(self, key: Key) -> str:
        """The tag of one binding (parameter values escaped so tags cannot collide)."""
        if not self.params:
            return self.tag_template
        return self.tag_template.format_map({p: _escape(v) for p, v in zip(self.params, key, strict=True)})

    def params_of(self, key: Key) -> dict[str, Any]:
        """The binding as a mapping."""
        return dict(zip(self.params, key, strict=True))


def _escape(value: Any) -> str:
    return str(value).replace("%", "%25").replace(":", "%3A")


Route = tuple[int, Match, tuple[tuple[Leaf, int], ...]]
"""A filter of an event type: its position in the type's list, the filter, and the `(leaf, slot)` it feeds."""


@dataclass(frozen=True)
class TypeIndex:
    """The filters of one event type, indexed by one props equality each, so that an event only tries the
    filters it can match: the cost per event does not grow with definitions on other values of a field.

    Attributes:
        always: filters without an indexable equality (tried on every event of the type).
        by_value: `(props field, value -> filters)` for filters with an equality on a string or number.
    """

    always: tuple[Route, ...]
    by_value: tuple[tuple[str, dict[Any, tuple[Route, ...]]], ...]

    @classmethod
    def build(cls, entries: list[tuple[Match, tuple[tuple[Leaf, int], ...]]]) -> TypeIndex:
        """Indexes a type's filters (in the given order, which `candidates` keeps)."""
        always: list[Route] = []
        tables: dict[str, dict[Any, list[Route]]] = defaultdict(lambda: defaultdict(list))
        for position, (match, pairs) in enumerate(entries):
            keys = sorted((f, operand) for where, f, op, operand in match.tests
                          if where == "props" and op == "eq" and _indexable(operand))
            if keys:
                tables[keys[0][0]][keys[0][1]].append((position, match, pairs))
            else:
                always.append((position, match, pairs))
        return cls(tuple(always), tuple((f, {v: tuple(r) for v, r in table.items()})
                                        for f, table in sorted(tables.items())))

    def candidates(self, props: Mapping[str, Any] | None) -> list[Route]:
        """The filters an event with these props may match, in the type's filter order."""
        found = list(self.always)
        if props and self.by_value:
            hits = False
            for field, table in self.by_value:
                value = props.get(field)
                if _indexable(value) and (routes := table.get(value)):
                    found.extend(routes)
                    hits = True
            if hits:
                found.sort(key=_position)
        return found


def _indexable(value: Any) -> bool:
    """Equality operands and values a dict can index consistently with `matching.check_predicate` (not
    booleans, which only equal booleans there)."""
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _position(route: Route) -> int:
    return route[0]


@dataclass
class Catalog:
    """Every compiled definition plus the engine's indexes. Immutable once built.

    Attributes:
        segments / placements: by name.
        docs: the source document of each definition, by name.
        by_type: event type -> the filters accepting it, each with the `(leaf, slot)` pairs it feeds.
        routes: event type -> the same filters, indexed by props equalities (what `Engine` uses).
        deps: `(leaf id, slot)` -> `(segment, per_binding)`: touching the slot under binding k affects binding
            k of the segment when `per_binding`, else every binding of it.
        trait_segments: segments whose value can change with a profile trait update.
        first_seen_segments: segments whose value can change with the person's first-seen time.
        leaves: every leaf condition by id.
        retention: event type -> how long raw events of that type can matter (longest reach of a leaf).
        version: hash of all definition versions.
        updated_at: event time from which this catalog applies (set by the wrapper on hot reload).
        placement_segments: segments some placement refers to.
    """

    segments: dict[str, Segment]
    placements: dict[str, Placement]
    docs: dict[str, dict[str, Any]]
    by_type: dict[str, tuple[tuple[Match, tuple[tuple[Leaf, int], ...]], ...]]
    deps: dict[tuple[str, int], tuple[tuple[str, bool], ...]]
    trait_segments: tuple[str, ...]
    first_seen_segments: tuple[str, ...]
    leaves: dict[str, Leaf]
    retention: dict[str, int]
    version: str
    updated_at: int = 0
    placement_segments: frozenset[str] = frozenset()
    routes: dict[str, TypeIndex] | None = None

    def __post_init__(self) -> None:
        if self.routes is None:
            self.routes = {etype: TypeIndex.build(list(entries)) for etype, entries in self.by_type.items()}


def compile_catalog(docs: Iterable[Mapping[str, Any]], updated_at: int = 0) -> Catalog:
    """Validates and compiles definitions.

    Raises:
        DefinitionError: listing every invalid definition.
    """
    catalog, problems = _compile(list(docs), updated_at)
    if problems:
        raise DefinitionError(problems)
    return catalog


def update_catalog(previous: Catalog | None, docs: Iterable[Mapping[str, Any]],
                   updated_at: int) -> tuple[Catalog, list[Issue]]:
    """Compiles a new definition set for hot reload, tolerating bad definitions.

    A definition that fails keeps its previous version when `previous` has one, and is left out otherwise;
    every rejection is reported.
    """
    chosen: dict[str, Mapping[str, Any]] = {}
    for doc in docs:
        chosen[str(doc.get("name", ""))] = doc
    issues: dict[str, Issue] = {}
    for _ in range(len(chosen) + 1):
        catalog, problems = _compile(list(chosen.values()), updated_at)
        if not problems:
            return catalog, sorted(issues.values(), key=lambda i: i.name)
        for name, message in problems:
            old = previous.docs.get(name) if previous else None
            if previous is not None and old is not None and canonical(old) != canonical(chosen.get(name, {})):
                chosen[name] = old
                kept = previous.segments[name].version if name in previous.segments else (
                    previous.placements[name].version if name in previous.placements else None)
                issues.setdefault(name, Issue(name, message, kept))
            else:
                chosen.pop(name, None)
                issues.setdefault(name, Issue(name, message))
    catalog, _ = _compile([], updated_at)
    return catalog, sorted(issues.values(), key=lambda i: i.name)


class _Builder:
    """Compiles one definition set."""

    def __init__(self) -> None:
        self.matches: dict[str, Match] = {}
        self.leaves: dict[str, Leaf] = {}
        self.segments: dict[str, Segment] = {}

    # ---- filters
    def match(self, spec: Mapping[str, Any], params: tuple[str, ...]) -> Slot:
        types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        unknown = sorted(set(types) - _EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event type(s) {', '.join(unknown)}")
        tests: list[tuple[str, str, str, Any]] = []
        bound: dict[str, str] = {}
        for name, predicate in sorted((spec.get("props") or {}).items()):
            placeholder = _PARAM.match(predicate) if isinstance(predicate, str) else None
            if placeholder:
                param = placeholder.group(1)
                if param not in params:
                    raise ValueError(f"props.{name}: {{{param}}} is not a parameter of this segment")
                if param in bound:
                    raise ValueError(f"parameter {param} is bound twice in one filter")
                bound[param] = name
                continue
            tests.append(("props", name, *compile_predicate(predicate)))
        for where in ("channel", "source"):
            if where in spec:
                tests.append((where, where, *compile_predicate(spec[where])))
        for _, name, op, _operand in tests:
            if op not in PREDICATE_OPS:
                raise ValueError(f"{name}: unknown operator {op}")
        match = Match(tuple(sorted(set(types))), tuple(tests))
        match = self.matches.setdefault(match.id, match)
        if bound and set(bound) != set(params):
            raise ValueError(f"a filter binds {sorted(bound)} but the segment's parameters are "
                             f"{list(params)}; a filter binds all of them or none")
        return Slot(match, tuple(bound[p] for p in params) if bound else None)

    def leaf(self, leaf: Leaf) -> Leaf:
        return self.leaves.setdefault(leaf.id, leaf)

    @staticmethod
    def leaf_id(spec: Mapping[str, Any]) -> str:
        """Short, stable id of a leaf spec (it keys per-person state, so it is kept small)."""
        return hashlib.sha256(canonical(spec).encode("utf-8")).hexdigest()[:12]

    # ---- conditions
    def condition(self, spec: Mapping[str, Any], params: tuple[str, ...]) -> Node:
        ((kind, arg),) = spec.items()
        method = getattr(self, f"_c_{kind}")
        node: Node = method(arg, params)
        return node

    def _c_all(self, arg: list[Any], params: tuple[str, ...]) -> Node:
        items = tuple(self.condition(x, params) for x in arg)
        return items[0] if len(items) == 1 else AllNode(items)

    def _c_any(self, arg: list[Any], params: tuple[str, ...]) -> Node:
        items = tuple(self.condition(x, params) for x in arg)
        return items[0] if len(items) == 1 else AnyNode(items)

    def _c_not(self, arg: Mapping[str, Any], params: tuple[str, ...]) -> Node:
        return NotNode(self.condition(arg, params))

    def _window(self, agg: str, arg: Mapping[str, Any], params: tuple[str, ...], field_name: str | None,
                need: int, shown: str) -> Node:
        slot = self.match(arg["match"], params)
        width = parse_duration(arg["within"])
        lid = self.leaf_id({"k": agg, "w": width, "n": need, "f": field_name, "s": _slot_id(slot)})
        return self.leaf(WindowLeaf(lid, agg, slot, width, need, field_name, shown))

    def _c_count(self, arg: Mapping[str, Any], params: tuple[str, ...]) -> Node:
        need = arg["gte"] if "gte" in arg else arg["gt"] + 1
        return self._window("count", arg, params, None, need, f">= {need}")

    def _c_recent(self, arg: Mapping[str, Any], params: tuple[str, ...]) -> Node:
        return self._window("count", arg, params, None, 1, ">= 1")

    def _c_distinct(self, arg: Mapping[str, Any], params: tuple[str, ...]) -> Node:
        need = arg["gte"] if "gte" in arg else arg["gt"] + 1
        return self._window("distinct", arg, params, arg["field"], need, f">= {need}")

    def _c_sum(self, arg: Mapping[str, Any], params: tuple[str, ...]) -> Node:
        op = "gte" if "gte" in arg else "gt"
        amount = micro_units(arg[op])
        if amount is None:
            raise ValueError("sum threshold must be a non-negative number")
        need = amount if op == "gte" else amount + 1
        if need < 1:
            raise ValueError("sum threshold must be positive")
        shown = f"{'>=' if op == 'gte' else '>'} {arg[op]}"
        return self._window("sum", arg, params, arg["field"], need, shown)

    def _c_dwell(self, arg: Mapping[str, Any], params: tuple[str, ...]) -> Node:
        op = "gte" if "gte" in arg else "gt"
        limit = parse_duration(arg[op])
        need = limit * 1_000_000 + (1 if op == "gt" else 0)
        shown = f"{'>=' if op == 'gte' else '>'} {arg[op]}ms" if isinstance(arg[op], int) else \
            f"{'>=' if op == 'gte' else '>'} {arg[op]}"
        return self._window("sum", arg, params, "dwell_ms", need, shown)

    def _c_absent(self, arg: Mapping[str, Any], params: tuple[str, ...]) -> Node:
        slot = self.match(arg["match"], params)
        if slot.fields is not None:
            raise ValueError("absent cannot bind parameters (a binding needs evidence to exist)")
        width = parse_duration(arg["within"])
        seen_for = parse_duration(arg["seen_for"]) if "seen_for" in arg else 0
        lid = self.leaf_id({"k": "absent", "w": width, "seen": seen_for, "s": _slot_id(slot)})
        return self.leaf(AbsentLeaf(lid, slot, width, seen_for))

    def _c_sequence(self, arg: Mapping[str, Any], params: tuple[str, ...]) -> Node:
        steps = tuple(self.match(s, params) for s in arg["steps"])
        span, hold = parse_duration(arg["within"]), parse_duration(arg["hold"])
        lid = self.leaf_id({"k": "seq", "w": span, "h": hold, "s": [_slot_id(s) for s in steps]})
        return self.leaf(SequenceLeaf(lid, steps, span, hold))

    def _c_not_followed_by(self, arg: Mapping[str, Any], params: tuple[str, ...]) -> Node:
        trigger, absent = self.match(arg["trigger"], params), self.match(arg["absent"], params)
        grace, hold = parse_duration(arg["within"]), parse_duration(arg["hold"])
        lid = self.leaf_id({"k": "nfb", "w": grace, "h": hold, "s": [_slot_id(trigger), _slot_id(absent)]})
        return self.leaf(NotFollowedByLeaf(lid, trigger, absent, grace, hold))

    def _c_trait(self, arg: Mapping[str, Any], params: tuple[str, ...]) -> Node:
        ((op, operand),) = ((k, v) for k, v in arg.items() if k != "name")
        op, operand = compile_predicate({op: operand})
        lid = self.leaf_id({"k": "trait", "name": arg["name"], "op": op, "v": operand})
        return self.leaf(TraitLeaf(lid, arg["name"], op, operand))

    def _c_segment(self, name: str, params: tuple[str, ...]) -> Node:
        target = self.segments.get(name)
        if target is None:
            raise ValueError(f"refers to segment {name}, which is not defined (or is invalid)")
        bound = target.params == params or not target.params
        return RefNode(name, target.condition, bound, () if bound else target.own_sources)

    # ---- segments
    def segment(self, doc: Mapping[str, Any], version: str) -> Segment:
        params = tuple(doc.get("params", ()))
        root = self.condition(doc["condition"], params)
        template = doc.get("tag") or doc["name"] + "".join(f":{{{p}}}" for p in params)
        _check_template(template, doc["name"], params)
        own = _own_slots(root)
        if params and not own:
            raise ValueError("a parameterized segment needs a filter that binds its parameters")
        condition = root
        if params and not _bound_positive(root):
            condition = AllNode((LiveNode(tuple(own)), root))
        uses_first_seen = any(isinstance(n, AbsentLeaf) for n in root.walk()) or (
            not params and not _requires_evidence(root))
        return Segment(doc["name"], version, params, template, condition, root.text(),
                       tuple(dict.fromkeys(leaf.id for leaf, _ in own)), uses_first_seen,
                       doc.get("description", ""))


def _slot_id(slot: Slot) -> list[Any]:
    return [slot.match.id, list(slot.fields) if slot.fields is not None else None]


def _check_template(template: str, name: str, params: tuple[str, ...]) -> None:
    if template != name and not template.startswith(name + ":"):
        raise ValueError(f"tag template {template!r} must be the name, or start with {name + ':'!r}")
    used = _TEMPLATE_PARAM.findall(template)
    if template.count("{") != len(used) or template.count("}") != len(used):
        raise ValueError(f"tag template {template!r} has unbalanced braces")
    unknown = sorted(set(used) - set(params))
    if unknown:
        raise ValueError(f"tag template uses unknown parameter(s) {', '.join(unknown)}")
    missing = sorted(set(params) - set(used))
    if missing:
        raise ValueError(f"tag template must contain every parameter; missing {', '.join(missing)}")


def _own_slots(node: Node) -> list[tuple[Leaf, int]]:
    """Bound `(leaf, slot)` pairs in the segment's own binding (not under a reference to another binding)."""
    if isinstance(node, RefNode):
        return _own_slots(node.item) if node.bound else []
    if isinstance(node, Leaf):
        return [(node, i) for i, s in enumerate(node.slots) if s.fields is not None]
    if isinstance(node, LiveNode):
        return list(node.entries)
    found: list[tuple[Leaf, int]] = []
    for child in node.children():
        found.extend(x for x in _own_slots(child) if x not in found)
    return found


def _bound_positive(node: Node) -> bool:
    """Whether the node can only hold while the binding has evidence in reach (so no liveness guard)."""
    if isinstance(node, WindowLeaf | SequenceLeaf):
        return node.bound()
    if isinstance(node, NotFollowedByLeaf):
        return node.slots[0].fields is not None
    if isinstance(node, LiveNode):
        return True
    if isinstance(node, RefNode):
        return node.bound and _bound_positive(node.item)
    if isinstance(node, AnyNode):
        return all(_bound_positive(c) for c in node.children())
    if isinstance(node, AllNode):
        return any(_bound_positive(c) for c in node.children())
    return False


def _requires_evidence(node: Node) -> bool:
    """Whether the node can only hold after some evidence or trait update (not from first sight alone)."""
    if isinstance(node, WindowLeaf | SequenceLeaf | NotFollowedByLeaf | LiveNode):
        return True
    if isinstance(node, TraitLeaf):
        return not (node.op == "exists" and not node.operand)
    if isinstance(node, RefNode):
        return _requires_evidence(node.item)
    if isinstance(node, AnyNode):
        return all(_requires_evidence(c) for c in node.children())
    if isinstance(node, AllNode):
        return any(_requires_evidence(c) for c in node.children())
    return False


def _references(spec: Any) -> set[str]:
    """Segment names referenced anywhere in a condition or placement rule."""
    if isinstance(spec, Mapping):
        found = {spec["segment"]} if isinstance(spec.get("segment"), str) else set()
        for value in spec.values():
            found |= _references(value)
        return found
    if isinstance(spec, list):
        return set().union(*(_references(x) for x in spec)) if spec else set()
    return set()


def _dependency_order(docs: dict[str, Mapping[str, Any]],
                      problems: dict[str, str]) -> list[str]:
    """Segment names with every referenced segment first; cycles are reported."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join((*path[path.index(name):], name))
            for member in path[path.index(name):]:
                problems.setdefault(member, f"reference cycle {cycle}")
            return
        state[name] = 1
        for ref in sorted(_references(docs[name]["condition"])):
            if ref in docs:
                visit(ref, (*path, name))
        state[name] = 2
        order.append(name)

    for name in sorted(docs):
        visit(name, ())
    return order


def _compile(docs: list[Mapping[str, Any]], updated_at: int) -> tuple[Catalog, list[tuple[str, str]]]:
    problems: dict[str, str] = {}
    segment_docs: dict[str, Mapping[str, Any]] = {}
    placement_docs: dict[str, Mapping[str, Any]] = {}
    for doc in docs:
        name = str(doc.get("name", "(unnamed)")) if isinstance(doc, Mapping) else "(document)"
        errors = schema_errors(doc)
        if errors:
            problems[name] = "schema: " + "; ".join(errors[:5])
            continue
        if name in segment_docs or name in placement_docs:
            problems[name] = "defined twice"
            continue
        (segment_docs if doc["kind"] == "segment" else placement_docs)[name] = doc
    builder = _Builder()
    versions: dict[str, str] = {}
    for name in _dependency_order(dict(segment_docs), problems):
        if name in problems:
            continue
        doc = segment_docs[name]
        refs = sorted(_references(doc["condition"]))
        bad = [r for r in refs if r not in versions]
        if bad:
            problems[name] = f"refers to undefined or invalid segment(s) {', '.join(bad)}"
            continue
        version = version_of(doc, (versions[r] for r in refs))
        try:
            builder.segments[name] = builder.segment(doc, version)
        except (ValueError, KeyError) as err:
            problems[name] = str(err)
            continue
        versions[name] = version
    placements: dict[str, Placement] = {}
    params = {name: seg.params for name, seg in builder.segments.items()}
    for name, doc in sorted(placement_docs.items()):
        refs = sorted(_references(doc["rules"]))
        try:
            version = version_of(doc, (versions.get(r, r) for r in refs))
            placements[name] = compile_placement(doc, version, params)
        except ValueError as err:
            problems[name] = str(err)
    catalog = _index(builder, placements, {**segment_docs, **placement_docs}, problems, updated_at)
    return catalog, sorted(problems.items())


def _index(builder: _Builder, placements: dict[str, Placement], docs: Mapping[str, Mapping[str, Any]],
           problems: Mapping[str, str], updated_at: int) -> Catalog:
    segments = builder.segments
    deps: dict[tuple[str, int], list[tuple[str, bool]]] = defaultdict(list)
    used: dict[str, dict[str, Leaf]] = {}
    trait_segments, first_seen_segments = [], []
    for name, seg in segments.items():
        leaves = {n.id: n for n in seg.condition.walk() if isinstance(n, Leaf)}
        used[name] = leaves
        own = set(_own_slots(seg.condition)) if seg.params else set()
        for leaf in leaves.values():
            for i in range(len(leaf.slots)):
                entry = (name, (leaf, i) in own)
                if entry not in deps[(leaf.id, i)]:
                    deps[(leaf.id, i)].append(entry)
        if any(isinstance(x, TraitLeaf) for x in leaves.values()):
            trait_segments.append(name)
        if seg.uses_first_seen:
            first_seen_segments.append(name)
    live_leaves = {lid: leaf for per in used.values() for lid, leaf in per.items()}
    feeds: dict[str, list[tuple[Leaf, int]]] = defaultdict(list)
    for leaf in live_leaves.values():
        for i, slot in enumerate(leaf.slots):
            feeds[slot.match.id].append((leaf, i))
    by_type: dict[str, list[tuple[Match, tuple[tuple[Leaf, int], ...]]]] = defaultdict(list)
    retention: dict[str, int] = {}
    for match_id, pairs in sorted(feeds.items()):
        match = builder.matches[match_id]
        for etype in sorted(match.types):
            by_type[etype].append((match, tuple(pairs)))
            retention[etype] = max([retention.get(etype, 0), *(leaf.reach for leaf, _ in pairs)])
    kept = {name: dict(docs[name]) for name in [*segments, *placements] if name not in problems}
    digest = hashlib.sha256()
    for name in sorted(kept):
        version = segments[name].version if name in segments else placements[name].version
        digest.update(f"{name}={version};".encode())
    return Catalog(segments=dict(segments), placements=placements, docs=kept,
                   by_type={k: tuple(v) for k, v in by_type.items()},
                   deps={k: tuple(v) for k, v in deps.items()},
                   trait_segments=tuple(trait_segments), first_seen_segments=tuple(first_seen_segments),
                   leaves=live_leaves, retention=retention, version="catalog:" + digest.hexdigest()[:16],
                   updated_at=updated_at,
                   placement_segments=frozenset(n for p in placements.values() for n in p.segments()))


__all__ = ["UNBOUND", "Catalog", "Segment", "compile_catalog", "update_catalog"]
