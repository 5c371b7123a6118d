"""A container's life cycle, in OCI's words: create, start, state, kill, delete.

    create  the init child runs every set-up step, then waits on the exec FIFO   -> "created"
    start   opens the FIFO: the init goes on and execs the process               -> "running"
    kill    sends a signal to the container's PID 1; once it has exited         -> "stopped"
    delete  removes what is left: the process (with force), cgroup, state

The state directory (``<labkit state dir>/containers/<id>``, or below ``--root``) is the truth:
``state.json`` there records the PID and when that process started, so any later process (a
second ``labkit-runtime``, ``labkit cleanup`` after a crash) finds the container again, and a
recycled PID is not mistaken for it. A created or running container is nobody's child and has
no parent-death signal: it outlives the process that created it, as with runc.
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .. import channel, forkserver
from ..cgroups import Cgroup, devices
from ..cgroups.base import write
from ..errors import BadInput, LabkitError, require_root
from ..proc import stat as proc_stat
from ..state import check_name, state_dir
from . import seccomp
from . import steps as steps_mod
from .spec import OCI_VERSION, Spec, SpecError, check, load

SETUP_TIMEOUT = 30.0  # seconds the init may take to set up (emulated kernels are slow)
START_TIMEOUT = 30.0


class ContainerError(LabkitError):
    """A container cannot be created or driven; ``step`` names the set-up step that failed."""

    def __init__(self, message: str, step: str | None = None):
        super().__init__(message)
        self.step = step


class NotFound(ContainerError):
    """No container of that id is in the state directory."""


def containers_root(root: str | os.PathLike | None = None) -> Path:
    """Where containers' state directories are: *root* (``--root``), else below labkit's."""
    return Path(root) if root is not None else state_dir() / "containers"


@dataclass(eq=False)  # a handle: two are the same container only if they are one object
class Container:
    """One container, as its state directory records it."""

    id: str
    dir: Path
    record: dict

    @property
    def pid(self) -> int:
        return self.record["pid"]

    @functools.cached_property
    def cgroup(self) -> Cgroup | None:
        """Its cgroup, found once (finding the host's cgroup layout reads /proc)."""
        name = self.record.get("cgroup")
        return Cgroup(name) if name else None

    @property
    def fifo(self) -> Path:
        return self.dir / "exec.fifo"

    def alive(self) -> bool:
        """Whether the recorded process still runs (not a zombie, not a recycled PID)."""
        stat = proc_stat(self.pid)
        return stat is not None and stat[0] != "Z" and stat[1] == self.record["start_time"]

    @property
    def status(self) -> str:
        if not self.alive():
            return "stopped"
        return "created" if self.fifo.exists() else "running"

    def state(self) -> dict:
        """The OCI state: what `runc state` prints."""
        status = self.status
        out = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "pid": self.pid if status != "stopped" else 0,
            "status": status,
            "bundle": self.record["bundle"],
            "rootfs": self.record["rootfs"],
            "created": self.record["created"],
            "owner": "",
        }
        if self.record.get("annotations"):
            out["annotations"] = self.record["annotations"]
        return out


def get(container_id: str, root: str | os.PathLike | None = None) -> Container:
    """The container *container_id* from its state directory; NotFound if there is none."""
    d = containers_root(root) / check_name(container_id, "container id")
    try:
        record = json.loads((d / "state.json").read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound("container does not exist") from None
    except (OSError, ValueError):
        raise ContainerError(
            f"the state of container {container_id} in {d} is unreadable: "
            "remove it with labkit cleanup."
        ) from None
    return Container(container_id, d, record)


def list_containers(root: str | os.PathLike | None = None) -> list[Container]:
    """Every container with a state directory below *root*."""
    base = containers_root(root)
    found = []
    if base.is_dir():
        for entry in sorted(base.iterdir()):
            try:
                found.append(get(entry.name, root))
            except (ContainerError, BadInput):
                continue  # half-written by a create still running, or not a container
    return found


# --- create ---------------------------------------------------------------------------------------


def create(
    container_id: str,
    bundle: str | os.PathLike = ".",
    *,
    spec: Spec | None = None,
    root: str | os.PathLike | None = None,
    pid_file: str | os.PathLike | None = None,
    skip: list[str] | tuple[str, ...] = (),
    image: str | None = None,
    console_socket: str | os.PathLike | None = None,
    stdin=None,
    stdout=None,
    stderr=None,
) -> Container:
    """Set up container *container_id* from *bundle* (or *spec*) and leave it "created".

    Every step runs except those in *skip* (names from ``steps.NAMES``); the process waits for
    ``start``. With process.terminal, the container's stdio is a pseudo-terminal whose master
    side is sent to the unix socket *console_socket* (as runc does). With *image* (a name in
    labkit's image store) the root is an overlay of the
    image's layers with a fresh writable layer on top, in place of the spec's root.path. On any
    failure everything made so far is undone and ContainerError names the step.
    """
    require_root("creating a container")
    check_name(container_id, "container id")
    bundle = Path(bundle).absolute()
    if spec is None:
        spec = load(bundle, check_root=image is None)
    else:
        check(spec)  # a Spec made in Python is checked as a config.json is
        if not os.path.isabs(spec.root.path):
            spec.root.path = str(bundle / spec.root.path)
        if image is None and not os.path.isdir(spec.root.path):
            raise SpecError(
                "root.path",
                f"{spec.root.path} is not a directory: put the "
                "container's root filesystem there (labkit rootfs build DIR).",
            )
    _check_skip(skip)
    if spec.process.terminal and console_socket is None:
        raise ContainerError(
            "cannot allocate tty if labkit-runtime will detach without setting console socket"
        )
    if console_socket is not None and not spec.process.terminal:
        raise ContainerError(
            "cannot use console socket if labkit-runtime will not allocate "
            "tty: set process.terminal to true"
        )
    from .spec import resource_limits

    limits = resource_limits(spec)
    d = _make_state_dir(containers_root(root) / container_id)
    cgroup = device_cgroup = proc = image_root = console = None
    pid = None
    times: dict[str, float] = {}  # seconds each set-up step took, for the lessons' plot
    try:
        _make_exec_fifo(d / "exec.fifo", spec)
        if console_socket is not None:
            console = _connect_console(console_socket)
        if image is not None:
            from .. import images

            image_root = f"ctr-{container_id}"
            spec.root.path = str(images.mount_root(image, image_root).merged)
        if "join_cgroup" not in skip:
            began = time.perf_counter()
            cgroup = Cgroup.create(f"ctr-{container_id}", **limits)
            device_cgroup = devices.restrict(cgroup, _device_rules(spec))
            times["join_cgroup"] = time.perf_counter() - began
        groups = [g for g in (cgroup, device_cgroup) if g is not None]
        proc, pid = _start_init(
            spec, d, cgroup, groups, skip, console, stdin, stdout, stderr, times
        )
        record = {
            "id": container_id,
            "pid": pid,
            "start_time": proc_stat(pid)[1],
            "bundle": str(bundle),
            "rootfs": spec.root.path,
            "created": _now(),
            "annotations": spec.annotations,
            "cgroup": cgroup.name if cgroup else None,
            "devices_cgroup": str(device_cgroup.dir) if device_cgroup else None,
            "image_root": image_root,
            "skipped": list(skip),
            "step_times": times,
        }
        _write_atomic(d / "state.json", json.dumps(record))
        if pid_file is not None:
            _write_atomic(Path(pid_file).absolute(), str(pid))
    except BaseException:
        _undo(pid, proc, [g for g in (cgroup, device_cgroup) if g], d, image_root)
        raise
    finally:
        if console is not None:
            console.close()  # the init has its own copy
    c = Container(container_id, d, record)
    c.cgroup = cgroup  # the one just made: its monitor need not look for the layout again
    return c


def _make_state_dir(d: Path) -> Path:
    """The container's state directory, made below the root (made too if need be)."""
    for _ in range(100):
        d.parent.mkdir(parents=True, exist_ok=True)
        try:
            d.mkdir()
            return d
        except FileExistsError:
            raise ContainerError("container with given ID already exists") from None
        except FileNotFoundError:
            continue  # the last other container's remove took the root away meanwhile: again
    raise ContainerError(f"cannot make {d}: its parent keeps disappearing.")


def _connect_console(path: str | os.PathLike) -> socket.socket:
    """Connect to the caller's console socket; the init sends the terminal's master over it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.fspath(path))
    except OSError as e:
        sock.close()
        raise BadInput(
            f"cannot connect to the console socket {path}: {e.strerror}; give the "
            "path of a listening unix socket."
        ) from None
    return sock


def _device_rules(spec: Spec) -> list[str]:
    """linux.resources.devices as device rules (after "deny all", before runc's defaults)."""
    rules = spec.linux.resources.devices if spec.linux.resources else []
    return [devices.rule(r.allow, r.type, r.major, r.minor, r.access) for r in rules]


def _make_exec_fifo(path: Path, spec: Spec) -> None:
    """The FIFO `start` opens; owned by the container's root, who opens it to write."""
    os.mkfifo(path)
    os.chmod(path, 0o622)  # mkfifo's mode is cut by the umask
    uid = _host_id(spec.linux.uid_mappings, spec.process.user.uid)
    gid = _host_id(spec.linux.gid_mappings, spec.process.user.gid)
    os.chown(path, uid, gid)


def _host_id(mappings, inside: int) -> int:
    """The host's id for *inside*, through a user namespace's map (no map: the same id)."""
    for m in mappings:
        if m.container_id <= inside < m.container_id + m.size:
            return m.host_id + inside - m.container_id
    return inside if not mappings else 65534  # unmapped: the kernel's overflow id


def _check_skip(skip) -> None:
    for name in skip:
        if name not in steps_mod.NAMES:
            raise BadInput(
                f"there is no set-up step {name!r}: choose from {', '.join(steps_mod.NAMES)}."
            )
        if name in steps_mod.REQUIRED:
            raise BadInput(
                f"the step {name!r} cannot be left out: without it there is no container to start "
                "(or, for the namespace steps, the host's own mount table would be changed)."
            )


def _now() -> str:
    """The time now in RFC 3339, UTC, to the microsecond (what runc's state "created" holds)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _start_init(
    spec, d, cgroup, groups, skip, console, stdin, stdout, stderr, times
) -> tuple[subprocess.Popen, int]:
    """Have the fork server start the init in its cgroup, and follow it to "created".

    join_cgroup comes before the init makes any namespace, so that everything it makes and every
    process it forks is counted and limited from the start. It has two halves, neither of which
    makes the kernel wait for a grace period as writing the init's PID into cgroup.procs would:
    the init is born in the cgroup2 directory (clone3's CLONE_INTO_CGROUP), and it moves itself
    into each v1 hierarchy (0 into ``tasks``: see ``Cgroup.tasks_files``), first thing.
    """
    unified = cgroup.dir("") if cgroup is not None else None  # v2, or hybrid's cgroup2
    cgroup_fd = os.open(unified, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if unified else None
    # open_exec_fifo: the init gets a handle, not the path; its user may not reach our state dir.
    fifo_fd = os.open(d / "exec.fifo", os.O_PATH | os.O_CLOEXEC)
    try:
        proc, pipes = forkserver.launch(
            "container",
            [fifo_fd, *([console.fileno()] if console else [])],
            cgroup=cgroup_fd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )
    finally:
        os.close(fifo_fd)
        if cgroup_fd is not None:
            os.close(cgroup_fd)
    with pipes:
        try:
            if unified is not None and not proc.in_cgroup:  # clone3 refused: moved the old way
                began = time.perf_counter()
                write(unified / "cgroup.procs", str(proc.pid))
                times["join_cgroup"] += time.perf_counter() - began
            tasks = [str(f) for group in groups for f in group.tasks_files()]
            # The filter as check() had libseccomp compile it: the init only hands it to the kernel.
            sc = seccomp.program(spec.linux.seccomp) if spec.linux.seccomp is not None else None
            pipes.send({"config": spec.to_dict(), "skip": list(skip), "join": tasks, "seccomp": sc})
            pid = _follow(proc, pipes, spec, skip, times)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise
    return proc, pid


def _follow(proc, pipes: channel.Parent, spec: Spec, skip, times: dict) -> int:
    """Answer the init's messages until "created" (or exec); return the container's PID.

    *times* gets how long each step took: the parent's own, and the init's (sent with "created").
    """
    pid = None
    try:
        for event in pipes.events(SETUP_TIMEOUT, "the container's init"):
            if event["event"] == channel.USERNS_READY:
                if "write_id_maps" not in skip:
                    began = time.perf_counter()
                    _write_id_maps(proc.pid, spec)
                    times["write_id_maps"] = time.perf_counter() - began
                pipes.send({"event": channel.MAPS_WRITTEN})
            elif event["event"] == channel.PID:
                pid = event["pid"]
                proc.wait()  # the half that forked PID 1 exits at once
            elif event["event"] == channel.CREATED and pid is not None:
                for step, seconds in event.get("times", {}).items():  # join_cgroup: both halves
                    times[step] = times.get(step, 0.0) + seconds
                return pid
            elif event["event"] == channel.ERROR:
                raise _set_up_failed(channel.StepFailed.from_event(event))
    except LabkitError:
        if pid:
            kill_process(pid)
        raise
    if pid is None:
        proc.wait()
        raise ContainerError(
            f"the container's init exited with status {proc.returncode} "
            "before it was set up (see its stderr)."
        )
    return pid  # exec'd: wait_for_start was left out


def _set_up_failed(failed: channel.StepFailed) -> ContainerError:
    """The init's failure as one sentence naming the step (and the exception, if not the OS's)."""
    message = failed.message + (f": {failed.filename}" if failed.filename else "")
    kind = (
        ""
        if failed.type in ("OSError", "FileNotFoundError", "PermissionError")
        else (f" ({failed.type})")
    )
    return ContainerError(
        f"container set-up failed at step {failed.step}: {message}{kind}", step=failed.step
    )


def _write_id_maps(pid: int, spec: Spec) -> None:
    """write_id_maps: how ids inside the new user namespace map onto ids outside."""
    for name, maps in (("uid_map", spec.linux.uid_mappings), ("gid_map", spec.linux.gid_mappings)):
        text = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)
        Path(f"/proc/{pid}/{name}").write_text(text)


def kill_process(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_dead(container: Container, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while container.alive():
        if time.monotonic() > deadline:
            raise ContainerError(
                f"container {container.id} (PID {container.pid}) is still there "
                f"{timeout:g} s after SIGKILL: look for it in state D with ps."
            )
        time.sleep(0.005)


def _undo(pid, proc, groups, d: Path, image_root: str | None) -> None:
    """Take back a half-made container: its process, cgroup, root and state directory."""
    if pid:
        kill_process(pid)
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    for group in groups:
        group.remove()  # the first kills whatever is left, and waits until it is empty
    if image_root is not None:
        _unmount_image_root(image_root)
    shutil.rmtree(d, ignore_errors=True)
    try:
        d.parent.rmdir()
    except OSError:
        pass


def _unmount_image_root(name: str) -> None:
    from .. import images

    if (images.roots_dir() / name).exists():
        images.unmount_root(name)


# --- exec: a process that joins a running container ----------------------------------------------

# What `exec` leaves out: the steps that built the container's root, /dev, hostname and paths.
# The new process enters what they made, by joining the container's namespaces.
EXEC_SKIP = (
    "make_root_private",
    "bind_rootfs",
    "mount_filesystems",
    "create_devices",
    "link_dev_symlinks",
    "pivot_root",
    "set_hostname",
    "write_sysctls",
    "mount_readonly_paths",
    "mask_paths",
    "remount_root_readonly",
    "wait_for_start",
)


def exec_in(
    c: Container,
    spec: Spec,
    d: Path,
    stdin=None,
    stdout=None,
    stderr=None,
    console_socket: str | os.PathLike | None = None,
) -> int:
    """Start *spec*'s process in container *c* (``runc exec``); return its PID.

    The init joins c's cgroups before anything else, then the namespaces *spec* names by path
    (/proc/PID/ns/...), and runs the process steps (rlimits, no_new_privs, seccomp, capability
    sets, user, cwd). *d* is a scratch directory for the exec FIFO, removed again. The process
    is a grandchild of the caller, reparented on the way: the caller should be a subreaper to
    wait for it. With *console_socket* (``runc exec --console-socket``), the process gets a
    pty of the container's devpts as its terminal, and the master goes to that socket.
    """
    check(spec)
    groups = [c.cgroup] if c.cgroup is not None else []
    if c.record.get("devices_cgroup"):
        path = Path(c.record["devices_cgroup"])
        groups.append(devices.DeviceCgroup(path.name.removeprefix("labkit-"), path.parent))
    console = _connect_console(console_socket) if console_socket is not None else None
    d.mkdir()
    try:
        _make_exec_fifo(d / "exec.fifo", spec)
        times = {"join_cgroup": 0.0}
        _proc, pid = _start_init(
            spec, d, c.cgroup, groups, EXEC_SKIP, console, stdin, stdout, stderr, times
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)
        if console is not None:
            console.close()  # the init has its own copy
    return pid


# --- start, kill, delete --------------------------------------------------------------------------


def start(container_id: str, root: str | os.PathLike | None = None) -> Container:
    """Let a created container exec its process: open the exec FIFO the init is blocked on."""
    c = get(container_id, root)
    status = c.status
    if status == "running":
        raise ContainerError("cannot start an already running container")
    if status == "stopped":
        raise ContainerError("cannot start a container that has stopped")
    # Non-blocking, so a container that died meanwhile cannot hang us; the init's blocked open
    # for writing completes now, and it writes one byte.
    fd = os.open(c.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        ready = select.select([fd], [], [], START_TIMEOUT)[0]
        data = os.read(fd, 1) if ready else b""
    finally:
        os.close(fd)
    if data != b"0":
        raise ContainerError(
            f"container {container_id} did not take the start signal within "
            f"{START_TIMEOUT:g} s (is its /proc missing?)."
        )
    c.fifo.unlink()
    return c


SIGNALS = {s.name: s for s in signal.Signals if not s.name.startswith("SIG_")}


def parse_signal(value: str | int) -> int:
    """ "KILL", "SIGKILL" or "9" -> 9, as `runc kill` accepts them."""
    text = str(value).upper()
    if text.isdigit() and 0 < int(text) < signal.NSIG:
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    if name in SIGNALS:
        return int(SIGNALS[name])
    raise BadInput(f"{value!r} is not a signal: give a name like TERM or KILL, or a number.")


def kill(
    container_id: str,
    sig: str | int = "TERM",
    root: str | os.PathLike | None = None,
    all_processes: bool = False,
) -> None:
    """Send *sig* to the container's PID 1 (with a PID namespace, SIGKILL ends all of it).

    all_processes: to every process in the container's cgroup (`runc kill --all`).
    """
    number = parse_signal(sig)
    c = get(container_id, root)
    if c.status == "stopped":
        raise ContainerError("container not running")
    pids = c.cgroup.pids() if all_processes and c.cgroup is not None else [c.pid]
    for pid in pids:
        try:
            os.kill(pid, number)
        except ProcessLookupError:
            pass  # exited meanwhile


def delete(container_id: str, force: bool = False, root: str | os.PathLike | None = None) -> None:
    """Remove a stopped (or created) container; with *force*, kill a running one first."""
    c = get(container_id, root)
    status = c.status
    if status == "running" and not force:
        raise ContainerError(
            f"cannot delete container {container_id} that is not stopped: {status}"
        )
    remove(c)


def remove(c: Container) -> None:
    """SIGKILL the container if it still runs, then remove its cgroup and state directory."""
    if c.alive():
        kill_process(c.pid)
        _wait_dead(c)
    if c.cgroup is not None:
        c.cgroup.remove()
    if c.record.get("devices_cgroup"):
        path = Path(c.record["devices_cgroup"])
        devices.DeviceCgroup(path.name.removeprefix("labkit-"), path.parent).remove()
    if c.record.get("image_root"):
        _unmount_image_root(c.record["image_root"])
    shutil.rmtree(c.dir, ignore_errors=True)
    try:
        c.dir.parent.rmdir()  # the last container gone: leave no empty directory behind
    except OSError:
        pass


def wait(c: Container, timeout: float | None = None) -> int:
    """Wait for a container this process is the (sub)reaper of; its exit code, as a shell's."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status = os.waitpid(c.pid, os.WNOHANG if deadline else 0)
        if pid:
            return (
                os.waitstatus_to_exitcode(status)
                if os.WIFEXITED(status)
                else 128 + os.WTERMSIG(status)
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"container {c.id} still runs after {timeout:g} s.")
        time.sleep(0.005)


# --- labkit cleanup -------------------------------------------------------------------------------


def leftovers() -> list[str]:
    """The containers in labkit's state directory, one line each."""
    found = [f"container: {c.id} ({c.status}, PID {c.pid})" for c in list_containers()]
    return found + devices.leftovers()


def remove_leftovers() -> None:
    """Kill every container of labkit's state directory and remove its cgroup and state."""
    for c in list_containers():
        try:
            remove(c)
        except (OSError, LabkitError):
            pass  # cleanup goes on; leftovers() still lists what could not be removed
    devices.remove_leftovers()  # device cgroups of containers whose state was lost
