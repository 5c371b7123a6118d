"""Control groups: limit, account and control the resources a group of processes may use.

A cgroup is a directory in a cgroup filesystem. Writing a PID into its ``cgroup.procs`` puts
that process (and every child it forks later) under the directory's limits: memory, CPU time,
number of processes, which CPUs. Reading its other files gives the kernel's own counters.

- ``layout``: which layout the host has (v1, hybrid, v2) and where labkit's cgroups go.
- ``units``: "64M", "0.5" CPUs, "0-1,3", checked before anything is written.
- ``Cgroup`` (``cgroup.py``): the one class a student uses, on every layout.
- ``v1`` and ``v2``: the two backends, the kernel's files behind the same methods.
- ``sampler``: the counters recorded as time series while an experiment runs, for plots.

    from labkit.cgroups import Cgroup
    box = Cgroup.create("demo", memory="64M", cpus=0.5, pids=20)
    proc = box.start(["python3", "-c", "print('hello from a cgroup')"])
    proc.wait(); print(box.stats().summary()); box.remove()
"""

from .cgroup import Cgroup, Pressure, Stats, leftovers, remove_leftovers
from .layout import Layout, detect, detect_mode
from .units import MAX, Limits


def __getattr__(name: str):
    # The sampler is for plots: imported when first asked for, not by every container's start.
    if name in ("Sampler", "Series"):
        from . import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX",
    "Cgroup",
    "Layout",
    "Limits",
    "Pressure",
    "Sampler",
    "Series",
    "Stats",
    "detect",
    "detect_mode",
    "leftovers",
    "remove_leftovers",
]
