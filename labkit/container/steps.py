"""The set-up of a container, in runc's order, as a table of named steps.

Each step is one short function that asks the kernel for one thing. ``STEPS`` lists them in the
order they run; the two marked "parent" are done by the process that creates the container (it
alone can put the init into its cgroup before any namespace exists, and write id maps from
outside the new user namespace); the rest run in the init child (``init.py``), which ends by
exec'ing the container's process. A lesson can print the table, and create a container with a
step left out (``create(..., skip=["pivot_root"])``) to see what that step protected.

Read kernel-facts.md ("runc's container set-up order") and runc's libcontainer
(``rootfs_linux.go``, ``standard_init_linux.go``, ``init_linux.go``) beside this file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import signal
import socket
import stat
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

# Everything the steps use is imported here, up front: after pivot_root the host's files, and
# so Python's own library, are out of reach.
from .. import _init, mountinfo
from .. import sys as ksys
from ..cgroups import layout
from ..channel import CREATED, PID, USERNS_READY, Channel
from . import capabilities, seccomp
from .spec import RLIMITS, Mount, Spec

# OCI's namespace types, as the kernel (and labkit._init) name them in /proc/PID/ns.
KINDS = {
    "pid": "pid",
    "network": "net",
    "mount": "mnt",
    "ipc": "ipc",
    "uts": "uts",
    "user": "user",
    "cgroup": "cgroup",
    "time": "time",
}


@dataclass(eq=False)  # what one init carries, never compared
class Setup:
    """What the init child carries from step to step."""

    spec: Spec
    channel: Channel | None  # None once "created" is sent: the parent has gone on
    fifo_fd: int  # an O_PATH handle on the exec FIFO: `start` opens it, and the init goes on
    skip: set[str] = field(default_factory=set)
    executable: str | None = None
    console_fd: int | None = None  # a socket connected to the caller's --console-socket
    seccomp: bytes | None = None  # the filter's BPF program, read before pivot_root
    times: dict[str, float] = field(default_factory=dict)  # seconds per step, sent with "created"

    @property
    def root(self) -> str:
        return self.spec.root.path

    def new(self, kind: str) -> bool:
        """Whether the spec asks for a *new* namespace of OCI type *kind* (not one joined)."""
        ns = self.spec.namespace(kind)
        return ns is not None and ns.path is None


# --- namespaces and PID 1 -------------------------------------------------------------------------


def join_namespaces(s: Setup) -> None:
    """setns() into the namespaces the spec gives by path (all opened first, then joined)."""
    join = {KINDS[ns.type]: ns.path for ns in s.spec.linux.namespaces if ns.path}
    if join:
        _init.join_namespaces(join)


def unshare_user(s: Setup) -> None:
    """A new user namespace first: it owns every namespace made after it."""
    if not s.new("user"):
        return
    ksys.unshare(ksys.CLONE_NEWUSER)
    # Only a process outside the namespace may map ids to any outside id: the parent writes the
    # maps while we wait, then we become root of the namespace.
    s.channel.send(USERNS_READY)
    s.channel.receive()
    _init.become_root_inside()


def unshare_namespaces(s: Setup) -> None:
    """One unshare() for every other new namespace (pid applies to the children we fork)."""
    _init.unshare_others(
        [KINDS[ns.type] for ns in s.spec.linux.namespaces if ns.path is None and ns.type != "user"]
    )


def fork_pid1(s: Setup) -> None:
    """Fork: the child is PID 1 of the new PID namespace and becomes the container's process.

    The parent half only reports the child's PID and exits, so the container is nobody's child:
    it outlives the process that created it (and gets no parent-death signal).
    """
    reported_r, reported_w = os.pipe()
    pid = os.fork()
    if pid:
        s.channel.send(PID, pid=pid)
        os._exit(0)  # closes reported_w: the child may go on
    os.close(reported_w)
    # Wait until the parent half has reported our PID, so the caller hears "pid" before
    # anything we send: both halves write to the same pipe.
    os.read(reported_r, 1)
    os.close(reported_r)


def set_oom_score_adj(s: Setup) -> None:
    """Tell the OOM killer how much to prefer this container (-1000 never, 1000 first)."""
    if s.spec.process.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(s.spec.process.oom_score_adj))


# --- the root filesystem --------------------------------------------------------------------------

_PROPAGATION = {
    "private": ksys.MS_PRIVATE,
    "slave": ksys.MS_SLAVE,
    "shared": ksys.MS_SHARED,
    "unbindable": ksys.MS_UNBINDABLE,
}


def propagation_flags(name: str) -> int:
    """ "rslave" -> MS_REC|MS_SLAVE: the r- form applies to every mount below too."""
    recursive = name.startswith("r")
    flags = _PROPAGATION[name[1:] if recursive else name]
    return flags | ksys.MS_REC if recursive else flags


def make_root_private(s: Setup) -> None:
    """Stop mount events crossing from the container to the host.

    The new mount namespace starts as a copy of the host's, with the host's propagation: where
    the host's / is shared, a mount made here would appear on the host. runc makes the whole
    tree rslave unless the spec says otherwise (the host's mounts still reach us, ours not it).
    """
    ksys.mount(None, "/", None, propagation_flags(s.spec.linux.rootfs_propagation or "rslave"))


def bind_rootfs(s: Setup) -> None:
    """Bind the root filesystem onto itself: pivot_root needs the new root to be a mount point."""
    ksys.mount(s.root, s.root, None, ksys.MS_BIND | ksys.MS_REC)


# Mount options: (flag, set it?) — "ro" sets MS_RDONLY, "rw" clears it; data options pass through.
_OPTIONS = {
    "ro": (ksys.MS_RDONLY, True),
    "rw": (ksys.MS_RDONLY, False),
    "nosuid": (ksys.MS_NOSUID, True),
    "suid": (ksys.MS_NOSUID, False),
    "nodev": (ksys.MS_NODEV, True),
    "dev": (ksys.MS_NODEV, False),
    "noexec": (ksys.MS_NOEXEC, True),
    "exec": (ksys.MS_NOEXEC, False),
    "sync": (ksys.MS_SYNCHRONOUS, True),
    "async": (ksys.MS_SYNCHRONOUS, False),
    "mand": (ksys.MS_MANDLOCK, True),
    "nomand": (ksys.MS_MANDLOCK, False),
    "noatime": (ksys.MS_NOATIME, True),
    "atime": (ksys.MS_NOATIME, False),
    "nodiratime": (ksys.MS_NODIRATIME, True),
    "diratime": (ksys.MS_NODIRATIME, False),
    "relatime": (ksys.MS_RELATIME, True),
    "norelatime": (ksys.MS_RELATIME, False),
    "strictatime": (ksys.MS_STRICTATIME, True),
    "nostrictatime": (ksys.MS_STRICTATIME, False),
    "bind": (ksys.MS_BIND, True),
    "rbind": (ksys.MS_BIND | ksys.MS_REC, True),
    "remount": (ksys.MS_REMOUNT, True),
    "silent": (ksys.MS_SILENT, True),
}
_PROPAGATION_OPTIONS = (
    "private",
    "rprivate",
    "slave",
    "rslave",
    "shared",
    "rshared",
    "unbindable",
    "runbindable",
)


def mount_options(options: list[str]) -> tuple[int, int, str]:
    """(mount flags, propagation flags, data string) from a mount's OCI options."""
    flags, propagation, data = 0, 0, []
    for option in options:
        if option in _OPTIONS:
            bit, on = _OPTIONS[option]
            flags = flags | bit if on else flags & ~bit
        elif option in _PROPAGATION_OPTIONS:
            propagation |= propagation_flags(option)
        else:
            data.append(option)  # e.g. "mode=755", "size=65536k": the filesystem parses these
    return flags, propagation, ",".join(data)


def in_root(root: str, path: str) -> str:
    """*path* inside *root*, following symlinks as if *root* were "/" (they cannot climb out).

    A hostile rootfs could make /proc a symlink to the host's /etc; resolving each link against
    the container's root keeps every mount inside it.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            links += 1
            if links > 40:
                raise OSError(errno.ELOOP, f"too many symlinks below {root} in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _preserved_flags(path: str) -> int:
    """The flags a remount must repeat: the kernel refuses to clear nosuid/nodev/noexec/atime
    flags it locked in a mount copied into a less privileged namespace."""
    st = os.statvfs(path)
    keep = (
        ksys.MS_NOSUID
        | ksys.MS_NODEV
        | ksys.MS_NOEXEC
        | ksys.MS_NOATIME
        | ksys.MS_NODIRATIME
        | ksys.MS_RELATIME
        | ksys.MS_RDONLY
    )
    return st.f_flag & keep  # statvfs's ST_* bits are the MS_* bits


def mount_one(root: str, m: Mount) -> None:
    """One entry of the spec's mounts, at its destination inside *root*."""
    flags, propagation, data = mount_options(m.options)
    target = in_root(root, m.destination)
    if m.type == "cgroup":
        mount_cgroups(target, flags, m.source or "cgroup")
        return
    if flags & ksys.MS_BIND:
        source = m.source or ""
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        elif not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        ksys.mount(source, target, None, flags & (ksys.MS_BIND | ksys.MS_REC))
        # A bind takes no other flags: read-only, nosuid... need a second, remounting call.
        rest = flags & ~(ksys.MS_BIND | ksys.MS_REC)
        if rest:
            ksys.mount(
                None, target, None, ksys.MS_BIND | ksys.MS_REMOUNT | rest | _preserved_flags(target)
            )
    else:
        os.makedirs(target, exist_ok=True)
        ksys.mount(m.source, target, m.type, flags, data or None)
    if propagation:
        ksys.mount(None, target, None, propagation)


def mount_cgroups(target: str, flags: int, source: str) -> None:
    """/sys/fs/cgroup: the cgroup hierarchies, read-only, as runc shows them.

    On cgroup v2 that is a fresh mount of the unified hierarchy (with a cgroup namespace its
    root is the container's own cgroup). On v1 (and hybrid) it is a tmpfs with one bind mount per
    hierarchy, each of the container's own cgroup directory in it.
    """
    if layout.detect_mode() == "v2":
        try:
            ksys.mount(source, target, "cgroup2", flags)
        except PermissionError:
            # In a user namespace without a cgroup namespace of its own the kernel refuses a
            # fresh cgroup2 mount: show the host's, bound read-only.
            ksys.mount("/sys/fs/cgroup", target, None, ksys.MS_BIND | ksys.MS_REC)
            ksys.mount(
                None,
                target,
                None,
                ksys.MS_BIND | ksys.MS_REMOUNT | flags | _preserved_flags(target),
            )
        return
    with open("/proc/self/cgroup") as f:
        own = layout.own_cgroups(f.read())
    cgroup_mounts = [m for m in mountinfo.mounts() if m.fstype == "cgroup"]
    bind_flags = ksys.MS_BIND | ksys.MS_REMOUNT | (flags & ~(ksys.MS_BIND | ksys.MS_REC))
    ksys.mount(
        "tmpfs",
        target,
        "tmpfs",
        ksys.MS_NOSUID | ksys.MS_NODEV | ksys.MS_NOEXEC | ksys.MS_RELATIME,
        "mode=755",
    )
    for m in cgroup_mounts:
        name = os.path.basename(m.point)
        key = next((o for o in m.super_options if o in own), None)
        if key is None:
            continue
        dest = os.path.join(target, name)
        os.makedirs(dest, exist_ok=True)
        ksys.mount(
            m.point + layout.relative_to_root(own[key], m.root).rstrip("/"),
            dest,
            None,
            ksys.MS_BIND | ksys.MS_REC,
        )
        ksys.mount(None, dest, None, bind_flags | _preserved_flags(dest))
        for part in name.split(","):
            if part != name:  # co-mounted "cpu,cpuacct": each name leads to it
                os.symlink(name, os.path.join(target, part))


def mount_filesystems(s: Setup) -> None:
    """The spec's mounts, in order: /proc, /dev (tmpfs), /dev/pts, shm, mqueue, /sys, cgroups."""
    for m in s.spec.mounts:
        mount_one(s.root, m)


# The devices every container gets: none of them reaches the host's hardware.
DEFAULT_DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)


def create_devices(s: Setup) -> None:
    """Device nodes in /dev: mknod where we may, else bind the host's (in a user namespace)."""
    dev = in_root(s.root, "/dev")
    os.makedirs(dev, exist_ok=True)
    # The spec's own entry for a default device (a privileged container's host devices) wins.
    given = {d.path.removeprefix("/dev/") for d in s.spec.linux.devices}
    wanted = [
        (name, "c", major, minor, 0o666, 0, 0)
        for name, major, minor in DEFAULT_DEVICES
        if name not in given
    ]
    wanted += [
        (
            d.path.removeprefix("/dev/"),
            d.type,
            d.major,
            d.minor,
            d.file_mode if d.file_mode is not None else 0o666,
            d.uid or 0,
            d.gid or 0,
        )
        for d in s.spec.linux.devices
    ]
    old = os.umask(0)
    try:
        for name, kind, major, minor, mode, uid, gid in wanted:
            path = in_root(s.root, "/dev/" + name)
            if not os.path.isdir(os.path.dirname(path)):  # /dev/net/tun: 0755 dirs, as runc's
                os.umask(0o022)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.umask(0)
            if s.new("user"):
                # Inside a user namespace mknod is refused whatever our capabilities.
                open(path, "a").close()
                ksys.mount("/dev/" + name, path, None, ksys.MS_BIND)
                continue
            kind_bits = {
                "c": stat.S_IFCHR,
                "u": stat.S_IFCHR,
                "b": stat.S_IFBLK,
                "p": stat.S_IFIFO,
            }[kind]
            os.mknod(path, kind_bits | mode, os.makedev(major, minor))
            os.chown(path, uid, gid)
    finally:
        os.umask(old)


def link_dev_symlinks(s: Setup) -> None:
    """/dev/fd, stdin, stdout, stderr (and ptmx, core) as the links programs expect."""
    links = {
        "fd": "/proc/self/fd",
        "stdin": "/proc/self/fd/0",
        "stdout": "/proc/self/fd/1",
        "stderr": "/proc/self/fd/2",
    }
    if os.path.exists("/proc/kcore"):
        links["core"] = "/proc/kcore"
    dev = in_root(s.root, "/dev")
    if os.path.isdir(os.path.join(dev, "pts")):
        # The ptmx of the container's own devpts instance, not the host's /dev/ptmx.
        if os.path.lexists(os.path.join(dev, "ptmx")):
            os.unlink(os.path.join(dev, "ptmx"))
        links["ptmx"] = "pts/ptmx"
    for name, target in links.items():
        os.symlink(target, os.path.join(dev, name))


def pivot_root(s: Setup) -> None:
    """Make the rootfs "/" and detach the old root: nothing of the host's tree is left here.

    chroot would only change this process's idea of "/", and is escapable. pivot_root(".", ".")
    stacks the old root on top of the new one; making it rslave before detaching it keeps the
    detach from propagating to the host's mounts.
    """
    os.chdir(s.root)
    ksys.pivot_root(".", ".")
    ksys.mount(None, ".", None, ksys.MS_SLAVE | ksys.MS_REC)
    ksys.umount2(".", ksys.MNT_DETACH)
    os.chdir("/")


def set_up_console(s: Setup) -> None:
    """process.terminal: a pseudo-terminal from the container's own devpts, as its stdio.

    The master side goes to whoever listens on the console socket (SCM_RIGHTS); the slave
    becomes the controlling terminal of a new session, and stdin, stdout and stderr.
    """
    if s.console_fd is None:
        return
    master, slave = os.openpty()  # /dev/ptmx is the link to /dev/pts/ptmx made above
    size = s.spec.process.console_size
    if size is not None:  # before the process runs, so its first look finds the right size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))
    with socket.socket(fileno=s.console_fd) as console:
        socket.send_fds(console, [os.ttyname(slave).encode()], [master])
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)


def set_hostname(s: Setup) -> None:
    """The container's hostname, in its own UTS namespace."""
    if s.spec.hostname is not None:
        ksys.sethostname(s.spec.hostname)


def write_sysctls(s: Setup) -> None:
    """Namespaced kernel parameters (net.*, kernel.shm*...), before /proc/sys is made read-only."""
    for key, value in s.spec.linux.sysctl.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)


def mount_readonly_paths(s: Setup) -> None:
    """Bind each read-only path onto itself, then remount it read-only (/proc/sys, sysrq...)."""
    for path in s.spec.linux.readonly_paths:
        try:
            ksys.mount(path, path, None, ksys.MS_BIND | ksys.MS_REC)
        except FileNotFoundError:
            continue  # this kernel has no such file: nothing to protect
        ksys.mount(
            None,
            path,
            None,
            ksys.MS_BIND | ksys.MS_REMOUNT | ksys.MS_RDONLY | ksys.MS_REC | _preserved_flags(path),
        )


def mask_paths(s: Setup) -> None:
    """Hide each masked path: /dev/null over a file, an empty read-only tmpfs over a directory."""
    for path in s.spec.linux.masked_paths:
        if os.path.isdir(path):
            ksys.mount("tmpfs", path, "tmpfs", ksys.MS_RDONLY)
        elif os.path.exists(path):
            ksys.mount("/dev/null", path, None, ksys.MS_BIND)


def remount_root_readonly(s: Setup) -> None:
    """root.readonly: remount "/" read-only, last, once nothing more is made in it."""
    if s.spec.root.readonly:
        ksys.mount(
            None, "/", None, ksys.MS_BIND | ksys.MS_REMOUNT | ksys.MS_RDONLY | _preserved_flags("/")
        )


# --- privileges -----------------------------------------------------------------------------------


def set_rlimits(s: Setup) -> None:
    """Resource limits (setrlimit): RLIMIT_NOFILE and friends, inherited across exec."""
    for rl in s.spec.process.rlimits:
        # OCI writes "unlimited" as 2**64-1; Python spells it RLIM_INFINITY.
        soft, hard = (v if v < 2**63 else resource.RLIM_INFINITY for v in (rl.soft, rl.hard))
        resource.setrlimit(RLIMITS.index(rl.type), (soft, hard))


def set_no_new_privs(s: Setup) -> None:
    """PR_SET_NO_NEW_PRIVS: no exec may gain privileges again (setuid bits, file capabilities)."""
    if s.spec.process.no_new_privileges:
        ksys.prctl(ksys.PR_SET_NO_NEW_PRIVS, 1)


def drop_bounding_set(s: Setup) -> None:
    """Drop every capability outside the bounding set: no later exec can regain it."""
    caps = s.spec.process.capabilities
    if caps is None:
        return  # no capabilities object: the process keeps what it has, as runc does
    keep = capabilities.mask(caps.bounding)
    for number in range(capabilities.last_cap() + 1):
        if not keep >> number & 1:
            ksys.prctl(ksys.PR_CAPBSET_DROP, number)


def switch_user(s: Setup) -> None:
    """Become process.user: supplementary groups, then gid, then uid (the order that works).

    PR_SET_KEEPCAPS keeps the permitted set across the change of uid, so the next step can
    still give the process the capabilities the spec lists.
    """
    user = s.spec.process.user
    ksys.prctl(ksys.PR_SET_KEEPCAPS, 1)
    try:
        os.setgroups(user.additional_gids)
    except PermissionError:
        if not s.new("user"):
            raise  # in a user namespace, setgroups may be "deny": then there are none to drop
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    ksys.prctl(ksys.PR_SET_KEEPCAPS, 0)
    if user.umask is not None:
        os.umask(user.umask)


def set_capabilities(s: Setup) -> None:
    """The effective, permitted and inheritable sets, then the ambient one (capset, prctl)."""
    caps = s.spec.process.capabilities
    if caps is None:
        return
    ksys.capset(
        capabilities.mask(caps.effective),
        capabilities.mask(caps.permitted),
        capabilities.mask(caps.inheritable),
    )
    for name in caps.ambient:
        try:
            ksys.prctl(ksys.PR_CAP_AMBIENT, ksys.PR_CAP_AMBIENT_RAISE, capabilities.NUMBERS[name])
        except OSError:
            pass  # refused unless also permitted and inheritable; runc only warns


def change_directory(s: Setup) -> None:
    """process.cwd, as the container's user (who may be refused where root would not be)."""
    os.chdir(s.spec.process.cwd)


def find_executable(s: Setup) -> None:
    """Look up args[0] in the container's PATH now, so a missing program fails `create`."""
    name = s.spec.process.args[0]
    env = dict(e.split("=", 1) for e in s.spec.process.env)
    dirs = [""] if "/" in name else env.get("PATH", "").split(":")
    for d in dirs:
        path = os.path.join(d, name)
        # The mode's x bits, as runc's LookPath reads them, not access(X_OK): that also says no
        # for a file on a noexec mount, which the container's own bind of its root is not.
        if os.path.isfile(path) and os.stat(path).st_mode & 0o111:
            s.executable = path
            return
    raise FileNotFoundError(errno.ENOENT, f'exec: "{name}": executable file not found in $PATH')


def load_seccomp_privileged(s: Setup) -> None:
    """Without no_new_privs, the seccomp filter now, while we still hold CAP_SYS_ADMIN.

    The kernel loads a filter for a process without no_new_privs only if it has CAP_SYS_ADMIN,
    so it goes in before the capabilities are dropped (as runc does); every step after it must
    then be allowed by the filter.
    """
    if not s.spec.process.no_new_privileges:
        _load_filter(s)


def load_seccomp(s: Setup) -> None:
    """With no_new_privs, the seccomp filter last: from here on every system call is checked."""
    if s.spec.process.no_new_privileges:
        _load_filter(s)


def _load_filter(s: Setup) -> None:
    if s.spec.linux.seccomp is not None:
        seccomp.load(s.seccomp)  # the seccomp(2) call, with the program libseccomp compiled


# --- the end --------------------------------------------------------------------------------------


def wait_for_start(s: Setup) -> None:
    """Tell the parent we are created, then block on the exec FIFO until `start` opens it."""
    handle = f"/proc/self/fd/{s.fifo_fd}"
    if not os.path.exists(handle):
        raise FileNotFoundError(
            errno.ENOENT,
            "the exec FIFO is reached through /proc, and "
            "the container has no /proc: keep the /proc mount",
        )
    s.channel.send(CREATED, times=s.times)
    os.close(s.channel.status)
    s.channel = None
    # Opening a FIFO for writing blocks until someone opens it for reading: `start` does.
    fd = os.open(handle, os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)


def exec_process(s: Setup) -> None:
    """execve the container's process: it replaces the init, and keeps its PID."""
    # Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    env = dict(e.split("=", 1) for e in s.spec.process.env)
    os.execve(s.executable or s.spec.process.args[0], s.spec.process.args, env)


class Step(NamedTuple):
    """One named set-up step, run in the init (or, *where* "parent", by its parent)."""

    name: str
    run: Callable[[Setup], None] | None  # None: done by the parent process
    where: str = "init"

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").split("\n")[0] if self.run else PARENT_STEPS[self.name]


PARENT_STEPS = {
    "join_cgroup": "The init starts in the container's cgroup, before any namespace exists: "
    "born in it (cgroup2), moving itself in (v1).",
    "write_id_maps": "The parent writes uid_map and gid_map of the new user namespace.",
    "open_exec_fifo": "The parent hands the init an O_PATH handle on the exec FIFO: the "
    "state directory may be out of the container's reach (runc's trick).",
}

STEPS: tuple[Step, ...] = (
    Step("join_cgroup", None, "parent"),
    Step("join_namespaces", join_namespaces),
    Step("unshare_user", unshare_user),
    Step("write_id_maps", None, "parent"),
    Step("unshare_namespaces", unshare_namespaces),
    Step("fork_pid1", fork_pid1),
    Step("set_oom_score_adj", set_oom_score_adj),
    Step("open_exec_fifo", None, "parent"),
    Step("make_root_private", make_root_private),
    Step("bind_rootfs", bind_rootfs),
    Step("mount_filesystems", mount_filesystems),
    Step("create_devices", create_devices),
    Step("link_dev_symlinks", link_dev_symlinks),
    Step("pivot_root", pivot_root),
    Step("set_up_console", set_up_console),
    Step("set_hostname", set_hostname),
    # Sysctls go before the read-only paths: /proc/sys is one of them.
    Step("write_sysctls", write_sysctls),
    Step("mount_readonly_paths", mount_readonly_paths),
    Step("mask_paths", mask_paths),
    Step("remount_root_readonly", remount_root_readonly),
    Step("set_rlimits", set_rlimits),
    Step("set_no_new_privs", set_no_new_privs),
    Step("load_seccomp", load_seccomp_privileged),
    Step("drop_bounding_set", drop_bounding_set),
    Step("switch_user", switch_user),
    Step("set_capabilities", set_capabilities),
    Step("change_directory", change_directory),
    Step("find_executable", find_executable),
    Step("load_seccomp", load_seccomp),
    Step("wait_for_start", wait_for_start),
    Step("exec_process", exec_process),
)

NAMES = tuple(dict.fromkeys(step.name for step in STEPS))  # load_seccomp has two places
# Without these the container cannot exist at all, so they cannot be left out. Without the
# namespace steps the init would stay in the host's mount namespace, where the root's steps
# would remount, pivot and detach the host's own "/".
REQUIRED = ("join_namespaces", "unshare_namespaces", "fork_pid1", "open_exec_fifo", "exec_process")


def describe() -> str:
    """The table of steps, one line each: where it runs, its name, what it asks of the kernel."""
    return "\n".join(f"{i:2} {st.where:<6} {st.name:<22} {st.doc}" for i, st in enumerate(STEPS, 1))
