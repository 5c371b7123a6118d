"""The PID lesson's view of a PID namespace from the host: who is in it, under which numbers.

A process in a new PID namespace has one PID per namespace it is visible in: the host's number,
and the number inside (1 for the first process). The kernel lists them all, outermost first, on
the ``NSpid:`` line of ``/proc/PID/status``. This module reads that line, finds the members of a
PID namespace by the inode of ``/proc/PID/ns/pid``, and draws them as a tree.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from labkit import namespaces
from labkit.errors import BadInput


@dataclass(frozen=True)
class Member:
    """One process of a PID namespace, as the host sees it."""

    host_pid: int
    ns_pid: int  # its PID inside the namespace
    host_ppid: int  # its parent's PID on the host
    state: str  # R running, S sleeping, Z zombie (exited, not yet reaped by its parent)
    comm: str


def _status(pid: int | str) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def nspid(pid: int | str) -> list[int]:
    """The PIDs of process *pid* in each PID namespace it is in, outermost (the host's) first."""
    return [int(n) for n in _status(pid)["NSpid"].split()]


def members(pid_ns: int) -> list[Member]:
    """The processes of the PID namespace whose inode is *pid_ns*, ordered by their inside PID."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino != pid_ns:
                continue
            status = _status(entry)
            parent = int(status["PPid"])  # in the numbers of the /proc we read: the host's
        except (OSError, KeyError):
            continue  # the process ended while we looked
        found.append(Member(int(entry), int(status["NSpid"].split()[-1]), parent,
                            status["State"].split()[0], status["Name"]))
    return sorted(found, key=lambda m: m.ns_pid)


def members_of(proc: namespaces.Process) -> list[Member]:
    """The processes in the PID namespace of a labkit Process."""
    return members(namespaces.ns_id(proc.pid, "pid"))


def zombies(proc: namespaces.Process) -> list[Member]:
    """The members of *proc*'s PID namespace that have exited and wait to be reaped."""
    return [m for m in members_of(proc) if m.state == "Z"]


def wait_for(
    proc: namespaces.Process, count: int, seconds: float = 30.0, comm: str | None = None
) -> list[Member]:
    """Wait (at most *seconds*) until *proc*'s PID namespace holds *count* processes, and, with
    *comm*, until every one but PID 1 runs that program (a forked shell execs it a moment later).
    """
    deadline = time.monotonic() + seconds

    def ready(found: list[Member]) -> bool:
        return len(found) == count and (comm is None or all(m.comm == comm for m in found[1:]))

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
    return sum(1 for entry in os.listdir("/proc") if entry.isdigit())


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
            _ = ax.plot([x[m.host_ppid], x[m.host_pid]], [-depth[m.host_ppid], -depth[m.host_pid]],
                        color="grey", zorder=1)
    for m in found:
        colour = "#f4cccc" if m.state == "Z" else "#cfe2f3"
        label = f"{m.comm}\ninside {m.ns_pid}\nhost {m.host_pid}"
        _ = ax.text(x[m.host_pid], -depth[m.host_pid], label,
                    ha="center", va="center", fontsize=8,
                    bbox={"boxstyle": "round", "facecolor": colour}, zorder=2)
    ax.set_xlim(-0.7, max(len(leaves), 1) - 0.3)
    ax.set_ylim(-max(depth.values(), default=0) - 0.7, 0.7)
    ax.axis("off")
    ax.set_title("one PID namespace: PID inside / PID on the host")
    return ax
