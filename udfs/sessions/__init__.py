"""The sessions job's pure-Python core: sessionize a person's events in event time.

The Flink KeyedProcessFunction (keyed by person id) is a thin wrapper around `Sessionizer`; see
docs/sessions.md.
"""

from udfs.sessions.config import SessionConfig
from udfs.sessions.model import PersonState, Session
from udfs.sessions.records import Output, dynamo_writes, live_view, redis_live, redis_recent, summary
from udfs.sessions.reference import reference_sessions
from udfs.sessions.sessionizer import Sessionizer, Step, session_id

__all__ = [
    "Output",
    "PersonState",
    "Session",
    "SessionConfig",
    "Sessionizer",
    "Step",
    "dynamo_writes",
    "live_view",
    "redis_live",
    "redis_recent",
    "reference_sessions",
    "session_id",
    "summary",
]
