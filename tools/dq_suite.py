"""The great_expectations (1.x) suite over the event contract, run on the frame of tools/dq_frame.py.

The expectations are plain data (:func:`suite_spec`, with bounds, types and patterns read from
`schemas/event.schema.json`), turned into GX expectations once per :class:`DQSuite`: an ephemeral context,
a pandas data source with a whole-dataframe batch, an ExpectationSuite and a ValidationDefinition that
each :meth:`DQSuite.run` validates a new frame with. GX is imported lazily (it takes seconds).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tools.dq_frame import FIELDS, Field
from udfs.contract import ValidatorConfig, event_types, load_event_schema

DEFAULT_FUTURE_TOLERANCE_MS = 5 * 60 * 1000
REQUIRED = ("event_id", "type", "ts", "ids")
RANGED = ("price", "quantity", "dwell_ms", "revenue")
PATTERNED = ("channel", "currency")


@dataclass(frozen=True)
class CheckSpec:
    """One expectation: a label for the report, the GX expectation class name and its arguments."""

    label: str
    expectation: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one expectation."""

    label: str
    expectation: str
    column: str | None
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    observed: Any = None
    examples: list[Any] = field(default_factory=list)
    error: str | None = None


def _field_schema(schema: dict[str, Any], f: Field) -> dict[str, Any]:
    node = schema
    for part in f.path[:-1]:
        node = node["properties"][part]
    found: dict[str, Any] = node["properties"][f.path[-1]]
    return found


def _json_types(prop: dict[str, Any]) -> list[str]:
    """The JSON types a schema allows (`number` includes `integer`), in a stable order."""
    options = prop.get("oneOf") or prop.get("anyOf") or [prop]
    types: set[str] = set()
    for option in options:
        declared = option["type"]
        types.update([declared] if isinstance(declared, str) else declared)
    if "number" in types:
        types.add("integer")
    return sorted(types)


def _python_regex(pattern: str) -> str:
    """A schema (ECMA 262) pattern for Python's `re.search`: there `$` also matches before a final newline."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern


def _num(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) or not float(value).is_integer() else f"{int(value):,}"


def _between(label: str, column: str, low: float | None = None, high: float | None = None) -> CheckSpec:
    bounds = {k: v for k, v in (("min_value", low), ("max_value", high)) if v is not None}
    return CheckSpec(label, "ExpectColumnValuesToBeBetween", {"column": column, **bounds})


def suite_spec(future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS,
               types: Sequence[str] | None = None) -> list[CheckSpec]:
    """The expectations over the event contract.

    Args:
        future_tolerance_ms: how far an event time may lie after the record's reference time.
        types: the allowed event types (default: the contract's, `udfs.contract.event_types()`).
    """
    schema = load_event_schema()
    props = {f.name: (f, _field_schema(schema, f)) for f in FIELDS}
    specs = [CheckSpec("there are events to check", "ExpectTableRowCountToBeBetween", {"min_value": 1})]
    specs += [CheckSpec(f"{name} is present", "ExpectColumnValuesToNotBeNull",
                        {"column": props[name][0].type_column}) for name in REQUIRED]
    for f, prop in props.values():
        allowed = _json_types(prop)
        label = f"{'.'.join(f.path)} is JSON {' or '.join(allowed)}"
        kwargs = {"column": f.type_column, "value_set": allowed}
        specs.append(CheckSpec(label, "ExpectColumnValuesToBeInSet", kwargs))
    event_id, ids = props["event_id"][1], props["ids"][1]
    specs += [
        CheckSpec("type is a contract event type", "ExpectColumnValuesToBeInSet",
                  {"column": "type", "value_set": list(types if types is not None else event_types())}),
        CheckSpec(f"event_id is {event_id['minLength']}..{event_id['maxLength']} characters",
                  "ExpectColumnValueLengthsToBeBetween",
                  {"column": "event_id", "min_value": event_id["minLength"],
                   "max_value": event_id["maxLength"]}),
        CheckSpec("event_id is unique", "ExpectColumnValuesToBeUnique", {"column": "event_id"}),
        _between(f"ids has {ids['minProperties']}..{ids['maxProperties']} identifiers", "id_count",
                 ids["minProperties"], ids["maxProperties"]),
    ]
    for name in RANGED:
        f, prop = props[name]
        specs.append(_between(f"{'.'.join(f.path)} is in [{_num(prop['minimum'])}, {_num(prop['maximum'])}]",
                              f.value_column, prop["minimum"], prop["maximum"]))
    for name in PATTERNED:
        f, prop = props[name]
        specs.append(CheckSpec(f"{'.'.join(f.path)} matches {prop['pattern']}",
                               "ExpectColumnValuesToMatchRegex",
                               {"column": f.value_column, "regex": _python_regex(prop["pattern"])}))
    specs += [
        CheckSpec("ts parses (RFC 3339 with an offset, or epoch ms)", "ExpectColumnValuesToNotBeNull",
                  {"column": "ts_ms"}),
        _between("ts is not before 2000-01-01", "ts_ms", low=ValidatorConfig().min_ts_ms),
        _between(f"ts is at most {future_tolerance_ms / 1000:g} s after the record's reference time",
                 "future_skew_ms", high=future_tolerance_ms),
    ]
    return specs


class DQSuite:
    """A ready-to-run GX validation of event frames (build once, run on many frames)."""

    def __init__(self, future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS,
                 specs: list[CheckSpec] | None = None):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.specs = specs if specs is not None else suite_spec(future_tolerance_ms)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch = (context.data_sources.add_pandas("tagstream").add_dataframe_asset(name="events")
                 .add_batch_definition_whole_dataframe("all rows"))
        suite = context.suites.add(gx.ExpectationSuite(name="tagstream-event-contract"))
        for spec in self.specs:
            expectation = getattr(gx.expectations, spec.expectation)
            suite.add_expectation(expectation(**spec.kwargs, description=spec.label))
        self._definition = context.validation_definitions.add(
            gx.ValidationDefinition(name="tagstream-events", data=batch, suite=suite))

    def run(self, frame: pd.DataFrame) -> list[CheckResult]:
        """Validates a frame; returns one result per expectation, in suite order."""
        outcome = self._definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
        by_label = {result.label: result for result in map(_result, outcome.results)}
        return [by_label[spec.label] for spec in self.specs]


def _result(gx_result: Any) -> CheckResult:
    config, details = gx_result.expectation_config, gx_result.result or {}
    assert config is not None
    info = gx_result.exception_info or {}
    error = info.get("exception_message") if info.get("raised_exception") else None
    return CheckResult(label=config.description, expectation=config.type, column=config.kwargs.get("column"),
                       success=bool(gx_result.success), element_count=details.get("element_count"),
                       unexpected_count=details.get("unexpected_count"),
                       observed=details.get("observed_value"),
                       examples=list(details.get("partial_unexpected_list") or []), error=error)
