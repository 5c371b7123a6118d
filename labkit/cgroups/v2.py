"""The cgroup v2 backend: one directory in the unified hierarchy holds every controller's files.

Two rules shape v2 (``Documentation/admin-guide/cgroup-v2.rst``):

- **Top-down**: a controller's files appear in a cgroup only if its parent lists the controller
  in ``cgroup.subtree_control``. labkit enables memory, cpu, pids and cpuset for ``labkit/``
  in the caller's cgroup, then for ``labkit-<name>`` in ``labkit/``.
- **No internal processes**: a cgroup (other than the root) that enables controllers for its
  children may hold no processes itself. ``labkit/`` never holds any; it sits in the root cgroup
  or, under a delegation, beside the caller's leaf (see ``layout``), where the cgroup that holds
  it has no processes either. Anywhere else labkit says how to get a delegated subtree.

Files: ``memory.max``, ``memory.swap.max``, ``memory.high``, ``memory.peak``, ``memory.events``
(oom_kill), ``cpu.max`` ("QUOTA PERIOD"), ``cpu.weight``, ``cpu.stat``, ``pids.max``,
``pids.events``, ``cpuset.cpus``, ``cgroup.freeze`` with ``cgroup.events``, ``cgroup.kill``,
and the pressure files ``cpu.pressure``, ``memory.pressure``, ``io.pressure``.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import BadInput, MissingFeature
from . import base as files
from . import layout as layout_mod
from .base import keyed, read, write
from .layout import Layout
from .units import CPU_PERIOD_US, MAX, Limits, parse_cpulist, quota_us

CONTROLLERS = ("cpuset", "cpu", "memory", "pids")  # the ones labkit enables, when available

# The file behind each limit, in the order plan() writes them. Memory goes last: a memory.max
# below what the group uses makes the kernel reclaim, and OOM-kill if it cannot, at once;
# everything else should be in place by then.
LIMIT_FILES = {
    "cpus": "cpu.max",
    "weight": "cpu.weight",
    "pids": "pids.max",
    "cpuset": "cpuset.cpus",
    "memory_high": "memory.high",
    "swap": "memory.swap.max",
    "memory": "memory.max",
}


def under_systemd() -> bool:
    """Whether systemd is the init system (it creates /run/systemd/system when it boots)."""
    return Path("/run/systemd/system").is_dir()


def no_internal_processes(cgroup: Path, placement: str) -> str:
    """The sentence for a cgroup that holds processes and so cannot enable controllers."""
    rule = (
        f"cgroup v2 lets a cgroup enable controllers for its children only if it holds no "
        f"processes, and {cgroup} holds some (this process among them)"
    )
    if placement == layout_mod.DELEGATED:
        return (
            f"{rule}: move them into a leaf of the delegated subtree, e.g. "
            f"mkdir {cgroup}/shell && echo $$ > {cgroup}/shell/cgroup.procs, then start labkit "
            "there; labkit then puts its cgroups beside that leaf."
        )
    if under_systemd():
        return (
            f"{rule}, and systemd has not delegated it: start labkit from a delegated unit, "
            "e.g. systemd-run -p Delegate=yes -p DelegateSubgroup=shell --shell "
            "(or systemd-run --scope -p Delegate=yes with the shell moved into a leaf), or from "
            "the lab's JupyterLab, whose unit is delegated."
        )
    return (
        f"{rule}, and nothing marks it as handed to this process: mark it delegated and move "
        f"this shell into a leaf (setfattr -n trusted.delegate -v 1 {cgroup} && mkdir "
        f"{cgroup}/shell && echo $$ > {cgroup}/shell/cgroup.procs), or start labkit from the "
        "root cgroup."
    )


class Backend:
    """A v2 cgroup: ``<base>/labkit/<dirname>`` in the unified hierarchy (see ``layout``)."""

    def __init__(self, dirname: str, layout: Layout):
        self.dirname = dirname
        self.hierarchy = layout.hierarchy("")
        if self.hierarchy is None:
            raise MissingFeature(
                "this host has no cgroup2 hierarchy: mount it with "
                "mount -t cgroup2 none /sys/fs/cgroup."
            )
        self.dir = self.hierarchy.parent / dirname
        self.dirs = [self.dir]

    # --- making and removing ----------------------------------------------------------------

    def create(self) -> None:
        """Enable the controllers top-down (in the base, then in labkit/), then mkdir the cgroup.

        If the kernel refuses, a ``labkit/`` made here is removed again: nothing is left behind.
        """
        base, parent = self.hierarchy.base_dir, self.hierarchy.parent
        if base != self.hierarchy.mount and read(base / "cgroup.procs"):
            # Refuse before anything is made: it could never pass controllers on to labkit/.
            raise MissingFeature(no_internal_processes(base, self.hierarchy.placement))
        wanted = [c for c in CONTROLLERS if c in read(base / "cgroup.controllers").split()]
        self.enable_controllers(base, wanted)
        for attempt in range(3):
            made_parent = False
            if not parent.is_dir():
                try:
                    files.make_dir(parent)
                    made_parent = True
                except FileExistsError:
                    pass  # another shell made it meanwhile
            try:
                self.enable_controllers(parent, wanted)
                files.make_dir(self.dir)
                return
            except FileExistsError:
                raise BadInput(
                    f"a cgroup named {self.dirname} already exists: choose another name, or "
                    "remove it with labkit cleanup."
                ) from None
            except FileNotFoundError:
                if attempt == 2:  # another shell's cleanup removed labkit/ meanwhile
                    raise
            except BaseException:
                if made_parent:
                    files.rmdir_if_empty(parent)
                raise

    def enable_controllers(self, cgroup: Path, controllers: list[str]) -> None:
        """Write "+memory +cpu ..." to cgroup.subtree_control for those not enabled yet."""
        missing = [
            c for c in controllers if c not in read(cgroup / "cgroup.subtree_control").split()
        ]
        if not missing:
            return
        if cgroup != self.hierarchy.mount and read(cgroup / "cgroup.procs"):
            raise MissingFeature(no_internal_processes(cgroup, self.hierarchy.placement))
        write(cgroup / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))

    def remove(self, deadline: float) -> None:
        files.remove_dir(self.dir, deadline)
        files.rmdir_if_empty(self.hierarchy.parent)

    # --- limits -----------------------------------------------------------------------------

    def available_cpus(self) -> set[int]:
        path = self.hierarchy.base_dir / "cpuset.cpus.effective"
        if not path.exists():
            path = Path("/sys/devices/system/cpu/online")
        return parse_cpulist(read(path))

    def limit_files(self) -> list[Path]:
        names = ("memory.max", "memory.swap.max", "memory.high", "cpu.max", "cpu.weight",
                 "pids.max", "cpuset.cpus")  # fmt: skip
        return [self.dir / n for n in names]

    def read_limits(self) -> Limits:
        """The limits the kernel holds now, read back from LIMIT_FILES (None: no such file)."""
        found: dict[str, str] = {}
        for limit, name in LIMIT_FILES.items():
            try:
                found[limit] = read(self.dir / name)
            except FileNotFoundError:
                pass

        def number(limit: str):
            text = found.get(limit)
            return None if text is None else MAX if text == MAX else int(text)

        cpus = None
        if "cpus" in found:
            quota, period = found["cpus"].split()
            cpus = MAX if quota == MAX else int(quota) / int(period)
        return Limits(
            memory=number("memory"),
            swap=number("swap"),
            memory_high=number("memory_high"),
            cpus=cpus,
            weight=number("weight"),
            pids=number("pids"),
            cpuset=found.get("cpuset"),
        )

    def plan(self, limits: Limits) -> list[tuple[Path, str]]:
        """The (file, value) writes that set *limits*, in LIMIT_FILES' order; v2's files are
        independent of each other, and take the values as units.py spells them."""
        writes = []
        for limit, name in LIMIT_FILES.items():
            value = getattr(limits, limit)
            if value is None:
                continue
            if limit == "cpus":
                value = f"{MAX if value == MAX else quota_us(value)} {CPU_PERIOD_US}"
            writes.append((self.dir / name, str(value)))
        return writes

    # --- processes --------------------------------------------------------------------------

    def procs_files(self) -> list[Path]:
        return [self.dir / "cgroup.procs"]

    def tasks_files(self) -> list[Path]:
        return []  # cgroup v2 has no tasks file; a process moves whole, through cgroup.procs

    def pids(self) -> set[int]:
        try:
            return {int(line) for line in read(self.dir / "cgroup.procs").split()}
        except FileNotFoundError:
            return set()

    def freeze(self, timeout: float) -> None:
        write(self.dir / "cgroup.freeze", "1")
        deadline = time.monotonic() + timeout
        # cgroup.freeze is the request; cgroup.events says "frozen 1" once every task stopped.
        while keyed(read(self.dir / "cgroup.events")).get("frozen") != "1":
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.dir}/cgroup.events did not report frozen within {timeout} s."
                )
            time.sleep(0.005)

    def thaw(self) -> None:
        write(self.dir / "cgroup.freeze", "0")

    # --- counters ---------------------------------------------------------------------------

    def frozen(self) -> bool:
        return keyed(read(self.dir / "cgroup.events")).get("frozen") == "1"
