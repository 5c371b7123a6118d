"""The cgroup lessons (10 to 13): workloads, experiments, plots, widgets and exercise checks.

The workloads are small and bounded so that a lesson runs in seconds, even in an emulated VM:
a steady allocator, busy CPU workers and a fork bomb that stops by itself. Each experiment runs
a workload in a fresh cgroup while ``Sampler`` records the kernel's counters, removes the cgroup,
and returns a result whose ``summary()`` speaks of limits and usage in the same words on cgroup
v1 and v2 (the measured figures are in the result, for plots and for ``figures()``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..cgroups import MAX, Cgroup, detect
from ..cgroups import v1 as v1_backend
from ..cgroups import v2 as v2_backend
from ..cgroups.base import make_dir
from ..cgroups.sampler import FILES, Sampler, Series
from ..cgroups.units import format_size, parse_limits, parse_size
from ..errors import BadInput
from ..state import PREFIX
from .checks import Verdict, graded, not_done, verdict

MiB = 1 << 20
PY = sys.executable


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


# --- 10: the files behind each backend --------------------------------------------------------


EXAMPLE_LIMITS = [  # one example per limit, as a student gives it
    {"memory": "64M"},
    {"memory": "64M", "swap": "0"},
    {"memory_high": "48M"},
    {"cpus": 0.5},
    {"weight": 300},
    {"pids": 20},
    {"cpuset": "0"},
]


def file_table() -> list[tuple[str, str, str]]:
    """(what, v1 files, v2 files): generated from the backends' own tables, not written by hand.

    Limits come from each backend's ``LIMIT_FILES`` (the files its ``plan()`` writes, in that
    order); counters from the sampler's file table. Nothing is read: the table is the same on
    any host.
    """
    rows = []
    files = {
        "v1": {k: [name for _controller, name in v] for k, v in v1_backend.LIMIT_FILES.items()},
        "v2": {k: [name] for k, name in v2_backend.LIMIT_FILES.items()},
    }
    for given in EXAMPLE_LIMITS:
        parse_limits({0, 1}, **given)  # each example is one a student may give
        cells = []
        for mode in ("v1", "v2"):
            names = [n for limit, ns in files[mode].items() if limit in given for n in ns]
            cells.append(", ".join(dict.fromkeys(names)))
        rows.append((", ".join(f"{k}={v!r}" for k, v in given.items()), *cells))
    for counter in FILES["v2"]:
        cells = []
        for mode in ("v1", "v2"):
            controller, name, _reader = FILES[mode][counter]
            twin = " (cgroup2 twin)" if mode == "v1" and controller == "" else ""
            cells.append(name + twin)
        rows.append((counter, *cells))
    return rows


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def limits_in_words(cgroup: Cgroup) -> str:
    """The group's limits read back from the kernel, in human units (the same on v1 and v2)."""
    held = cgroup.read_limits()
    words = []
    if held.memory is not None:
        words.append("memory " + ("no limit" if held.memory == MAX else format_size(held.memory)))
    words.append("cpus " + ("no limit" if held.cpus in (MAX, None) else f"{held.cpus:g}"))
    if held.pids is not None:
        words.append("pids " + ("no limit" if held.pids == MAX else str(held.pids)))
    return ", ".join(words)


def own_cgroup_path() -> str:
    """This process's cgroup as /proc/self/cgroup names it: memory's on v1, the unified on v2."""
    from ..cgroups.layout import own_cgroups

    own = own_cgroups(Path("/proc/self/cgroup").read_text())
    return own.get("memory", own.get(""))


def raw_place(controller: str) -> Path:
    """Where labkit puts its cgroups in *controller*'s hierarchy (the unified one on v2), ready
    for a cgroup made by hand with ``mkdir``: the ``labkit/`` directory, made if missing.

    On v2 a controller works in a child only if its parent lists it in
    ``cgroup.subtree_control``, so the controllers are enabled down to ``labkit/`` first, as
    ``Cgroup.create`` does. v1 needs nothing more than the directory.
    """
    layout = detect()
    if layout.mode == "v2":
        backend = v2_backend.Backend(f"{PREFIX}-raw", layout)
        h = backend.hierarchy
        wanted = [
            c
            for c in v2_backend.CONTROLLERS
            if c in (h.base_dir / "cgroup.controllers").read_text().split()
        ]
        backend.enable_controllers(h.base_dir, wanted)
        if not h.parent.is_dir():
            make_dir(h.parent)
        backend.enable_controllers(h.parent, wanted)
        return h.parent
    h = layout.hierarchy(controller)
    if h is None:
        raise BadInput(f"this host has no {controller} hierarchy: see labkit doctor.")
    h.parent.mkdir(exist_ok=True)
    return h.parent


def raw_files() -> dict[str, str]:
    """This host's names for the files the lessons write and read by hand (v1 or v2)."""
    if detect().mode == "v2":
        return {
            "memory limit": "memory.max",
            "swap limit": "memory.swap.max",
            "memory events": "memory.events",
            "memory high": "memory.high",
            "cpu quota": "cpu.max",
            "cpu stat": "cpu.stat",
        }
    return {
        "memory limit": "memory.limit_in_bytes",
        "swap limit": "memory.memsw.limit_in_bytes",  # v1: memory and swap together
        "memory events": "memory.oom_control",
        "memory high": "memory.soft_limit_in_bytes",
        "cpu quota": "cpu.cfs_quota_us",
        "cpu stat": "cpu.stat",
    }


# --- workloads --------------------------------------------------------------------------------

# Allocates STEP MiB every PAUSE s, touching every page (b'x' * n) so that the kernel charges
# it, up to TOTAL MiB, then holds it; a bounded run: it exits after HOLD s.
_ALLOCATE = """import sys, time
step, pause, total, hold = (float(arg) for arg in sys.argv[1:5])
chunks = []
while len(chunks) * step < total:
    chunks.append(b'x' * (int(step) << 20))
    time.sleep(pause)
print('holding', flush=True)
time.sleep(hold)
"""

# A fork bomb with bounds: each process forks GENERATIONS times, and each child goes on forking
# from where its parent was, so without a limit there would be 2**GENERATIONS processes. Every
# process exits at the deadline. A refused fork (EAGAIN, from pids.max) is counted by the kernel.
_FORK_BOMB = """import os, sys, time
generations, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
for _ in range(generations):
    try:
        os.fork()
    except BlockingIOError:
        time.sleep(0.02)
time.sleep(max(0.0, deadline - time.monotonic()))
os._exit(0)
"""


def allocator(
    cgroup: Cgroup, step_mib: int = 2, pause: float = 0.02, total_mib: int = 128, hold: float = 2.0
) -> subprocess.Popen:
    """Start the steady allocator in *cgroup* (see _ALLOCATE); stdout says 'holding' when done."""
    return cgroup.start(
        [PY, "-S", "-c", _ALLOCATE, str(step_mib), str(pause), str(total_mib), str(hold)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def busy_workers(cgroup: Cgroup, count: int = 1) -> list[subprocess.Popen]:
    """Start *count* CPU-bound shell loops in *cgroup* (they run until killed)."""
    if not 1 <= count <= 8:
        raise BadInput(f"count {count!r} is not a worker count: choose from 1 to 8.")
    return [cgroup.start(["/bin/sh", "-c", "while :; do :; done"]) for _ in range(count)]


def fork_bomb(cgroup: Cgroup, generations: int = 7, seconds: float = 2.0) -> subprocess.Popen:
    """Start the bounded fork bomb in *cgroup*: at most 2**generations processes, *seconds* long."""
    if not 1 <= generations <= 8 or not 0 < seconds <= 10:
        raise BadInput(
            "a fork bomb here has 1 to 8 generations and lasts at most 10 s: "
            "choose values in those ranges."
        )
    return cgroup.start(
        [PY, "-S", "-c", _FORK_BOMB, str(generations), str(seconds)], stderr=subprocess.DEVNULL
    )


def _reap(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()


_runs = 0


def _fresh(tag: str, **limits) -> Cgroup:
    """A new cgroup for one experiment run, named after the lesson and the run."""
    global _runs
    _runs += 1
    return Cgroup.create(f"{tag}-{os.getpid()}-{_runs}", **limits)


# --- 11: memory -------------------------------------------------------------------------------


@dataclass
class MemoryRun:
    limit: int
    series: Series
    oom_killed: bool  # the allocator died of SIGKILL
    oom_kills: int  # the kernel's count for the group
    peak: int
    high: int | None = None
    seconds: float = 0.0  # from the start until the allocator exited (or was stopped)

    def summary(self) -> str:
        return (
            f"limit {format_size(self.limit)}: OOM killed: {yes(self.oom_killed)}, "
            f"OOM kill counted: {yes(self.oom_kills > 0)}, "
            f"peak within the limit: {yes(self.peak <= self.limit)}"
        )

    def figures(self) -> str:
        peak, limit = format_size(self.peak), format_size(self.limit)
        return f"peak {peak} of {limit}, {self.oom_kills} OOM kill(s)"

    @property
    def oom_at(self) -> float | None:
        """When the sampler first saw the OOM kill counted (s), or None."""
        for t, kills in zip(self.series.t, self.series["oom_kills"]):
            if kills:
                return t
        return None


def memory_experiment(
    limit="48M", total_mib: int = 96, memory_high=None, seconds: float = 15.0
) -> MemoryRun:
    """Run the allocator (2 MiB each 20 ms, up to *total_mib*) under a memory *limit*, no swap."""
    limits = {"memory": limit, "swap": "0"}
    if memory_high is not None:
        limits["memory_high"] = memory_high
    box = _fresh("mem", **limits)
    try:
        with Sampler(box, hz=50, groups=("memory",), max_seconds=seconds + 1) as sampler:
            started = time.monotonic()
            proc = allocator(box, total_mib=total_mib, hold=0.3)
            try:
                code = proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                code = None
            took = time.monotonic() - started
            time.sleep(0.05)  # one more sample after the end
        stats = box.stats()
    finally:
        box.remove()
        _reap([proc])
    return MemoryRun(
        parse_size(limit),
        sampler.series,
        code == -9,
        stats.oom_kills,
        stats.memory_peak or max(sampler.series["memory_peak"]),
        None if memory_high is None else parse_size(memory_high),
        took,
    )


def time_to_reach(run: MemoryRun, mib: float) -> float | None:
    """When the group's usage first reached *mib* MiB (s since the start), or None."""
    for t, used in zip(run.series.t, run.series["memory_current"]):
        if used >= mib * MiB:
            return t
    return None


def swap_words() -> str:
    """What swap would change, and whether this host has any (from /proc/swaps)."""
    lines = Path("/proc/swaps").read_text().splitlines()[1:]
    if not lines:
        return (
            "this host has no swap: memory above the limit cannot be swapped out, so the "
            "OOM killer acts as soon as reclaim fails"
        )
    return (
        "this host has swap: with a swap limit above 0, memory above the limit is swapped "
        "out first, and the OOM killer acts only when swap is full too"
    )


# --- 12: cpu ----------------------------------------------------------------------------------


@dataclass
class CpuRun:
    cpus: float
    workers: int
    series: Series
    share: float  # CPUs the workers got on average
    throttled: int  # periods in which the group was throttled

    def summary(self) -> str:
        return (
            f"quota {self.cpus:g} CPUs for {self.workers} busy worker(s): "
            f"held to the quota: {yes(self.share <= self.cpus * 1.1 + 0.02)}, "
            f"throttled: {yes(self.throttled > 0)}"
        )

    def figures(self) -> str:
        return f"got {self.share:.3f} CPUs of a {self.cpus:g} quota ({self.share / self.cpus:.1%})"

    def windows(self, periods: int = 5) -> tuple[list[float], list[float], list[int]]:
        """(window starts, CPUs used, periods throttled) over windows of *periods* quota periods.

        A sample every 50 ms cuts 100 ms periods in halves, some all run and some all waiting,
        so the CPUs used between two samples swing around the quota; over whole periods they
        do not.
        """
        s, width = self.series, periods * PERIOD_S
        starts, cpus, throttled = [], [], []
        i = 0
        while True:
            j = next((k for k in range(i, len(s.t)) if s.t[k] >= s.t[i] + width - 0.01), None)
            if j is None:
                return starts, cpus, throttled
            starts.append(s.t[i])
            cpus.append((s["cpu_usage_us"][j] - s["cpu_usage_us"][i]) / 1e6 / (s.t[j] - s.t[i]))
            throttled.append(s["cpu_throttled"][j] - s["cpu_throttled"][i])
            i = j

    def waited_words(self) -> str:
        """The throttled time, and why it can exceed the run: it is summed over the CPUs."""
        waited = self.series["cpu_throttled_us"][-1] / 1e6
        seconds = self.series.t[-1] - self.series.t[0]
        cpus = min(self.workers, os.cpu_count() or 1)
        return (
            f"throttled in {self.throttled} periods, waiting {waited:.2f} s in all: the "
            f"wait of each of {cpus} CPU(s) added up, of {cpus * seconds:.2f} CPU-seconds "
            f"in the {seconds:.2f} s run"
        )


PERIOD_S = 0.1  # the CFS period labkit writes (100 ms)


def cpu_experiment(cpus=0.5, workers: int = 2, seconds: float = 1.5) -> CpuRun:
    """Busy *workers* under a quota of *cpus* for *seconds*; the share they got, from cpu usage."""
    box = _fresh("cpu", cpus=cpus)
    procs = []
    try:
        with Sampler(box, hz=20, groups=("cpu",), max_seconds=seconds + 5) as sampler:
            procs = busy_workers(box, workers)
            time.sleep(seconds)
    finally:
        box.remove()
        _reap(procs)
    series = sampler.series
    used = series["cpu_usage_us"][-1] - series["cpu_usage_us"][0]
    share = used / 1e6 / (series.t[-1] - series.t[0])
    return CpuRun(float(cpus), workers, series, share, series["cpu_throttled"][-1])


def cpu_sweep(
    quotas=(0.2, 0.4, 0.6, 0.8, 1.0), workers: int = 2, seconds: float = 1.0
) -> list[CpuRun]:
    """One cpu_experiment per quota: what the workers got, across the slider's range."""
    return [cpu_experiment(q, workers, seconds) for q in quotas]


def sweep_summary(runs: list[CpuRun]) -> str:
    held = all(r.share <= r.cpus * 1.1 + 0.02 for r in runs)
    return (
        f"{len(runs)} quotas from {runs[0].cpus:g} to {runs[-1].cpus:g} CPUs: "
        f"every run held to its quota: {yes(held)}"
    )


@dataclass
class WeightsRun:
    weights: tuple[int, int]
    series: tuple[Series, Series]
    shares: tuple[float, float]  # each group's part of what both got

    def summary(self) -> str:
        a, b = self.weights
        heavier = 0 if a > b else 1
        return (
            f"weights {a}:{b} on one CPU: the heavier group got more: "
            f"{yes(self.shares[heavier] > self.shares[1 - heavier])}"
        )

    def figures(self) -> str:
        a, b = self.weights
        return (
            f"shares {self.shares[0]:.1%} : {self.shares[1]:.1%} "
            f"(weights ask for {a / (a + b):.1%} : {b / (a + b):.1%})"
        )


def weights_experiment(weights=(100, 300), seconds: float = 1.5) -> WeightsRun:
    """Two groups pinned to CPU 0 with these weights, one busy worker each, for *seconds*."""
    boxes, procs, samplers = [], [], []
    try:
        for w in weights:  # inside the try: if the second weight is refused, the first goes too
            boxes.append(_fresh(f"w{w}", weight=w, cpuset="0"))
        samplers = [
            Sampler(b, hz=20, groups=("cpu",), max_seconds=seconds + 5).start() for b in boxes
        ]
        for b in boxes:
            procs += busy_workers(b, 1)
        # Count only while both compete: the first worker runs alone until the second starts,
        # which in an emulated guest can take a good part of a second.
        before = [b.stats().cpu_usage_us for b in boxes]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            start = [b.stats().cpu_usage_us for b in boxes]
            if all(now > then for now, then in zip(start, before)):
                break
            time.sleep(0.01)
        time.sleep(seconds)
        used = [b.stats().cpu_usage_us - then for b, then in zip(boxes, start)]
    finally:
        series = tuple(s.stop() for s in samplers)
        for b in boxes:
            b.remove()
        _reap(procs)
    total = max(1, sum(used))
    return WeightsRun(tuple(weights), series, (used[0] / total, used[1] / total))


# --- 13: pids ---------------------------------------------------------------------------------


@dataclass
class PidsRun:
    limit: int | str
    series: Series
    most: int  # the most tasks the sampler saw at once
    refused: int  # forks the kernel refused

    def summary(self) -> str:
        if self.limit == "max":
            return f"no limit: forks refused: {yes(self.refused > 0)}"
        limit = int(self.limit)
        return (
            f"pids.max {limit}: never above the limit: {yes(self.most <= limit)}, "
            f"reached it: {yes(self.most == limit)}, forks refused: {yes(self.refused > 0)}"
        )

    def figures(self) -> str:
        return f"at most {self.most} tasks at once, {self.refused} fork(s) refused"


def pids_experiment(pids=20, generations: int = 7, seconds: float = 1.5) -> PidsRun:
    """The bounded fork bomb under pids.max = *pids* for *seconds*."""
    box = _fresh("pids", pids=pids)
    proc = None
    try:
        # 100 Hz: the bomb reaches its limit within some 50 ms, and the rise should show
        with Sampler(box, hz=100, groups=("pids",), max_seconds=seconds + 10) as sampler:
            proc = fork_bomb(box, generations, seconds)
            proc.wait(timeout=seconds + 10)
        stats = box.stats()
    finally:
        box.remove()
        if proc:
            _reap([proc])
    series = sampler.series
    return PidsRun(pids, series, max(max(series["pids_current"]), 0), stats.pids_refused)


def frozen_progress(cgroup: Cgroup, seconds: float = 0.3) -> float:
    """CPU seconds the group used over *seconds* (0 when it is frozen)."""
    before = cgroup.stats().cpu_usage_us
    time.sleep(seconds)
    return (cgroup.stats().cpu_usage_us - before) / 1e6


# --- plots ------------------------------------------------------------------------------------


def _axes(ax, size=(7.5, 3.6)):
    import matplotlib.pyplot as plt

    if ax is None:
        _fig, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def _legend_outside(*axes):
    """One legend for *axes* (a twin pair shares it), below the plot: clear of the data."""
    handles, labels = [], []
    for ax in axes:
        more_handles, more_labels = ax.get_legend_handles_labels()
        handles += more_handles
        labels += more_labels
    axes[0].legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=min(3, len(labels)),
        fontsize=9,
        frameon=False,
    )


def plot_memory(run: MemoryRun, ax=None, label: str = "memory usage", title: str | None = None):
    """Memory charged to the group over time (MiB), against its limit; the OOM kill marked.

    Give *ax* again to draw a second run on the same axes (its limit lines are not repeated).
    """
    fresh = ax is None
    ax = _axes(ax)
    s = run.series
    ax.plot(s.t, [v / MiB for v in s["memory_current"]], label=label)
    if fresh:
        ax.axhline(
            run.limit / MiB,
            color="red",
            linestyle="--",
            label=f"hard limit ({run.limit / MiB:g} MiB)",
        )
    if run.high is not None:
        ax.axhline(
            run.high / MiB,
            color="orange",
            linestyle=":",
            label=f"memory.high ({run.high / MiB:g} MiB)",
        )
    if run.oom_at is not None:
        ax.axvline(run.oom_at, color="black", linestyle=":", label="OOM kill counted")
    ax.set_ylim(0, run.limit / MiB * 1.15)
    ax.set_xlabel("time since the start (s)")
    ax.set_ylabel("memory charged (MiB)")
    if title is None:
        title = (
            f"OOM-killed at the {run.limit / MiB:g} MiB limit: usage never passed it"
            if run.oom_killed
            else f"Peak {run.peak / MiB:.0f} MiB, within the {run.limit / MiB:g} MiB limit"
        )
    ax.set_title(title)
    _legend_outside(ax)
    return ax


def plot_memory_high(plain: MemoryRun, high: MemoryRun, mib: float = 36):
    """Two runs of one allocator, without and with memory.high, on the same axes."""
    ax = plot_memory(plain, label="without memory_high", title="")
    plot_memory(high, ax, label=f"with memory_high {high.high / MiB:g} MiB")
    alone, held = time_to_reach(plain, mib), time_to_reach(high, mib)
    if held is None or (alone is not None and held > 1.5 * alone):
        ax.set_title(
            f"memory.high slowed the group above {high.high / MiB:g} MiB; neither run was killed",
            fontsize=11,
        )
    else:  # v1's soft limit waits for the whole machine to run short
        ax.set_title(
            "The soft limit did not slow the group: the machine had memory to spare", fontsize=11
        )
    _legend_outside(ax)
    return ax


def plot_cpu(run: CpuRun, ax=None):
    """CPUs used, averaged over each 5 quota periods, against the quota; throttled periods as
    bars on a second axis."""
    ax = _axes(ax)
    starts, cpus, throttled = run.windows()
    width = 5 * PERIOD_S
    twin = ax.twinx()
    twin.bar(
        starts,
        throttled,
        width=width * 0.9,
        align="edge",
        color="grey",
        alpha=0.3,
        label="periods throttled (of 5)",
    )
    twin.set_ylim(0, 5 * 2.5)  # the bars in the lower part, under the CPU line
    twin.set_ylabel("throttled periods")
    ends = [t + width for t in starts]
    ax.step(
        [starts[0], *ends] if starts else [],
        [cpus[0], *cpus] if cpus else [],
        where="pre",
        linewidth=2,
        label=f"CPUs used, {run.workers} workers (5-period mean)",
    )
    ax.axhline(run.cpus, color="red", linestyle="--", label=f"quota {run.cpus:g} CPUs")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_ylim(0, max([run.cpus, *cpus]) * 1.6)
    ax.set_xlabel("time since the start (s)")
    ax.set_ylabel("CPUs used")
    ax.set_title(
        f"Quota {run.cpus:g} CPUs: got {run.share:.2f}, throttled in {run.throttled} period(s)",
        fontsize=11,
    )
    _legend_outside(ax, twin)
    return ax


def plot_sweep(runs: list[CpuRun], ax=None):
    """What the workers got against the quota asked, one point per run."""
    ax = _axes(ax, (5.5, 3.2))
    asked = [r.cpus for r in runs]
    ax.plot(asked, [r.share for r in runs], "o-", label=f"got ({runs[0].workers} busy workers)")
    ax.plot([0, max(asked)], [0, max(asked)], "r--", label="got = asked")
    ax.set_xlim(0, max(asked) * 1.1)
    ax.set_ylim(0, max(asked) * 1.1)
    ax.set_xlabel("quota asked (CPUs)")
    ax.set_ylabel("CPUs got (mean)")
    if all(r.share >= 0.8 * r.cpus for r in runs):  # the first period's quota comes extra
        ax.set_title("The workers get about what the quota asks")
    else:  # a quota reserves nothing: other work on the machine may take the CPUs first
        ax.set_title("Never more than the quota; less where the machine was busy")
    _legend_outside(ax)
    return ax


def plot_weights(run: WeightsRun, ax=None):
    """Each group's share of CPU 0 over time, against what the weights ask for."""
    ax = _axes(ax)
    (ta, a), (_tb, b) = (s.rate("cpu_usage_us", 1e6) for s in run.series)
    n = min(len(a), len(b))
    for i, (series, weight) in enumerate(zip((a, b), run.weights)):
        shares = [100 * series[k] / max(1e-9, a[k] + b[k]) for k in range(n)]
        ax.plot(ta[:n], shares, color=f"C{i}", label=f"weight {weight}")
        ax.axhline(
            100 * weight / sum(run.weights),
            linestyle="--",
            color=f"C{i}",
            label=f"weight {weight} asks {weight / sum(run.weights):.0%}",
        )
    ax.set_ylim(0, 100)
    ax.set_xlabel("time since the start (s)")
    ax.set_ylabel("share of CPU 0 (%)")
    a_w, b_w = run.weights
    ax.set_title(
        f"Weights {a_w}:{b_w} share a busy CPU about {run.shares[0]:.0%} : {run.shares[1]:.0%}"
    )
    _legend_outside(ax)
    return ax


def plot_pids(run: PidsRun, ax=None):
    """Tasks in the group over time against pids.max; the refused forks on a second axis."""
    ax = _axes(ax)
    s = run.series
    ax.step(
        s.t, s["pids_current"], where="post", linewidth=2.5, zorder=3, label="tasks (pids.current)"
    )
    if run.limit != "max":  # thin and under the step, which runs along it once it is reached
        ax.axhline(
            int(run.limit),
            color="red",
            linestyle="--",
            linewidth=1,
            zorder=2,
            label=f"pids.max = {run.limit}",
        )
    top = max(int(run.limit) if run.limit != "max" else 0, run.most, 1)
    ax.set_ylim(0, top * 1.3)  # room above the limit: the step is seen reaching it
    if "pids_refused" in s.values:
        twin = ax.twinx()
        twin.plot(
            s.t,
            s["pids_refused"],
            color="C1",
            linestyle="-.",
            label="forks refused (pids.events max)",
        )
        twin.set_ylim(0, max(max(s["pids_refused"]), 1) * 2.2)  # ends mid-height: not on the limit
        twin.set_ylabel("forks refused (so far)")
        _legend_outside(ax, twin)
    else:
        _legend_outside(ax)
    ax.set_xlabel("time since the start (s)")
    ax.set_ylabel("tasks")
    ax.set_title(f"The fork bomb stops at {run.most} tasks; {run.refused} forks refused")
    return ax


# --- widgets ----------------------------------------------------------------------------------


@dataclass
class Panel:
    """An experiment with a control: ``widget`` to display, ``run()`` to run it from code."""

    widget: object
    control: object
    run: object  # () -> the result of the experiment at the control's value


def experiment_panel(control, experiment, plot) -> Panel:
    """*control* (a slider), a run button, a text line and a plot area.

    The button runs ``experiment(control.value)``, shows its summary and draws ``plot(result)``
    in the plot area; ``panel.run()`` does the same without drawing (for code and tests).
    """
    import html

    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    button = widgets.Button(description="run")
    text = widgets.HTML()
    out = widgets.Output()

    def run(_button=None):
        button.disabled = True  # one experiment at a time
        try:
            result = experiment(control.value)
        finally:
            button.disabled = False
        text.value = "<pre>" + html.escape(result.summary()) + "</pre>"
        if _button is not None:
            with out:
                out.clear_output(wait=True)
                plot(result)
                plt.show()
        return result

    button.on_click(run)
    return Panel(widgets.VBox([widgets.HBox([control, button]), text, out]), control, run)


# --- exercise checks --------------------------------------------------------------------------


@graded
def check_own_cgroup(answer) -> Verdict:
    """10: the path of this notebook's cgroup (memory's on v1, the unified one on v2)."""
    if answer is ...:
        return not_done("own cgroup")
    expected = own_cgroup_path()
    given = str(answer).strip()
    return verdict(
        given.rstrip("/") == expected.rstrip("/") or given == expected,
        f"own cgroup: this notebook is in {expected}.",
        f"own cgroup: {given!r} is not where this notebook's memory is accounted.",
        "read /proc/self/cgroup: the line with 'memory' on v1, the line '0::' on v2; "
        "give the path after the last ':'.",
    )


@graded
def check_limit_file(answer) -> Verdict:
    """10: the file that holds a cgroup's memory hard limit on this host (v1 or v2 name)."""
    if answer is ...:
        return not_done("memory limit file")
    name = str(answer).strip()
    box = _fresh("try-file", memory="32M")
    try:
        path = next((d / name for d in box.dirs if (d / name).is_file()), None)
        holds = path is not None and path.read_text().strip() == str(32 * MiB)
    finally:
        box.remove()
    return verdict(
        holds,
        f"memory limit file: {name} holds the 32 MiB limit labkit wrote.",
        f"memory limit file: no file named {name!r} in the group holds its 32 MiB limit.",
        "look at the table above: the file in the 'memory' row, for this host's layout.",
    )


@graded
def check_survivor_limit(answer) -> Verdict:
    """11: a memory limit under which a workload holding 16 MiB survives and one of 64 MiB is
    OOM-killed."""
    if answer is ...:
        return not_done("memory limit")
    try:
        parse_size(answer, "memory limit")
    except BadInput as e:
        return Verdict(False, f"memory limit: {e}", "write a size such as '40M'.")
    small = memory_experiment(answer, total_mib=16, seconds=5)
    large = memory_experiment(answer, total_mib=64, seconds=5)
    ok = not small.oom_killed and large.oom_killed
    return verdict(
        ok,
        f"memory limit {answer!r}: 16 MiB survived, 64 MiB was OOM-killed.",
        f"memory limit {answer!r}: 16 MiB OOM-killed: {yes(small.oom_killed)}, "
        f"64 MiB OOM-killed: {yes(large.oom_killed)}.",
        "the interpreter itself needs some 10 MiB on top of what it holds: choose a limit "
        "between about 32M and 64M.",
    )


@graded
def check_quarter_cpu(answer) -> Verdict:
    """12: the cpus value that lets a group use 25 ms of CPU time in every 100 ms period."""
    if answer is ...:
        return not_done("cpus")
    try:
        box = _fresh("try-cpu", cpus=answer)
    except BadInput as e:
        return Verdict(False, f"cpus: {e}", "give a number of CPUs, like 0.5.")
    try:
        files = box.limits()
    finally:
        box.remove()
    quota, period = (
        files["cpu.max"].split()
        if "cpu.max" in files
        else (files["cpu.cfs_quota_us"], files["cpu.cfs_period_us"])
    )
    return verdict(
        (quota, period) == ("25000", "100000"),
        f"cpus={answer!r}: the kernel holds a quota of 25000 µs per 100000 µs period.",
        f"cpus={answer!r}: the kernel holds a quota of {quota} µs per {period} µs period.",
        "cpus is the quota divided by the period: 25 ms of 100 ms.",
    )


@graded
def check_four_to_one(answer) -> Verdict:
    """12: the weight that gives a group 4 times the CPU of a group of weight 100, on one CPU."""
    if answer is ...:
        return not_done("weight")

    def near(ratio: float) -> bool:
        return 3.0 <= ratio <= 5.5

    # A stalled CPU (a loaded host, an emulated guest) charges its whole stall to whichever
    # task was running, which can skew one short run; the weights themselves do not change.
    # So the run nearest to four of up to three is the one judged.
    ratios = []
    for _ in range(3):
        try:
            run = weights_experiment((100, answer), seconds=1.0)
        except BadInput as e:
            return Verdict(False, f"weight: {e}", "give a whole number, like 200.")
        ratios.append(run.shares[1] / max(run.shares[0], 1e-9))
        if near(ratios[-1]):
            break
    ratio = min(ratios, key=lambda r: abs(r - 4))
    return verdict(
        near(ratio),
        f"weight {answer!r}: the group got about four times the CPU of weight 100.",
        f"weight {answer!r}: the group got {ratio:.1f} times the CPU of weight 100, not about 4.",
        "shares are proportional to weights: weight / (weight + 100) of one busy CPU.",
    )


@graded
def check_ten_tasks(answer) -> Verdict:
    """13: the pids limit under which the fork bomb holds exactly 10 tasks at most."""
    if answer is ...:
        return not_done("pids limit")
    try:
        run = pids_experiment(answer, generations=6, seconds=1.0)
    except BadInput as e:
        return Verdict(False, f"pids limit: {e}", "give a whole number, like 5.")
    return verdict(
        run.most == 10 and run.refused > 0,
        f"pids limit {answer!r}: the bomb grew to 10 tasks and every further fork was refused.",
        f"pids limit {answer!r}: the bomb grew to {run.most} tasks, not 10.",
        "pids.max counts every task in the group, the first process included.",
    )


@graded
def check_frozen(group) -> Verdict:
    """13: *group* is frozen: the freezer reports it and it uses no CPU time."""
    if group is ...:
        return not_done("frozen group")
    if not isinstance(group, Cgroup) or not group.exists:
        return Verdict(
            False,
            f"frozen group: expected a Cgroup that exists, found {group!r}.",
            "give the group itself, e.g. the variable spinner.",
        )
    used = frozen_progress(group, 0.3)
    frozen = group.stats().frozen
    return verdict(
        frozen and used < 0.01,
        "frozen group: the kernel reports it frozen and it used no CPU.",
        f"frozen group: frozen: {yes(frozen)}, CPU used in 0.3 s: {used:.2f} s.",
        "call the group's freeze() method before checking.",
    )


def leftovers_in_words() -> str:
    """For the clean-up cells: how many of this state directory's labkit cgroups are left."""
    from ..cgroups import leftovers

    return f"labkit cgroups left: {len(leftovers())}"
