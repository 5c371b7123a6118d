"""Capabilities: root's privileges cut into about forty pieces the kernel checks one by one.

A process has five sets of them (``/proc/self/status``: CapInh, CapPrm, CapEff, CapBnd, CapAmb).
The kernel checks the *effective* set; *permitted* is the most the effective set may hold; the
*bounding* set caps what any later exec can gain; *inheritable* and *ambient* say what survives
an exec. Read ``man 7 capabilities`` beside this file.
"""

from __future__ import annotations

import functools

# The numbers from <linux/capability.h>, by the names the OCI spec uses.
NUMBERS: dict[str, int] = {
    f"CAP_{name}": number
    for number, name in enumerate(
        [
            "CHOWN",
            "DAC_OVERRIDE",
            "DAC_READ_SEARCH",
            "FOWNER",
            "FSETID",
            "KILL",
            "SETGID",
            "SETUID",
            "SETPCAP",
            "LINUX_IMMUTABLE",
            "NET_BIND_SERVICE",
            "NET_BROADCAST",
            "NET_ADMIN",
            "NET_RAW",
            "IPC_LOCK",
            "IPC_OWNER",
            "SYS_MODULE",
            "SYS_RAWIO",
            "SYS_CHROOT",
            "SYS_PTRACE",
            "SYS_PACCT",
            "SYS_ADMIN",
            "SYS_BOOT",
            "SYS_NICE",
            "SYS_RESOURCE",
            "SYS_TIME",
            "SYS_TTY_CONFIG",
            "MKNOD",
            "LEASE",
            "AUDIT_WRITE",
            "AUDIT_CONTROL",
            "SETFCAP",
            "MAC_OVERRIDE",
            "MAC_ADMIN",
            "SYSLOG",
            "WAKE_ALARM",
            "BLOCK_SUSPEND",
            "AUDIT_READ",
            "PERFMON",
            "BPF",
            "CHECKPOINT_RESTORE",
        ]
    )
}

# What Docker (and so most containers) keep: enough to act as root on the container's own files
# and processes, nothing that reaches the kernel itself (no SYS_ADMIN, SYS_MODULE, NET_ADMIN...).
DOCKER_DEFAULT: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


@functools.cache  # the running kernel's: it cannot change, and each container asks five times
def last_cap() -> int:
    """The highest capability this kernel knows (``/proc/sys/kernel/cap_last_cap``)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(NUMBERS.values())


def mask(names: list[str] | tuple[str, ...]) -> int:
    """The bit mask of *names*, leaving out capabilities this kernel does not have (as runc)."""
    top = last_cap()
    return sum(1 << NUMBERS[n] for n in set(names) if NUMBERS[n] <= top)


def names(bits: int) -> list[str]:
    """The names of the capabilities set in *bits* (e.g. CapEff from /proc/self/status)."""
    return [name for name, number in NUMBERS.items() if bits >> number & 1]


def bounding() -> list[str]:
    """The names in this process's bounding set (CapBnd): the most a container of ours can get.

    A host (or a container we run in) may lack some, CAP_SYS_RESOURCE say; asking capset for
    one of them is refused, so "all capabilities" means all of these, as in containerd, Podman
    and Docker 23+ (moby#42933; Debian's dockerd 20.10 asks for all and fails to start one).
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return names(int(line.split()[1], 16))
    return list(NUMBERS)
