"""Placements: an ordered rule list per slot that picks one content id from a person's current tags.

A rule's `when` is a boolean over segment memberships. When a rule refers to a parameterized segment, the
binding used for `{param}` placeholders in its content is the person's most recently entered tag of that
segment (ties: smallest tag), so "category recommendation for the category they browsed" picks the latest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


@dataclass(frozen=True)
class ActiveTag:
    """A tag a person currently holds, as placements see it."""

    tag: str
    segment: str
    params: Mapping[str, Any]
    entered_at: int


@dataclass(frozen=True)
class When:
    """A compiled rule condition: `op` is `segment`, `all`, `any` or `not`."""

    op: str
    segment: str | None = None
    items: tuple[When, ...] = ()

    def evaluate(self, active: Mapping[str, Sequence[ActiveTag]]) -> tuple[bool, ActiveTag | None]:
        """Whether it holds, and the tag that binds content placeholders (if any)."""
        if self.op == "segment":
            tags = active.get(self.segment or "")
            if not tags:
                return False, None
            return True, min(tags, key=lambda a: (-a.entered_at, a.tag))
        if self.op == "not":
            held, _ = self.items[0].evaluate(active)
            return not held, None
        binding = None
        results = []
        for item in self.items:
            held, tag = item.evaluate(active)
            results.append(held)
            if held and binding is None:
                binding = tag
            if self.op == "any" and held:
                return True, binding
        return (all(results), binding) if self.op == "all" else (False, None)

    def segments(self) -> set[str]:
        """Segments referenced."""
        found = {self.segment} if self.segment else set()
        for item in self.items:
            found |= item.segments()
        return found


@dataclass(frozen=True)
class Rule:
    """One placement rule: content template picked when `when` holds (always, when None)."""

    name: str
    content: str
    when: When | None


@dataclass(frozen=True)
class Placement:
    """A compiled placement."""

    name: str
    slot: str
    version: str
    rules: tuple[Rule, ...]

    def segments(self) -> set[str]:
        """Segments the rules refer to."""
        return {name for rule in self.rules if rule.when for name in rule.when.segments()}

    def decide(self, active: Mapping[str, Sequence[ActiveTag]]) -> dict[str, Any]:
        """The decision for one person: the first rule that holds and whose placeholders can be filled."""
        for rule in self.rules:
            held, binding = (True, None) if rule.when is None else rule.when.evaluate(active)
            if not held:
                continue
            content = fill(rule.content, binding.params if binding else {})
            if content is None:
                continue
            return {"content": content, "rule": rule.name, "tag": binding.tag if binding else None,
                    "version": self.version}
        return {"content": None, "rule": None, "tag": None, "version": self.version}


def fill(template: str, params: Mapping[str, Any]) -> str | None:
    """Fills `{param}` placeholders; None when one has no value."""
    missing = False

    def sub(match: re.Match[str]) -> str:
        nonlocal missing
        if match.group(1) not in params:
            missing = True
            return ""
        return str(params[match.group(1)])

    text = _PLACEHOLDER.sub(sub, template)
    return None if missing else text


def placeholders(template: str) -> set[str]:
    """The placeholder names of a template."""
    return set(_PLACEHOLDER.findall(template))


def compile_when(spec: Mapping[str, Any]) -> When:
    """Compiles a validated `when` mapping."""
    ((op, arg),) = spec.items()
    if op == "segment":
        return When("segment", segment=arg)
    if op == "not":
        return When("not", items=(compile_when(arg),))
    return When(op, items=tuple(compile_when(x) for x in arg))


def compile_placement(doc: Mapping[str, Any], version: str,
                      segment_params: Mapping[str, tuple[str, ...]]) -> Placement:
    """Compiles a validated placement document.

    Raises:
        ValueError: unknown segments, placeholders no referenced segment provides, unreachable rules.
    """
    rules = []
    specs = doc["rules"]
    for index, spec in enumerate(specs):
        when = compile_when(spec["when"]) if "when" in spec else None
        if when is None and index != len(specs) - 1:
            raise ValueError(f"rule {index} has no `when` but is not the last rule (the rules after it "
                             "could never be picked)")
        referenced = when.segments() if when else set()
        unknown = sorted(referenced - set(segment_params))
        if unknown:
            raise ValueError(f"rule {index} refers to unknown segment(s) {', '.join(unknown)}")
        offered = {p for name in referenced for p in segment_params[name]}
        missing = sorted(placeholders(spec["content"]) - offered)
        if missing:
            raise ValueError(f"rule {index}: content placeholder(s) {', '.join(missing)} are not parameters "
                             "of the segments it refers to")
        rules.append(Rule(spec.get("name", f"rule_{index}"), spec["content"], when))
    return Placement(doc["name"], doc.get("slot", doc["name"]), version, tuple(rules))
