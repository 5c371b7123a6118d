"""Namespaces: what a process can see.

A namespace wraps one kind of global resource (the hostname, the process ids, the mount table,
the network stack, ...) so that the processes inside see their own instance of it. Each process
belongs to exactly one namespace of every kind; ``/proc/PID/ns/KIND`` is a handle to it, and two
processes share a namespace exactly when those handles have the same inode number.

This module asks the kernel for namespaces in three ways, all in a single-threaded child process
(``labkit/_init.py``, forked by ``labkit/forkserver.py``), never in the caller's own:
- ``spawn``/``run``: ``unshare()`` new namespaces, then exec a command in them;
- ``enter``: ``setns()`` into the namespaces of a running process (what ``nsenter`` does);
- ``persist``: bind-mount a namespace file so the namespace outlives its processes (what
  ``ip netns add`` does).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from . import channel, forkserver, mountinfo
from . import sys as ksys
from .errors import BadInput, LabkitError, MissingFeature, NotRoot
from .state import check_name, state_dir


@dataclass(frozen=True)
class Kind:
    """One kind of namespace: its name in /proc/PID/ns, its clone flag, what it isolates."""

    name: str
    flag: int
    isolates: str
    since: str  # the kernel release that completed it


# What each kind in ksys.CLONE_FLAGS isolates, and the kernel release that completed it.
_ABOUT = {
    "mnt": ("the mount table: which file systems are mounted where", "2.4.19"),
    "uts": ("the hostname and NIS domain name", "2.6.19"),
    "ipc": ("System V IPC objects and POSIX message queues", "2.6.19"),
    "pid": ("process ids: the first process inside is PID 1", "2.6.24"),
    "net": ("interfaces, addresses, routes, firewall rules, ports", "2.6.29"),
    "user": ("user and group ids, and the capabilities that go with them", "3.8"),
    "cgroup": ("the view of the cgroup tree: its root is the process's cgroup", "4.6"),
    "time": ("the monotonic and boot-time clocks", "5.6"),
}
KINDS: dict[str, Kind] = {k: Kind(k, flag, *_ABOUT[k]) for k, flag in ksys.CLONE_FLAGS.items()}

# Creating a PID or time namespace changes what the caller's *children* get, so the helper forks.
_FORKING_KINDS = {"pid", "time"}

DEFAULT_UID_MAP = "0 100000 65536"
SETUP_TIMEOUT = 30.0  # seconds the helper child may take to set up before we give up


def parse_kinds(kinds: str | Iterable[str]) -> list[str]:
    """Check namespace kind names ("uts,pid" or ["uts", "pid"]) and return them in /proc order."""
    if isinstance(kinds, str):
        kinds = [k for k in kinds.replace(",", " ").split() if k]
    wanted = list(kinds)
    for kind in wanted:
        if kind not in KINDS:
            raise BadInput(f"unknown namespace kind {kind!r}: choose from {', '.join(KINDS)}.")
    return [k for k in KINDS if k in wanted]


# --- looking at namespaces ----------------------------------------------------------------------


def _ns_path(pid: int | str, kind: str) -> str:
    return f"/proc/{pid}/ns/{kind}"


def ns_id(pid: int | str, kind: str) -> int:
    """The inode number of the *kind* namespace of process *pid* (same number: same namespace)."""
    parse_kinds([kind])
    try:
        link = os.readlink(_ns_path(pid, kind))  # e.g. "uts:[4026531838]"
    except FileNotFoundError:
        raise BadInput(f"there is no process with PID {pid}: check the number with ps.") from None
    return int(link[link.index("[") + 1 : -1])


def ns_ids(pid: int | str = "self") -> dict[str, int]:
    """The inode number of every namespace of process *pid*."""
    return {kind: ns_id(pid, kind) for kind in KINDS}


def shared(pid_a: int | str, pid_b: int | str) -> dict[str, bool]:
    """For each kind: do the two processes share that namespace?"""
    a, b = ns_ids(pid_a), ns_ids(pid_b)
    return {kind: a[kind] == b[kind] for kind in KINDS}


def describe(pid: int | str, other: int | str | None = None) -> str:
    """A short table of a process's namespaces, or of what two processes share."""
    ids = ns_ids(pid)
    if other is None:
        return "\n".join(f"{k:<7}{k}:[{ids[k]}]" for k in KINDS)
    same = shared(pid, other)
    return "\n".join(f"{k:<7}{'shared' if same[k] else 'separate'}" for k in KINDS)


# --- uid and gid maps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IdMap:
    """One line of /proc/PID/uid_map: ids inside..inside+count map to outside..outside+count."""

    inside: int
    outside: int
    count: int

    def __str__(self) -> str:
        return f"{self.inside} {self.outside} {self.count}"


def parse_id_map(text: str | Sequence[IdMap]) -> list[IdMap]:
    """Check an id map ("0 100000 65536", lines separated by newlines or commas)."""
    if not isinstance(text, str):
        return list(text)
    lines = [ln.strip() for ln in text.replace(",", "\n").splitlines() if ln.strip()]
    maps = []
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or not all(p.isdigit() for p in parts) or int(parts[2]) == 0:
            raise BadInput(
                f"id map line {line!r} is not 'INSIDE OUTSIDE COUNT' with a count above 0, "
                "e.g. '0 100000 65536'."
            )
        maps.append(IdMap(*map(int, parts)))
    if not maps:
        raise BadInput(
            "an id map needs at least one line 'INSIDE OUTSIDE COUNT', e.g. '0 100000 65536'."
        )
    return maps


def read_id_map(pid: int | str, which: str = "uid") -> list[IdMap]:
    """The uid_map (or gid_map) the kernel holds for process *pid*."""
    return parse_id_map(Path(f"/proc/{pid}/{which}_map").read_text())


def _write_id_maps(pid: int, uid_map: list[IdMap], gid_map: list[IdMap]) -> None:
    """Tell the kernel how ids inside the new user namespace map to ids outside (done once)."""
    if os.geteuid() != 0:
        # Without CAP_SETGID outside, the kernel takes a gid map only once setgroups() is denied
        # inside, so that dropping a group cannot be used to gain access.
        Path(f"/proc/{pid}/setgroups").write_text("deny")
    Path(f"/proc/{pid}/uid_map").write_text("\n".join(map(str, uid_map)) + "\n")
    Path(f"/proc/{pid}/gid_map").write_text("\n".join(map(str, gid_map)) + "\n")


# --- processes in namespaces --------------------------------------------------------------------


class Process:
    """A command running in namespaces that ``spawn`` or ``enter`` set up.

    ``pid`` is the command's PID as the host sees it (with ``init=True``, the init's). When a
    PID namespace was made, a relay process sits between the caller and the command (like
    ``unshare --fork``); ``wait`` and ``returncode`` report the command's own exit.
    """

    def __init__(self, popen: subprocess.Popen, pid: int, argv: list[str]):
        self.popen = popen
        self.pid = pid
        self.argv = argv

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def stdin(self):
        return self.popen.stdin

    @property
    def stdout(self):
        return self.popen.stdout

    @property
    def stderr(self):
        return self.popen.stderr

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def communicate(self, input=None, timeout: float | None = None):
        return self.popen.communicate(input, timeout)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the command; with the first process of a PID namespace, all of it dies."""
        # The relay (if any) sees its child die, reaps it and exits: once wait() returns, the
        # command is gone too. (Killing the relay would also kill the command, through
        # PR_SET_PDEATHSIG, but asynchronously.)
        self.signal(signal.SIGKILL)

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait up to *timeout* seconds, then SIGKILL; always reaps."""
        self.terminate()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
        try:
            self.wait(5)
        except subprocess.TimeoutExpired:  # a stopped or stuck relay
            self.popen.kill()
            self.wait()
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream:
                stream.close()

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"exited {self.returncode}"
        return f"<labkit Process pid={self.pid} {' '.join(self.argv)!r} {state}>"


@dataclass
class Result:
    """What ``run`` returns: the command's exit status and its captured output."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    pid: int

    def check(self) -> Result:
        """Raise LabkitError if the command failed; return self otherwise."""
        if self.returncode != 0:
            raise LabkitError(
                f"{' '.join(self.argv)!r} exited with status {self.returncode}: "
                f"{self.stderr.strip()}"
            )
        return self


def _resolve_join(join: Mapping[str, str | int] | None) -> dict[str, str]:
    """{kind: path or pid} -> {kind: path}, each checked to exist."""
    paths = {}
    for kind, where in (join or {}).items():
        parse_kinds([kind])
        path = _ns_path(where, kind) if isinstance(where, int) else str(where)
        if not os.path.exists(path):
            what = f"process {where}" if isinstance(where, int) else path
            raise BadInput(f"cannot join the {kind} namespace of {what}: it does not exist.")
        paths[kind] = path
    return paths


def _check_privilege(kinds: list[str], join: dict[str, str]) -> None:
    """Say up front, in one sentence, when the kernel would refuse for lack of privilege."""
    if os.geteuid() == 0:
        return
    if join:
        raise NotRoot("entering another process's namespaces needs root: run it with sudo.")
    privileged = [k for k in kinds if k != "user"]
    if privileged and "user" not in kinds:
        raise NotRoot(
            f"creating {', '.join(privileged)} namespaces needs root (CAP_SYS_ADMIN): run it "
            "with sudo, or add the 'user' kind to create them inside a new user namespace."
        )


def spawn(
    argv: Sequence[str],
    kinds: str | Iterable[str] = (),
    *,
    join: Mapping[str, str | int] | None = None,
    hostname: str | None = None,
    uid_map: str | Sequence[IdMap] | None = None,
    gid_map: str | Sequence[IdMap] | None = None,
    rootfs: str | os.PathLike | None = None,
    root_method: str = "pivot_root",
    mount_proc: bool | None = None,
    propagation: str = "private",
    time_offsets: Mapping[str, float] | None = None,
    init: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin=None,
    stdout=None,
    stderr=None,
    text: bool = True,
) -> Process:
    """Start *argv* in new namespaces of the given *kinds*; return once it has been exec'd.

    join: namespaces to enter first, ``{kind: pid or namespace file}``.
    hostname: set in the new UTS namespace. uid_map/gid_map: for a new user namespace (default:
    root inside is uid 100000 outside, or your own uid when you are not root).
    rootfs: a directory to make the root with *root_method* "pivot_root" or "chroot" (needs mnt).
    mount_proc: mount a fresh /proc (default: when there are new pid and mnt namespaces).
    propagation: how the new mount table relates to the host's: "private" (default), "slave",
    or "unchanged" (mounts may leak to the host where its mounts are shared: the mount lesson).
    time_offsets: ``{"monotonic": s, "boottime": s}`` for a new time namespace.
    init: keep a small init as PID 1 that reaps orphans; the command runs as its child.
    """
    argv = [os.fspath(a) for a in argv]
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise BadInput("the command must be a non-empty list of strings, e.g. ['hostname'].")
    kinds = parse_kinds(kinds)
    join_paths = _resolve_join(join)
    _check_privilege(kinds, join_paths)

    if propagation not in ("private", "slave", "unchanged"):
        raise BadInput(
            f"propagation {propagation!r} is not one of 'private', 'slave', 'unchanged'."
        )
    if root_method not in ("pivot_root", "chroot"):
        raise BadInput(f"root_method {root_method!r} is not 'pivot_root' or 'chroot'.")
    if hostname is not None and "uts" not in kinds:
        raise BadInput(
            "setting a hostname needs a new uts namespace: add 'uts' to the kinds, "
            "or the host's own hostname would change."
        )
    if hostname is not None and not (0 < len(hostname.encode()) <= 64):
        raise BadInput(f"hostname {hostname!r} must be 1 to 64 bytes long.")
    if rootfs is not None:
        rootfs = os.path.abspath(rootfs)
        if "mnt" not in kinds:
            raise BadInput(
                "a root filesystem needs a new mnt namespace (add 'mnt'), so that its "
                "mounts do not land on the host."
            )
        if not os.path.isdir(rootfs):
            raise BadInput(
                f"root filesystem {rootfs} is not a directory: build one with "
                "labkit.rootfs.build() or 'labkit rootfs build'."
            )
        if os.statvfs(rootfs).f_flag & os.ST_NOEXEC:
            raise BadInput(
                f"root filesystem {rootfs} is on a mount with noexec, so the kernel "
                "would refuse to run anything in it: build it with "
                "labkit.rootfs.build(), which mounts a tmpfs that allows exec, or "
                "put it on another filesystem."
            )
    if mount_proc is None:
        mount_proc = {"pid", "mnt"} <= set(kinds)
    if mount_proc and "mnt" not in kinds:
        raise BadInput(
            "mounting a fresh /proc needs a new mnt namespace (add 'mnt'), or the "
            "host's /proc would be replaced."
        )
    if time_offsets and "time" not in kinds:
        raise BadInput("clock offsets need a new time namespace: add 'time' to the kinds.")
    for clock in time_offsets or {}:
        if clock not in ("monotonic", "boottime"):
            raise BadInput(f"clock {clock!r} cannot be offset: use 'monotonic' or 'boottime'.")
    uids = gids = []
    if "user" in kinds:
        own = DEFAULT_UID_MAP if os.geteuid() == 0 else f"0 {os.geteuid()} 1"
        uids = parse_id_map(uid_map if uid_map is not None else own)
        own_gid = DEFAULT_UID_MAP if os.geteuid() == 0 else f"0 {os.getegid()} 1"
        gids = parse_id_map(gid_map if gid_map is not None else (uid_map or own_gid))
    elif uid_map is not None or gid_map is not None:
        raise BadInput("uid and gid maps belong to a new user namespace: add 'user' to the kinds.")
    for kind in ("pid", "time", "user"):
        if kind in join_paths and kind in kinds:
            raise BadInput(f"cannot both join and create a {kind} namespace: choose one.")
    _check_kernel_has(kinds)

    spec = {
        "argv": argv,
        "kinds": kinds,
        "join": join_paths,
        "fork": bool(_FORKING_KINDS & (set(kinds) | set(join_paths))),
        "hostname": hostname,
        "rootfs": rootfs,
        "root_method": root_method,
        "mount_proc": mount_proc,
        "propagation": propagation,
        "time_offsets": dict(time_offsets or {}),
        "init": init,
        "env": dict(env if env is not None else _default_env(rootfs)),
        "cwd": cwd,
    }
    return _start(spec, uids, gids, stdin, stdout, stderr, text)


def _default_env(rootfs) -> dict[str, str]:
    """The caller's environment, with a PATH that works inside a busybox root filesystem too."""
    env = dict(os.environ)
    if rootfs:
        env = {k: v for k, v in env.items() if k in ("TERM", "LANG", "LC_ALL")}
        env["HOME"] = "/root"
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def _check_kernel_has(kinds: list[str]) -> None:
    for kind in kinds:
        if not os.path.exists(_ns_path("self", kind)):
            raise MissingFeature(
                f"this kernel has no {kind} namespaces (added in Linux {KINDS[kind].since}): "
                "use a newer kernel, e.g. the lab VM (see labkit doctor)."
            )


def _start(spec, uids, gids, stdin, stdout, stderr, text) -> Process:
    """Have the fork server start the helper child, and walk it through set-up."""
    popen, pipes = forkserver.launch(
        "namespaces", stdin=stdin, stdout=stdout, stderr=stderr, text=text
    )
    try:
        with pipes:
            pipes.send(spec)
            pid = _follow_setup(popen, pipes, uids, gids)
    except BaseException:
        if popen.poll() is None:
            popen.kill()
        popen.wait()
        raise
    return Process(popen, pid, spec["argv"])


def _follow_setup(popen, pipes: channel.Parent, uids, gids) -> int:
    """Answer the child's messages until its exec closes the pipe; return the command's PID."""
    pid = None
    for event in pipes.events(SETUP_TIMEOUT, "the namespace helper"):
        if event["event"] == channel.USERNS_READY:
            _write_id_maps(popen.pid, uids, gids)
            pipes.send({"event": channel.MAPS_WRITTEN})
        elif event["event"] == channel.PID:
            pid = event["pid"]
        elif event["event"] == channel.ERROR:
            raise _error_from(channel.StepFailed.from_event(event))
    if pid is None:
        popen.wait()
        raise LabkitError(
            f"the namespace helper exited with status {popen.returncode} before starting the "
            "command (see its stderr)."
        )
    return pid


def _error_from(failed: channel.StepFailed) -> Exception:
    """Rebuild the child's failure as an OSError that keeps its errno, with a hint where we can."""
    if failed.step == "starting the command" and failed.errno == 2:
        return BadInput(
            f"command not found: {failed.filename or failed.message} (inside the new "
            "namespaces; check the PATH and the root filesystem)."
        )
    if not failed.errno:  # not the kernel's refusal: a bug or a bad value
        return LabkitError(f"{failed.message} ({failed.type}, while {failed.step})")
    err = OSError(failed.errno, f"{failed.message} (while {failed.step})")
    err.filename = failed.filename
    return err


def run(
    argv: Sequence[str],
    kinds: str | Iterable[str] = (),
    *,
    timeout: float = 30.0,
    input: str | None = None,
    **options,
) -> Result:
    """Run *argv* in new namespaces (see ``spawn``), wait for it, and return its output."""
    proc = spawn(
        argv,
        kinds,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **options,
    )
    with proc:
        try:
            out, err = proc.communicate(input, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise LabkitError(
                f"{' '.join(proc.argv)!r} did not finish within {timeout:g} s and was killed."
            ) from None
    return Result(list(proc.argv), proc.returncode, out, err, proc.pid)


def enter(
    target: int | str,
    argv: Sequence[str],
    kinds: str | Iterable[str] | None = None,
    **options,
) -> Process:
    """Start *argv* inside the namespaces of process *target* (a PID) or of a persisted name.

    kinds: which namespaces to enter (default: every kind in which the target differs from us).
    """
    if isinstance(target, str) and not target.isdigit():
        where = persisted().get(target)
        if where is None:
            raise BadInput(
                f"no namespaces are kept under the name {target!r}: see 'labkit ns list'."
            )
        files = {k: str(_persist_dir(target) / k) for k in where}
    else:
        pid = int(target)
        if not os.path.exists(f"/proc/{pid}"):
            raise BadInput(f"there is no process with PID {pid}: check the number with ps.")
        files = {k: _ns_path(pid, k) for k in KINDS}
    mine = ns_ids()
    if kinds is None:
        chosen = [k for k, path in files.items() if os.stat(path).st_ino != mine[k]]
    else:
        chosen = parse_kinds(kinds)
        missing = [k for k in chosen if k not in files]
        if missing:
            raise BadInput(f"{target!r} keeps no {', '.join(missing)} namespace to enter.")
    return spawn(argv, (), join={k: files[k] for k in chosen}, **options)


# --- keeping namespaces alive -------------------------------------------------------------------


def _persist_root() -> Path:
    return state_dir() / "ns"


def _persist_dir(name: str) -> Path:
    return _persist_root() / check_name(name, "namespace name")


def _ensure_private_root() -> Path:
    """The directory for namespace files, as a private mount point of its own.

    A mount namespace file may only be bound where the bind cannot propagate into that same
    namespace (a reference loop the kernel refuses), so the directory is made private first.
    """
    root = _persist_root()
    root.mkdir(parents=True, exist_ok=True)
    if not mountinfo.is_mount_point(root):
        ksys.mount(str(root), str(root), None, ksys.MS_BIND)
        ksys.mount(None, str(root), None, ksys.MS_PRIVATE)
    return root


def persist(pid: int, name: str, kinds: str | Iterable[str] | None = None) -> list[Path]:
    """Bind-mount the namespace files of *pid* under *name*, so the namespaces outlive it.

    The kernel frees a namespace when nothing refers to it any more: no process, no open file
    and no mount. A bind mount of /proc/PID/ns/KIND is such a reference.
    """
    if os.geteuid() != 0:
        raise NotRoot("keeping namespaces alive needs root (it mounts): run it with sudo.")
    if not os.path.exists(f"/proc/{int(pid)}"):
        raise BadInput(f"there is no process with PID {pid}: check the number with ps.")
    if kinds is None:  # every namespace in which the process differs from us
        mine = ns_ids()
        chosen = [k for k, ino in ns_ids(pid).items() if ino != mine[k]]
    else:
        chosen = parse_kinds(kinds)
    target_dir = _persist_dir(name)
    if target_dir.exists():
        raise BadInput(
            f"namespaces are already kept under {name!r}: release them first "
            f"(labkit ns release {name})."
        )
    _ensure_private_root()
    target_dir.mkdir()
    made = []
    try:
        for kind in chosen:
            target = target_dir / kind
            target.touch()
            ksys.mount(_ns_path(pid, kind), str(target), None, ksys.MS_BIND)
            made.append(target)
    except BaseException:
        release(name)
        raise
    return made


def persisted() -> dict[str, list[str]]:
    """The names under which namespaces are kept, with the kinds kept for each."""
    root = _persist_root()
    if not root.is_dir():
        return {}
    points = {Path(m.point) for m in mountinfo.mounts()}
    return {
        d.name: [k for k in KINDS if (d / k) in points]
        for d in sorted(root.iterdir())
        if d.is_dir()
    }


def release(name: str) -> None:
    """Unmount the namespace files kept under *name*; the kernel frees the unused namespaces."""
    target_dir = _persist_dir(name)
    if not target_dir.is_dir():
        raise BadInput(f"no namespaces are kept under the name {name!r}: see 'labkit ns list'.")
    points = {Path(m.point) for m in mountinfo.mounts()}
    for entry in target_dir.iterdir():
        if entry in points:
            ksys.umount2(str(entry), ksys.MNT_DETACH)
        entry.unlink()
    target_dir.rmdir()


# --- clean-up -----------------------------------------------------------------------------------


def _helper_processes() -> list[int]:
    """PIDs of this state directory's namespace helpers (relays and inits) still running."""
    return [pid for pid, comm in forkserver.processes() if comm == forkserver.ENTRIES["namespaces"]]


def leftovers() -> list[str]:
    """Kept namespaces and helper processes that are still there."""
    found = [f"namespaces: {name} ({' '.join(kinds)})" for name, kinds in persisted().items()]
    found += [f"process: {pid} (labkit namespace helper)" for pid in _helper_processes()]
    return found


def remove_leftovers() -> None:
    """Kill helper processes (their commands die with them) and release every kept namespace."""
    for pid in _helper_processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for name in persisted():
        release(name)
