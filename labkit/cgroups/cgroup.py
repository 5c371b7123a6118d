"""One cgroup, the same on every layout: create, limit, run processes in it, read it, remove.

``Cgroup`` is what a student uses; it hands the kernel's files to one of two backends, ``v1``
(a directory per hierarchy, used on v1 and hybrid hosts) or ``v2`` (one directory in the unified
hierarchy). Callers never branch on the layout, as runc's libcontainer does it.

A cgroup is made as ``<caller's cgroup>/labkit/labkit-<name>`` and tagged with the state
directory that made it (the extended attribute ``user.labkit.state_dir``), so ``labkit cleanup``
for one state directory leaves another's cgroups alone: several shells share the v1 hierarchies.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

from ..errors import BadInput, MissingFeature, require_root
from ..state import PREFIX, check_name
from . import layout as layout_mod
from .base import (
    Pressure,
    Stats,
    is_ours,
    kill_all,
    read,
    read_counter,
    read_stats,
    rmdir_if_empty,
    write,
    write_all,
)
from .units import Limits, parse_limits

__all__ = ["Cgroup", "Pressure", "Stats", "leftovers", "remove_dirs", "remove_leftovers"]

# --- the cgroup -----------------------------------------------------------------------------------

# Start a command inside the cgroup from its first instruction: the shell writes its own PID
# ($$) into each cgroup.procs file, then exec replaces it with the command (same PID). A fork
# made by the command can never escape, which writing the PID after Popen could not promise.
# (preexec_fn could do it too, but it is not safe in a multi-threaded process like Jupyter.)
_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


class Cgroup:
    """A labkit cgroup named ``labkit-<name>``, on whichever layout this host has.

    ``Cgroup(name)`` refers to it; ``Cgroup.create(name, memory="64M", cpus=0.5)`` makes it.
    """

    def __init__(self, name: str, layout: layout_mod.Layout | None = None):
        check_name(name, "cgroup name")
        self.name = name
        self.dirname = f"{PREFIX}-{name}"
        self.layout = layout or layout_mod.detect()
        if self.layout.mode == "v2":
            from .v2 import Backend
        else:
            from .v1 import Backend
        self._backend = Backend(self.dirname, self.layout)

    def __repr__(self) -> str:
        return f"Cgroup({self.name!r}, {self.layout.mode}: {', '.join(map(str, self.dirs))})"

    @property
    def dirs(self) -> list[Path]:
        """The cgroup's directories: one per hierarchy on v1, a single one on v2."""
        return self._backend.dirs

    @property
    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs)

    @classmethod
    def create(cls, name: str, layout: layout_mod.Layout | None = None, **limits) -> Cgroup:
        """mkdir the cgroup (in each hierarchy) and apply *limits* (see ``set``).

        The limits are checked first; if the kernel then refuses one, the cgroup is removed.
        """
        require_root("creating a cgroup")
        cgroup = cls(name, layout)
        checked = cgroup.check(**limits)
        if cgroup.exists:
            raise BadInput(
                f"a cgroup named {cgroup.dirname} already exists: choose another name, or remove "
                f"it with Cgroup({name!r}).remove()."
            )
        cgroup._backend.create()
        try:
            cgroup._apply(checked)
        except BaseException:
            cgroup.remove()
            raise
        return cgroup

    def check(self, **limits) -> Limits:
        """Parse and check limits (memory, swap, memory_high, cpus, weight, pids, cpuset)."""
        known = set(Limits.__dataclass_fields__)
        unknown = sorted(set(limits) - known)
        if unknown:
            raise BadInput(
                f"{unknown[0]!r} is not a cgroup limit: use one of {', '.join(sorted(known))}."
            )
        return parse_limits(self._backend.available_cpus(), **limits)

    def set(self, **limits) -> None:
        """Set limits, in human units; a limit not given stays as it is.

        memory="64M" (hard limit), swap="0" (swap it may use on top), memory_high="48M" (v2:
        throttle above it; v1: the soft limit, reclaimed first under host-wide pressure),
        cpus=0.5 (CPU time per period), weight=100 (share when CPUs are busy, 1..10000),
        pids=20, cpuset="0-1". "max" lifts a limit. Nothing is written if any value is bad.
        """
        self._apply(self.check(**limits))

    def _apply(self, limits: Limits) -> None:
        writes = self._backend.plan(limits)
        for path, _value in writes:
            if not path.exists():
                raise MissingFeature(
                    f"this kernel has no {path.name} for {self.dirname}: the controller is not "
                    "enabled here (run `labkit doctor` to see which controllers are)."
                )
        write_all(writes)

    def limits(self) -> dict[str, str]:
        """The limit files as the kernel shows them now: {file name: content}."""
        return {p.name: read(p) for p in self._backend.limit_files() if p.exists()}

    def read_limits(self) -> Limits:
        """The limits the kernel holds now, in the units ``set`` takes, the same on v1 and v2
        (MAX: no limit; None: this host has no file for it)."""
        return self._backend.read_limits()

    def add(self, pid: int) -> None:
        """Move process *pid* (all its threads) into the cgroup by writing it to cgroup.procs.

        Its children forked from now on start in the cgroup too; those forked before stay put.
        """
        if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
            raise BadInput(f"pid {pid!r} is not a process ID: give a positive whole number.")
        for procs in self._backend.procs_files():
            write(procs, str(pid))

    def tasks_files(self) -> list[Path]:
        """Each v1 hierarchy's ``tasks`` file (none on cgroup v2).

        A single-threaded process that writes 0 there moves itself, and the kernel spares it
        the lock (and the wait for an RCU grace period) that writing a PID to cgroup.procs
        takes: a thread that moves itself cannot exit or exec meanwhile.
        """
        return self._backend.tasks_files()

    def start(self, args: list[str], **popen) -> subprocess.Popen:
        """Start command *args* inside the cgroup (it is in from its first instruction)."""
        if isinstance(args, (str, bytes)) or not args or not all(isinstance(a, str) for a in args):
            raise BadInput(
                f"command {args!r} is not a list of strings: give it like ['sleep', '10']."
            )
        procs = [str(p) for p in self._backend.procs_files()]
        return subprocess.Popen(["/bin/sh", "-c", _JOIN, "sh", *procs, "--", *args], **popen)

    def pids(self) -> list[int]:
        """The processes in the cgroup now (from cgroup.procs)."""
        return sorted(self._backend.pids())

    def dir(self, controller: str) -> Path | None:
        """The directory that holds *controller*'s files ("": the cgroup2 one), or None."""
        return self.layout.directory(controller, self.dirname)

    def stats(self) -> Stats:
        """Read the kernel's counters for this cgroup (the files in base.COUNTER_FILES)."""
        return read_stats(self.layout.mode, self.dir, self.dirs[0], self._backend.frozen())

    def counter(self, name: str) -> int | None:
        """One of the kernel's counters alone (a name of base.COUNTER_FILES, e.g. "oom_kills"):
        one file read, where stats() reads them all."""
        return read_counter(self.layout.mode, self.dir, name)

    def freeze(self, timeout: float = 2.0) -> None:
        """Ask the kernel to stop every task in the group, and wait until it has."""
        self._backend.freeze(timeout)

    def thaw(self) -> None:
        """Let the group's tasks run again."""
        self._backend.thaw()

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL every process in the group, and wait (at most *timeout* s) until it is empty."""
        deadline = time.monotonic() + timeout
        kill_all(self.dirs)
        while self._backend.pids():
            kill_all(self.dirs)  # a task forked during the last pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"cgroup {self.dirname} still holds {sorted(self._backend.pids())} "
                    f"{timeout} s after SIGKILL: look for processes in state D with ps."
                )
            time.sleep(0.01)

    def remove(self, timeout: float = 30.0) -> None:
        """Kill what still runs in the group, then rmdir it (in every hierarchy)."""
        if not self.exists:
            return
        deadline = time.monotonic() + timeout
        self.kill(timeout)
        self._backend.remove(deadline)


# --- labkit cleanup -------------------------------------------------------------------------------


def _ours() -> dict[str, list[Path]]:
    """This state directory's labkit cgroups: {name: [directories]}."""
    found: dict[str, list[Path]] = {}
    try:
        layout = layout_mod.detect()
    except OSError:
        return found
    for h in layout.hierarchies:
        for parent in layout_mod.labkit_parents(h):
            try:
                entries = sorted(parent.iterdir())
            except OSError:
                continue  # removed meanwhile
            for entry in entries:
                if entry.is_dir() and entry.name.startswith(PREFIX + "-") and is_ours(entry):
                    found.setdefault(entry.name[len(PREFIX) + 1 :], []).append(entry)
    return found


def leftovers() -> list[str]:
    """labkit cgroups of this state directory that still exist, one line each."""
    return [
        f"cgroup: {PREFIX}-{name} ({len(dirs)} dir(s): {dirs[0].parent})"
        for name, dirs in _ours().items()
    ]


def remove_dirs(dirs: list[Path], timeout: float = 30.0) -> None:
    """SIGKILL every process in the cgroup directories *dirs*, rmdir them, and their labkit/.

    Works on directories found anywhere in the tree (another shell's labkit/), where
    ``Cgroup(name)``, which looks below this process's own place, would not find them. A
    process may still be joining (a shell writing its PID into one cgroup.procs after another),
    so killing and rmdir are retried together until every directory is gone.
    """
    deadline = time.monotonic() + timeout
    left = list(dirs)
    while left:
        kill_all(left)
        busy = []
        for d in left:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise OSError(e.errno, f"rmdir({str(d)!r}): {os.strerror(e.errno)}") from None
                busy.append(d)
        left = busy
        if left:
            time.sleep(0.01)
    for d in dirs:
        rmdir_if_empty(d.parent)


def remove_leftovers() -> None:
    """Kill the processes in every labkit cgroup of this state directory and remove them."""
    for dirs in _ours().values():
        try:
            remove_dirs(dirs)
        except OSError:
            pass  # cleanup goes on; leftovers() still lists what could not be removed
