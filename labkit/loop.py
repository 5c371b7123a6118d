"""Loop devices: a block device whose sectors are a file's bytes.

The kernel lists each attached loop device's file in ``/sys/block/loopN/loop/backing_file``
(with `` (deleted)`` appended once the file is unlinked: the device keeps it alive). labkit's
loop devices are those whose file lies below the state directory; that is how ``labkit
cleanup`` finds them, after a crash too. ``losetup`` attaches them; ``detach`` asks the kernel
to let go with the LOOP_CLR_FD ioctl, as ``losetup -d`` does.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOOP_CLR_FD = 0x4C01  # <linux/loop.h>
_SYS_BLOCK = Path("/sys/block")
_DELETED = " (deleted)"


def attached() -> dict[str, str]:
    """Every attached loop device and its backing file: {"/dev/loop0": "/path/disk.img"}."""
    found = {}
    for entry in sorted(_SYS_BLOCK.glob("loop*")):
        try:
            backing = (entry / "loop" / "backing_file").read_text().rstrip("\n")
        except OSError:
            continue  # not attached (the file is absent then), or detached meanwhile
        found[f"/dev/{entry.name}"] = backing.removesuffix(_DELETED)
    return found


def attached_below(root: str | os.PathLike) -> dict[str, str]:
    """The loop devices whose backing file is below *root* (deleted files count)."""
    top = str(root).rstrip("/") + "/"
    return {dev: path for dev, path in attached().items() if path.startswith(top)}


def detach(device: str) -> None:
    """LOOP_CLR_FD: detach *device* from its file (the kernel does it at the last close if the
    device is still open: the ioctl then only marks it to be cleared)."""
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD)
    except OSError as e:
        raise OSError(e.errno, f"ioctl({device!r}, LOOP_CLR_FD): {os.strerror(e.errno)}") from None
    finally:
        os.close(fd)
