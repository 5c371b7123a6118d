"""Thin ctypes wrappers around the system calls containers are made of.

Python 3.11 has no ``os.unshare`` or ``os.setns``, and no binding at all for ``mount`` or
``pivot_root``. Each wrapper here calls the C library (or the raw syscall) with the same name and
arguments as the man page, and turns a failure into an ``OSError`` that keeps the errno and names
the call, for example ``OSError(EPERM, "unshare(CLONE_NEWUTS): Operation not permitted")``.

Read ``man 2 unshare``, ``man 2 setns``, ``man 2 mount``, ``man 2 umount``, ``man 2 pivot_root``,
``man 2 sethostname``, ``man 2 prctl`` and ``man 7 inotify`` beside this file.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
# The same library, called while holding the interpreter's lock, as os.fork calls fork().
_libc_with_gil = ctypes.PyDLL(None, use_errno=True)

# Namespace flags, from <linux/sched.h>: one bit per kind of namespace.
CLONE_NEWNS = 0x00020000  # mount namespace (the first one, hence the generic name)
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
CLONE_PARENT = 0x00008000  # the new process is a sibling of the caller, not its child
CLONE_INTO_CGROUP = 0x200000000  # clone3 only: the new process starts in the given cgroup2 dir

# The eight kinds of namespace, named as in /proc/PID/ns (and in that order), and the flag that
# asks for each. The one list of kinds: namespaces.KINDS, the init child and the CLI read it.
CLONE_FLAGS = {
    "mnt": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}
# Each flag's name in <linux/sched.h>: the mount namespace was the first, hence CLONE_NEWNS.
CLONE_NAMES = {
    flag: "CLONE_NEWNS" if kind == "mnt" else f"CLONE_NEW{kind.upper()}"
    for kind, flag in CLONE_FLAGS.items()
}

# Mount flags, from <linux/mount.h>.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# umount2 flags.
MNT_FORCE = 1
MNT_DETACH = 2

# prctl options, from <linux/prctl.h>.
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2

# pivot_root has no wrapper in glibc: it is called by number, which differs per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41}
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "arm64": 220}
_SYS_CLONE3 = {"x86_64": 435, "aarch64": 435, "arm64": 435}


def _flag_names(flags: int, names: dict[int, str]) -> str:
    parts = [name for bit, name in names.items() if flags & bit]
    return "|".join(parts) or str(flags)


def _check(result: int, call: str) -> int:
    """Turn the C convention (-1 and errno) into an OSError that names the call."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)}")
    return result


def _b(value: str | bytes | None) -> bytes | None:
    return os.fsencode(value) if value is not None else None


def unshare(flags: int) -> None:
    """Ask the kernel to move the calling process into new namespaces of the kinds in *flags*.

    A new PID or time namespace applies to the children created afterwards, not to the caller.
    A new user namespace is refused (EINVAL) in a process with more than one thread.
    """
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({_flag_names(flags, CLONE_NAMES)})")


def setns(fd: int, nstype: int = 0) -> None:
    """Ask the kernel to move the calling process into the namespace that *fd* refers to.

    *fd* is an open ``/proc/PID/ns/KIND`` file; *nstype* (a CLONE_NEW* flag, or 0 for any) makes
    the kernel check that the file is of the expected kind.
    """
    name = _flag_names(nstype, CLONE_NAMES) if nstype else "0"
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({fd}, {name})")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    """Ask the kernel to attach a filesystem (or change a mount's flags) at *target*."""
    result = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(result, f"mount({source!r}, {target!r}, {fstype!r})")


def umount2(target: str, flags: int = 0) -> None:
    """Ask the kernel to detach the mount at *target* (MNT_DETACH: lazily, once unused)."""
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount2({target!r})")


def pivot_root(new_root: str, put_old: str) -> None:
    """Ask the kernel to make *new_root* the root mount and move the old root to *put_old*.

    new_root must be a mount point, put_old must be at or below it, and neither may be on a
    shared mount. ``pivot_root(".", ".")`` stacks the old root on top of the new one, so it can
    be detached with ``umount2(".", MNT_DETACH)`` without a directory to put it in.
    """
    number = _syscall_number(_SYS_PIVOT_ROOT, "pivot_root")
    result = _libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old))
    _check(result, f"pivot_root({new_root!r}, {put_old!r})")


def _syscall_number(table: dict[str, int], call: str) -> int:
    machine = os.uname().machine
    if machine not in table:
        raise OSError(0, f"{call}: labkit does not know its syscall number on {machine}")
    return table[machine]


def clone_parent() -> int:
    """fork(), except that the new process is our parent's child, not ours (``CLONE_PARENT``).

    Returns the child's PID in the caller and 0 in the child. The child's exit is reported to
    our parent, who waits for it; we never have to reap it. glibc wraps clone() only for a
    child that runs on a new stack, so this is the raw system call, made with the interpreter's
    lock held (PyDLL) and wrapped in the bookkeeping ``os.fork`` does around fork().
    """
    number = _syscall_number(_SYS_CLONE, "clone")
    flags = CLONE_PARENT | 17  # SIGCHLD: the exit signal our parent expects
    args = (ctypes.c_ulong(flags), None, None, None, None)
    return _forked("clone(CLONE_PARENT)", number, *args)


def _forked(call: str, number: int, *args) -> int:
    """Make the fork-like system call *number*, with the bookkeeping ``os.fork`` does around
    fork(), and the interpreter's lock held (PyDLL) so no other thread runs meanwhile.
    The child's PID in the caller, 0 in the child."""
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _libc_with_gil.syscall(ctypes.c_long(number), *args)
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    return _check(pid, call)


class _CloneArgs(ctypes.Structure):
    """struct clone_args (<linux/sched.h>), as far as CLONE_INTO_CGROUP (kernel 5.7)."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
            "tls", "set_tid", "set_tid_size", "cgroup",
        )
    ]  # fmt: skip


def clone_into_cgroup(cgroup_fd: int, parent: bool = False) -> int:
    """fork(), except that the child starts in the cgroup2 directory *cgroup_fd* (clone3).

    Moving a process into a cgroup afterwards (a write to cgroup.procs) takes the kernel's
    lock over every process's cgroups for writing, and the first writer after a quiet spell
    waits for an RCU grace period: milliseconds. A child born in its cgroup moves nothing.
    With *parent*, it is our parent's child (CLONE_PARENT), as ``clone_parent`` makes it.
    Returns the child's PID in the caller and 0 in the child, like ``clone_parent``.
    """
    number = _syscall_number(_SYS_CLONE3, "clone3")
    flags = CLONE_INTO_CGROUP | (CLONE_PARENT if parent else 0)
    # SIGCHLD (17) to the parent at the child's exit. With CLONE_PARENT clone3 takes none: the
    # child gets the one its new parent (our parent) expects of us.
    args = _CloneArgs(flags=flags, exit_signal=0 if parent else 17, cgroup=cgroup_fd)
    size = ctypes.c_size_t(ctypes.sizeof(args))
    return _forked("clone3(CLONE_INTO_CGROUP)", number, ctypes.byref(args), size)


def sethostname(name: str) -> None:
    """Ask the kernel to set the hostname of the calling process's UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname({name!r})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Ask the kernel to change one attribute of the calling process (see ``man 2 prctl``)."""
    args = (ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5))
    return _check(_libc.prctl(ctypes.c_int(option), *args), f"prctl({option})")


class _CapHeader(ctypes.Structure):
    """``struct __user_cap_header_struct`` from <linux/capability.h>."""

    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    """``struct __user_cap_data_struct``: one 32-bit word of each of the three sets."""

    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


# Version 3 of the capability ABI: two _CapData words, so 64 capabilities per set.
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capget(pid: int = 0) -> tuple[int, int, int]:
    """Ask the kernel for the (effective, permitted, inheritable) capability sets of *pid*."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), f"capget({pid})")
    sets = ("effective", "permitted", "inheritable")
    return tuple(getattr(data[0], s) | getattr(data[1], s) << 32 for s in sets)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Ask the kernel to set the calling thread's three capability sets (bit masks).

    The kernel refuses (EPERM) to add to *permitted* or to put in *effective* what is not
    permitted: capabilities can only be given up.
    """
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for word in (0, 1):
        shift = 32 * word
        data[word].effective = (effective >> shift) & 0xFFFFFFFF
        data[word].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[word].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")


class _Statfs(ctypes.Structure):
    """``struct statfs`` from <sys/statfs.h> (64-bit layout; only f_type is read)."""

    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


# Filesystem magic numbers (f_type), from <linux/magic.h>.
TMPFS_MAGIC = 0x01021994
CGROUP_SUPER_MAGIC = 0x0027E0EB  # a cgroup v1 hierarchy
CGROUP2_SUPER_MAGIC = 0x63677270  # "cgrp": the cgroup v2 unified hierarchy
OVERLAYFS_SUPER_MAGIC = 0x794C7630


def statfs(path: str) -> int:
    """Ask the kernel which filesystem *path* is on; return its magic number (``f_type``).

    ``os.statvfs`` cannot answer this: the POSIX ``statvfs`` has no ``f_type`` field.
    """
    buf = _Statfs()
    _check(_libc.statfs(_b(path), ctypes.byref(buf)), f"statfs({path!r})")
    # f_type is a signed long in glibc; the magic numbers are unsigned 32-bit values.
    return buf.f_type & 0xFFFFFFFF


# inotify, from <sys/inotify.h>: which changes to a directory's entries to be told of.
IN_MOVED_TO = 0x00000080  # a file was renamed into it (how a JSON record is replaced whole)
IN_DELETE = 0x00000200  # an entry was removed
IN_DELETE_SELF = 0x00000400  # the watched directory itself was removed
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC


def inotify_init1(flags: int = IN_CLOEXEC) -> int:
    """Ask the kernel for an inotify instance: a file descriptor that becomes readable when a
    watched path changes (select/poll wait on it, no polling of the file system)."""
    return _check(_libc.inotify_init1(ctypes.c_int(flags)), "inotify_init1")


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    """Ask the kernel to report the changes in *mask* to *path* on the inotify *fd*."""
    result = _libc.inotify_add_watch(ctypes.c_int(fd), _b(path), ctypes.c_uint32(mask))
    return _check(result, f"inotify_add_watch({path!r})")
