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
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput, MissingFeature, require_root
from ..state import PREFIX, check_name, state_dir
from . import layout as layout_mod
from .units import Limits, format_size, parse_limits

TAG = "user.labkit.state_dir"


# --- the kernel's files ---------------------------------------------------------------------------


def read(path: Path) -> str:
    """The text of one cgroup file."""
    with open(path) as f:
        return f.read().strip()


def write(path: Path, value: str) -> None:
    """Write *value* to one cgroup file in a single write(2): that is how the kernel parses it."""
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_TRUNC
        )  # O_TRUNC as `echo >` does; cgroupfs ignores it
    except OSError as e:
        raise OSError(e.errno, f"open({str(path)!r}): {os.strerror(e.errno)}") from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise OSError(e.errno, f"write({str(path)!r}, {value!r}): {os.strerror(e.errno)}") from None
    finally:
        os.close(fd)


def keyed(text: str) -> dict[str, str]:
    """A flat-keyed cgroup file (``memory.events``, ``cpu.stat``) as {key: value}."""
    return dict(line.split(None, 1) for line in text.splitlines() if " " in line.strip())


def write_all(writes: list[tuple[Path, str]]) -> None:
    """Write every (file, value) in order; if the kernel refuses one, put back those written.

    Each file's old value is read first, so a refusal half-way (EBUSY: the group already uses
    more memory than the new limit) leaves the cgroup as it was.
    """
    old = [(path, read(path)) for path, _value in writes]
    done: list[tuple[Path, str]] = []
    try:
        for path, value in writes:
            write(path, value)
            done.append((path, value))
    except OSError:
        for path, value in reversed(old[: len(done)]):
            try:
                write(path, value)
            except OSError:
                pass  # best effort: the original error is the one to report
        raise


def make_dir(path: Path) -> None:
    """mkdir a cgroup and tag it with our state directory; the kernel fills it with its files."""
    os.mkdir(path)
    try:
        os.setxattr(path, TAG, str(state_dir()).encode())
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise  # kernels before 5.7 have no user xattrs on cgroupfs: then all are "ours"


def is_ours(path: Path) -> bool:
    """Whether the cgroup at *path* was made for the current state directory."""
    try:
        return os.getxattr(path, TAG).decode() == str(state_dir())
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return str(state_dir()) == "/run/labkit"  # untagged: the default state dir's
        return False  # gone meanwhile


def rmdir_if_empty(path: Path) -> None:
    """rmdir the shared labkit/ directory once its last cgroup is gone; keep it otherwise."""
    try:
        os.rmdir(path)
    except OSError:
        pass  # another cgroup (perhaps another shell's) still lives there


def remove_dir(path: Path, deadline: float) -> None:
    """rmdir a cgroup; the kernel says EBUSY for a moment after its last process died."""
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise OSError(e.errno, f"rmdir({str(path)!r}): {os.strerror(e.errno)}") from None
            time.sleep(0.01)


# --- what a student reads -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pressure:
    """Pressure stall information (PSI) for one resource: how long tasks waited for it.

    ``some``: at least one task was stalled; ``full``: all were. avg10 is the share of the last
    10 s (in %), total the stalled time since the cgroup was made (µs).
    """

    some_avg10: float
    some_total_us: int
    full_avg10: float | None = None
    full_total_us: int | None = None

    @classmethod
    def parse(cls, text: str) -> Pressure:
        rows = {}
        for line in text.splitlines():
            kind, *pairs = line.split()
            rows[kind] = dict(p.split("=") for p in pairs)
        some, full = rows["some"], rows.get("full")
        return cls(
            float(some["avg10"]),
            int(some["total"]),
            float(full["avg10"]) if full else None,
            int(full["total"]) if full else None,
        )


@dataclass(frozen=True)
class Stats:
    """The kernel's counters for one cgroup, in the same units on v1 and v2."""

    memory_current: int  # bytes charged to the group now
    memory_peak: int | None  # the most it was ever charged (None: kernel before 5.19 on v2)
    oom_kills: int  # processes the OOM killer killed because of this group's limit
    cpu_usage_us: int  # CPU time the group's tasks used
    cpu_periods: int  # CFS periods in which the group could run
    cpu_throttled: int  # periods in which it used up its quota and had to wait
    cpu_throttled_us: int  # total time it waited for the next period
    pids_current: int  # tasks (processes and threads) in the group
    pids_refused: int  # forks refused because pids.max was reached
    frozen: bool
    pressure: dict[str, Pressure] = field(default_factory=dict)  # "cpu", "memory", "io" (PSI)

    def summary(self) -> str:
        """A few lines a student can read, identical in form on v1 and v2."""
        peak = format_size(self.memory_peak)
        memory = (
            f"{format_size(self.memory_current)} now, peak {peak}, {self.oom_kills} OOM kill(s)"
        )
        cpu = (
            f"{self.cpu_usage_us / 1e6:.2f} s used, throttled in {self.cpu_throttled} of "
            f"{self.cpu_periods} periods ({self.cpu_throttled_us / 1e6:.2f} s)"
        )
        pids = f"{self.pids_current} now, {self.pids_refused} fork(s) refused"
        lines = [
            f"memory: {memory}",
            f"cpu:    {cpu}",
            f"pids:   {pids}" + (", frozen" * self.frozen),
        ]
        if self.pressure:
            parts = [f"{k} {p.some_avg10:.1f}%" for k, p in sorted(self.pressure.items())]
            lines.append("pressure (some, avg10): " + ", ".join(parts))
        return "\n".join(lines)


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

    def add(self, pid: int) -> None:
        """Move process *pid* (all its threads) into the cgroup by writing it to cgroup.procs.

        Its children forked from now on start in the cgroup too; those forked before stay put.
        """
        if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
            raise BadInput(f"pid {pid!r} is not a process ID: give a positive whole number.")
        for procs in self._backend.procs_files():
            write(procs, str(pid))

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

    def stats(self) -> Stats:
        """Read the kernel's counters for this cgroup."""
        return self._backend.stats()

    def freeze(self, timeout: float = 2.0) -> None:
        """Ask the kernel to stop every task in the group, and wait until it has."""
        self._backend.freeze(timeout)

    def thaw(self) -> None:
        """Let the group's tasks run again."""
        self._backend.thaw()

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the group, and wait (at most *timeout* s) until it is empty."""
        deadline = time.monotonic() + timeout
        self._backend.kill()
        while self._backend.pids():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"cgroup {self.dirname} still holds {sorted(self._backend.pids())} "
                    f"{timeout} s after SIGKILL: look for processes in state D with ps."
                )
            time.sleep(0.01)

    def remove(self, timeout: float = 5.0) -> None:
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


def _procs(directory: Path) -> list[int]:
    try:
        return [int(pid) for pid in read(directory / "cgroup.procs").split()]
    except OSError:
        return []


def _thaw(d: Path) -> None:
    for name, frozen, thawed in (("freezer.state", "FROZEN", "THAWED"), ("cgroup.freeze", "1", "0")):
        try:
            if read(d / name) in (frozen, "FREEZING"):
                write(d / name, thawed)
        except OSError:
            pass  # not this hierarchy's file


def remove_dirs(dirs: list[Path], timeout: float = 5.0) -> None:
    """SIGKILL every process in the cgroup directories *dirs*, rmdir them, and their labkit/.

    Works on directories found anywhere in the tree (another shell's labkit/), where
    ``Cgroup(name)``, which looks below this process's own place, would not find them. A
    process may still be joining (a shell writing its PID into one cgroup.procs after another),
    so killing and rmdir are retried together until every directory is gone.
    """
    deadline = time.monotonic() + timeout
    left = list(dirs)
    while left:
        for d in left:
            _thaw(d)  # a frozen task handles its SIGKILL only once it runs again
            if _procs(d) and (d / "cgroup.kill").exists():
                write(d / "cgroup.kill", "1")  # v2 (5.14+): every task at once, forks included
            for pid in _procs(d):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
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
