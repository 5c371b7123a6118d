"""What /proc tells about a process: its PID in each PID namespace, its ids, its namespace peers.

A process in a new PID namespace has one PID per namespace it is visible in: the host's number,
and the number inside (1 for the first process). The kernel lists them all, outermost first, on
the ``NSpid:`` line of ``/proc/PID/status``; the members of one PID namespace are the processes
whose ``/proc/PID/ns/pid`` has the same inode. A user namespace's root runs on the host as its
mapped id (``Uid:`` in the same file, read from the host), and an owner with no mapping shows
inside as the overflow id (``/proc/sys/kernel/overflowuid``). Read ``man 5 proc`` beside this.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "Member",
    "host_uid",
    "members",
    "nspid",
    "overflow_uid",
    "parse_status",
    "process_count",
    "signal_each",
    "stat",
    "status",
]


class Member(NamedTuple):
    """One process of a PID namespace, as the host sees it."""

    host_pid: int
    ns_pid: int  # its PID inside the namespace
    host_ppid: int  # its parent's PID on the host
    state: str  # R running, S sleeping, Z zombie (exited, not yet reaped by its parent)
    comm: str


def parse_status(text: str) -> dict[str, str]:
    """The "Key:<TAB>value" lines of a /proc/PID/status text as {key: value}."""
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def status(pid: int | str) -> dict[str, str]:
    """/proc/PID/status as {key: value} (``NSpid``, ``PPid``, ``State``, ``Uid``, ...)."""
    return parse_status(Path(f"/proc/{pid}/status").read_text())


def stat(pid: int | str) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc/PID/stat, or None if gone.

    The start time tells a process from a later one that was given its recycled PID.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the name (field 2) is in parentheses and may hold spaces: split after the last ")"
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        # ESRCH: the process ended between open() and read()
        return None
    return fields[0], int(fields[19])  # field 3 is the state, field 22 the start time


def nspid(pid: int | str) -> list[int]:
    """The PIDs of process *pid* in each PID namespace it is in, outermost (the reader's) first."""
    return [int(n) for n in status(pid)["NSpid"].split()]


def members(pid_ns: int) -> list[Member]:
    """The processes of the PID namespace whose inode is *pid_ns*, ordered by their inside PID."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino != pid_ns:
                continue
            fields = status(entry)
            parent = int(fields["PPid"])  # in the numbers of the /proc we read: the host's
        except (OSError, KeyError):
            continue  # the process ended while we looked
        inside = int(fields["NSpid"].split()[-1])
        found.append(Member(int(entry), inside, parent, fields["State"].split()[0], fields["Name"]))
    return sorted(found, key=lambda m: m.ns_pid)


def process_count() -> int:
    """How many processes the reader's /proc lists."""
    return sum(1 for entry in os.listdir("/proc") if entry.isdigit())


def host_uid(pid: int | str) -> int:
    """The effective uid of process *pid*, as the reader's /proc shows it."""
    return int(status(pid)["Uid"].split()[1])  # real, effective, saved, filesystem


def overflow_uid() -> int:
    """The id the kernel shows for an owner that has no mapping in the user namespace."""
    return int(Path("/proc/sys/kernel/overflowuid").read_text())


def signal_each(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """kill(2) each of *pids* with *sig*; one that has exited meanwhile is no error."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
