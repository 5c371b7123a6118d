"""A sampler: the kernel's cgroup counters recorded as time series while an experiment runs.

``Cgroup.stats()`` reads a dozen files once. To *plot* memory against its limit or CPU time
against a quota, the same counters are needed 20 or more times a second, and reading them must
not disturb what is measured. So the sampler:

- reads only the files behind the counters asked for (``memory``, ``cpu``, ``pids``,
  ``pressure``), which are opened once and re-read with ``pread(fd, n, 0)``: cgroupfs regenerates
  a file's text on every read from offset 0, so no open/close per sample;
- runs in a background thread that sleeps until the next tick (``time.monotonic`` timestamps);
- stops by itself after *max_seconds* or *max_samples*, or when the cgroup is removed.

    from labkit.cgroups.sampler import Sampler
    with Sampler(box, hz=20, max_seconds=5) as sampler:
        ...                                   # run the experiment
    series = sampler.series                   # series.t, series["memory_current"], ...
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput
from .base import COUNTER_FILES
from .cgroup import Cgroup

GROUPS = ("memory", "cpu", "pids", "pressure")

COUNTERS = {  # which counters each group asked for records
    "memory": ("memory_current", "memory_peak", "oom_kills"),
    "cpu": ("cpu_usage_us", "cpu_throttled", "cpu_throttled_us"),
    "pids": ("pids_current", "pids_refused"),
    "pressure": ("cpu_stall_us", "memory_stall_us"),
}
# The files behind the counters the sampler records (lesson 10 shows this table).
FILES = {
    mode: {name: table[name] for names in COUNTERS.values() for name in names}
    for mode, table in COUNTER_FILES.items()
}


def counter_files(cgroup: Cgroup, counters: list[str]) -> dict[str, Path]:
    """The file behind each counter for *cgroup* on this layout (missing ones left out)."""
    table = FILES[cgroup.layout.mode]
    found = {}
    for name in counters:
        controller, filename, _reader = table[name]
        d = cgroup.dir(controller)
        if d is not None and (d / filename).exists():
            found[name] = d / filename
    return found


@dataclass
class Series:
    """Samples over time: ``t`` in seconds since the start, one list per counter."""

    t: list[float] = field(default_factory=list)
    values: dict[str, list[int]] = field(default_factory=dict)
    ended: str = ""  # why it stopped: "stopped", "max_seconds", "max_samples", "cgroup removed"
    sampler_cpu_s: float = 0.0  # CPU time the sampling thread itself used

    def __getitem__(self, counter: str) -> list[int]:
        return self.values[counter]

    def __len__(self) -> int:
        return len(self.t)

    def rate(self, counter: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
        """(midpoints, change per second / *scale*) between samples, e.g. CPUs used from
        ``cpu_usage_us`` with scale 1e6."""
        ys, ts = self.values[counter], self.t
        mids, rates = [], []
        for i in range(1, len(ts)):
            dt = ts[i] - ts[i - 1]
            if dt > 0:
                mids.append((ts[i] + ts[i - 1]) / 2)
                rates.append((ys[i] - ys[i - 1]) / dt / scale)
        return mids, rates


class Sampler:
    """Record *cgroup*'s counters every 1/*hz* s in a background thread (see the module doc)."""

    def __init__(
        self,
        cgroup: Cgroup,
        hz: float = 20.0,
        groups: tuple[str, ...] = GROUPS,
        max_seconds: float = 30.0,
        max_samples: int = 10_000,
    ):
        if not 0 < hz <= 1000:
            raise BadInput(f"hz {hz!r} is not a sampling rate: give a number from 1 to 1000.")
        unknown = sorted(set(groups) - set(GROUPS))
        if unknown:
            raise BadInput(
                f"{unknown[0]!r} is not a counter group: use some of {', '.join(GROUPS)}."
            )
        if not 0 < max_seconds <= 3600 or not 0 < max_samples <= 1_000_000:
            raise BadInput(
                "max_seconds and max_samples bound the sampler: give up to 3600 s and "
                "1000000 samples."
            )
        self.cgroup, self.hz = cgroup, float(hz)
        self.max_seconds, self.max_samples = max_seconds, max_samples
        wanted = [c for g in groups for c in COUNTERS[g]]
        self.files = counter_files(cgroup, wanted)
        self.series = Series(values={name: [] for name in self.files})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Sampler:
        """Open the files and start sampling; the first sample is taken at once."""
        if self._thread is not None:
            raise BadInput("this sampler already ran: make a new Sampler for a new experiment.")
        table = FILES[self.cgroup.layout.mode]
        fds: dict[Path, int] = {}
        plan = []  # (counter, fd, reader); counters sharing a file (cpu.stat) share its fd
        try:
            for name, path in self.files.items():
                if path not in fds:
                    fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                plan.append((name, fds[path], table[name][2]))
        except OSError:
            for fd in fds.values():
                os.close(fd)
            raise
        self._thread = threading.Thread(
            target=self._run, args=(fds, plan), daemon=True, name=f"sampler-{self.cgroup.name}"
        )
        self._thread.start()
        return self

    def stop(self) -> Series:
        """Stop sampling (waits for the thread, at most a second) and return the series."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        return self.series

    def wait(self, timeout: float) -> Series:
        """Wait (at most *timeout* s) for sampling to end by itself, at max_seconds or
        max_samples, and return the series."""
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        return self.series

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self, fds: dict[Path, int], plan) -> None:
        series, period = self.series, 1.0 / self.hz
        cpu0, t0 = time.thread_time(), time.monotonic()
        try:
            series.ended = self._loop(plan, t0, period)
        finally:
            series.sampler_cpu_s = time.thread_time() - cpu0
            for fd in fds.values():
                os.close(fd)

    def _loop(self, plan, t0: float, period: float) -> str:
        series, tick = self.series, 0
        while True:
            now = time.monotonic()
            texts: dict[int, str] = {}
            try:
                for name, fd, reader in plan:
                    if fd not in texts:  # one read per file, even for cpu.stat's three counters
                        texts[fd] = os.pread(fd, 4096, 0).decode()
                    series.values[name].append(reader(texts[fd]))
            except OSError:  # ENODEV: the cgroup was removed under us
                for values in series.values.values():
                    del values[len(series.t) :]  # keep the columns as long as t
                return "cgroup removed"
            series.t.append(now - t0)
            if len(series.t) >= self.max_samples:
                return "max_samples"
            # Sleep until the next tick on the t0 grid, so a slow read does not shift the rest;
            # ticks already missed (a busy machine) are skipped rather than taken in a burst.
            tick = max(tick + 1, int((time.monotonic() - t0) / period) + 1)
            next_at = t0 + tick * period
            if next_at - t0 > self.max_seconds:
                return "max_seconds"
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return "stopped"
