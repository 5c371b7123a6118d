"""Human units for cgroup limits: "64M" of memory, "0.5" CPUs, a weight, a cpuset "0-1,3".

The kernel's cgroup files take bytes, microseconds and CPU lists. A student thinks in "64M" and
"half a CPU". This module turns the one into the other, and refuses a value that is malformed or
impossible with one sentence that says what would be right, before any cgroup file is written.
Nothing here touches the kernel except reading which CPUs exist.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Literal

from ..errors import BadInput

MAX = "max"  # "no limit", spelled as cgroup v2 spells it
Unlimited = Literal["max"]

# Binary multipliers, as the kernel's own memory files and `docker run -m` use them.
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_MIN_MEMORY = 1 << 20  # below 1 MiB not even a shell starts, so the limit could never be used

CPU_PERIOD_US = 100_000  # the CFS period labkit uses: 100 ms, the kernel's default
_MIN_QUOTA_US = 1_000  # the kernel refuses a CFS quota below 1 ms per period


@dataclass(frozen=True)
class Limits:
    """Limits already checked and in kernel units; None leaves that limit as it is.

    ``memory``, ``swap`` and ``memory_high`` are bytes; ``cpus`` is a number of CPUs (0.5 means
    half of one CPU's time); ``weight`` uses v2's scale 1..10000 (default 100); ``pids`` is the
    most processes (and threads) allowed; ``cpuset`` is the CPUs allowed, as the kernel writes
    them ("0-1,3"). MAX means no limit.
    """

    memory: int | Unlimited | None = None
    swap: int | Unlimited | None = None
    memory_high: int | Unlimited | None = None
    cpus: float | Unlimited | None = None
    weight: int | None = None
    pids: int | Unlimited | None = None
    cpuset: str | None = None


def parse_size(
    value: int | str, what: str = "memory", minimum: int = _MIN_MEMORY
) -> int | Unlimited:
    """Bytes from "64M", "1.5G", "512k", "4096" or an int; MAX for "max"."""
    if isinstance(value, str) and value.strip().lower() == MAX:
        return MAX
    if isinstance(value, bool):
        match = None
    elif isinstance(value, int):
        match = _SIZE.match(str(value))
    else:
        match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise BadInput(
            f"{what} {value!r} is not a size: write a number with an optional unit k, M, G or T, "
            "like '64M', '1.5G', '512k', or 'max' for no limit."
        )
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < minimum:
        raise BadInput(
            f"{what} {value!r} is too small: give at least {format_size(minimum)}, "
            "or 'max' for no limit."
        )
    return size


def parse_cpus(value: float | str, online: int | None = None) -> float | Unlimited:
    """A number of CPUs ("0.5", 1.5) a group may use per period; MAX for "max"."""
    if isinstance(value, str) and value.strip().lower() == MAX:
        return MAX
    online = online or os.cpu_count() or 1
    try:
        if isinstance(value, bool):
            raise TypeError
        # "0.5", 0.5 and "0.5 CPUs" all mean half of one CPU's time.
        cpus = float(
            re.sub(r"\s*cpus?\s*$", "", value, flags=re.IGNORECASE)
            if isinstance(value, str)
            else value
        )
    except (TypeError, ValueError):
        cpus = math.nan
    if not math.isfinite(cpus):
        raise BadInput(
            f"cpus {value!r} is not a number of CPUs: write a number like 0.5 (half a CPU) "
            "or 2, or 'max' for no limit."
        )
    smallest = _MIN_QUOTA_US / CPU_PERIOD_US
    if cpus < smallest:
        raise BadInput(
            f"cpus {value!r} is too small: the kernel's CPU quota is at least 1 ms per "
            f"{CPU_PERIOD_US // 1000} ms period, so give at least {smallest} CPUs."
        )
    if cpus > online:
        raise BadInput(
            f"cpus {value!r} is more than the {online} CPUs this cgroup can use: give at most "
            f"{online}, or 'max' for no limit."
        )
    return cpus


def quota_us(cpus: float) -> int:
    """The CFS quota (µs of CPU time per CPU_PERIOD_US period) that gives *cpus* CPUs."""
    return round(cpus * CPU_PERIOD_US)


def parse_weight(value: int | str) -> int:
    """A CPU weight on v2's scale: 1..10000, where 100 is the default share."""
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        weight = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        weight = 0
    if not 1 <= weight <= 10_000:
        raise BadInput(
            f"weight {value!r} is not a CPU weight: give a whole number from 1 to 10000 "
            "(100 is the default; 300 gets three times the share of 100)."
        )
    return weight


def weight_to_shares(weight: int) -> int:
    """v1's ``cpu.shares`` for a v2 weight: both are relative, 100 <-> 1024 (each the default)."""
    return max(2, round(weight * 1024 / 100))


def parse_pids(value: int | str) -> int | Unlimited:
    """The most tasks a group may hold (``pids.max``); MAX for "max"."""
    if isinstance(value, str) and value.strip().lower() == MAX:
        return MAX
    try:
        if isinstance(value, bool):
            raise TypeError
        pids = int(value.strip()) if isinstance(value, str) else int(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        pids = 0
    if pids < 1:
        raise BadInput(
            f"pids {value!r} is not a process count: give a whole number of at least 1 "
            "(the first process counts too), or 'max' for no limit."
        )
    return pids


def parse_cpuset(value: str | int, available: set[int]) -> str:
    """The canonical CPU list ("0-1,3") for *value*, refusing CPUs that are not in *available*."""
    text = str(value).strip()
    cpus: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise BadInput(
                f"cpuset {value!r} is not a CPU list: write CPU numbers and ranges like "
                "'0', '0-1' or '0-1,3'."
            )
        first = int(m.group(1))
        cpus.update(range(first, int(m.group(2) or first) + 1))
    missing = sorted(cpus - available)
    if missing:
        raise BadInput(
            f"cpuset {value!r} names CPU {format_cpulist(missing)}, which this cgroup cannot use: "
            f"choose from {format_cpulist(available)}."
        )
    return format_cpulist(cpus)


def parse_cpulist(text: str) -> set[int]:
    """The CPUs in a kernel CPU list such as ``0-1,3`` (an empty string is no CPU)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if part:
            first, _, last = part.partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def format_cpulist(cpus) -> str:
    """The kernel's way of writing a set of CPUs: ranges joined by commas, e.g. ``0-1,3``."""
    ordered, parts = sorted(cpus), []
    for cpu in ordered:
        if parts and parts[-1][1] == cpu - 1:
            parts[-1][1] = cpu
        else:
            parts.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def format_size(size: int | None) -> str:
    """A byte count for people: ``64.0 MiB``."""
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def parse_limits(
    available_cpus: set[int],
    *,
    memory=None,
    swap=None,
    memory_high=None,
    cpus=None,
    weight=None,
    pids=None,
    cpuset=None,
) -> Limits:
    """Check every limit a student gave and return them in kernel units, or raise BadInput.

    All of them are checked before the caller writes any file, so a bad value changes nothing.
    """
    online = len(available_cpus) or None
    limits = Limits(
        memory=None if memory is None else parse_size(memory, "memory limit"),
        swap=None if swap is None else parse_size(swap, "swap limit", minimum=0),
        memory_high=None if memory_high is None else parse_size(memory_high, "memory_high"),
        cpus=None if cpus is None else parse_cpus(cpus, online),
        weight=None if weight is None else parse_weight(weight),
        pids=None if pids is None else parse_pids(pids),
        cpuset=None if cpuset is None else parse_cpuset(cpuset, available_cpus),
    )
    hard, soft = limits.memory, limits.memory_high
    if isinstance(hard, int) and isinstance(soft, int) and soft > hard:
        raise BadInput(
            f"memory_high {format_size(soft)} is above the memory limit {format_size(hard)}, so "
            "it could never act: give a memory_high below the limit."
        )
    return limits
