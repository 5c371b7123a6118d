"""Where the cgroup hierarchies are, which layout the host uses, and where labkit's cgroups go.

A cgroup is a directory in a cgroup filesystem; the processes in it share its limits. Hosts mount
these filesystems in one of three layouts:

- **v2** (unified): one ``cgroup2`` hierarchy at /sys/fs/cgroup holds every controller.
- **v1** (legacy): one ``cgroup`` hierarchy per controller (or a few co-mounted, ``cpu,cpuacct``).
- **hybrid**: the v1 hierarchies, plus a ``cgroup2`` at /sys/fs/cgroup/unified that has no
  controllers but still offers v2's core files (pressure, ``cgroup.kill``, ``cgroup.freeze``).

labkit never moves a process out of the cgroup it was started in: it makes a ``labkit`` directory
*below the caller's own cgroup*, in every hierarchy it uses (``/proc/self/cgroup`` says where
that is), and one ``labkit-<name>`` directory inside it per cgroup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import sys as ksys

ROOT = Path("/sys/fs/cgroup")
PARENT = "labkit"  # the directory below the caller's cgroup that holds labkit's cgroups

# The v1 controllers labkit uses; each lives in its own hierarchy (or shares one, co-mounted).
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "cpuset", "freezer")


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and the caller's place in it."""

    controllers: tuple[str, ...]  # v1: ("cpu", "cpuacct"); the cgroup2 hierarchy: ()
    mount: Path  # where the hierarchy is mounted
    own: str  # the caller's cgroup in it, as /proc/self/cgroup writes it: "/process_api/1f3e"

    @property
    def name(self) -> str:
        return ",".join(self.controllers) or "unified"

    @property
    def own_dir(self) -> Path:
        """The directory of the caller's own cgroup."""
        return self.mount / self.own.strip("/")

    @property
    def parent(self) -> Path:
        """Where labkit's cgroups go in this hierarchy: ``<own cgroup>/labkit``."""
        return self.own_dir / PARENT


@dataclass(frozen=True)
class Layout:
    """The host's cgroup layout: "v1", "hybrid" or "v2", and the hierarchies labkit uses."""

    mode: str
    hierarchies: tuple[Hierarchy, ...]

    def hierarchy(self, controller: str) -> Hierarchy | None:
        """The v1 hierarchy of *controller* ("" for the cgroup2 hierarchy), or None."""
        for h in self.hierarchies:
            if controller in h.controllers or (controller == "" and not h.controllers):
                return h
        return None


def _is_fs(path: Path, magic: int) -> bool:
    try:
        return ksys.statfs(str(path)) == magic
    except OSError:
        return False


def detect_mode(root: Path = ROOT) -> str:
    """Ask the kernel which filesystem is at *root* (statfs), as systemd and runc do.

    cgroup2 there means v2; else cgroup2 at root/unified means hybrid; else v1.
    """
    if _is_fs(root, ksys.CGROUP2_SUPER_MAGIC):
        return "v2"
    if _is_fs(root / "unified", ksys.CGROUP2_SUPER_MAGIC):
        return "hybrid"
    return "v1"


def own_cgroups(proc_cgroup: str) -> dict[str, str]:
    """The text of /proc/PID/cgroup as {controller: path}; the cgroup2 line is under "".

    A v1 line reads ``4:memory:/process_api/1f3e`` (co-mounted controllers joined by commas,
    named hierarchies as ``name=systemd``); the cgroup2 line reads ``0::/path``.
    """
    found = {}
    for line in proc_cgroup.splitlines():
        if line.count(":") < 2:
            continue
        _id, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            found[controller] = path
    return found


def cgroup_mounts(mountinfo: str) -> list[tuple[str, Path, str, tuple[str, ...]]]:
    """(fstype, mount point, root, controllers) of each cgroup mount in /proc/PID/mountinfo."""
    found = []
    for line in mountinfo.splitlines():
        # id parent dev root point options [optional...] - fstype source super-options
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        controllers = tuple(o for o in tail[2].split(",") if o in V1_CONTROLLERS)
        found.append((tail[0], Path(fields[4]), fields[3], controllers))
    return found


def _relative(path: str, root: str) -> str:
    # /proc/self/cgroup paths start at the hierarchy's root; a mount may show only a subtree.
    if root != "/" and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path


def detect(root: Path = ROOT, proc: Path = Path("/proc/self")) -> Layout:
    """The host's layout and, per hierarchy labkit uses, the caller's own cgroup in it."""
    mode = detect_mode(root)
    own = own_cgroups((proc / "cgroup").read_text())
    hierarchies = []
    for fstype, point, mount_root, controllers in cgroup_mounts((proc / "mountinfo").read_text()):
        if fstype == "cgroup" and controllers and controllers[0] in own:
            hierarchies.append(
                Hierarchy(controllers, point, _relative(own[controllers[0]], mount_root))
            )
        elif fstype == "cgroup2" and "" in own and mode != "v1":
            if mode == "v2" and point != root:
                continue  # a second cgroup2 mount (a container's view): use the host's one
            hierarchies.append(Hierarchy((), point, _relative(own[""], mount_root)))
    seen: set[Path] = set()
    unique = [h for h in hierarchies if not (h.mount in seen or seen.add(h.mount))]
    return Layout(mode, tuple(unique))
