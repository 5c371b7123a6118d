"""The devices controller (cgroup v1): which device nodes a group's processes may use.

A process with CAP_MKNOD may make a node for *any* device number, the host's disk included
(``mknod /sda b 8 0``), and a node is only a name: what guards the device is the kernel checking
the group's device list on every mknod and open. Docker and runc allow only a few harmless
devices; everything else is refused with EPERM, whatever the process's capabilities.

On v1 the list is written line by line, ``TYPE MAJOR:MINOR ACCESS`` (``c 1:3 rwm``, ``*`` for
any number, ``a`` for every device), into ``devices.deny`` and ``devices.allow``. cgroup v2 has
no such files: there an eBPF program attached to the cgroup decides (labkit does not make one
yet, so ``create`` returns None on a host without a v1 devices hierarchy).
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import mountinfo
from ..state import PREFIX, check_name
from . import layout as layout_mod
from .base import is_ours, make_dir, remove_dir, write

# What runc always allows: "m" (mknod) of any node, then use of the harmless ones.
DEFAULT_ALLOW = (
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",  # null
    "c 1:5 rwm",  # zero
    "c 1:7 rwm",  # full
    "c 1:8 rwm",  # random
    "c 1:9 rwm",  # urandom
    "c 5:0 rwm",  # tty
    "c 5:1 rwm",  # console
    "c 5:2 rwm",  # ptmx
    "c 136:* rwm",  # the pseudo-terminals in /dev/pts
    "c 10:200 rwm",  # tun
)


def hierarchy() -> Path | None:
    """The directory below which labkit's device cgroups go (``<own cgroup>/labkit``), or None."""
    with open("/proc/self/cgroup") as f:
        own = layout_mod.own_cgroups(f.read())
    for m in mountinfo.mounts():
        if m.fstype == "cgroup" and "devices" in m.super_options and "devices" in own:
            rel = layout_mod.relative_to_root(own["devices"], m.root).strip("/")
            return Path(m.point) / rel / layout_mod.PARENT
    return None


class DeviceCgroup:
    """``<own cgroup>/labkit/labkit-<name>`` in the v1 devices hierarchy."""

    def __init__(self, name: str, parent: Path):
        self.name = check_name(name, "cgroup name")
        self.dir = parent / f"{PREFIX}-{name}"

    @classmethod
    def create(cls, name: str, rules: list[str]) -> DeviceCgroup | None:
        """mkdir it and write *rules* after "deny all"; None where there is no v1 hierarchy."""
        parent = hierarchy()
        if parent is None:
            return None
        group = cls(name, parent)
        parent.mkdir(exist_ok=True)
        make_dir(group.dir)
        try:
            write(group.dir / "devices.deny", "a")  # a whitelist from here: nothing allowed
            for rule in [*rules, *(f"allow {r}" for r in DEFAULT_ALLOW)]:
                verb, line = rule.split(" ", 1)
                write(group.dir / f"devices.{verb}", line)
        except BaseException:
            group.remove()
            raise
        return group

    def add(self, pid: int) -> None:
        write(self.dir / "cgroup.procs", str(pid))

    def remove(self, timeout: float = 5.0) -> None:
        remove_dir(self.dir, time.monotonic() + timeout)
        try:
            self.dir.parent.rmdir()  # the shared labkit/ goes with its last cgroup
        except OSError:
            pass


def rule(allow: bool, kind: str | None, major: int | None, minor: int | None, access: str | None):
    """One OCI device rule as "allow c 1:3 rwm" (or "deny ...")."""
    verb = "allow" if allow else "deny"
    if (kind or "a") == "a":
        return f"{verb} a"  # every device: numbers and access do not apply
    return f"{verb} {kind} {_n(major)}:{_n(minor)} {access or 'rwm'}"


def _n(value: int | None) -> str:
    return "*" if value is None or value < 0 else str(value)


def leftovers() -> list[str]:
    """This state directory's device cgroups that still exist."""
    parent = hierarchy()
    if parent is None or not parent.is_dir():
        return []
    return [
        f"cgroup: {d.name} (devices: {parent})"
        for d in sorted(parent.iterdir())
        if d.is_dir() and d.name.startswith(PREFIX + "-") and is_ours(d)
    ]


def remove_leftovers() -> None:
    parent = hierarchy()
    if parent is None or not parent.is_dir():
        return
    for d in sorted(parent.iterdir()):
        if d.is_dir() and d.name.startswith(PREFIX + "-") and is_ours(d):
            try:
                DeviceCgroup(d.name[len(PREFIX) + 1 :], parent).remove()
            except OSError:
                pass  # still busy: leftovers() keeps listing it
