"""Delivery defaults of the jobs' flags: ingest and identity write exactly-once, the others at-least-once."""

from __future__ import annotations

import pytest

from jobs import identity, ingest, runtime, segments, sessions


@pytest.mark.parametrize("job", [ingest, identity])
def test_jobs_feeding_identity_resolution_write_exactly_once_with_one_second_checkpoints(job):
    args = job.parse_args([])
    assert args.exactly_once and args.checkpoint_interval == 1000
    assert not job.parse_args(["--no-exactly-once"]).exactly_once


@pytest.mark.parametrize("job", [sessions, segments])
def test_jobs_whose_replays_write_the_same_records_default_to_at_least_once(job):
    args = job.parse_args([])
    assert not args.exactly_once and args.checkpoint_interval == 5000
    assert job.parse_args(["--exactly-once"]).exactly_once


def test_exactly_once_without_checkpoints_is_refused():
    with pytest.raises(SystemExit, match="checkpoint"):
        runtime.runtime_options(identity.parse_args(["--checkpoint-interval", "0"]))
    assert runtime.runtime_options(identity.parse_args(["--checkpoint-interval", "0", "--no-exactly-once"]))
