"""The child that creates namespaces and execs a command in them (labkit's ``runc init``).

Why a separate process: a Jupyter kernel has many threads, and the kernel refuses
``unshare(CLONE_NEWUSER)`` in a multi-threaded process; a new PID namespace applies only to
children; and changing the hostname or the mounts of the notebook's own process would change the
notebook. So ``labkit.namespaces.spawn`` has the fork server (``forkserver.py``, single-threaded)
fork a child that runs ``main`` here, and talks to it over two pipes (``channel.py``):

    parent (spawn)                         this child
    ---------------------------------------------------------------------------
    writes the spec                  -->   reads it
                                           joins namespaces by path (setns)
                                           unshares the user namespace
                                     <--   "userns_ready"
    writes uid_map / gid_map         -->   "maps_written" (go on)
                                           unshares the other kinds
                                           forks if a PID or time namespace needs it
                                     <--   "pid" of the process that will exec
                                           mounts, hostname, root filesystem
                                           exec: the status pipe closes (CLOEXEC), and
    sees end-of-file: the command runs      the parent knows set-up is complete

Every step is one function, named for what it asks of the kernel, and runs in the order runc
uses (see kernel-facts.md). A failure is sent to the parent, naming the step, and the child
exits 127.
"""

from __future__ import annotations

import os
import signal
import warnings  # noqa: F401  os.execvpe imports it lazily, maybe after we lost access to it

from . import channel as events
from . import sys as ksys
from .channel import Channel

FLAGS = ksys.CLONE_FLAGS
# nsenter's order: the user namespace first (it grants the capabilities the others need), the
# mount namespace late (after it, /proc paths would resolve inside the new mount table).
JOIN_ORDER = ("user", "cgroup", "ipc", "uts", "net", "pid", "mnt", "time")


# --- the steps, in order ----------------------------------------------------------------------


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL us when our parent dies, so nothing outlives its owner."""
    ksys.prctl(ksys.PR_SET_PDEATHSIG, signal.SIGKILL)


def join_namespaces(join: dict[str, str]) -> None:
    """setns() into existing namespaces; all files are opened first, before any setns."""
    fds = {kind: os.open(path, os.O_RDONLY | os.O_CLOEXEC) for kind, path in join.items()}
    for kind in JOIN_ORDER:
        if kind in fds:
            ksys.setns(fds[kind], FLAGS[kind])
            os.close(fds[kind])
    if "user" in join:
        become_root_inside()


def unshare_user(channel: Channel) -> None:
    """A new user namespace first: it owns every namespace created after it."""
    ksys.unshare(ksys.CLONE_NEWUSER)
    # Only a process outside the new namespace may map ids to arbitrary outside ids: ask the parent.
    channel.send(events.USERNS_READY)
    channel.receive()  # MAPS_WRITTEN
    become_root_inside()


def become_root_inside() -> None:
    """Switch to uid/gid 0 of the user namespace (mapped to an unprivileged id outside)."""
    try:
        os.setgroups([])  # drop the host's supplementary groups; refused if setgroups is "deny"
    except PermissionError:
        pass
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def unshare_others(kinds: list[str]) -> None:
    """One unshare() for all the other kinds the spec asks for."""
    flags = 0
    for kind in kinds:
        if kind != "user":
            flags |= FLAGS[kind]
    if flags:
        ksys.unshare(flags)


def set_time_offsets(offsets: dict[str, float]) -> None:
    """Shift CLOCK_MONOTONIC/BOOTTIME for the new time namespace (before its first process)."""
    with open("/proc/self/timens_offsets", "w") as f:
        for clock, seconds in offsets.items():
            whole = int(seconds)
            f.write(f"{clock} {whole} {int((seconds - whole) * 1e9)}\n")


def fork_into_namespace(channel: Channel) -> None:
    """Fork so the child is the first process of the new PID (or time) namespace.

    The parent half stays outside as a relay: it reports the child's PID, passes on signals, and
    exits the way the child did, so the caller sees one process (like ``unshare --fork``).
    """
    pid = os.fork()
    if pid == 0:
        die_with_parent()
        return
    channel.send(events.PID, pid=pid)
    os.close(channel.status)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    _, status = os.waitpid(pid, 0)
    exit_like(status)


def exit_like(status: int) -> None:
    """Exit with the same code, or die of the same signal, as the process we waited for."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # these two cannot be caught or reset
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        # Still here: we are PID 1 of a namespace, which its own signals cannot kill.
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def make_mounts_private(propagation: str) -> None:
    """Stop mount events crossing between our new mount namespace and the host's.

    unshare(CLONE_NEWNS) copies the mount table with its propagation: where the host's / is
    shared (systemd makes it so), a mount made here would appear on the host. runc makes / rslave
    or rprivate first; "unchanged" is here only to show the leak in the mount lesson.
    """
    flag = {"private": ksys.MS_PRIVATE, "slave": ksys.MS_SLAVE, "shared": ksys.MS_SHARED}.get(
        propagation
    )
    if flag:
        ksys.mount(None, "/", None, ksys.MS_REC | flag)


def mount_proc(target: str) -> None:
    """A fresh procfs, so /proc (and ps) show the processes of our PID namespace."""
    os.makedirs(target, exist_ok=True)
    ksys.mount("proc", target, "proc", ksys.MS_NOSUID | ksys.MS_NODEV | ksys.MS_NOEXEC)


def mount_dev(rootfs: str) -> None:
    """A small /dev: a tmpfs with the host's harmless devices bound in (as runc does)."""
    dev = os.path.join(rootfs, "dev")
    if not os.path.isdir(dev):
        return
    ksys.mount("tmpfs", dev, "tmpfs", ksys.MS_NOSUID, "mode=755,size=64k")
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        target = os.path.join(dev, name)
        open(target, "w").close()
        ksys.mount(f"/dev/{name}", target, None, ksys.MS_BIND)


def enter_rootfs(rootfs: str, method: str, proc: bool) -> None:
    """Make *rootfs* the root directory, by pivot_root (sound) or chroot (escapable)."""
    # pivot_root needs the new root to be a mount point: bind it onto itself.
    ksys.mount(rootfs, rootfs, None, ksys.MS_BIND | ksys.MS_REC)
    mount_dev(rootfs)
    if proc:
        mount_proc(os.path.join(rootfs, "proc"))
    os.chdir(rootfs)
    if method == "chroot":
        # Only the process's idea of "/" changes; the old root stays mounted and reachable.
        os.chroot(".")
    else:
        # The old root goes on top of the new one, and is then detached: nothing of the host's
        # file system is left in this mount namespace.
        ksys.pivot_root(".", ".")
        ksys.umount2(".", ksys.MNT_DETACH)
    os.chdir("/")


def run_as_init(argv: list[str], env: dict[str, str], channel: Channel) -> None:
    """Stay as PID 1 and reap every orphan, while the command runs as our child (like tini)."""
    ksys.prctl(ksys.PR_SET_CHILD_SUBREAPER, 1)  # adopt orphans even outside a PID namespace
    child = os.fork()
    if child == 0:
        die_with_parent()
        exec_command(argv, env, channel)
    os.close(channel.status)  # the child's copy closes at its exec
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        pid, status = os.wait()  # any child: the command, or an orphan we adopted
        if pid == child:
            exit_like(status)


# --- the whole sequence -----------------------------------------------------------------------


def main(channel: Channel, fds: list[int]) -> None:
    """Run the steps the spec asks for, then exec; any failure goes to the parent, named."""
    die_with_parent()
    spec = channel.receive()
    kinds: list[str] = spec["kinds"]
    step = "reading the spec"
    try:
        step = "joining namespaces"
        join_namespaces(spec["join"])
        if "user" in kinds:
            step = "creating the user namespace"
            unshare_user(channel)
        step = "creating namespaces"
        unshare_others(kinds)
        if spec.get("time_offsets"):
            set_time_offsets(spec["time_offsets"])
        if spec["fork"]:
            fork_into_namespace(channel)
        else:
            channel.send(events.PID, pid=os.getpid())
        step = "setting up mounts"
        if "mnt" in kinds:
            make_mounts_private(spec["propagation"])
        if spec["mount_proc"] and not spec["rootfs"]:
            mount_proc("/proc")
        if spec["hostname"] is not None:
            step = "setting the hostname"
            ksys.sethostname(spec["hostname"])
        if spec["rootfs"]:
            step = "entering the root filesystem"
            enter_rootfs(spec["rootfs"], spec["root_method"], spec["mount_proc"])
        if spec["cwd"]:
            step = "changing the directory"
            os.chdir(spec["cwd"])
        if spec["init"]:
            run_as_init(spec["argv"], spec["env"], channel)
        exec_command(spec["argv"], spec["env"], channel)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:  # noqa: BLE001  any failure, not only the kernel's, is named
        channel.fail(step, e)


def exec_command(argv: list[str], env: dict[str, str], channel: Channel) -> None:
    """Replace this process with the command; on success the status pipe closes by itself."""
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        e.filename = argv[0]  # execvpe names the last PATH entry it tried; the user typed argv[0]
        channel.fail("starting the command", e)
