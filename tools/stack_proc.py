"""Process helpers of the local stack: detached start, pid files, liveness, ports, waiting, log tails.

Linux only (reads /proc). Nothing here knows about Kafka, Redis, DynamoDB or Flink.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class StackError(RuntimeError):
    """A local-stack operation failed; the message says what to do."""


def spawn_detached(cmd: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path) -> int:
    """Starts a long-running process that outlives the caller and returns its pid.

    The process gets its own session, stdin from /dev/null and stdout+stderr appended to `log`. It is
    started through a short-lived shell, so it is re-parented to init and never becomes a zombie of a
    long-lived caller such as a pytest session.

    Args:
        cmd: program and arguments.
        log: file receiving the process's output.
        env: full environment of the process.
        cwd: working directory.

    Returns:
        The pid of the started program.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    script = 'log="$1"; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!'
    out = subprocess.run(
        ["sh", "-c", script, "sh", str(log), *cmd],
        env=dict(env), cwd=cwd, check=True, capture_output=True, text=True, start_new_session=True,
    )
    return int(out.stdout.strip())


def read_pid(pid_file: Path) -> int | None:
    """Returns the last pid in a pid file (Flink appends one line per start), or None."""
    try:
        lines = pid_file.read_text().split()
    except OSError:
        return None
    return int(lines[-1]) if lines and lines[-1].isdigit() else None


def alive(pid: int | None) -> bool:
    """Tells whether `pid` is a running process (zombies count as dead and are reaped if ours)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    """Returns the command line of a process, arguments joined by spaces ('' if gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def proc_name(pid: int) -> str:
    """Returns a process's name (/proc/<pid>/comm; '' if gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def terminate(pid: int | None, timeout: float = 30.0, force: bool = False) -> None:
    """Stops a process: SIGTERM, wait up to `timeout` seconds, then SIGKILL (at once if `force`)."""
    if not alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL if force else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Tells whether something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def port_bindable(port: int) -> bool:
    """Tells whether a listener could bind port on 127.0.0.1 (and on all interfaces) right now."""
    for host in ("127.0.0.1", "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def listening_ports(pid: int) -> set[int]:
    """TCP ports a process listens on (from /proc; empty if it is gone)."""
    inodes = _socket_inodes(pid)
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def port_holder(port: int) -> str:
    """Describes the process listening on a TCP port, e.g. "pid 123 (java)", if it can be found."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and port in listening_ports(int(proc.name)):
            return f"pid {proc.name} ({proc_name(int(proc.name))})"
    return "another process"


def tail(path: Path | None, lines: int = 40) -> str:
    """Returns the last lines of a text file, or a note that there is none."""
    if path is None or not path.is_file():
        return f"(no log at {path})"
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None,
               pid: Callable[[], int | None] | None = None) -> float:
    """Polls `check` until it returns True; returns the seconds it took.

    Args:
        check: health probe; exceptions count as "not yet".
        timeout: seconds before giving up.
        what: name used in the error message.
        log: log file whose tail goes into the error message.
        pid: returns the process's pid; if it dies while waiting, fail at once instead of at the timeout.

    Raises:
        StackError: on timeout or when the process died, with the tail of its log.
    """
    start = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - start
        elapsed = time.monotonic() - start
        died = pid is not None and elapsed > 5.0 and not alive(pid())  # grace: daemons write pid files late
        if died or elapsed > timeout:
            reason = "exited" if died else f"was not healthy after {timeout:.0f} s"
            raise StackError(f"{what} {reason}. Last lines of {log}:\n{tail(log)}")
        time.sleep(0.5)
