"""What both cgroup backends share: the kernel's files, the counters read back, killing a group.

``v1`` and ``v2`` import this module, never the ``Cgroup`` facade that chooses between them (as
runc's fs and fs2 drivers share fscommon). Every cgroup file is read and written whole, in one
system call each: that is how the kernel parses them.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..proc import signal_each
from ..state import state_dir
from .units import format_size

__all__ = [
    "COUNTER_FILES",
    "TAG",
    "Pressure",
    "Stats",
    "is_ours",
    "keyed",
    "kill_all",
    "make_dir",
    "procs",
    "read",
    "read_stats",
    "remove_dir",
    "rmdir_if_empty",
    "write",
    "write_all",
]

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


class Pressure(NamedTuple):
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


# --- the kernel's counters ----------------------------------------------------------------------

# Each counter: (controller whose directory holds the file, file name, how to read its text).
# The controller "" is the cgroup2 directory (on a hybrid host, the cgroup's twin there).
Reader = Callable[[str], int]


def _number(text: str) -> int:
    return int(text)


def _key(name: str, scale: int = 1) -> Reader:
    """Read the value of *name* in a flat-keyed file (``cpu.stat``), divided by *scale*."""
    needle = name + " "

    def value(text: str) -> int:
        for line in text.splitlines():
            if line.startswith(needle):
                return int(line[len(needle) :]) // scale
        return 0

    return value


def _stall_us(text: str) -> int:
    """The ``total=`` of the ``some`` line of a PSI file: µs in which a task waited."""
    return int(text.split("\n", 1)[0].rsplit("total=", 1)[1])


COUNTER_FILES: dict[str, dict[str, tuple[str, str, Reader]]] = {
    "v1": {
        "memory_current": ("memory", "memory.usage_in_bytes", _number),
        "memory_peak": ("memory", "memory.max_usage_in_bytes", _number),
        "oom_kills": ("memory", "memory.oom_control", _key("oom_kill")),
        "cpu_usage_us": ("cpuacct", "cpuacct.usage", lambda text: int(text) // 1000),
        "cpu_periods": ("cpu", "cpu.stat", _key("nr_periods")),
        "cpu_throttled": ("cpu", "cpu.stat", _key("nr_throttled")),
        "cpu_throttled_us": ("cpu", "cpu.stat", _key("throttled_time", 1000)),
        "pids_current": ("pids", "pids.current", _number),
        "pids_refused": ("pids", "pids.events", _key("max")),
        "cpu_stall_us": ("", "cpu.pressure", _stall_us),
        "memory_stall_us": ("", "memory.pressure", _stall_us),
    },
    "v2": {
        "memory_current": ("", "memory.current", _number),
        "memory_peak": ("", "memory.peak", _number),
        "oom_kills": ("", "memory.events", _key("oom_kill")),
        "cpu_usage_us": ("", "cpu.stat", _key("usage_usec")),
        "cpu_periods": ("", "cpu.stat", _key("nr_periods")),
        "cpu_throttled": ("", "cpu.stat", _key("nr_throttled")),
        "cpu_throttled_us": ("", "cpu.stat", _key("throttled_usec")),
        "pids_current": ("", "pids.current", _number),
        "pids_refused": ("", "pids.events", _key("max")),
        "cpu_stall_us": ("", "cpu.pressure", _stall_us),
        "memory_stall_us": ("", "memory.pressure", _stall_us),
    },
}
COUNTER_FILES["hybrid"] = COUNTER_FILES["v1"]


def read_counter(
    mode: str, dir_of: Callable[[str], Path | None], name: str, missing: int | None = 0
) -> int | None:
    """One counter of COUNTER_FILES, from its file; a file this kernel lacks reads as *missing*.
    *dir_of* finds the directory of a controller ("": the cgroup2 one)."""
    controller, filename, reader = COUNTER_FILES[mode][name]
    d = dir_of(controller)
    try:
        return reader(read(d / filename)) if d is not None else missing
    except FileNotFoundError:
        return missing


def read_stats(
    mode: str, dir_of: Callable[[str], Path | None], any_dir: Path, frozen: bool
) -> Stats:
    """One reading of every counter in COUNTER_FILES; *dir_of* finds a controller's directory,
    *any_dir* is one of the cgroup's directories (each holds the same processes).

    A file this kernel lacks reads as 0 (memory.peak, before 5.19: as None). Pressure comes from
    the cgroup2 directory on both layouts (on a hybrid host, the cgroup's twin there).
    """

    def counter(name: str, missing: int | None = 0) -> int | None:
        return read_counter(mode, dir_of, name, missing)

    pressure = {}
    unified = dir_of("")
    for resource in ("cpu", "memory", "io"):
        try:
            pressure[resource] = Pressure.parse(read(unified / f"{resource}.pressure"))
        except (OSError, TypeError):
            pass  # no cgroup2 twin (pure v1) or a kernel without PSI (psi=0)
    pids = counter("pids_current", None)
    return Stats(
        memory_current=counter("memory_current"),
        memory_peak=counter("memory_peak", None),
        oom_kills=counter("oom_kills"),
        cpu_usage_us=counter("cpu_usage_us"),
        cpu_periods=counter("cpu_periods"),
        cpu_throttled=counter("cpu_throttled"),
        cpu_throttled_us=counter("cpu_throttled_us"),
        # Without a pids controller (v1 host without it): count the processes instead.
        pids_current=pids if pids is not None else len(procs(any_dir)),
        pids_refused=counter("pids_refused"),
        frozen=frozen,
        pressure=pressure,
    )


# --- killing every task -----------------------------------------------------------------------


def procs(directory: Path) -> list[int]:
    """The processes in the cgroup *directory* now (its cgroup.procs); none if it is gone."""
    try:
        return [int(pid) for pid in read(directory / "cgroup.procs").split()]
    except OSError:
        return []


_FREEZERS = (("freezer.state", "FROZEN", "THAWED"), ("cgroup.freeze", "1", "0"))  # v1, v2


def _thaw(d: Path) -> None:
    for name, frozen, thawed in _FREEZERS:
        try:
            if read(d / name) in (frozen, "FREEZING"):
                write(d / name, thawed)
        except OSError:
            pass  # not this hierarchy's file


def kill_all(dirs: list[Path]) -> None:
    """SIGKILL every task in the cgroup directories *dirs*, once.

    cgroup.kill (v2, 5.14+) kills every task at once, forks included; elsewhere each PID in
    cgroup.procs gets its own SIGKILL, and a task forked meanwhile escapes this pass, so callers
    repeat it until the group is empty. A frozen group is thawed after: a frozen task handles its
    SIGKILL only once it runs again.
    """
    for d in dirs:
        if (d / "cgroup.kill").exists():
            write(d / "cgroup.kill", "1")
        else:
            signal_each(procs(d))
        _thaw(d)
