"""The cgroup v1 backend: one directory per hierarchy, one controller's files in each.

On v1 a cgroup is not one directory but one in *every* hierarchy (memory, cpu, cpuacct, pids,
cpuset, freezer), and a process joins by writing its PID to ``cgroup.procs`` in each of them.
On a hybrid host labkit also makes the cgroup in the controller-less cgroup2 hierarchy, only to
read its pressure (PSI) files, which v1 hierarchies lack.

The files, against v2's (``../shared/docs/kernel-facts.md`` has the whole table):
``memory.limit_in_bytes`` (``memory.max``), ``memory.memsw.limit_in_bytes`` = memory + swap
(``memory.swap.max`` = swap alone), ``memory.soft_limit_in_bytes`` (roughly ``memory.high``),
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (``cpu.max``), ``cpu.shares`` (``cpu.weight``),
``freezer.state`` (``cgroup.freeze``).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import BadInput, MissingFeature
from .base import make_dir, read, remove_dir, rmdir_if_empty, write
from .layout import Hierarchy, Layout
from .units import CPU_PERIOD_US, MAX, Limits, parse_cpulist, quota_us, weight_to_shares

# v1 writes "no limit" as -1 and reads it back as the largest page-aligned 64-bit number.
_UNLIMITED = -1
_HUGE = 1 << 62


# The files behind each limit, in the order plan() writes them (memory last, as on v2; memory
# and memory+swap in whichever order the kernel accepts, see _plan_memory).
LIMIT_FILES = {
    "cpus": (("cpu", "cpu.cfs_period_us"), ("cpu", "cpu.cfs_quota_us")),
    "weight": (("cpu", "cpu.shares"),),
    "pids": (("pids", "pids.max"),),
    "cpuset": (("cpuset", "cpuset.cpus"),),
    "memory_high": (("memory", "memory.soft_limit_in_bytes"),),
    "memory": (("memory", "memory.limit_in_bytes"), ("memory", "memory.memsw.limit_in_bytes")),
    "swap": (("memory", "memory.memsw.limit_in_bytes"),),
}


class Backend:
    """A v1 cgroup: ``<own cgroup>/labkit/<dirname>`` in each hierarchy."""

    def __init__(self, dirname: str, layout: Layout):
        self.dirname, self.layout = dirname, layout
        # Each hierarchy labkit uses: the v1 ones, and cgroup2 (hybrid) for pressure only.
        self.hierarchies: list[Hierarchy] = list(layout.hierarchies)
        self.dirs = [h.parent / dirname for h in self.hierarchies]

    def _dir(self, controller: str) -> Path | None:
        return self.layout.directory(controller, self.dirname)

    def _file(self, controller: str, name: str) -> Path:
        d = self._dir(controller)
        if d is None:
            raise MissingFeature(
                f"this host has no v1 {controller} hierarchy, so {name} cannot be used: mount it "
                f"(mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller})."
            )
        return d / name

    # --- making and removing ----------------------------------------------------------------

    def create(self) -> None:
        """mkdir the cgroup in every hierarchy; undo them all if one fails."""
        made: list[Path] = []
        try:
            for h, d in zip(self.hierarchies, self.dirs):
                for attempt in range(3):
                    try:
                        h.parent.mkdir(exist_ok=True)
                        if "cpuset" in h.controllers:
                            _inherit_cpuset(h.parent)
                        make_dir(d)
                        break
                    except FileNotFoundError:
                        if attempt == 2:  # another shell's cleanup removed labkit/ meanwhile
                            raise
                made.append(d)
                if "cpuset" in h.controllers:
                    _inherit_cpuset(d)
        except FileExistsError:
            self._undo(made)
            raise BadInput(
                f"a cgroup named {self.dirname} already exists: choose another name, or remove it "
                "with labkit cleanup."
            ) from None
        except BaseException:
            self._undo(made)
            raise

    def _undo(self, made: list[Path]) -> None:
        for d in reversed(made):
            remove_dir(d, time.monotonic() + 1)

    def remove(self, deadline: float) -> None:
        for h, d in zip(self.hierarchies, self.dirs):
            remove_dir(d, deadline)
            rmdir_if_empty(h.parent)

    # --- limits -----------------------------------------------------------------------------

    def available_cpus(self) -> set[int]:
        h = next((h for h in self.hierarchies if "cpuset" in h.controllers), None)
        path = h.own_dir / "cpuset.effective_cpus" if h else Path("/sys/devices/system/cpu/online")
        return parse_cpulist(read(path))

    def limit_files(self) -> list[Path]:
        names = [
            ("memory", "memory.limit_in_bytes"),
            ("memory", "memory.memsw.limit_in_bytes"),
            ("memory", "memory.soft_limit_in_bytes"),
            ("cpu", "cpu.cfs_quota_us"),
            ("cpu", "cpu.cfs_period_us"),
            ("cpu", "cpu.shares"),
            ("pids", "pids.max"),
            ("cpuset", "cpuset.cpus"),
        ]
        return [self._dir(c) / n for c, n in names if self._dir(c)]

    def read_limits(self) -> Limits:
        """The limits the kernel holds now, in v2's terms (swap = memory+swap - memory, weight
        from cpu.shares); None where this host has no such file."""

        def text(limit: str, i: int = 0) -> str | None:
            controller, name = LIMIT_FILES[limit][i]
            d = self._dir(controller)
            try:
                return read(d / name) if d is not None else None
            except FileNotFoundError:
                return None

        def size(value: str | None):
            return None if value is None else MAX if _number(value) >= _HUGE else int(value)

        memory, memsw = size(text("memory")), size(text("memory", 1))
        if memory is None or memsw is None:
            swap = None
        else:
            swap = MAX if MAX in (memory, memsw) else memsw - memory
        period, quota, shares, pids = text("cpus"), text("cpus", 1), text("weight"), text("pids")
        cpus = None
        if quota is not None and period is not None:
            cpus = MAX if int(quota) == _UNLIMITED else int(quota) / int(period)
        return Limits(
            memory=memory,
            swap=swap,
            memory_high=size(text("memory_high")),
            cpus=cpus,
            weight=None if shares is None else max(1, round(int(shares) * 100 / 1024)),
            pids=None if pids is None else MAX if pids == MAX else int(pids),
            cpuset=text("cpuset"),
        )

    def plan(self, limits: Limits) -> list[tuple[Path, str]]:
        """The (file, value) writes that set *limits*, in an order the kernel accepts.

        Memory goes last: shrinking it below what the group uses is the write the kernel may
        refuse (EBUSY), and then the writes before it are put back.
        """
        writes: list[tuple[Path, str]] = []
        if limits.cpus is not None:
            quota = _UNLIMITED if limits.cpus == MAX else quota_us(limits.cpus)
            period, quota_file = (self._file(*f) for f in LIMIT_FILES["cpus"])
            writes += [(period, str(CPU_PERIOD_US)), (quota_file, str(quota))]
        if limits.weight is not None:
            shares = self._file(*LIMIT_FILES["weight"][0])
            writes.append((shares, str(weight_to_shares(limits.weight))))
        if limits.pids is not None:
            writes.append((self._file(*LIMIT_FILES["pids"][0]), str(limits.pids)))
        if limits.cpuset is not None:
            writes.append((self._file(*LIMIT_FILES["cpuset"][0]), limits.cpuset))
        if limits.memory_high is not None:
            soft = self._file(*LIMIT_FILES["memory_high"][0])
            writes.append((soft, _v1(limits.memory_high)))
        if limits.memory is not None or limits.swap is not None:
            writes += self._plan_memory(limits)
        return writes

    def _plan_memory(self, limits: Limits) -> list[tuple[Path, str]]:
        # v1 limits memory+swap together (memsw >= memory at all times), v2 swap alone. Keep the
        # student's meaning: memsw = memory + swap, and a swap limit set before stays as it was.
        mem_file, memsw_file = (self._file(*f) for f in LIMIT_FILES["memory"])
        if not mem_file.exists():
            return [(mem_file, "")]  # reported as a missing controller by the caller
        cur_mem = _number(read(mem_file))
        mem = cur_mem if limits.memory is None else _number(limits.memory)
        if not memsw_file.exists():
            if limits.swap is not None:
                raise MissingFeature(
                    "this kernel does not account swap per cgroup, so a swap limit cannot hold: "
                    "boot it with swapaccount=1, or leave swap out."
                )
            return [(mem_file, _v1(mem))]
        cur_memsw = _number(read(memsw_file))
        if limits.swap is not None:
            swap = _number(limits.swap)
        else:
            swap = _HUGE if max(cur_mem, cur_memsw) >= _HUGE else cur_memsw - cur_mem
        if mem >= _HUGE and swap < _HUGE:
            raise BadInput(
                "on cgroup v1 swap is limited as memory + swap, so a swap limit needs a memory "
                "limit: give memory too (like memory='64M', swap='0')."
            )
        memsw = _HUGE if max(mem, swap) >= _HUGE else mem + swap
        mem_write, memsw_write = (mem_file, _v1(mem)), (memsw_file, _v1(memsw))
        # Raising memory above the current memsw is refused: raise memsw first then.
        return [memsw_write, mem_write] if mem > cur_memsw else [mem_write, memsw_write]

    # --- processes --------------------------------------------------------------------------

    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs]

    def tasks_files(self) -> list[Path]:
        # v1 only (not the hybrid's cgroup2 hierarchy): there a thread may move alone.
        return [d / "tasks" for h, d in zip(self.hierarchies, self.dirs) if h.controllers]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files():
            try:
                found.update(int(line) for line in read(procs).split())
            except FileNotFoundError:
                pass
        return found

    def freeze(self, timeout: float) -> None:
        state = self._file("freezer", "freezer.state")
        write(state, "FROZEN")
        deadline = time.monotonic() + timeout
        # FREEZING while tasks are still being stopped, then FROZEN.
        while read(state) != "FROZEN":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{state} did not reach FROZEN within {timeout} s.")
            time.sleep(0.005)

    def thaw(self) -> None:
        write(self._file("freezer", "freezer.state"), "THAWED")

    # --- counters ---------------------------------------------------------------------------

    def frozen(self) -> bool:
        freezer = self._dir("freezer")
        return freezer is not None and read(freezer / "freezer.state") == "FROZEN"


def _inherit_cpuset(d: Path) -> None:
    """A new v1 cpuset cgroup starts with no CPUs and no memory nodes: no task could join it.

    Copy its parent's, as runc does (v1 cpuset has no inheritance; v2 has effective sets).
    """
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not read(d / name):
            write(d / name, read(d.parent / name))


def _number(value: int | str) -> int:
    """Bytes, with "no limit" as a number larger than any real limit (comparable with <)."""
    if value == MAX:
        return _HUGE
    return min(int(value), _HUGE)


def _v1(value: int | str) -> str:
    return str(_UNLIMITED) if value == MAX or int(value) >= _HUGE else str(value)
