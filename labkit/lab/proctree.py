"""The PID lesson's view of a PID namespace from the host: who is in it, under which numbers.

``labkit.proc`` reads the ``NSpid:`` line of ``/proc/PID/status`` (``nspid``) and finds the
members of a PID namespace by the inode of ``/proc/PID/ns/pid`` (``members``); this module starts
the lesson's namespaces, waits for them to fill, and draws their members as a tree.
"""

from __future__ import annotations

import time

from labkit import namespaces
from labkit.errors import BadInput
from labkit.proc import Member, members, nspid, process_count

__all__ = [
    "Member",
    "host_process_count",
    "members",
    "members_of",
    "nspid",
    "plot_tree",
    "start_with_children",
    "wait_for",
    "zombies",
]


def members_of(proc: namespaces.Process) -> list[Member]:
    """The processes in the PID namespace of a labkit Process."""
    return members(namespaces.ns_id(proc.pid, "pid"))


def zombies(proc: namespaces.Process) -> list[Member]:
    """The members of *proc*'s PID namespace that have exited and wait to be reaped."""
    return [m for m in members_of(proc) if m.state == "Z"]


def wait_for(
    proc: namespaces.Process,
    count: int,
    seconds: float = 30.0,
    comm: str | None = None,
    zombies: int | None = None,
) -> list[Member]:
    """Wait (at most *seconds*) until *proc*'s PID namespace holds *count* processes, and, with
    *comm*, until every one but PID 1 runs that program (a forked shell execs it a moment later),
    and, with *zombies*, until that many of them have exited and wait to be reaped.
    """
    deadline = time.monotonic() + seconds

    def ready(found: list[Member]) -> bool:
        return (
            len(found) == count
            and (comm is None or all(m.comm == comm for m in found[1:]))
            and (zombies is None or sum(m.state == "Z" for m in found) == zombies)
        )

    found = members_of(proc)
    while not ready(found) and time.monotonic() < deadline:
        time.sleep(0.02)
        found = members_of(proc)
    return found


def start_with_children(children: int, seconds: int = 60) -> namespaces.Process:
    """Start a shell as PID 1 of new pid+mnt namespaces, with *children* sleeping children."""
    if not 0 <= children <= 50:
        raise BadInput(f"{children} children: choose between 0 and 50.")
    script = f"i=0; while [ $i -lt {children} ]; do sleep {seconds} & i=$((i+1)); done; wait"
    proc = namespaces.spawn(["/bin/sh", "-c", script], ["mnt", "pid"])
    wait_for(proc, children + 1, comm="sleep")
    return proc


def host_process_count() -> int:
    """How many processes the host's /proc lists."""
    return process_count()


def plot_tree(found: list[Member], ax=None):
    """Draw a PID namespace as a tree: each box says its PID inside and its PID on the host."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 2.6))
    inside = {m.host_pid for m in found}
    children: dict[int, list[Member]] = {}
    for m in found:
        children.setdefault(m.host_ppid, []).append(m)
    roots = [m for m in found if m.host_ppid not in inside]  # their parent is outside: the relay
    leaves = [m for m in found if m.host_pid not in children] or found
    x = {m.host_pid: float(i) for i, m in enumerate(leaves)}
    depth: dict[int, int] = {}

    def place(m: Member, level: int) -> float:
        depth[m.host_pid] = level
        kids = children.get(m.host_pid, [])
        if kids:
            x[m.host_pid] = sum(place(k, level + 1) for k in kids) / len(kids)
        return x[m.host_pid]

    for r in roots:
        place(r, 0)
    for m in found:
        if m.host_ppid in inside:
            _ = ax.plot(
                [x[m.host_ppid], x[m.host_pid]],
                [-depth[m.host_ppid], -depth[m.host_pid]],
                color="grey",
                zorder=1,
            )
    for m in found:
        colour = "#f4cccc" if m.state == "Z" else "#cfe2f3"
        label = f"{m.comm}\ninside {m.ns_pid}\nhost {m.host_pid}"
        _ = ax.text(
            x[m.host_pid],
            -depth[m.host_pid],
            label,
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "facecolor": colour},
            zorder=2,
        )
    ax.set_xlim(-0.7, max(len(leaves), 1) - 0.3)
    ax.set_ylim(-max(depth.values(), default=0) - 0.7, 0.7)
    ax.axis("off")
    ax.set_title("one PID namespace: PID inside / PID on the host")
    return ax
