"""Sessionization of one person's events in event time: state and inputs in, new state and outputs out.

Rules (times are event times in epoch ms, `W` is the watermark, `L` the allowed lateness):

* Gap: an event joins a session when it is at most `gap_ms` before its start or after its last activity;
  exactly `gap_ms` apart is the same session, `gap_ms + 1` is a new one (as Flink's session windows, see
  `udfs.sessions.reference`). An event within the gap of two sessions merges them.
* Day boundary (optional): sessions never span local midnight; each local day is sessionized on its own.
* Max duration and campaign (optional): an event later than every event of its session starts a new
  session, marked `cut`, when it is more than `max_duration_ms` after the session's start, or carries a
  different utm_campaign. A cut session never merges with its predecessor; a late event falling between
  the two joins the predecessor unless it is past the predecessor's max duration (or carries the
  successor's campaign). Cuts are decided on arrival: a late event never creates or moves one.
* Closing: a session closes (`close` record) once `W >= last + gap`; the wrapper's event-time timer fires
  then. It stays in state until `W > last + gap + L`, so that late events can still extend or bridge it.
* Lateness: an event with `ts < W - L` is returned as a `late` output (reason `too_late`), never dropped.
* Duplicates: an event id seen before is ignored, with no output.

Under the gap and day rules, any delivery order whose watermarks respect the allowed lateness yields the
same closed sessions as time-ordered delivery (aggregates combine commutatively, ids derive from starts).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any, NamedTuple

from udfs.sessions.aggregate import combine_all, event_campaign, event_time, from_event, session_campaign
from udfs.sessions.config import SessionConfig
from udfs.sessions.model import Aggregate, PersonState, Session
from udfs.sessions.records import (
    CLOSE,
    CORRECTION,
    EVICTED,
    OPEN,
    TOO_LATE,
    UPDATE,
    Output,
    Replaced,
    late_output,
    session_output,
    summary,
    with_summary,
)

LATE_EVENT, PERSON_MERGE = "late_event", "person_merge"
MAX_DURATION, CAMPAIGN = "max_duration", "campaign"


class Step(NamedTuple):
    """Result of one call: the new state, the outputs in order, and when to call `advance` next.

    `next_wakeup` is the event time at which the wrapper must register its event-time timer (None when the
    person has no session left); calling `advance` earlier or more often is harmless.
    """

    state: PersonState
    outputs: list[Output]
    next_wakeup: int | None


def session_id(person_id: str, start_ms: int) -> str:
    """Returns the deterministic id of the session of `person_id` that starts at `start_ms`."""
    digest = hashlib.blake2b(f"{person_id}\x1f{start_ms}".encode(), digest_size=8).hexdigest()
    return f"s_{digest}"


@dataclass
class _Work:
    """Mutable scratch copy of a person's state during one call."""

    person_id: str
    watermark: int
    sessions: list[Session]
    seen: dict[str, int]
    floor: int
    recent: tuple[Mapping[str, Any], ...]
    seq: int
    outputs: list[Output] = field(default_factory=list)


class Sessionizer:
    """Pure sessionization logic; the Flink KeyedProcessFunction (keyed by person id) wraps it."""

    def __init__(self, config: SessionConfig | None = None):
        self.config = config or SessionConfig()

    def new_state(self, person_id: str) -> PersonState:
        """Returns the state of a person with no history."""
        return PersonState(person_id)

    def on_event(self, state: PersonState, event: Mapping[str, Any], watermark: int) -> Step:
        """Places one event (a valid `events.valid` record) into the person's sessions.

        Args:
            state: the person's state (`new_state(person_id)` for a new key).
            event: the event, with `ts_ms`.
            watermark: the current watermark (Flink's `current_watermark()`); sessions already due are
                closed first.

        Returns:
            The new state, the outputs (`open`/`update`/`correction`/`close`, or one `late`), the next wakeup.
        """
        cfg = self.config
        work = self._begin(state, watermark)
        self._close_and_evict(work)
        ts = event_time(event)
        event_id = str(event["event_id"])
        too_late = ts < work.watermark - cfg.allowed_lateness_ms
        late = TOO_LATE if too_late else EVICTED if ts <= work.floor else None
        if late is not None:
            work.outputs.append(late_output(work.person_id, event, ts, late, work.watermark,
                                            cfg.allowed_lateness_ms))
        elif event_id not in work.seen:
            self._remember(work, {event_id: ts})
            day = cfg.day_of(ts)
            campaign = event_campaign(event) if cfg.split_on_campaign else None
            members = self._members(work.sessions, ts, ts, day, campaign)
            cut = self._cut(members, ts, campaign)
            self._absorb(work, from_event(event, ts), day, [] if cut else members, cut=cut)
            self._close_and_evict(work)  # a late event may form a session that is already due
        return self._finish(work)

    def advance(self, state: PersonState, now: int) -> Step:
        """Moves the person's event time to `now` (a watermark or timer time): closes due sessions and
        evicts those no late event can reach any more."""
        work = self._begin(state, now)
        self._close_and_evict(work)
        return self._finish(work)

    def merge_person(self, survivor: PersonState, absorbed: PersonState, watermark: int) -> Step:
        """Folds the open sessions of an absorbed person into the survivor's.

        Each absorbed open session is merged with the survivor's sessions it overlaps or comes within the
        gap of; ids are re-derived from the survivor's id and a `correction` names the replaced sessions
        (of either person). The absorbed person's closed sessions are left as they are (closed under its
        id); its due sessions are closed first (their `close` records come first in the outputs). The
        absorbed person's seen event ids carry over. The caller discards the absorbed state.
        """
        if survivor.person_id == absorbed.person_id:
            raise ValueError(f"cannot merge person {survivor.person_id!r} into itself")
        now = max(survivor.watermark, absorbed.watermark, watermark)
        gone = self._begin(absorbed, now)
        self._close_and_evict(gone)
        work = self._begin(survivor, now)
        work.outputs.extend(gone.outputs)
        work.floor = max(work.floor, gone.floor)
        work.seq = max(work.seq, gone.seq)
        self._close_and_evict(work)
        self._remember(work, gone.seen)
        for piece in (s for s in gone.sessions if not s.closed):
            campaign = session_campaign(piece.agg)
            members = self._members(work.sessions, piece.start, piece.last, piece.day, campaign)
            replaced = [Replaced(absorbed.person_id, piece.session_id, piece.start)]
            self._absorb(work, piece.agg, piece.day, members, cut=piece.cut, version=piece.version,
                         replaced=replaced, cause=PERSON_MERGE)
        return self._finish(work)

    def next_wakeup(self, state: PersonState) -> int | None:
        """Returns the earliest event time at which `advance` has work to do, or None."""
        cfg = self.config
        evict_after = cfg.allowed_lateness_ms + 1
        times = [s.last + cfg.gap_ms + (evict_after if s.closed else 0) for s in state.sessions]
        return min(times, default=None)

    # -- internals ---------------------------------------------------------------------------------------

    def _begin(self, state: PersonState, now: int) -> _Work:
        return _Work(state.person_id, max(state.watermark, now), list(state.sessions), dict(state.seen),
                     state.floor, state.recent, state.seq)

    def _finish(self, work: _Work) -> Step:
        state = PersonState(work.person_id, tuple(work.sessions), work.seen, work.watermark, work.floor,
                            work.recent, work.seq + 1 if work.outputs else work.seq)
        return Step(state, work.outputs, self.next_wakeup(state))

    def _members(self, sessions: list[Session], lo: int, hi: int, day: str | None,
                 campaign: str | None) -> list[Session]:
        """Returns the sessions a piece of activity [lo, hi] must merge with."""
        gap = self.config.gap_ms
        touching = [s for s in sessions if s.day == day and s.start - gap <= hi and lo <= s.last + gap]
        groups: list[list[Session]] = []
        for s in touching:  # a cut session starts a group of its own: it never merges with its predecessor
            if s.cut is None and groups:
                groups[-1].append(s)
            else:
                groups.append([s])
        for before, after in pairwise(groups):
            if lo < after[0].start:
                if lo <= max(s.last for s in before) or not self._joins_cut(before, after[0], lo, campaign):
                    return before
                return after
        return groups[-1] if groups else []

    def _joins_cut(self, before: list[Session], cut: Session, ts: int, campaign: str | None) -> bool:
        """Whether an event between a session and its cut successor belongs to the successor."""
        limit = self.config.max_duration_ms
        if cut.cut == MAX_DURATION:
            return limit is not None and ts - min(s.start for s in before) > limit
        return cut.cut == CAMPAIGN and campaign is not None and campaign == session_campaign(cut.agg)

    def _cut(self, members: list[Session], ts: int, campaign: str | None) -> str | None:
        """Whether an event after all of its session's events starts a new session, and why."""
        if not members or ts <= max(s.last for s in members):
            return None
        first = min(members, key=lambda s: s.start)
        limit = self.config.max_duration_ms
        if limit is not None and ts - first.start > limit:
            return MAX_DURATION
        if campaign is not None and campaign != session_campaign(first.agg):
            return CAMPAIGN
        return None

    def _absorb(self, work: _Work, agg: Aggregate, day: str | None, members: list[Session], *,
                cut: str | None = None, version: int = 0, replaced: Iterable[Replaced] = (),
                cause: str = LATE_EVENT) -> None:
        """Merges a piece of activity with `members` (none: it opens a session) and emits the record."""
        cfg = self.config
        merged = combine_all([*(m.agg for m in members), agg], cfg)
        new_id = session_id(work.person_id, merged.start)
        replaced = [*replaced, *(Replaced(work.person_id, m.session_id, m.start) for m in members
                                 if m.session_id != new_id)]
        first = min(members, key=lambda m: m.start, default=None)
        corrects_closed = any(m.closed for m in members)
        if not members and not replaced:
            kind = OPEN
        else:
            kind = UPDATE if not replaced and not corrects_closed else CORRECTION
        closed = kind == CORRECTION and merged.last + cfg.gap_ms <= work.watermark
        session = Session(new_id, merged, max([version, *(m.version for m in members)]) + 1, closed, day,
                          (first.cut if first else None) or cut)
        gone = {m.session_id for m in members}
        work.sessions = sorted([*(s for s in work.sessions if s.session_id not in gone), session],
                               key=lambda s: s.start)
        if kind == CORRECTION:
            drop = [r.session_id for r in replaced if r.person_id == work.person_id] + [new_id]
            doc = summary(work.person_id, session) if closed else None
            work.recent = with_summary(work.recent, drop, doc, cfg.recent_closed)
        if kind != UPDATE or cfg.emit_updates:
            work.outputs.append(session_output(kind, work.person_id, session, replaced, cause))

    def _close_and_evict(self, work: _Work) -> None:
        """Closes the sessions due at the watermark and evicts those past lateness or over the bound."""
        cfg = self.config
        work.sessions = [self._close(work, s) if not s.closed and s.last + cfg.gap_ms <= work.watermark else s
                         for s in work.sessions]
        horizon = work.watermark - cfg.allowed_lateness_ms
        kept = [s for s in work.sessions if not (s.closed and s.last + cfg.gap_ms < horizon)]
        while len(kept) > cfg.max_sessions:
            victim = min(kept, key=lambda s: (s.last, s.start))
            kept.remove(victim)
            if not victim.closed:
                self._close(work, victim)
            work.floor = max(work.floor, victim.last + cfg.gap_ms)
        if len(kept) < len(work.sessions):
            work.seen = {k: ts for k, ts in work.seen.items() if ts >= horizon}
        work.sessions = kept

    def _close(self, work: _Work, session: Session) -> Session:
        closed = replace(session, closed=True, version=session.version + 1)
        work.outputs.append(session_output(CLOSE, work.person_id, closed))
        work.recent = with_summary(work.recent, [closed.session_id], summary(work.person_id, closed),
                                   self.config.recent_closed)
        return closed

    def _remember(self, work: _Work, ids: Mapping[str, int]) -> None:
        """Adds event ids to the de-duplication set, forgetting the oldest beyond `max_seen_ids`."""
        work.seen.update(ids)
        limit = self.config.max_seen_ids
        if len(work.seen) > limit:
            horizon = work.watermark - self.config.allowed_lateness_ms
            work.seen = {k: ts for k, ts in work.seen.items() if ts >= horizon}
        if len(work.seen) > limit:  # keep the newest 90%, so that the trim is not paid on every event
            newest = heapq.nlargest(limit * 9 // 10, work.seen.items(), key=lambda kv: (kv[1], kv[0]))
            work.seen = dict(newest)
