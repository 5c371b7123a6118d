"""The two pipes between a parent and the init child it launched, and what crosses them.

    status   child -> parent   events: "userns_ready", "pid", "created", "error"
    control  parent -> child   the spec first, then answers: "maps_written"

The child's end of the status pipe is close-on-exec: when the child execs the command, the
kernel closes it, and the parent's read sees end-of-file. That is how the parent knows set-up
is complete without the command's help (CPython's subprocess tells a failed exec the same way).

A message is a dict in ``marshal`` format with a 4-byte length in front. marshal is built into
the interpreter, and both ends are the same Python, so nothing else is needed. Both sides read
with ``read_message``; only the parent gives it a deadline.
"""

from __future__ import annotations

import marshal
import os
import select
import time
from typing import NamedTuple, Self

from .errors import LabkitError

# The events, in the order a set-up sends them. Each event the child waits on has its answer.
USERNS_READY = "userns_ready"  # child: I made a user namespace; write my id maps
MAPS_WRITTEN = "maps_written"  # parent: done, go on
PID = "pid"  # child: this is the PID of the process that will exec
CREATED = "created"  # child (container): all set up, now waiting for "start"
ERROR = "error"  # child: a step failed (then it exits)


def frame(message: dict) -> bytes:
    """One message on a pipe: its length, then the message in marshal format."""
    data = marshal.dumps(message)
    return len(data).to_bytes(4, "little") + data


def read_message(fd: int, deadline: float | None = None) -> dict | None:
    """The next message on *fd*, or None at end-of-file (every writer has closed it).

    With a *deadline* (a time.monotonic() value), TimeoutError once it has passed.
    """
    header = _read_exactly(fd, 4, deadline)
    if header is None:
        return None
    data = _read_exactly(fd, int.from_bytes(header, "little"), deadline)
    if data is None:
        raise EOFError("the pipe closed in the middle of a message")
    return marshal.loads(data)


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes | None:
    data = b""
    while len(data) < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class Channel:
    """The child's ends: it sends events on status and reads the parent's answers on control."""

    def __init__(self, status_fd: int, control_fd: int):
        self.status = status_fd
        self.control = control_fd

    def send(self, event: str, **data) -> None:
        os.write(self.status, frame({"event": event, **data}))

    def receive(self) -> dict:
        message = read_message(self.control)
        if message is None:
            raise SystemExit(127)  # the parent went away: there is nobody to set up for
        return message

    def fail(self, step: str, error: BaseException) -> None:
        """Tell the parent which step failed and why, then exit: the parent undoes the rest."""
        message = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        filename = getattr(error, "filename", None)
        self.send(
            ERROR,
            step=step,
            type=type(error).__name__,
            errno=getattr(error, "errno", None) or 0,
            message=message or type(error).__name__,
            filename=os.fsdecode(filename) if filename is not None else None,
        )
        os._exit(127)


class StepFailed(NamedTuple):
    """What an "error" event says: the step, the exception's type, errno, message, file."""

    step: str
    type: str
    errno: int
    message: str
    filename: str | None

    @classmethod
    def from_event(cls, event: dict) -> StepFailed:
        return cls(
            event["step"], event["type"], event["errno"], event["message"], event["filename"]
        )


class Parent:
    """The parent's ends of the two pipes to one child."""

    def __init__(self, status_fd: int, control_fd: int):
        self.status = status_fd
        self.control = control_fd

    def send(self, message: dict) -> None:
        os.write(self.control, frame(message))

    def events(self, timeout: float, what: str):
        """Each event the child sends, until its exec (or exit) closes the status pipe.

        Raises LabkitError naming *what* if set-up takes longer than *timeout* seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = read_message(self.status, deadline)
            except TimeoutError:
                raise LabkitError(
                    f"{what} did not finish setting up within {timeout:.0f} s and was killed "
                    "(is the machine overloaded?)."
                ) from None
            if event is None:
                return
            yield event

    def close(self) -> None:
        for fd in (self.status, self.control):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
