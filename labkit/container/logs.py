"""A container's log, in Docker's json-file format: one JSON object per line of output.

    {"log":"hello\\n","stream":"stdout","time":"2026-12-01T14:00:00.123456789Z"}

The monitor (``monitor.py``) writes it while the container runs; ``docker logs`` reads it back,
and with ``-f`` follows it until the container stops. Output is cut into lines as Docker cuts
it (a line longer than 16 KiB is split). Bytes that are not UTF-8 are kept losslessly (as
surrogate escapes in the JSON string), so ``logs`` gives back exactly what the process wrote.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

MAX_LINE = 16 * 1024  # Docker's json-file splits longer lines


class LogEntry(NamedTuple):
    """One piece of a container's output: which stream, the bytes, and when it came."""

    stream: str  # "stdout" or "stderr"
    data: bytes
    time: str  # RFC 3339 with nanoseconds, UTC

    def epoch(self) -> float:
        return parse_time(self.time)


def now() -> str:
    """The time now as Docker writes it: RFC 3339 with nanoseconds, UTC."""
    ns = time.time_ns()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
    return f"{stamp}.{ns % 1_000_000_000:09d}Z"


def parse_time(text: str) -> float:
    """Seconds since the epoch from a time in now()'s form (or without fraction)."""
    import datetime  # only a reader of the logs parses times: a container's start never does

    head, _, frac = text.rstrip("Z").partition(".")
    base = datetime.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    return base.timestamp() + (float("0." + frac) if frac else 0.0)


def encode(entry: LogEntry) -> bytes:
    text = entry.data.decode("utf-8", "surrogateescape")
    return (json.dumps({"log": text, "stream": entry.stream, "time": entry.time}) + "\n").encode()


def decode(line: bytes) -> LogEntry | None:
    """One line of the file as a LogEntry (None for a line that is not one of ours)."""
    try:
        obj = json.loads(line)
        return LogEntry(obj["stream"], obj["log"].encode("utf-8", "surrogateescape"), obj["time"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class Writer:
    """Cuts each stream's output into lines and appends them to the log file."""

    def __init__(self, path: str | os.PathLike):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.partial: dict[str, bytes] = {}

    def write(self, stream: str, data: bytes) -> None:
        buffer = self.partial.pop(stream, b"") + data
        out = []
        while True:
            end = buffer.find(b"\n")
            if end < 0 and len(buffer) < MAX_LINE:
                break
            cut = end + 1 if 0 <= end < MAX_LINE else MAX_LINE
            out.append(encode(LogEntry(stream, buffer[:cut], now())))
            buffer = buffer[cut:]
        if buffer:
            self.partial[stream] = buffer
        if out:
            os.write(self.fd, b"".join(out))

    def flush(self) -> None:
        """Write what is left without a newline (the stream has ended)."""
        for stream, rest in self.partial.items():
            if rest:
                os.write(self.fd, encode(LogEntry(stream, rest, now())))
        self.partial.clear()

    def close(self) -> None:
        self.flush()
        os.close(self.fd)


def read(
    path: str | os.PathLike | BinaryIO,
    offset: int = 0,
    follow: Callable[[], bool] | None = None,
    poll: float = 0.01,
) -> Iterator[LogEntry]:
    """The entries of the log from byte *offset* on.

    follow: called when the end of the file is reached; while it returns True the reader
    waits for more (the container still runs). It is asked once more after it has said False,
    so what was written just before the container stopped is not lost.
    *path* may be the log opened already: it is read even after the record is removed.
    """
    if hasattr(path, "read"):
        f = path
    else:
        try:
            f = open(path, "rb")  # noqa: SIM115  kept open while following
        except FileNotFoundError:
            return
    with f:
        f.seek(offset)
        pending = b""
        while True:
            chunk = f.read(65536)
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    entry = decode(line)
                    if entry is not None:
                        yield entry
                continue
            if follow is None:
                return
            if not follow():
                rest = f.read()
                for line in (pending + rest).split(b"\n"):
                    entry = decode(line) if line else None
                    if entry is not None:
                        yield entry
                return
            time.sleep(poll)


def tail_offset(path: str | os.PathLike, lines: int) -> int:
    """The byte offset where the last *lines* lines of the file begin."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    if lines <= 0:
        return len(data)
    ends = [i for i, b in enumerate(data) if b == 0x0A]
    if len(ends) <= lines:
        return 0
    return ends[-lines - 1] + 1


def frame(entry: LogEntry) -> bytes:
    """Docker's multiplexed stream: a header (stream 1 or 2, three zeros, size) then the data."""
    kind = 1 if entry.stream == "stdout" else 2
    return bytes([kind, 0, 0, 0]) + len(entry.data).to_bytes(4, "big") + entry.data
