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

from ..cgroups import MAX, Cgroup
from ..cgroups import v1 as v1_backend
from ..cgroups import v2 as v2_backend
from ..cgroups.sampler import FILES, Sampler, Series
from ..cgroups.units import format_size, parse_limits, parse_size
from ..errors import BadInput
from .checks import Verdict, graded, not_done, verdict

MiB = 1 << 20
PY = sys.executable


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


# --- 10: the files behind each backend --------------------------------------------------------


EXAMPLE_LIMITS = [  # one example per limit, as a student gives it
    {"memory": "64M"}, {"memory": "64M", "swap": "0"}, {"memory_high": "48M"}, {"cpus": 0.5},
    {"weight": 300}, {"pids": 20}, {"cpuset": "0"},
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


def allocator(cgroup: Cgroup, step_mib: int = 2, pause: float = 0.02, total_mib: int = 128,
              hold: float = 2.0) -> subprocess.Popen:
    """Start the steady allocator in *cgroup* (see _ALLOCATE); stdout says 'holding' when done."""
    return cgroup.start([PY, "-S", "-c", _ALLOCATE, str(step_mib), str(pause), str(total_mib),
                         str(hold)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def busy_workers(cgroup: Cgroup, count: int = 1) -> list[subprocess.Popen]:
    """Start *count* CPU-bound shell loops in *cgroup* (they run until killed)."""
    if not 1 <= count <= 8:
        raise BadInput(f"count {count!r} is not a worker count: choose from 1 to 8.")
    return [cgroup.start(["/bin/sh", "-c", "while :; do :; done"]) for _ in range(count)]


def fork_bomb(cgroup: Cgroup, generations: int = 7, seconds: float = 2.0) -> subprocess.Popen:
    """Start the bounded fork bomb in *cgroup*: at most 2**generations processes, *seconds* long."""
    if not 1 <= generations <= 8 or not 0 < seconds <= 10:
        raise BadInput("a fork bomb here has 1 to 8 generations and lasts at most 10 s: "
                       "choose values in those ranges.")
    return cgroup.start([PY, "-S", "-c", _FORK_BOMB, str(generations), str(seconds)],
                        stderr=subprocess.DEVNULL)


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

    def summary(self) -> str:
        return (f"limit {format_size(self.limit)}: OOM killed: {yes(self.oom_killed)}, "
                f"OOM kill counted: {yes(self.oom_kills > 0)}, "
                f"peak within the limit: {yes(self.peak <= self.limit)}")

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


def memory_experiment(limit="48M", total_mib: int = 96, memory_high=None,
                      seconds: float = 15.0) -> MemoryRun:
    """Run the allocator (2 MiB each 20 ms, up to *total_mib*) under a memory *limit*, no swap."""
    limits = {"memory": limit, "swap": "0"}
    if memory_high is not None:
        limits["memory_high"] = memory_high
    box = _fresh("mem", **limits)
    try:
        with Sampler(box, hz=50, groups=("memory",), max_seconds=seconds + 1) as sampler:
            proc = allocator(box, total_mib=total_mib, hold=0.3)
            try:
                code = proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                code = None
            time.sleep(0.05)  # one more sample after the end
        stats = box.stats()
    finally:
        box.remove()
        _reap([proc])
    return MemoryRun(parse_size(limit), sampler.series, code == -9, stats.oom_kills,
                     stats.memory_peak or max(sampler.series["memory_peak"]),
                     None if memory_high is None else parse_size(memory_high))


def swap_words() -> str:
    """What swap would change, and whether this host has any (from /proc/swaps)."""
    lines = Path("/proc/swaps").read_text().splitlines()[1:]
    if not lines:
        return ("this host has no swap: memory above the limit cannot be swapped out, so the "
                "OOM killer acts as soon as reclaim fails")
    return ("this host has swap: with a swap limit above 0, memory above the limit is swapped "
            "out first, and the OOM killer acts only when swap is full too")


# --- 12: cpu ----------------------------------------------------------------------------------


@dataclass
class CpuRun:
    cpus: float
    workers: int
    series: Series
    share: float  # CPUs the workers got on average
    throttled: int  # periods in which the group was throttled

    def summary(self) -> str:
        return (f"quota {self.cpus:g} CPUs for {self.workers} busy worker(s): "
                f"held to the quota: {yes(self.share <= self.cpus * 1.1 + 0.02)}, "
                f"throttled: {yes(self.throttled > 0)}")

    def figures(self) -> str:
        return f"got {self.share:.3f} CPUs of a {self.cpus:g} quota ({self.share / self.cpus:.1%})"


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


@dataclass
class WeightsRun:
    weights: tuple[int, int]
    series: tuple[Series, Series]
    shares: tuple[float, float]  # each group's part of what both got

    def summary(self) -> str:
        a, b = self.weights
        heavier = 0 if a > b else 1
        return (f"weights {a}:{b} on one CPU: the heavier group got more: "
                f"{yes(self.shares[heavier] > self.shares[1 - heavier])}")

    def figures(self) -> str:
        a, b = self.weights
        return (f"shares {self.shares[0]:.1%} : {self.shares[1]:.1%} "
                f"(weights ask for {a / (a + b):.1%} : {b / (a + b):.1%})")


def weights_experiment(weights=(100, 300), seconds: float = 1.5) -> WeightsRun:
    """Two groups pinned to CPU 0 with these weights, one busy worker each, for *seconds*."""
    boxes, procs, samplers = [], [], []
    try:
        for w in weights:  # inside the try: if the second weight is refused, the first goes too
            boxes.append(_fresh(f"w{w}", weight=w, cpuset="0"))
        samplers = [Sampler(b, hz=20, groups=("cpu",), max_seconds=seconds + 5).start()
                    for b in boxes]
        for b in boxes:
            procs += busy_workers(b, 1)
        time.sleep(seconds)
    finally:
        series = tuple(s.stop() for s in samplers)
        for b in boxes:
            b.remove()
        _reap(procs)
    used = [s["cpu_usage_us"][-1] - s["cpu_usage_us"][0] for s in series]
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
        return (f"pids.max {limit}: never above the limit: {yes(self.most <= limit)}, "
                f"reached it: {yes(self.most == limit)}, forks refused: {yes(self.refused > 0)}")

    def figures(self) -> str:
        return f"at most {self.most} tasks at once, {self.refused} fork(s) refused"


def pids_experiment(pids=20, generations: int = 7, seconds: float = 1.5) -> PidsRun:
    """The bounded fork bomb under pids.max = *pids* for *seconds*."""
    box = _fresh("pids", pids=pids)
    proc = None
    try:
        with Sampler(box, hz=20, groups=("pids",), max_seconds=seconds + 10) as sampler:
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


def _axes(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        _fig, ax = plt.subplots(figsize=(7, 3))
    return ax


def plot_memory(run: MemoryRun, ax=None):
    """Memory charged to the group over time, against its limit; the OOM kill marked."""
    ax = _axes(ax)
    s = run.series
    ax.plot(s.t, [v / MiB for v in s["memory_current"]], label="memory usage")
    ax.axhline(run.limit / MiB, color="red", linestyle="--", label="memory limit")
    if run.high is not None:
        ax.axhline(run.high / MiB, color="orange", linestyle=":", label="memory_high")
    if run.oom_at is not None:
        ax.axvline(run.oom_at, color="black", linestyle=":", label="OOM kill")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MiB")
    ax.legend(loc="upper left")
    return ax


def plot_cpu(run: CpuRun, ax=None):
    """The CPUs the workers got in each sampling interval, against the quota."""
    ax = _axes(ax)
    mids, cpus = run.series.rate("cpu_usage_us", 1e6)
    ax.plot(mids, cpus, label=f"CPUs used ({run.workers} workers)")
    ax.axhline(run.cpus, color="red", linestyle="--", label="quota")
    ax.set_ylim(0, max(1.0, run.workers) * 1.1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("CPUs")
    ax.legend(loc="upper right")
    return ax


def plot_weights(run: WeightsRun, ax=None):
    """Each group's share of CPU 0 over time, against what the weights ask for."""
    ax = _axes(ax)
    (ta, a), (_tb, b) = (s.rate("cpu_usage_us", 1e6) for s in run.series)
    n = min(len(a), len(b))
    for i, (series, weight) in enumerate(zip((a, b), run.weights)):
        shares = [series[k] / max(1e-9, a[k] + b[k]) for k in range(n)]
        ax.plot(ta[:n], shares, label=f"weight {weight}")
        ax.axhline(weight / sum(run.weights), linestyle="--", color=f"C{i}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("share of CPU 0")
    ax.legend(loc="center right")
    return ax


def plot_pids(run: PidsRun, ax=None):
    """Tasks in the group over time, against pids.max."""
    ax = _axes(ax)
    ax.step(run.series.t, run.series["pids_current"], where="post", label="tasks (pids.current)")
    if run.limit != "max":
        ax.axhline(int(run.limit), color="red", linestyle="--", label="pids.max")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("tasks")
    ax.legend(loc="lower right")
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
        holds, f"memory limit file: {name} holds the 32 MiB limit labkit wrote.",
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
        ok, f"memory limit {answer!r}: 16 MiB survived, 64 MiB was OOM-killed.",
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
    quota, period = (files["cpu.max"].split() if "cpu.max" in files else
                     (files["cpu.cfs_quota_us"], files["cpu.cfs_period_us"]))
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
    try:
        run = weights_experiment((100, answer), seconds=1.0)
    except BadInput as e:
        return Verdict(False, f"weight: {e}", "give a whole number, like 200.")
    ratio = run.shares[1] / max(run.shares[0], 1e-9)
    return verdict(
        3.0 <= ratio <= 5.5,
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
        return Verdict(False, f"frozen group: expected a Cgroup that exists, found {group!r}.",
                       "give the group itself, e.g. the variable spinner.")
    used = frozen_progress(group, 0.3)
    frozen = group.stats().frozen
    return verdict(
        frozen and used < 0.01, "frozen group: the kernel reports it frozen and it used no CPU.",
        f"frozen group: frozen: {yes(frozen)}, CPU used in 0.3 s: {used:.2f} s.",
        "call the group's freeze() method before checking.",
    )


def leftovers_in_words() -> str:
    """For the clean-up cells: how many of this state directory's labkit cgroups are left."""
    from ..cgroups import leftovers

    return f"labkit cgroups left: {len(leftovers())}"

