"""Seccomp: a filter the kernel runs on every system call a process makes.

After ``seccomp(SECCOMP_SET_MODE_FILTER)`` (which libseccomp, through pyseccomp, compiles and
loads for us), each system call is checked against the filter first: allowed, refused with an
errno, or the process killed. It is the last wall: even root with every capability cannot mount
or unshare when the filter says no. ``/proc/self/status`` shows ``Seccomp: 2`` under a filter.

labkit's default profile refuses what Docker's default profile refuses to a container that has
no extra capabilities (the list in Docker's seccomp documentation), and allows the rest; Docker's
own profile is the other way round (an allow-list), with the same effect for these calls.
Read ``man 2 seccomp`` beside this file.
"""

from __future__ import annotations

import errno

from .. import sys as ksys
from .spec import Seccomp, SeccompArg, SyscallRule

# Kernel modules, kexec, reboot, clocks, swap, quotas, accounting, the keyring, BPF, perf,
# mounts and namespaces, handles that bypass paths, old and obscure interfaces.
BLOCKED = [
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "pivot_root",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapon",
    "swapoff",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
]

NAMESPACE_FLAGS = (
    ksys.CLONE_NEWNS,
    ksys.CLONE_NEWCGROUP,
    ksys.CLONE_NEWUTS,
    ksys.CLONE_NEWIPC,
    ksys.CLONE_NEWUSER,
    ksys.CLONE_NEWPID,
    ksys.CLONE_NEWNET,
)


def default_profile() -> Seccomp:
    """linux.seccomp for labkit's default spec: EPERM for BLOCKED, and for clone() that makes
    namespaces; clone3 says ENOSYS, so the C library falls back to clone, whose flags a filter
    can see (clone3 passes them in memory, out of a filter's reach)."""
    rules = [SyscallRule(list(BLOCKED), "SCMP_ACT_ERRNO", errno.EPERM)]
    # One rule per flag: a rule matches when (flags & flag) == flag; the rules are or-ed.
    rules += [
        SyscallRule(
            ["clone"], "SCMP_ACT_ERRNO", errno.EPERM, [SeccompArg(0, f, "SCMP_CMP_MASKED_EQ", f)]
        )
        for f in NAMESPACE_FLAGS
    ]
    rules.append(SyscallRule(["clone3"], "SCMP_ACT_ERRNO", errno.ENOSYS))
    return Seccomp("SCMP_ACT_ALLOW", syscalls=rules)
