"""What an engine does for each container, on top of the runtime's life cycle.

The runtime (``lifecycle``) knows one thing: a spec in, a process set up in runc's order out.
An engine such as dockerd adds everything around it, and so does this module:

- a *record* per container, kept from ``create`` to ``rm``: Docker's Config and HostConfig,
  a 64-hex id, a name (given, or made up like ``eager_turing``), found again by name or by a
  unique prefix of the id;
- a root of its own from the image store (an overlay with a writable layer that lasts until the
  container is removed, so a restart keeps its files);
- a *monitor* per running container (``monitor.py``, what containerd-shim or conmon are): a
  small process that starts the container, is the subreaper its PID 1 is reparented to, keeps
  its output in a log file, and records the exit code, the time it finished and whether the
  OOM killer struck. It is nobody's child either, so the container stays managed when the
  process that started it dies;
- Docker's commands: start, stop (SIGTERM, then SIGKILL), kill, restart, wait, rm, logs,
  attach, exec, top, stats, inspect.

Records live below ``<state dir>/managed/<id>``, and the directory goes with the last of them;
``labkit cleanup`` removes them and everything they made (see ``remove_leftovers``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from signal import SIGKILL
from typing import BinaryIO

from .. import channel, forkserver
from .. import sys as ksys
from ..errors import BadInput, LabkitError, require_root
from ..proc import stat as proc_stat
from ..state import state_dir
from . import dockerconfig, lifecycle
from . import logs as logs_mod
from .logs import LogEntry, frame

__all__ = [
    "Attach",
    "Conflict",
    "Container",
    "LogEntry",
    "NotFound",
    "NotRunning",
    "StartError",
    "attach",
    "create",
    "exec_create",
    "exec_inspect",
    "exec_start",
    "exec_wait",
    "frame",
    "get",
    "kill",
    "list_containers",
    "logs",
    "remove",
    "resize",
    "restart",
    "start",
    "stats",
    "stop",
    "top",
    "wait",
]

START_TIMEOUT = lifecycle.SETUP_TIMEOUT + 30.0
BRIDGE = "lkbr0"  # the lab's default bridge, as docker0 is Docker's


class NotFound(LabkitError):
    """No container (or exec, or image) by that name or id."""


class ImageNotFound(NotFound, BadInput):
    """The image is not in labkit's store."""


class Conflict(LabkitError):
    """The request contradicts the container's state (a name in use, rm of a running one...)."""


class NotRunning(Conflict):
    """The container must be running for that (exec, kill, resize)."""


class StartError(lifecycle.ContainerError):
    """The container could not start; ``exit_code`` is Docker's: 127, 126 or 125."""

    def __init__(self, message: str, step: str | None = None, exit_code: int = 125):
        super().__init__(message, step)
        self.exit_code = exit_code


def records_dir() -> Path:
    return state_dir() / "managed"


def _now() -> str:
    return logs_mod.now()


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:
        return None


def _monitor_alive(record: dict) -> bool:
    """Whether the monitor named in *record* (state or exec) still runs: same PID, same start."""
    pid = record.get("MonitorPid")
    return bool(pid) and proc_start_time(pid) == record.get("MonitorStart")


def _read_monitored(path: Path, running) -> tuple[dict | None, bool]:
    """A monitor's record (state or exec) and whether it says *running* with its monitor gone.

    The kernel is asked once per read: the monitor may record the exit and end at any moment,
    and a record read while it ran is true of that moment only."""
    record = _read_json(path)
    if record is None or not running(record) or _monitor_alive(record):
        return record, False
    # It may have recorded the exit and ended between that read and the check: read again
    # what it wrote last, now that it can write no more.
    record = _read_json(path)
    return record, record is not None and running(record) and not _monitor_alive(record)


_held = threading.local()  # how deep this thread is in records_lock (it may nest)


@contextlib.contextmanager
def records_lock():
    """One engine action at a time on the records (names must stay unique).

    The lock is ``flock`` on ``managed/.lock``. The last one out removes the directory when it
    holds no container (``_remove_if_unused``), so a lock taken is checked to be still linked:
    one that was unlinked while we waited for it locks nothing, and is taken anew."""
    depth = getattr(_held, "depth", 0)
    if depth:  # this thread holds it already (remove_record from create's failure)
        _held.depth += 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    for _ in range(100):  # each turn: the last one out removed the lock as we came
        records_dir().mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(records_dir() / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            break
        os.close(fd)
    else:
        raise LabkitError(f"could not lock {records_dir()}: run 'labkit cleanup'.")
    _held.depth = 1
    try:
        yield
        _remove_if_unused()
    finally:
        _held.depth = 0
        os.close(fd)


def _remove_if_unused(exits: bool = False) -> None:
    """Remove the records directory (its lock, the kept exits) if it holds no container; with
    *exits*, even if it keeps the exit of a container removed a moment ago (for a ``wait``).
    The caller holds the lock."""
    _prune_tombstones(0 if exits else TOMBSTONE_SECONDS)
    base = records_dir()
    with contextlib.suppress(OSError):  # a record or an exit is there (or came meanwhile)
        if set(os.listdir(base)) <= {".lock", ".exits"}:
            with contextlib.suppress(FileNotFoundError):
                (base / ".exits").rmdir()
            (base / ".lock").unlink()
            base.rmdir()


def tidy_records() -> None:
    """No engine is left to wait for them: drop the kept exits, and the records directory if it
    holds no container (what an engine does as it stops)."""
    if records_dir().is_dir():
        with records_lock():
            _remove_if_unused(exits=True)


# --- the record -----------------------------------------------------------------------------------


def proc_start_time(pid: int) -> int | None:
    """When *pid* started (clock ticks since boot), so a recycled PID is not mistaken for it."""
    found = proc_stat(pid)
    return None if found is None or found[0] == "Z" else found[1]


@dataclass(eq=False)  # a handle, compared as an object (its record changes as it runs)
class Container:
    """One container's record: what ``docker inspect`` shows, read from its directory."""

    id: str
    dir: Path
    record: dict  # config.json: Id, Name, Created, Image, Config, HostConfig, ...
    _exit_pipe: StatusPipe | None = None  # from start(): the monitor reports the exit on it

    @property
    def name(self) -> str:
        return self.record["Name"]

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def runtime_id(self) -> str:
        """The id of the container in the runtime's state directory (lifecycle)."""
        return self.short_id

    @property
    def netns(self) -> str:
        return f"labkit-{self.short_id}"

    @property
    def root_name(self) -> str:
        """The name of the container's overlay root in the image store."""
        return f"run-{self.short_id}"

    @property
    def log_path(self) -> Path:
        return self.dir / "container.log"

    @property
    def socket_path(self) -> Path:
        return self.dir / "monitor.sock"

    @property
    def config(self) -> dict:
        return self.record["Config"]

    @property
    def host_config(self) -> dict:
        return self.record["HostConfig"]

    def state(self) -> dict:
        """Docker's State, from what the monitor recorded, checked against the kernel."""
        s, gone = _read_monitored(self.dir / "state.json", lambda r: r.get("Status") == "running")
        s = s or {}
        state = {
            "Status": "created",
            "Running": False,
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": False,
            "Pid": 0,
            "ExitCode": 0,
            "Error": "",
            "StartedAt": "0001-01-01T00:00:00Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
        }
        state.update({k: v for k, v in s.items() if k in state})
        if gone:
            # The monitor was killed: nobody reaps or records; the kernel is the truth.
            if proc_start_time(state["Pid"]) == s.get("PidStart"):
                state["Error"] = "the container's monitor is gone"
            else:
                state.update(
                    Status="exited",
                    Running=False,
                    Pid=0,
                    ExitCode=255,
                    Error="the container's monitor was killed; its exit code is lost",
                )
        return state

    @property
    def status(self) -> str:
        return self.state()["Status"]

    @property
    def pid(self) -> int:
        return self.state()["Pid"]

    def network_settings(self) -> dict:
        s = _read_json(self.dir / "state.json") or {}
        net = s.get("NetworkSettings") or {}
        ports = {}
        for host_ip, host_port, port, proto in net.get("Published") or []:  # see monitor
            ports.setdefault(f"{port}/{proto}", []).append(
                {"HostIp": host_ip or "0.0.0.0", "HostPort": str(host_port)}
            )
        out = {
            "SandboxKey": net.get("SandboxKey", ""),
            "Ports": ports,
            "IPAddress": net.get("IPAddress", ""),
            "IPPrefixLen": net.get("IPPrefixLen", 0),
            "Gateway": net.get("Gateway", ""),
            "MacAddress": net.get("MacAddress", ""),
            "Networks": {},
        }
        mode = self.host_config.get("NetworkMode") or "none"
        out["Networks"][mode if mode != "default" else "bridge"] = {
            "IPAddress": out["IPAddress"],
            "IPPrefixLen": out["IPPrefixLen"],
            "Gateway": out["Gateway"],
            "MacAddress": out["MacAddress"],
            "NetworkID": net.get("Bridge", ""),
        }
        return out

    def mounts(self) -> list[dict]:
        out = []
        for m in dockerconfig.binds(self.host_config):
            out.append(
                {
                    "Type": "bind",
                    "Source": m.source,
                    "Destination": m.destination,
                    "Mode": "ro" if "ro" in m.options else "",
                    "RW": "ro" not in m.options,
                    "Propagation": "rprivate",
                }
            )
        return out

    def inspect(self) -> dict:
        """Docker's ``GET /containers/{id}/json``."""
        self.record = _read_json(self.dir / "config.json") or self.record  # restart counts
        args = dockerconfig.command(self.config)
        return {
            "Id": self.id,
            "Created": self.record["Created"],
            "Path": args[0] if args else "",
            "Args": args[1:],
            "State": self.state(),
            "Image": self.record["Image"],
            "ResolvConfPath": str(self.dir / "resolv.conf"),  # written by the monitor
            "HostnamePath": str(self.dir / "hostname"),
            "HostsPath": str(self.dir / "hosts"),
            "LogPath": str(self.log_path),
            "Name": self.name,
            "RestartCount": self.record.get("RestartCount", 0),
            "Driver": "overlay2",
            "Platform": "linux",
            "HostConfig": self.host_config,
            "GraphDriver": {"Name": "overlay2", "Data": self.record.get("GraphDriver", {})},
            "Mounts": self.mounts(),
            "Config": self.config,
            "NetworkSettings": self.network_settings(),
        }

    def summary(self) -> dict:
        """Docker's ``GET /containers/json`` item (what ``docker ps`` shows)."""
        state = self.state()
        ports = []
        for key, bindings in self.network_settings()["Ports"].items():
            port, proto = key.split("/")
            for b in bindings:
                ports.append(
                    {"IP": b["HostIp"], "PrivatePort": int(port),
                     "PublicPort": int(b["HostPort"]), "Type": proto}
                )  # fmt: skip
        return {
            "Id": self.id,
            "Names": [self.name],
            "Image": self.config.get("Image", ""),
            "ImageID": self.record["Image"],
            "Command": " ".join(dockerconfig.command(self.config)),
            "Created": int(logs_mod.parse_time(self.record["Created"])),
            "Ports": ports,
            "Labels": self.config.get("Labels") or {},
            "State": state["Status"],
            "Status": _human_status(state),
            "HostConfig": {"NetworkMode": self.host_config.get("NetworkMode") or "none"},
            "Mounts": self.mounts(),
        }


def ago(stamp: str) -> str:
    seconds = max(0, time.time() - logs_mod.parse_time(stamp))
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size or unit == "second":
            n = int(seconds // size)
            if unit == "second" and n < 1:
                return "Less than a second"
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return ""  # pragma: no cover


def _human_status(state: dict) -> str:
    """ "Up 3 seconds", "Exited (0) 2 minutes ago", "Created": docker ps's STATUS column."""
    if state["Status"] == "running":
        return "Up " + ago(state["StartedAt"])
    if state["Status"] == "exited":
        return f"Exited ({state['ExitCode']}) {ago(state['FinishedAt'])} ago"
    return state["Status"].capitalize()


def load_record(d: Path) -> Container | None:
    record = _read_json(d / "config.json")
    if record is None:
        return None
    return Container(record["Id"], d, record)


def _all() -> list[Container]:
    base = records_dir()
    if not base.is_dir():
        return []
    found = [load_record(d) for d in sorted(base.iterdir()) if d.is_dir()]
    return [c for c in found if c is not None]


def get(ref: str | Container) -> Container:
    """The container *ref* names: its name (with or without "/"), its id, or a unique prefix."""
    if isinstance(ref, Container):
        c = load_record(ref.dir)
        if c is None:
            raise NotFound(f"No such container: {ref.short_id}")
        c._exit_pipe = ref._exit_pipe
        return c
    if not isinstance(ref, str) or not ref:
        raise BadInput("give a container's name or id.")
    everything = _all()
    name = "/" + ref.lstrip("/")
    for c in everything:
        if c.id == ref or c.name == name:
            return c
    if re.fullmatch(r"[0-9a-f]{1,64}", ref):
        found = [c for c in everything if c.id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise Conflict(
                f"{ref!r} is the start of {len(found)} containers' ids: give more of it."
            )
    raise NotFound(f"No such container: {ref}")


def list_containers(all: bool = False, filters: dict | None = None) -> list[Container]:
    """Containers newest first (``docker ps``); only running ones unless *all*; Docker's filters."""
    found = sorted(_all(), key=lambda c: c.record["Created"], reverse=True)
    filters = filters or {}
    if not all and "status" not in filters:
        found = [c for c in found if c.status == "running"]
    for key, values in filters.items():
        values = [values] if isinstance(values, str) else list(values)
        if key == "id":
            found = [c for c in found if any(c.id.startswith(v) for v in values)]
        elif key == "name":
            found = [c for c in found if any(v.lstrip("/") in c.name for v in values)]
        elif key == "status":
            found = [c for c in found if c.status in values]
        elif key == "label":

            def has(c, v):
                k, eq, val = v.partition("=")
                labels = c.config.get("Labels") or {}
                return k in labels and (not eq or labels[k] == val)

            found = [c for c in found if all(has(c, v) for v in values)]
        elif key == "ancestor":
            found = [
                c for c in found if c.config.get("Image") in values or c.record["Image"] in values
            ]
        else:
            raise BadInput(
                f"{key!r} is not a filter labkit knows: use id, name, status, label or ancestor."
            )
    return found


# --- create ---------------------------------------------------------------------------------------

_ADJECTIVES = (  # noqa: SIM905  a list of words, easier read as text
    "admiring agitated amazing angry awesome blissful bold brave busy clever cool dazzling "
    "eager ecstatic elastic epic festive focused friendly gallant gifted goofy happy hopeful "
    "jolly keen kind laughing loving lucid modest nifty nostalgic peaceful pensive quirky "
    "relaxed serene sharp stoic sweet tender trusting upbeat vibrant wizardly youthful "
    "zealous"
).split()
_SCIENTISTS = (  # noqa: SIM905
    "babbage bardeen bell bohr curie darwin dijkstra einstein euler faraday fermi feynman "
    "franklin galileo gauss goldberg hamilton hopper hypatia kepler knuth lamarr lovelace "
    "maxwell meitner mendel morse newton noether pascal pike ritchie shannon thompson tesla "
    "torvalds turing wilson wozniak"
).split()
_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def _generate_name(taken: set[str]) -> str:
    """A name like Docker's: an adjective and a scientist (``/eager_turing``)."""
    for _ in range(100):
        name = f"/{_pick(_ADJECTIVES)}_{_pick(_SCIENTISTS)}"
        if name not in taken:
            return name
    return f"/{_pick(_ADJECTIVES)}_{os.urandom(3).hex()}"


def _pick(words: list[str]) -> str:
    # From the kernel's random bytes, as the ids: the random module's import would cost every
    # `labkit run` a millisecond, for one name.
    return words[int.from_bytes(os.urandom(4)) % len(words)]


def _image(ref: str):
    from .. import images

    try:
        return images.get(ref)
    except BadInput:
        raise ImageNotFound(
            f"there is no image {ref!r} in labkit's store: build one with 'labkit image busybox' "
            "or import one with 'labkit image import'."
        ) from None


def create(config: dict, host_config: dict | None = None, name: str | None = None) -> Container:
    """Record a new container (Docker's ``create``): checked, named, its root made; not run.

    *config* holds Docker's Config keys (Image, Cmd, Entrypoint, Env, WorkingDir, User,
    Hostname, Tty, OpenStdin, StdinOnce, Labels), *host_config* Docker's HostConfig keys
    (AutoRemove, NetworkMode, PortBindings, Binds, Memory, MemorySwap, NanoCpus, CpuQuota,
    CpuPeriod, CpuShares, PidsLimit, CapAdd, CapDrop, ReadonlyRootfs, Privileged). Every value
    is checked before anything is made; a refusal is one sentence and leaves nothing behind.
    """
    require_root("creating a container")
    config = dict(config or {})
    host_config = dict(host_config or {})
    if not isinstance(config.get("Image"), str) or not config["Image"]:
        raise BadInput("give the image to run, e.g. busybox.")
    dockerconfig.check(config, host_config)
    image = _image(config["Image"])
    merged = dockerconfig.merged_config(image.config, config)
    if not dockerconfig.command(merged):
        raise BadInput(f"no command given and the image {config['Image']} has none: add one.")
    if name is not None and not _NAME.match(name):
        raise BadInput(
            f"{name!r} is not a container name: use letters, digits and '_.-', starting with a "
            "letter or digit, at least two characters."
        )
    host_config.setdefault("NetworkMode", "none")
    host_config["LogConfig"] = _log_config(host_config.get("LogConfig"))
    from .. import images

    with records_lock():
        _prune_tombstones()
        taken = {c.name for c in _all()}
        full_name = "/" + name.lstrip("/") if name else _generate_name(taken)
        if full_name in taken:
            raise Conflict(
                f'the container name "{full_name}" is already in use: remove that container '
                "or choose another name."
            )
        cid = os.urandom(32).hex()  # 256 bits from getrandom(2), as Docker's ids
        d = records_dir() / cid
        d.mkdir(parents=True)
        c = Container(
            cid,
            d,
            {
                "Id": cid,
                "Name": full_name,
                "Created": _now(),
                "Image": image.id,
                "Config": merged,
                "HostConfig": host_config,
                "RestartCount": 0,
            },
        )
        try:
            root = images.mount_root(image.id, c.root_name)
            _prepare_root(str(root.merged), merged)
            c.record["GraphDriver"] = {
                "LowerDir": ":".join(map(str, image.lowerdirs)),
                "UpperDir": str(root.upperdir),
                "WorkDir": str(root.workdir),
                "MergedDir": str(root.merged),
            }
            c.log_path.touch(mode=0o640)  # attach before start reads it from the beginning
            write_json(d / "config.json", c.record)
        except BaseException:
            remove_record(c)
            raise
    return c


def _log_config(asked) -> dict:
    """The log driver, as dockerd fills it in: the monitor keeps the output in Docker's
    json-file format (``logs.py``), the one driver there is here."""
    asked = asked if isinstance(asked, dict) else {}
    if asked.get("Type") not in (None, "", "json-file"):
        raise BadInput(
            f"the log driver {str(asked['Type'])[:40]!r} is not available: labkit keeps every "
            "container's output as json-file does (leave --log-driver out)."
        )
    if asked.get("Config"):
        raise BadInput("labkit's json-file log takes no options: leave --log-opt out.")
    return {"Type": "json-file", "Config": {}}


def _prepare_root(root: str, config: dict) -> None:
    """Check the user exists in the image, and make the working directory, as Docker does."""
    dockerconfig.user(root, config.get("User") or "")
    workdir = config.get("WorkingDir")
    if workdir:
        from .steps import in_root

        os.makedirs(in_root(root, workdir), exist_ok=True)


# --- start, and the monitor that owns a running container ----------------------------------------


def start(ref: str | Container) -> Container:
    """Run the container (Docker's ``start``): its monitor sets it up; return once it runs.

    The returned Container holds a pipe on which the monitor reports the exit, so ``wait`` on it
    gets the exit code even when AutoRemove removes the record at once.
    """
    require_root("starting a container")
    c = get(ref)
    status = c.status
    if status == "running":
        return c
    with open(c.dir / "monitor.err", "ab") as err:  # the monitor's own errors, if any
        status = _start_monitor({"mode": "container", "dir": str(c.dir)}, stderr=err)
    message = status.read(START_TIMEOUT)
    if message is None or message["event"] != "running":
        status.close()
        if message is None:
            err = (c.dir / "monitor.err").read_text(errors="replace").strip().splitlines()
            error = StartError(
                "the container's monitor ended before the container started"
                + (f": {err[-1]}" if err else ".")
            )
        else:
            error = StartError(*_monitor_error(message))
        if c.host_config.get("AutoRemove"):
            # As dockerd: a --rm container that cannot start is removed, not left "Created".
            with contextlib.suppress(LabkitError, OSError):
                remove(c, force=True)
        else:  # as dockerd, inspect says why (and an attach waiting for output ends)
            with contextlib.suppress(OSError):
                write_json(
                    c.dir / "state.json",
                    {"Status": "created", "ExitCode": error.exit_code, "Error": str(error)},
                )
        raise error
    if isinstance(ref, Container):
        ref._exit_pipe = status  # an attach made on it before the start follows the same exit
    try:
        c = get(c)  # the record as the monitor wrote it: running
    except NotFound:
        pass  # it has run, exited and been auto-removed already: the pipe still has its exit
    c._exit_pipe = status
    return c


def _start_monitor(request: dict, **stdio) -> StatusPipe:
    """Start a monitor (monitor.py) for *request*; the pipe it reports on.

    No new interpreter: forkserver.launch forks this process if it is a single-threaded
    command, or has the fork server clone one. The monitor forks once more, and the first
    half exits at once, so the monitor proper is nobody's child.
    """
    stdio = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, **stdio}
    first_half, pipes = forkserver.launch("monitor", **stdio)
    try:
        pipes.send(request)
    finally:
        os.close(pipes.control)
        first_half.wait()
    return StatusPipe(pipes.status)


def _monitor_error(message: dict, code: int = 125) -> tuple[str, str | None, int]:
    """A monitor's "error" (or, failing before its own code ran, the launcher's)."""
    text = message.get("error") or message.get("message") or "the monitor failed"
    return text, message.get("step"), message.get("exit_code", code)


class StatusPipe:
    """The read end of a monitor's status pipe: one message (channel.py's frames) at a time."""

    def __init__(self, fd: int):
        self.fd = fd

    def read(self, timeout: float) -> dict | None:
        """The next message (None at end of file or after *timeout* s)."""
        if self.fd < 0:
            return None
        try:
            return channel.read_message(self.fd, time.monotonic() + timeout)
        except (TimeoutError, EOFError):
            return None

    def ready(self, timeout: float) -> bool:
        """Whether a message (or the end of file) waits, after at most *timeout* s."""
        return bool(select.select([self.fd], [], [], timeout)[0])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        self.close()


@contextlib.contextmanager
def short_path(path: Path) -> Iterator[str]:
    """*path* as /proc/self/fd/N/NAME: a unix socket's path may have at most 107 bytes."""
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _client(c: Container, request: dict) -> socket.socket:
    """A connection to the container's monitor, with *request* sent (one JSON line)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with short_path(c.socket_path) as path:
            sock.connect(path)
    except OSError:
        sock.close()
        raise NotRunning(f"container {c.name.lstrip('/')} is not running.") from None
    sock.sendall(json.dumps(request).encode() + b"\n")
    return sock


def _require_running(c: Container) -> None:
    if c.status != "running":
        raise NotRunning(f"container {c.name.lstrip('/')} is not running.")


def kill(ref: str | Container, signal: str | int = "KILL") -> None:
    """Send *signal* to the container's PID 1 (Docker's ``kill``; default SIGKILL).

    After SIGKILL it returns once the exit is recorded, as dockerd does: a ``docker inspect``
    right after ``docker kill`` shows the container exited."""
    c = get(ref)
    number = lifecycle.parse_signal(signal)
    _require_running(c)
    try:
        lifecycle.kill(c.runtime_id, number)
    except lifecycle.ContainerError:
        raise NotRunning(f"container {c.name.lstrip('/')} is not running.") from None
    if number == SIGKILL:  # (the argument hides the signal module here)
        _until_stopped(c, 10)


def wait(
    ref: str | Container, condition: str = "not-running", timeout: float | None = None
) -> dict:
    """Block until the container is not running (or exits next, or is removed).

    Returns Docker's ``{"StatusCode": code, "Error": None or {"Message": the State's Error}}``;
    TimeoutError after *timeout* s.
    """
    if condition not in ("not-running", "next-exit", "removed"):
        raise BadInput(f"wait condition {condition!r} is not not-running, next-exit or removed.")
    pipe = ref._exit_pipe if isinstance(ref, Container) else None
    deadline = None if timeout is None else time.monotonic() + timeout
    if pipe is not None:
        left = 1e9 if deadline is None else max(0.0, deadline - time.monotonic())
        message = pipe.read(left)
        if message is not None and message["event"] == "exited":
            if condition == "removed":  # the monitor removes it, then exits: end of file
                pipe.read(1e9 if deadline is None else max(0.0, deadline - time.monotonic()))
                _poll(lambda: not (ref.dir / "config.json").exists(), deadline)
                _take_tombstone(ref.id)  # this wait has the exit it was kept for
            pipe.close()
            ref._exit_pipe = None
            return {"StatusCode": message["exit_code"], "Error": None}
    c = get(ref)
    seen_running = False
    first_start = None
    while True:
        state = c.state() if (c.dir / "config.json").exists() else None
        if state is None:  # removed: AutoRemove left the exit in a tombstone
            gone = _take_tombstone(c.id)
            if gone is not None:
                return {"StatusCode": gone["ExitCode"], "Error": None}
            return {
                "StatusCode": -1,
                "Error": {"Message": f"container {c.short_id} was removed; its exit is unknown"},
            }
        running = state["Status"] == "running"
        first_start = first_start or state["StartedAt"]
        # A run shorter than one poll is seen by its new StartedAt, not as "running".
        seen_running = seen_running or running or state["StartedAt"] != first_start
        ended = condition == "not-running" or (condition == "next-exit" and seen_running)
        if ended and not running:
            # dockerd's wait carries the State's Error too: what went wrong, for the client.
            error = {"Message": state["Error"]} if state["Error"] else None
            return {"StatusCode": state["ExitCode"], "Error": error}
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"container {c.name.lstrip('/')} still runs after {timeout:g} s.")
        time.sleep(0.01)


TOMBSTONE_SECONDS = 60.0  # how long the exit of a removed (AutoRemove) container is kept unread


def _tombstone(cid: str) -> Path:
    return records_dir() / ".exits" / cid


def write_tombstone(c: Container, state: dict) -> None:
    """Keep the exit of a container AutoRemove takes away, for a wait(condition="removed")."""
    path = _tombstone(c.id)
    path.parent.mkdir(exist_ok=True)
    write_json(path, {"ExitCode": state["ExitCode"], "FinishedAt": state["FinishedAt"]})


def _take_tombstone(cid: str) -> dict | None:
    """The kept exit of removed container *cid*, read once: the wait it was kept for has it."""
    path = _tombstone(cid)
    gone = _read_json(path)
    if gone is not None:
        with records_lock():  # the last one out takes the directory with it
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return gone


def _prune_tombstones(older_than: float = TOMBSTONE_SECONDS) -> None:
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(records_dir() / ".exits"):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - entry.stat().st_mtime >= older_than:
                    os.unlink(entry.path)


def _poll(predicate, deadline: float | None) -> bool:
    while not predicate():
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def stop(ref: str | Container, timeout: float = 10) -> None:
    """SIGTERM to PID 1, up to *timeout* s to exit, then SIGKILL (Docker's ``stop``)."""
    c = get(ref)
    if c.status != "running":
        return
    try:
        lifecycle.kill(c.runtime_id, signal.SIGTERM)
        if not _poll(lambda: c.status != "running", time.monotonic() + timeout):
            lifecycle.kill(c.runtime_id, signal.SIGKILL)
    except (lifecycle.ContainerError, lifecycle.NotFound):
        pass  # it stopped meanwhile
    _until_stopped(c, 30)


def _until_stopped(c: Container, timeout: float) -> bool:
    """Wait, at most *timeout* s, until the monitor has recorded the exit (or the record went)."""
    return _poll(lambda: c.status != "running" or not c.dir.exists(), time.monotonic() + timeout)


def restart(ref: str | Container, timeout: float = 10) -> Container:
    """stop, then start again; the root (and so its files) is kept."""
    c = get(ref)
    stop(c, timeout)
    record = dict(c.record, RestartCount=c.record.get("RestartCount", 0) + 1)
    write_json(c.dir / "config.json", record)
    return start(c)


def remove(ref: str | Container, force: bool = False) -> None:
    """Remove the container (Docker's ``rm``): its root, log and record; *force* kills it first."""
    require_root("removing a container")
    c = get(ref)
    if c.status == "running":
        if not force:
            raise Conflict(
                f"cannot remove container {c.name.lstrip('/')}: it is running; stop it first "
                "or use force (rm -f)."
            )
        with contextlib.suppress(LabkitError):
            lifecycle.kill(c.runtime_id, signal.SIGKILL)
        if not _until_stopped(c, 30):
            raise lifecycle.ContainerError(
                f"container {c.name.lstrip('/')} did not stop after SIGKILL: see ps."
            )
    if c.dir.exists():
        remove_record(c)


def remove_record(c: Container) -> None:
    """Take away everything the record holds: monitor, runtime container, network, root, files."""
    _kill_monitor(c)
    with contextlib.suppress(LabkitError, OSError):
        lifecycle.remove(lifecycle.get(c.runtime_id))
    release_network(c)
    from .. import images

    if (images.roots_dir() / c.root_name).exists():
        with contextlib.suppress(LabkitError, OSError):
            images.unmount_root(c.root_name)
    with records_lock():  # the last record out takes the directory with it
        shutil.rmtree(c.dir, ignore_errors=True)


def _kill_monitor(c: Container) -> None:
    s = _read_json(c.dir / "state.json") or {}
    pid = s.get("MonitorPid")
    if pid and proc_start_time(pid) == s.get("MonitorStart"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _poll(lambda: proc_start_time(pid) != s.get("MonitorStart"), time.monotonic() + 5)


# --- the network ----------------------------------------------------------------------------------


def bridge():
    """The lab's default bridge (made with NAT on first use), as Docker's docker0."""
    from .. import network

    with records_lock():
        try:
            return network.bridge(BRIDGE)
        except BadInput:
            br = network.bridge_add(BRIDGE)
            network.nat_add(br)
            return br


def check_ports_free(host_config: dict) -> None:
    """Refuse a published host port that a process on the host (or a container) holds."""
    from .. import network

    published = {r.comment.split(" -> ")[0].split(": ", 1)[-1] for r in network.rules()}
    for host_port, _port, proto in dockerconfig.port_bindings(host_config):
        taken = f"publish {proto} {host_port}" in published
        if not taken:
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, kind) as probe:
                try:
                    probe.bind(("0.0.0.0", host_port))
                except OSError:
                    taken = True
        if taken:
            raise BadInput(
                f"host port {host_port}/{proto} is already in use: choose another with "
                f"-p OTHER:{_port}."
            )


def release_network(c: Container) -> None:
    """Delete the container's published ports and its network namespace (the veth goes with it)."""
    ports = (_read_json(c.dir / "state.json") or {}).get("NetworkSettings", {}).get("Published")
    ports = [(host_port, proto) for _ip, host_port, _port, proto in ports or []]
    # /run/netns: where `ip netns` (and labkit.network) keep named namespaces. Without one and
    # without ports nothing was made (--network none), and pyroute2 need not even be imported.
    if not ports and not os.path.exists(f"/run/netns/{c.netns}"):
        return
    from .. import network

    with contextlib.suppress(LabkitError, OSError):
        for host_port, proto in ports:
            network.unpublish(BRIDGE, host_port, proto)
    if os.path.exists(network.netns_path(c.netns)):
        with contextlib.suppress(LabkitError, OSError):
            network.netns_delete(c.netns)


# --- streams --------------------------------------------------------------------------------------


def logs(
    ref: str | Container,
    stdout: bool = True,
    stderr: bool = True,
    follow: bool = False,
    since: float = 0,
    until: float = 0,
    timestamps: bool = False,
    tail: str | int = "all",
) -> Iterator[LogEntry]:
    """The container's output from its log (Docker's ``logs``); *follow* until it stops."""
    c = get(ref)
    offset = 0
    if tail not in ("all", None, ""):
        try:
            lines = int(tail)
        except ValueError:
            raise BadInput(f"tail {tail!r} is not a number of lines or 'all'.") from None
        offset = logs_mod.tail_offset(c.log_path, lines)
    streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
    keep_following = _follower(c) if follow else None
    for entry in logs_mod.read(c.log_path, offset, keep_following):
        if entry.stream not in streams:
            continue
        t = entry.epoch() if since or until else 0
        if since and t < since:
            continue
        if until and t > until:
            continue
        yield entry


def _may_run(state: dict) -> bool:
    """Running, or created and not yet started (a start that failed left its Error)."""
    return state["Status"] == "running" or (state["Status"] == "created" and not state["Error"])


def _follower(c: Container):
    """For logs.read: go on while the container may still write (created or running)."""

    def more() -> bool:
        try:
            return (c.dir / "config.json").exists() and _may_run(c.state())
        except (OSError, ValueError):
            return False

    return more


def _left_created(c: Container, timeout: float) -> bool:
    """Wait, at most *timeout* s, until the container is no longer just created (it runs, ran,
    failed to start or was removed); whether it did.

    No polling: the monitor replaces ``state.json`` by a rename at each change (and removes it,
    or the whole directory), and inotify wakes us at each of those."""
    deadline = time.monotonic() + timeout
    fd = ksys.inotify_init1(ksys.IN_CLOEXEC | ksys.IN_NONBLOCK)
    try:
        try:
            changes = ksys.IN_MOVED_TO | ksys.IN_DELETE | ksys.IN_DELETE_SELF
            ksys.inotify_add_watch(fd, str(c.dir), changes)
        except FileNotFoundError:
            return True  # removed already
        while True:
            # Looked at after the watch is set: a change between the two is not missed.
            state = c.state()  # (a start that failed leaves it created, with its Error)
            if not (c.dir / "config.json").exists() or state["Status"] != "created":
                return True
            if state["Error"]:
                return True
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 65536)  # the events themselves: we only needed the wake-up
    finally:
        os.close(fd)


class Attach:
    """A connection to a container's streams: output as LogEntry items, input to its stdin.

    Attached before start (``docker run -i`` does that), stdin connects when the container
    runs: the first write waits for it (at most START_TIMEOUT), and what the container
    never ran to read is refused with BrokenPipeError."""

    def __init__(self, c: Container, stdin: bool, stdout: bool, stderr: bool, logs: bool):
        self.container = c
        self.streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        created = c.status == "created"
        # Opened now: with AutoRemove the monitor removes the record, log and all, as soon as
        # the container exits, perhaps before we read it; an open file outlives its name.
        try:
            self._log: BinaryIO | None = open(c.log_path, "rb")  # noqa: SIM115  closed by close()
        except FileNotFoundError:
            self._log = None
        at_end = self._log is not None and not (logs or created)
        self._offset = os.fstat(self._log.fileno()).st_size if at_end else 0
        self._stdin = _client(c, {"op": "stdin"}) if stdin and not created else None
        self._late_stdin = stdin and created

    def _stdin_socket(self) -> socket.socket:
        if self._stdin is None and self._late_stdin:
            self._late_stdin = False
            c = self.container
            if not _left_created(c, START_TIMEOUT):
                raise BrokenPipeError(
                    f"container {c.name.lstrip('/')} was not started within "
                    f"{START_TIMEOUT:g} s: its stdin is closed."
                )
            try:
                self._stdin = _client(c, {"op": "stdin"})
            except NotRunning:  # it ran and exited (or never ran) before we got there
                raise BrokenPipeError(
                    f"container {c.name.lstrip('/')} is not running: its stdin is closed."
                ) from None
        if self._stdin is None:
            raise BadInput("this attach has no stdin: attach with stdin=True.")
        return self._stdin

    def output(self) -> Iterator[LogEntry]:
        """The output from now on (with logs: from the start) until the container stops."""
        c = self.container
        if self._log is None:
            return
        pipe = c._exit_pipe
        if pipe is not None and pipe.fd >= 0:
            # We started it: the monitor's "exited" on the pipe says the log is complete.
            more = lambda: pipe.fd >= 0 and not pipe.ready(0.01)  # noqa: E731
            entries = logs_mod.read(self._log, self._offset, more, poll=0)
        else:
            entries = logs_mod.read(self._log, self._offset, _follower(c))
        for entry in entries:
            if entry.stream in self.streams:
                yield entry

    def write(self, data: bytes) -> None:
        self._stdin_socket().sendall(data)

    def close_stdin(self) -> None:
        """End of input: the container's stdin closes (when the container has StdinOnce)."""
        if self._stdin is None and not self._late_stdin:
            return
        with contextlib.suppress(OSError):
            self._stdin_socket().shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self._stdin is not None:
            self._stdin.close()
            self._stdin = None
        if self._log is not None:
            self._log.close()
            self._log = None


def attach(
    ref: str | Container,
    stdin: bool = False,
    stdout: bool = True,
    stderr: bool = True,
    logs: bool = False,
    stream: bool = True,
) -> Attach:
    """Attach to the container's streams (Docker's ``attach``), before or after its start.

    A Container is taken as given (the one create or start returned), not read again: with
    AutoRemove, the record of one that has exited may be gone already.
    """
    c = ref if isinstance(ref, Container) else get(ref)
    if stdin and not c.config.get("OpenStdin"):
        raise BadInput("the container was not created with an open stdin (-i).")
    return Attach(c, stdin, stdout, stderr, logs)


def resize(ref: str | Container, height: int, width: int) -> None:
    """Set the size of the container's terminal (TIOCSWINSZ on the pty's master)."""
    c = get(ref)
    if not c.config.get("Tty"):
        raise BadInput(f"container {c.name.lstrip('/')} has no terminal (-t) to resize.")
    for value in (height, width):
        if not isinstance(value, int) or not 0 < value < 65536:
            raise BadInput(f"terminal size {value!r} must be a whole number from 1 to 65535.")
    with _client(c, {"op": "resize", "height": height, "width": width}) as sock:
        sock.recv(16)


# --- what runs inside -----------------------------------------------------------------------------


def top(ref: str | Container) -> dict:
    """The processes in the container's cgroup (Docker's ``top``), as the host sees them."""
    c = get(ref)
    _require_running(c)
    rc = lifecycle.get(c.runtime_id)
    rows = []
    for pid in rc.cgroup.pids() if rc.cgroup else [rc.pid]:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            uid = os.stat(f"/proc/{pid}").st_uid
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        rows.append([str(uid), str(pid), fields[1], cmd])
    return {"Titles": ["UID", "PID", "PPID", "CMD"], "Processes": rows}


def stats(ref: str | Container) -> dict:
    """The cgroup's counters in the shape of Docker's ``GET /containers/{id}/stats``."""
    c = get(ref)
    _require_running(c)
    rc = lifecycle.get(c.runtime_id)
    s = rc.cgroup.stats()
    limits = rc.cgroup.limits()
    memory_limit = _first_int(limits, ("memory.max", "memory.limit_in_bytes"))
    pids_limit = _first_int(limits, ("pids.max",))
    return {
        "id": c.id,
        "name": c.name,
        "read": _now(),
        "pids_stats": {"current": s.pids_current, **({"limit": pids_limit} if pids_limit else {})},
        "cpu_stats": {
            "cpu_usage": {"total_usage": s.cpu_usage_us * 1000},
            "online_cpus": os.cpu_count(),
            "throttling_data": {
                "periods": s.cpu_periods,
                "throttled_periods": s.cpu_throttled,
                "throttled_time": s.cpu_throttled_us * 1000,
            },
        },
        "memory_stats": {
            "usage": s.memory_current,
            **({"max_usage": s.memory_peak} if s.memory_peak is not None else {}),
            **({"limit": memory_limit} if memory_limit else {}),
            "failcnt": s.oom_kills,
        },
    }


def _first_int(limits: dict, names) -> int | None:
    for name in names:
        value = limits.get(name, "").strip()
        if value.isdigit() and int(value) < 2**62:
            return int(value)
    return None


# --- exec -----------------------------------------------------------------------------------------


def _exec_path(exec_id: str) -> Path | None:
    if not re.fullmatch(r"[0-9a-f]{64}", exec_id or ""):
        return None
    for c in _all():
        path = c.dir / "execs" / f"{exec_id}.json"
        if path.exists():
            return path
    return None


def exec_create(
    ref: str | Container,
    cmd: list[str],
    env: list[str] | None = None,
    user: str | None = None,
    workdir: str | None = None,
    tty: bool = False,
    privileged: bool = False,
    stdin: bool = False,
) -> str:
    """Record a process to run in the container (Docker's exec create); its 64-hex exec id."""
    c = get(ref)
    _require_running(c)
    if not cmd or not all(isinstance(a, str) and a for a in cmd):
        raise BadInput("give the command to run in the container, e.g. ['sh'].")
    dockerconfig.check({"Env": env or [], "User": user or "", "WorkingDir": workdir or ""}, {})
    exec_id = os.urandom(32).hex()
    (c.dir / "execs").mkdir(exist_ok=True)
    write_json(
        c.dir / "execs" / f"{exec_id}.json",
        {
            "ID": exec_id,
            "ContainerID": c.id,
            "Running": False,
            "ExitCode": None,
            "Pid": 0,
            "OpenStdin": stdin,
            "CanRemove": False,
            "ProcessConfig": {
                "entrypoint": cmd[0],
                "arguments": cmd[1:],
                "tty": tty,
                "privileged": privileged,
                "user": user or "",
            },
            "Env": env or [],
            "WorkingDir": workdir or "",
        },
    )
    return exec_id


def exec_inspect(exec_id: str) -> dict:
    path = _exec_path(exec_id)
    record, gone = _read_monitored(path, lambda r: r["Running"]) if path else (None, False)
    if record is None:
        raise NotFound(f"No such exec instance: {exec_id}")
    if gone:
        record.update(Running=False, ExitCode=255)  # its monitor was killed
    return record


def exec_start(
    exec_id: str,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    console_socket: str | None = None,
    console_size: tuple[int, int] | None = None,
) -> None:
    """Run the exec'd process with these file descriptors as its 0, 1, 2; return once it runs.

    With *console_socket* (the path of a listening unix socket) its stdio is instead a new pty
    of the container's own devpts, its controlling terminal, of *console_size* (rows,
    columns); the master is sent to the socket.

    It joins every namespace and the cgroup of the container, with the container's capability
    sets, seccomp filter and no_new_privs (more with privileged), as ``runc exec`` does. A small
    exec monitor is its subreaper and records its exit code (``exec_inspect``, ``exec_wait``).
    """
    path = _exec_path(exec_id)
    if path is None:
        raise NotFound(f"No such exec instance: {exec_id}")
    record = _read_json(path)
    if record.get("Pid"):
        raise Conflict(f"exec {exec_id[:12]} has already run.")
    c = get(record["ContainerID"])
    _require_running(c)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        pipe = _start_monitor(
            {
                "mode": "exec",
                "dir": str(c.dir),
                "exec_id": exec_id,
                "console": console_socket,
                "console_size": console_size,
            },
            stdin=null if stdin is None else stdin,
            stdout=null if stdout is None else stdout,
            stderr=null if stderr is None else stderr,
        )
    finally:
        os.close(null)
    message = pipe.read(START_TIMEOUT)
    pipe.close()
    if message is None:
        raise StartError("the exec monitor ended before the process started.")
    if message["event"] != "running":
        raise StartError(*_monitor_error(message, 126))


def exec_wait(exec_id: str, timeout: float | None = None) -> int:
    """Wait until the exec'd process has exited; its exit code (128+N for signal N)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        record = exec_inspect(exec_id)
        if not record["Running"] and record["ExitCode"] is not None:
            return record["ExitCode"]
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"exec {exec_id[:12]} still runs after {timeout:g} s.")
        time.sleep(0.01)


# --- labkit cleanup -------------------------------------------------------------------------------


def _monitor_processes() -> list[int]:
    """PIDs of this state directory's monitors (container and exec), found in /proc.

    A monitor is a fork, with its starter's command line: it is known by its name and by its
    working directory, the record directory of its container (even once that is removed).
    """
    found = []
    base = str(records_dir()) + "/"
    own_pid_ns = os.readlink("/proc/self/ns/pid")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                if f.read().strip() != forkserver.ENTRIES["monitor"]:
                    continue
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
            # (A container's process by the same name is in another PID namespace.)
            ours = os.readlink(f"/proc/{entry.name}/ns/pid") == own_pid_ns
        except OSError:
            continue  # exited meanwhile
        if ours and cwd.startswith(base):
            found.append(int(entry.name))
    return found


def leftovers() -> list[str]:
    """Monitors and container records of this state directory."""
    found = [f"process: {pid} (labkit container monitor)" for pid in _monitor_processes()]
    found += [f"container record: {c.name.lstrip('/')} ({c.short_id})" for c in _all()]
    return found


def remove_leftovers() -> None:
    """Kill the monitors first (so none records or restarts anything), then remove every record."""
    for pid in _monitor_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _monitor_processes() and time.monotonic() < deadline:
        time.sleep(0.01)
    for c in _all():
        with contextlib.suppress(LabkitError, OSError):
            remove_record(c)
    shutil.rmtree(records_dir(), ignore_errors=True)


def _utc(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
