"""The Flink side of the person-merge protocol (`udfs/merges.py`), shared by the sessions and segments jobs.

    events ─────► parse-events ───┐
    person-merges ► parse-merges ─┼─► key by person ─► (the job's keyed operator: MergeDriver around its core)
    <job>.handoff ► parse-handoffs┘                         └─► handoffs back to <job>.handoff (keyed sink)

:func:`keyed_messages` turns the three inputs into `Row(person, Row(person, kind, body))` keyed by person;
:func:`add_merge_flags` and :func:`merge_sources` give both jobs the same flags and Kafka sources.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import DataStream, ProcessFunction, RuntimeContext
from pyflink.datastream.data_stream import KeyedStream

from jobs import runtime
from jobs.operators import key_by_first_field, parallelism_of
from udfs.merges import EVENT, HANDOFF, MERGE, route_merge

MESSAGE_TYPE = Types.ROW_NAMED(["person_id", "kind", "body"], [Types.STRING(), Types.STRING(), Types.STRING()])
KEYED_MESSAGE_TYPE = Types.ROW([Types.STRING(), MESSAGE_TYPE])
PersonOf = Callable[[Mapping[str, Any]], "str | None"]


class ParseInput(ProcessFunction):
    """Turns raw input records into keyed messages `Row(person, Row(person, kind, body))`.

    Args:
        source: `event` (events), `merge` (person-merges) or `handoff` (the loop topic).
        person_of: the person of an event (events only).
    """

    def __init__(self, source: str, person_of: PersonOf):
        self.source = source
        self.person_of = person_of

    def open(self, runtime_context: RuntimeContext) -> None:
        self.invalid = runtime_context.get_metrics_group().add_group(runtime.METRIC_GROUP).counter("invalid_inputs")

    def process_element(self, value, ctx):
        raw = value[0]
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            self.invalid.inc()
            return
        if self.source == EVENT:
            targets = [(person, EVENT)] if (person := self.person_of(doc)) else []
        elif self.source == MERGE:
            targets = route_merge(doc)  # kinds other than `merge` go nowhere (not invalid)
        else:
            targets = [(doc["to"], HANDOFF)] if isinstance(doc.get("to"), str) and doc["to"] else []
        if self.source != MERGE and not targets:
            self.invalid.inc()
        for person, kind in targets:
            yield Row(person, Row(person, kind, text))


def keyed_messages(job: str, person_of: PersonOf, events: DataStream, merges: DataStream | None = None,
                   handoffs: DataStream | None = None) -> KeyedStream:
    """Parses a job's inputs into messages keyed by person (value: `MESSAGE_TYPE`).

    Each parser runs at its input's parallelism (a forward edge keeps each person's records in order) and is
    named `parse-<source>s` (uid `<job>-parse-<source>s`).

    Args:
        job: the job's key (operator uids).
        person_of: the person of an event.
        events: rows whose first field is an event's JSON (bytes or str).
        merges: `person-merges` records (None: no merges).
        handoffs: the loop topic's records (None: no loop).
    """
    parsed = []
    for stream, source in ((events, EVENT), (merges, MERGE), (handoffs, HANDOFF)):
        if stream is None:
            continue
        out = stream.process(ParseInput(source, person_of), output_type=KEYED_MESSAGE_TYPE) \
            .name(f"parse-{source}s").uid(f"{job}-parse-{source}s")
        if (parallelism := parallelism_of(stream)) is not None:
            out = out.set_parallelism(parallelism)
        parsed.append(out)
    messages = parsed[0].union(*parsed[1:]) if len(parsed) > 1 else parsed[0]
    return key_by_first_field(messages, MESSAGE_TYPE)


def add_merge_flags(topics, handoff_topic: str) -> None:
    """Adds `--merges-topic` and `--handoff-topic` to a job's `topics` flag group (an argparse group).

    Args:
        topics: the group (`parser.add_argument_group("topics")`).
        handoff_topic: the job's loop topic (default of `--handoff-topic`).
    """
    topics.add_argument("--merges-topic", default="person-merges",
                        help="person merges of the identity job (default person-merges; '' disables)")
    topics.add_argument("--handoff-topic", default=handoff_topic,
                        help=f"internal loop topic of person merges, read back by this job (default {handoff_topic})")


def merge_sources(t_env, args: argparse.Namespace, props: dict[str, str]
                  ) -> tuple[DataStream | None, DataStream]:
    """The Kafka sources of `--merges-topic` (None when '') and `--handoff-topic`.

    Both are control topics whose watermarks follow their records' `ts` (a merge's time; a handoff's merge
    or event time, never ahead of the job's own watermark when it was written) and go idle when silent.
    """
    def source(topic: str, event_time: runtime.EventTime, name: str) -> DataStream:
        return runtime.kafka_event_source(t_env, args.bootstrap, topic, args.group_id, event_time, props, name)

    idle = args.idle_timeout
    merges = source(args.merges_topic, runtime.EventTime("ts", 0, idle), "merges") if args.merges_topic else None
    return merges, source(args.handoff_topic, runtime.EventTime("ts", 0, idle), "handoffs")
