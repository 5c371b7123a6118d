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
import stat
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


# ioctl numbers from <asm-generic/ioctls.h> (x86, arm64): Python's termios lacks these two.
_TIOCGPTN = 0x80045430  # the number N of the pty behind a ptmx fd (its /dev/pts/N)
_TIOCSPTLCK = 0x40045431  # unlockpt(3): let the slave be opened
_PTY_SLAVE_MAJORS = range(136, 144)  # UNIX98 pty slaves


def open_pty(root: str) -> tuple[int, int]:
    """A pty made in the devpts of the file system at *root* (a container's /proc/PID/root),
    so the process finds its terminal in its own /dev/pts, as runc makes a console.

    The container's root owns every path below *root*: a link there may point anywhere on the
    host. So each end is checked by what the kernel says it is (a ptmx, then pty slave N)
    before a byte goes through it."""
    master = os.open(f"{root}/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(master)
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (5, 2):
            raise OSError(f"{root}/dev/pts/ptmx is not a ptmx device")
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
        number = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0" * 4))[0]
        slave = os.open(f"{root}/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    st = os.fstat(slave)
    if not (
        stat.S_ISCHR(st.st_mode)
        and os.major(st.st_rdev) in _PTY_SLAVE_MAJORS
        and (os.major(st.st_rdev) - 136) * 256 + os.minor(st.st_rdev) == number
    ):
        os.close(slave)
        os.close(master)
        raise OSError(f"{root}/dev/pts/{number} is not the pty slave of its ptmx")
    return master, slave
