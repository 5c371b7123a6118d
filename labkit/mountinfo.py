"""The mount table, as the kernel shows it in ``/proc/PID/mountinfo``.

Each line is one mount of the process's mount namespace (only those below its root)::

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)

(1) mount id, (2) parent id, (3) device, (4) root: the directory of the filesystem mounted here,
(5) the mount point, (6) per-mount options, (7) optional fields such as ``shared:N`` (a member of
peer group N) or ``master:N`` (a slave of group N), (8) a separator, (9) the filesystem type,
(10) the source, (11) the filesystem's own (super block) options. See ``man 5 proc``.

labkit reads this table rather than guessing from the file system: ``os.path.ismount`` misses a
directory bind-mounted onto itself, since both sides are on the same device.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple


class Mount(NamedTuple):
    """One line of mountinfo."""

    mount_id: int
    parent_id: int
    root: str
    point: str
    options: tuple[str, ...]
    optional: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def propagation(self) -> str:
        """shared, slave, "shared and slave" or private, from the optional fields."""
        kinds = {field.split(":")[0] for field in self.optional}
        if {"shared", "master"} <= kinds:
            return "shared and slave"
        return "shared" if "shared" in kinds else "slave" if "master" in kinds else "private"

    @property
    def read_only(self) -> bool:
        return "ro" in self.options

    def super_option(self, key: str) -> str | None:
        """The value of ``key=value`` among the super options ("" for a bare flag, else None)."""
        for option in self.super_options:
            name, sep, value = option.partition("=")
            if name == key:
                return unescape(value) if sep else ""
        return None


_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """Undo mountinfo's octal escapes of space, tab, newline and backslash (``\\040``).

    The kernel escapes only those four bytes (``\\040 \\011 \\012 \\134``); every other byte,
    UTF-8 included, is written as it is, so only the escapes are replaced.
    """
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field) if "\\" in field else field


def parse(text: str) -> list[Mount]:
    """The mounts in the text of a mountinfo file."""
    found = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split(" ", 2)
        if not sep or len(fields) < 6 or len(tail) < 3:
            continue
        found.append(
            Mount(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                root=unescape(fields[3]),
                point=unescape(fields[4]),
                options=tuple(fields[5].split(",")),
                optional=tuple(fields[6:]),
                fstype=tail[0],
                source=unescape(tail[1]),
                super_options=tuple(tail[2].strip().split(",")),
            )
        )
    return found


def mounts(pid: int | str = "self") -> list[Mount]:
    """The mount table of process *pid*, in the kernel's order (a later mount is on top)."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return parse(f.read())


def is_mount_point(path: str | os.PathLike, pid: int | str = "self") -> bool:
    """Is *path* a mount point in the mount table of *pid*?"""
    wanted = os.path.abspath(path)
    return any(m.point == wanted for m in mounts(pid))


def below(root: str | os.PathLike) -> list[str]:
    """Mount points at or below *root*, deepest first (the order to detach them in)."""
    root = os.path.abspath(root)
    points = {m.point for m in mounts() if m.point == root or m.point.startswith(root + "/")}
    return sorted(points, key=lambda p: p.count("/"), reverse=True)
