"""A container's stdio over HTTP: the multiplexed frames, and the pumps of a hijacked connection.

Without a tty a container has two output streams, but one connection carries them: each piece
goes out as a *frame*, an 8-byte header ``[stream, 0, 0, 0, size as big-endian uint32]``
(1 = stdout, 2 = stderr) and then the bytes; the client (Go's ``stdcopy``) splits them again.
With a tty there is one stream, and it goes out raw. After the hijack the client's bytes are
the container's stdin until the client shuts its side of the socket (``shutdown(SHUT_WR)``),
which is how ``echo x | docker run -i`` says "end of input"; output keeps flowing after that.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
import threading
from collections.abc import Callable, Iterable

from .api import ClientGone, Hijacked

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"
STREAM_IDS = {"stdin": 0, "stdout": 1, "stderr": 2}


def frame(stream: str, data: bytes) -> bytes:
    """One multiplexed frame: the header Go's stdcopy reads, then the payload."""
    return struct.pack(">BxxxL", STREAM_IDS[stream], len(data)) + data


def unframe(buffer: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split *buffer* into (stream id, payload) frames; the incomplete rest is returned too."""
    out = []
    while len(buffer) >= 8:
        stream, size = struct.unpack(">BxxxL", buffer[:8])
        if len(buffer) < 8 + size:
            break
        out.append((stream, buffer[8 : 8 + size]))
        buffer = buffer[8 + size :]
    return out, buffer


def content_type(tty: bool) -> str:
    return RAW if tty else MULTIPLEXED


def encode(tty: bool) -> Callable[[str, bytes], bytes]:
    """How output goes on the wire: raw with a tty, framed without."""
    return (lambda _stream, data: data) if tty else frame


def send_output(conn: Hijacked, entries: Iterable, tty: bool) -> bool:
    """Send each (stream, data) entry until they end; False if the client went away first."""
    wire = encode(tty)
    try:
        for entry in entries:
            if entry.data:
                conn.send(wire(entry.stream, entry.data))
    except ClientGone:
        return False
    return True


def pump_stdin(conn: Hijacked, write: Callable[[bytes], None], close: Callable[[], None]):
    """A thread that copies the client's bytes to *write* and calls *close* at their end."""

    def run() -> None:
        try:
            while data := conn.recv():
                write(data)
        except OSError:
            pass  # the container's stdin closed: nothing more to deliver
        finally:
            close()

    thread = threading.Thread(target=run, name="stdin", daemon=True)
    thread.start()
    return thread


def drain_input(conn: Hijacked) -> threading.Thread:
    """Read and drop what the client sends (no stdin attached): it half-closes at once."""
    return pump_stdin(conn, lambda _data: None, lambda: None)


def read_fd(fd: int, stream: str) -> Iterable:
    """Entries of what a pipe or pty master gives, until its end (EIO on a pty: all closed)."""
    from types import SimpleNamespace

    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        yield SimpleNamespace(stream=stream, data=data)


def set_window(fd: int, height: int, width: int) -> None:
    """TIOCSWINSZ on a pty: the size a terminal program (vi, top) lays itself out for."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
