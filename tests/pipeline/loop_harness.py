"""A bounded feedback for jobs with a loopback topic, in a MiniCluster: directories instead of Kafka.

Inputs and the loop are directories read by continuously monitored `FileSource`s (one JSON document per
line); a writer operator drops each loop message and each output into its own file (written under a
hidden name, then renamed, so a reader never sees half a file). The job runs unbounded with
`execute_async`; the test feeds events in phases and waits until nothing moves any more.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import orjson
from pyflink.common import Duration, Types, WatermarkStrategy
from pyflink.datastream import DataStream, ProcessFunction, RuntimeContext, StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import FileSource, StreamFormat


class WriteFiles(ProcessFunction):
    """Writes every element (a string, or a row as a JSON object of its fields) into a new file of `directory`."""

    def __init__(self, directory: str):
        self.directory = directory

    def open(self, runtime_context: RuntimeContext) -> None:
        self.prefix = uuid.uuid4().hex[:12]
        self.seq = 0

    def process_element(self, value, ctx):
        line = value if isinstance(value, str) else orjson.dumps(value.as_dict()).decode()
        self.seq += 1
        name = f"{self.prefix}-{self.seq:08d}.jsonl"
        hidden = os.path.join(self.directory, "." + name)
        with open(hidden, "w", encoding="utf-8") as f:
            f.write(line + "\n")
        os.rename(hidden, os.path.join(self.directory, name))
        yield from ()


def directory_source(env: StreamExecutionEnvironment, directory: Path, name: str) -> DataStream:
    """Lines of the files appearing in `directory` (checked every 50 ms), as strings."""
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(directory)) \
        .monitor_continuously(Duration.of_millis(50)).build()
    return env.from_source(source, WatermarkStrategy.no_watermarks(), name, type_info=Types.STRING())


def write_to(stream: DataStream, directory: Path, name: str) -> None:
    """Attaches a :class:`WriteFiles` writer to a stream."""
    stream.process(WriteFiles(str(directory))).name(name).uid(name)


class LoopRun:
    """Directories of one run: `events` (fed by the test), `loop` (the feedback) and `out` (results)."""

    def __init__(self, root: Path):
        self.events, self.loop, self.out = root / "events", root / "loop", root / "out"
        for d in (self.events, self.loop, self.out):
            d.mkdir(parents=True)
        self.fed = 0
        self.client = None

    def start(self, env: StreamExecutionEnvironment, name: str) -> None:
        """Submits the job (unbounded) to the MiniCluster."""
        self.client = env.execute_async(name)

    def feed(self, documents: list[dict]) -> None:
        """Drops one file of events (JSON lines) into the events directory."""
        self.fed += 1
        hidden = self.events / f".batch-{self.fed:04d}.jsonl"
        hidden.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in documents))
        hidden.rename(self.events / hidden.name[1:])

    def _count(self) -> int:
        return sum(1 for d in (self.loop, self.out) for p in d.iterdir() if not p.name.startswith("."))

    def settle(self, until=None, quiet_s: float = 1.0, timeout_s: float = 60) -> list[dict]:
        """Waits until `until(outputs)` holds (if given) and no file appeared for `quiet_s`; returns outputs."""
        deadline = time.monotonic() + timeout_s
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            self._check_alive()
            count = self._count()
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet_s and (until is None or until(self.outputs())):
                return self.outputs()
            time.sleep(0.1)
        raise TimeoutError(f"no quiescence within {timeout_s} s ({last} files)")

    def _check_alive(self) -> None:
        """Raises the job's failure when it is no longer running."""
        status = self.client.get_job_status().result()
        if status.is_globally_terminal_state():
            self.client.get_job_execution_result().result()  # raises the cause
            raise RuntimeError(f"the job ended: {status}")

    def outputs(self) -> list[dict]:
        """Every output document so far; a JSON array (a batch of store ops) counts as its items, in order."""
        documents = [orjson.loads(p.read_bytes()) for p in sorted(self.out.iterdir()) if not p.name.startswith(".")]
        return [item for doc in documents for item in (doc if isinstance(doc, list) else [doc])]

    def stop(self) -> None:
        """Cancels the job."""
        if self.client is not None:
            self.client.cancel().result()



