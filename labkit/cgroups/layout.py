"""Where the cgroup hierarchies are, which layout the host uses, and where labkit's cgroups go.

A cgroup is a directory in a cgroup filesystem; the processes in it share its limits. Hosts mount
these filesystems in one of three layouts:

- **v2** (unified): one ``cgroup2`` hierarchy at /sys/fs/cgroup holds every controller.
- **v1** (legacy): one ``cgroup`` hierarchy per controller (or a few co-mounted, ``cpu,cpuacct``).
- **hybrid**: the v1 hierarchies, plus a ``cgroup2`` at /sys/fs/cgroup/unified that has no
  controllers but still offers v2's core files (pressure, ``cgroup.kill``, ``cgroup.freeze``).

labkit never moves a process out of the cgroup it was started in. It makes one ``labkit``
directory per hierarchy, and one ``labkit-<name>`` directory inside it per cgroup, inside the
subtree the caller was given (``/proc/self/cgroup`` says where the caller is):

- on v1 and hybrid hosts, *below the caller's own cgroup*;
- on v2, where a cgroup that enables controllers for its children may hold no processes, the
  caller's own cgroup (which holds the caller) cannot be that parent unless it is the root. Under
  a delegation (systemd's ``Delegate=yes``, which marks the unit's cgroup with the extended
  attribute ``trusted.delegate``), the caller sits in a leaf of the delegated subtree, and
  ``labkit`` goes *beside that leaf*, in the nearest cgroup of the subtree that holds no
  processes: in the lab VM, ``jupyterlab.service/labkit`` beside ``jupyterlab.service/server``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .. import mountinfo
from .. import sys as ksys

ROOT = Path("/sys/fs/cgroup")
PARENT = "labkit"  # the directory below the caller's cgroup that holds labkit's cgroups

# The v1 controllers labkit uses; each lives in its own hierarchy (or shares one, co-mounted).
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "cpuset", "freezer")

# How a delegated cgroup is marked: systemd (251+) sets these on the cgroup of a unit with
# Delegate=yes; a manager that hands a subtree on by hand can set them too.
DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")

# Where a v2 hierarchy puts labkit's cgroups, as Hierarchy.placement names it.
ROOT_CGROUP = "root"  # the caller is in the root cgroup: labkit/ below it
OWN_CGROUP = "own"  # v1/hybrid, or v2 without a delegation: below the caller's own cgroup
DELEGATED = "delegated"  # v2: beside the caller's leaf, inside the delegated subtree


class Hierarchy(NamedTuple):
    """One mounted cgroup hierarchy and the caller's place in it."""

    controllers: tuple[str, ...]  # v1: ("cpu", "cpuacct"); the cgroup2 hierarchy: ()
    mount: Path  # where the hierarchy is mounted
    own: str  # the caller's cgroup in it, as /proc/self/cgroup writes it: "/process_api/1f3e"
    base: Path | None = None  # the cgroup that holds labkit/ (None: the caller's own cgroup)
    placement: str = OWN_CGROUP  # ROOT_CGROUP, OWN_CGROUP or DELEGATED

    @property
    def name(self) -> str:
        return ",".join(self.controllers) or "unified"

    @property
    def own_dir(self) -> Path:
        """The directory of the caller's own cgroup."""
        return self.mount / self.own.strip("/")

    @property
    def base_dir(self) -> Path:
        """The cgroup below which labkit's ``labkit/`` directory goes."""
        return self.base or self.own_dir

    @property
    def parent(self) -> Path:
        """Where labkit's cgroups go in this hierarchy: ``<base>/labkit``."""
        return self.base_dir / PARENT


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

    def directory(self, controller: str, dirname: str) -> Path | None:
        """Where the cgroup *dirname* keeps *controller*'s files ("": cgroup2's), or None."""
        h = self.hierarchy(controller)
        return h.parent / dirname if h is not None else None


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


def is_delegated(cgroup: Path) -> bool:
    """Whether *cgroup* is marked as handed to its processes (systemd's ``Delegate=yes``)."""
    for name in DELEGATE_XATTRS:
        try:
            if os.getxattr(cgroup, name).strip(b"\0\n") in (b"1", b"yes", b"true"):
                return True
        except OSError:
            pass  # no such attribute, or a kernel without xattrs on cgroupfs
    return False


def holds_processes(cgroup: Path) -> bool:
    """Whether *cgroup* has processes of its own (its ``cgroup.procs`` is not empty)."""
    try:
        with open(cgroup / "cgroup.procs") as f:
            return bool(f.read().strip())
    except OSError:
        return False


def delegated_subtree(own_dir: Path, mount: Path, delegated=is_delegated) -> list[Path]:
    """The caller's cgroup and its ancestors up to the top of its delegated subtree.

    Empty when no cgroup from the caller's up to the root is marked delegated. A subgroup that
    is marked too (systemd's DelegateSubgroup=) belongs to the same delegation, so the walk goes
    on up while the parent is marked as well.
    """
    chain = []
    cgroup = own_dir
    while cgroup != mount and mount in cgroup.parents:
        chain.append(cgroup)
        cgroup = cgroup.parent
    marked = [i for i, c in enumerate(chain) if delegated(c)]
    if not marked:
        return []
    top = marked[0]
    while top + 1 < len(chain) and delegated(chain[top + 1]):
        top += 1
    return chain[: top + 1]


def v2_base(own_dir: Path, mount: Path, delegated=is_delegated, busy=holds_processes):
    """(base, placement): the cgroup in a cgroup2 hierarchy that will hold ``labkit/``.

    The root cgroup may hold processes and still enable controllers, so a caller there uses it.
    Inside a delegation, the nearest cgroup from the caller's up to the delegation's top that
    holds no processes (the caller's own holds the caller): beside the caller's leaf. With
    neither, the caller's own cgroup, where enabling controllers will be refused with a
    sentence that says how to get a delegation.
    """
    if own_dir == mount:
        return own_dir, ROOT_CGROUP
    subtree = delegated_subtree(own_dir, mount, delegated)
    if not subtree:
        return own_dir, OWN_CGROUP
    for cgroup in subtree[1:]:
        if not busy(cgroup):
            return cgroup, DELEGATED
    return subtree[-1], DELEGATED  # every one holds processes: enabling will say what to do


def labkit_parents(h: Hierarchy, depth: int = 8) -> list[Path]:
    """Every ``labkit/`` directory in hierarchy *h*, wherever it sits (at most *depth* deep).

    ``labkit cleanup`` run from another shell (an ssh login beside the lab's JupyterLab) has a
    different own cgroup from the notebook's that made the cgroups, so it searches the tree.
    """
    found = [h.parent] if h.parent.is_dir() else []
    level = [h.mount]
    for _ in range(depth):
        below = []
        for cgroup in level:
            try:
                entries = list(os.scandir(cgroup))
            except OSError:
                continue  # removed meanwhile, or not readable
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                path = Path(entry.path)
                if entry.name == PARENT:
                    if path not in found:
                        found.append(path)  # labkit's own cgroups are below it: no need to look
                else:
                    below.append(path)
        level = below
    return found


def cgroup_mounts(text: str) -> list[mountinfo.Mount]:
    """The cgroup (v1) and cgroup2 mounts in the text of /proc/PID/mountinfo."""
    return [m for m in mountinfo.parse(text) if m.fstype in ("cgroup", "cgroup2")]


def controllers_of(mount: mountinfo.Mount) -> tuple[str, ...]:
    """The v1 controllers a cgroup mount holds, from its super options ("rw,cpu,cpuacct")."""
    return tuple(o for o in mount.super_options if o in V1_CONTROLLERS)


def relative_to_root(path: str, root: str) -> str:
    """*path* from /proc/self/cgroup made relative to a mount whose root (mountinfo) is *root*."""
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
                Hierarchy(controllers, point, relative_to_root(own[controllers[0]], mount.root))
            )
        elif mount.fstype == "cgroup2" and "" in own and mode != "v1":
            if mode == "v2" and point != root:
                continue  # a second cgroup2 mount (a container's view): use the host's one
            h = Hierarchy((), point, relative_to_root(own[""], mount.root))
            if mode == "v2":
                # hybrid's cgroup2 has no controllers to enable: below the own cgroup is fine.
                base, placement = v2_base(h.own_dir, point)
                h = Hierarchy((), point, h.own, base, placement)
            hierarchies.append(h)
    seen: set[Path] = set()
    unique = [h for h in hierarchies if not (h.mount in seen or seen.add(h.mount))]
    return Layout(mode, tuple(unique))
