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

from .. import mountinfo
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


def detect_mode(root: Path = ROOT, fs_type=ksys.statfs) -> str:
    """Ask the kernel which filesystem is at *root* (statfs), as systemd and runc do.

    cgroup2 there means v2; else cgroup2 at root/unified means hybrid; else v1.
    """

    def is_cgroup2(path: Path) -> bool:
        try:
            return fs_type(str(path)) == ksys.CGROUP2_SUPER_MAGIC
        except OSError:
            return False

    if is_cgroup2(root):
        return "v2"
    if is_cgroup2(root / "unified"):
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


def cgroup_mounts(text: str) -> list[mountinfo.Mount]:
    """The cgroup (v1) and cgroup2 mounts in the text of /proc/PID/mountinfo."""
    return [m for m in mountinfo.parse(text) if m.fstype in ("cgroup", "cgroup2")]


def controllers_of(mount: mountinfo.Mount) -> tuple[str, ...]:
    """The v1 controllers a cgroup mount holds, from its super options ("rw,cpu,cpuacct")."""
    return tuple(o for o in mount.super_options if o in V1_CONTROLLERS)


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
    for mount in cgroup_mounts((proc / "mountinfo").read_text()):
        point, controllers = Path(mount.point), controllers_of(mount)
        if mount.fstype == "cgroup" and controllers and controllers[0] in own:
            hierarchies.append(
                Hierarchy(controllers, point, _relative(own[controllers[0]], mount.root))
            )
        elif mount.fstype == "cgroup2" and "" in own and mode != "v1":
            if mode == "v2" and point != root:
                continue  # a second cgroup2 mount (a container's view): use the host's one
            hierarchies.append(Hierarchy((), point, _relative(own[""], mount.root)))
    seen: set[Path] = set()
    unique = [h for h in hierarchies if not (h.mount in seen or seen.add(h.mount))]
    return Layout(mode, tuple(unique))
