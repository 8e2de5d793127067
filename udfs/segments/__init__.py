"""The segments job's pure-Python core: segment tags per person in event time, with exact exits.

Definitions (YAML, `schemas/segment.schema.json`) are compiled once into a `Catalog`; an `Engine` applies a
person's events to their `PersonState` and returns change events, the current-state view, DynamoDB writes
and the next time anything can change. The Flink KeyedProcessFunction is a thin wrapper; see
docs/segments.md.
"""

from udfs.segments.compiler import Catalog, Segment, compile_catalog, update_catalog
from udfs.segments.config import SegmentsConfig, parse_duration
from udfs.segments.definitions import DefinitionError, Issue, load_directory, load_files, parse_documents
from udfs.segments.engine import Engine, person_id_of
from udfs.segments.records import Outputs
from udfs.segments.state import PersonState

__all__ = [
    "Catalog",
    "DefinitionError",
    "Engine",
    "Issue",
    "Outputs",
    "PersonState",
    "Segment",
    "SegmentsConfig",
    "compile_catalog",
    "load_directory",
    "load_files",
    "parse_documents",
    "parse_duration",
    "person_id_of",
    "update_catalog",
]
