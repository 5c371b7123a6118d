"""The mount lesson's experiments: propagation leaks, and why chroot alone can be escaped.

``chroot()`` changes one thing: the directory a process's path lookups start from when a path
begins with "/". The host's mounts stay in the mount table, and two well-known ways lead back to
them:

- *the double chroot*: a process that may call ``chroot()`` (CAP_SYS_CHROOT) moves its root to a
  subdirectory *without* moving its working directory into it. Its working directory is now
  outside its root, so ``..`` is never clamped: enough ``chdir("..")`` reach the real ``/``, and
  ``chroot(".")`` makes that the root again;
- */proc/PID/root*: with a /proc that shows the host's processes (no new PID namespace), the link
  of any host process leads to that process's root, which is the host's ``/``.

``pivot_root()`` plus detaching the old root leaves nothing of the host in the mount namespace, so
the double chroot climbs only to the top of the container's own root. The /proc/PID/root way is
closed by a new PID namespace (host processes are then not in /proc at all), not by pivot_root.

Each attempt runs in a fresh child in a new mount namespace (never in the caller): the child uses
labkit's own set-up step ``labkit._init.enter_rootfs``, then tries the escape, and reports the
device and inode number of the "/" it ended up in; the caller compares them with its own "/".
Run as a script (``python -I -S escape.py ROOTFS METHOD``) it is that child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":
    # Run as a script with -I -S: make the package importable (as labkit/forkserver.py does).
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from labkit import mountinfo, namespaces
from labkit.errors import BadInput
from labkit.state import state_dir

METHODS = ("chroot", "pivot_root")
CLIMB = 64  # chdir("..") this many times: more than any real directory depth below /


# --- the double-chroot escape -------------------------------------------------------------------


@dataclass(frozen=True)
class EscapeAttempt:
    """What a double-chroot escape attempt found, after entering a rootfs with *method*."""

    method: str
    mounts_on_host: int  # mounts the child saw before entering the rootfs
    mounts_inside: int  # ... after entering it
    mounts_after: int  # ... after the escape attempt
    root: tuple[int, int]  # (st_dev, st_ino) of the "/" the attempt ended in
    host_root: tuple[int, int]  # (st_dev, st_ino) of the caller's "/"

    @property
    def escaped(self) -> bool:
        """Did the attempt end in the host's root directory?"""
        return self.root == self.host_root

    def __str__(self) -> str:
        where = "the HOST's / (escaped)" if self.escaped else "the rootfs's own / (contained)"
        return (
            f"{self.method}: mounts seen on host {self.mounts_on_host}, inside "
            f"{self.mounts_inside}, after the escape attempt {self.mounts_after}; "
            f"ended in {where}"
        )


def _root_id() -> tuple[int, int]:
    st = os.stat("/")
    return (st.st_dev, st.st_ino)


def _count_mounts() -> int:
    """Mounts this process can reach: /proc/self/mountinfo lists only those below its root."""
    with open("/proc/self/mountinfo") as f:
        return sum(1 for _ in f)


def double_chroot() -> None:
    """The classic escape: chroot into a subdirectory, climb with "..", chroot to where we are."""
    # The subdirectory can be any directory: the point is that our working directory ("/" of
    # the rootfs) stays outside the new root, so the kernel never stops ".." at the root.
    os.chroot("tmp")
    for _ in range(CLIMB):
        os.chdir("..")
    os.chroot(".")


def _child(rootfs: str, method: str) -> None:
    """In a new mount namespace: enter *rootfs* as labkit's init does, then try to escape."""
    from labkit import _init  # the real set-up step, imported before we lose the host's files

    on_host = _count_mounts()
    _init.enter_rootfs(rootfs, method, proc=True)  # bind, /dev, /proc, then chroot or pivot_root
    inside = _count_mounts()
    double_chroot()
    print(
        json.dumps(
            {"on_host": on_host, "inside": inside, "after": _count_mounts(), "root": _root_id()}
        )
    )


def _check_rootfs(rootfs: str | os.PathLike) -> str:
    path = os.path.abspath(rootfs)
    if not os.path.isdir(os.path.join(path, "tmp")):
        raise BadInput(
            f"{path} is not a root filesystem with a tmp directory: build one with "
            "labkit.rootfs.build()."
        )
    return path


def attempt_escape(rootfs: str | os.PathLike, method: str) -> EscapeAttempt:
    """Enter *rootfs* with *method* ("chroot" or "pivot_root") in a new mount namespace, then try
    the double-chroot escape; say where it ended."""
    if method not in METHODS:
        raise BadInput(f"method {method!r} is not 'chroot' or 'pivot_root'.")
    path = _check_rootfs(rootfs)
    # A host Python runs the attempt: the busybox rootfs has no Python, but this process loaded
    # everything it needs before it entered the rootfs.
    result = namespaces.run([sys.executable, "-I", "-S", __file__, path, method], ["mnt"]).check()
    found = json.loads(result.stdout)
    return EscapeAttempt(
        method, found["on_host"], found["inside"], found["after"], tuple(found["root"]), _root_id()
    )


# --- the /proc/PID/root escape ------------------------------------------------------------------


@dataclass(frozen=True)
class ProcRootAttempt:
    """What ``ls /proc/PID/root/`` of a host process showed from inside a rootfs."""

    method: str
    new_pid_namespace: bool
    reached: bool  # did /proc/PID/root lead to the host's "/"?
    entries: list[str]  # what the link's directory held (empty when the PID is not there)

    def __str__(self) -> str:
        kinds = "mnt+pid" if self.new_pid_namespace else "mnt"
        verdict = "reached the HOST's /" if self.reached else "no such process in this /proc"
        return f"{self.method:<10} {kinds:<8} /proc/<host PID>/root -> {verdict}"


def attempt_proc_root(
    rootfs: str | os.PathLike, method: str, new_pid_namespace: bool, host_pid: int | None = None
) -> ProcRootAttempt:
    """List ``/proc/HOST_PID/root/`` with busybox from inside *rootfs* (a fresh /proc is mounted).

    host_pid: a host process whose root is the host's "/" (default: this process).
    """
    if method not in METHODS:
        raise BadInput(f"method {method!r} is not 'chroot' or 'pivot_root'.")
    pid = os.getpid() if host_pid is None else int(host_pid)
    kinds = ["mnt", "pid"] if new_pid_namespace else ["mnt"]
    result = namespaces.run(
        ["/bin/ls", "-a", f"/proc/{pid}/root/"],
        kinds,
        rootfs=_check_rootfs(rootfs),
        root_method=method,
        mount_proc=True,
    )
    entries = sorted(result.stdout.split()) if result.returncode == 0 else []
    reached = result.returncode == 0 and set(entries) - {".", ".."} == set(os.listdir("/"))
    return ProcRootAttempt(method, new_pid_namespace, reached, entries)


# --- propagation: a mount made in a new namespace that appears on the host ----------------------


def propagation(mount_point: str = "/", pid: int | str = "self") -> str:
    """The propagation type of *mount_point* in the mount table of *pid*, from its mountinfo.

    Field 7 onwards, up to " - ", holds the optional fields: ``shared:N`` (a member of peer group
    N), ``master:N`` (a slave of group N), none of them: private.
    """
    found = [m for m in mountinfo.mounts(pid) if m.point == mount_point]
    if not found:
        raise BadInput(f"{mount_point} is not a mount point: see /proc/self/mountinfo.")
    return found[-1].propagation  # the last one listed is the one on top


def shared_dir() -> Path:
    """The directory below the state dir that ``make_shared`` turns into a shared mount."""
    return state_dir() / "mount-lesson" / "shared"


def make_shared() -> Path:
    """Bind-mount ``shared_dir()`` onto itself and mark it shared, like a systemd host's "/".

    Done with the ``mount`` command, so the notebook's own process never mounts anything.
    """
    path = shared_dir()
    (path / "leak").mkdir(parents=True, exist_ok=True)
    if not mountinfo.is_mount_point(path):
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        subprocess.run(["mount", "--make-shared", str(path)], check=True)
    return path


def leaks(propagation: str) -> bool:
    """Mount a tmpfs on ``shared_dir()/leak`` in a new mount namespace with *propagation*;
    return whether it appeared on the host. Any mount that leaked is removed again."""
    path = make_shared()
    target = path / "leak"
    namespaces.run(
        ["mount", "-t", "tmpfs", "labkit-leak", str(target)], ["mnt"], propagation=propagation
    ).check()
    leaked = mountinfo.is_mount_point(target)
    if leaked:
        subprocess.run(["umount", str(target)], check=True)
    return leaked


def remove_shared() -> None:
    """Undo ``make_shared``: unmount and remove the lesson's directory."""
    path = shared_dir()
    for point in (path / "leak", path):
        while mountinfo.is_mount_point(point):
            subprocess.run(["umount", str(point)], check=True)
    for sub in (path / "leak", path):
        if sub.is_dir():
            sub.rmdir()
    if path.parent.is_dir() and not any(path.parent.iterdir()):
        path.parent.rmdir()


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
