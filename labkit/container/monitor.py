"""A container's monitor: the small process that owns one running container (like conmon).

``manager.start`` has ``forkserver.launch`` start it: a fork of the caller when that is a
single-threaded command (``labkit run``), else a clone by the fork server; either way no new
interpreter. It forks once more and the first half exits, so the monitor is nobody's child and
lives on when the process that started it dies. Its name (``/proc/PID/comm``) is
``labkit-monitor`` and its working directory is the container's record directory: that is how
``labkit cleanup`` finds it. Then it:

1. asks the kernel to make it a *child subreaper* (PR_SET_CHILD_SUBREAPER): the container's
   PID 1, whose own parent (the runtime's init) exits, is reparented to the monitor, which can
   therefore wait for it and learn its exit status, as a shell learns its children's;
2. sets the container up: its network namespace plugged into the lab bridge, published ports,
   stdio as pipes (or a pseudo-terminal with -t), then ``lifecycle.create`` and ``start``;
3. tells the starter "running" on the status pipe, and from then on copies the container's
   output into the log file (``logs.py``), its stdin from clients of ``monitor.sock``;
4. when PID 1 exits: drains the output, reads the OOM killer's count from the cgroup, removes
   the runtime container and the network, records ExitCode, FinishedAt and OOMKilled, reports
   the exit on the status pipe, and (with AutoRemove) removes the container entirely.

Asked for mode "exec", it does the same for one ``exec``'d process: it joins the container's
namespaces and cgroup, and the monitor waits for it and records its exit code.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import json
import os
import select
import signal
import socket
import struct
import termios
import time
from pathlib import Path

from labkit import forkserver
from labkit import sys as ksys
from labkit.channel import Channel
from labkit.container import dockerconfig, etcfiles, lifecycle, manager
from labkit.container.logs import Writer, now
from labkit.container.spec import ConsoleSize
from labkit.errors import BadInput, LabkitError

# What the starter reads on the status pipe (channel.py's frames), in order.
RUNNING = "running"  # pid: the container's PID 1 runs
EXITED = "exited"  # exit_code, oom: it has exited (and, with AutoRemove, is being removed)
ERROR = "error"  # error, step, exit_code: it could not start


def _report(channel: Channel, event: str, **data) -> None:
    with contextlib.suppress(OSError):  # the starter may have gone: we go on without it
        channel.send(event, **data)


def _become_monitor(record_dir: Path, new_session: bool) -> None:
    """Fork away from the starter, and be the subreaper of what we start."""
    os.chdir(record_dir)  # how cleanup finds us (with our name): /proc/PID/cwd
    if new_session:
        os.setsid()  # no terminal's signals reach the container's monitor
    if os.fork():
        os._exit(0)
    ksys.prctl(ksys.PR_SET_CHILD_SUBREAPER, 1)
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)


def _exit_code(status: int) -> int:
    """A wait status as Docker reports it: the exit code, or 128 + the signal's number."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


KILLED = {"error": "the monitor was interrupted", "step": None, "exit_code": 125}


def _start_error(c: manager.Container, e: Exception) -> dict:
    """An error for the starter, with Docker's exit code: 127 not found, 126 cannot execute."""
    step = getattr(e, "step", None)
    code = 125
    if step == "find_executable":
        from labkit.container.steps import in_root

        name = dockerconfig.command(c.config)[0]
        root = c.record["GraphDriver"]["MergedDir"]
        code = 126 if "/" in name and os.path.lexists(in_root(root, name)) else 127
        if code == 126:
            return {"error": f'exec: "{name}": permission denied', "step": step, "exit_code": code}
    elif step in ("change_directory", "switch_user"):
        code = 126
    return {"error": str(e), "step": step, "exit_code": code}


# --- the network ----------------------------------------------------------------------------------


def set_up_network(c: manager.Container) -> dict:
    """A network namespace on the lab bridge with published ports, as Docker's bridge driver.

    "Published" lists what was published, as [host IP, host port, container port, protocol]
    with the host port that was chosen for ``-p 80``: ``ps``, ``inspect`` and the clean-up
    read it from the container's state.
    """
    mode = c.host_config.get("NetworkMode") or "none"
    if mode == "none":
        return {}
    from labkit import network  # pyroute2 takes longer to import than a container to start

    br = manager.bridge()
    published = []
    with manager.records_lock():  # one at a time: each takes the next free address and port
        manager.check_ports_free(c.host_config)
        try:
            network.netns_add(c.netns)
            endpoint = network.connect(br, c.netns)
            for host_ip, host_port, port, proto in dockerconfig.publish_requests(c.host_config):
                host_port = host_port or free_port(proto, network)
                check_address(host_ip, host_port, proto)
                network.publish(br, host_port, str(endpoint.address.ip), port, proto, host_ip)
                published.append([host_ip, host_port, port, proto])
        except BaseException:
            for _ip, host_port, _port, proto in published:  # not yet in the state: ours to undo
                with contextlib.suppress(LabkitError, OSError):
                    network.unpublish(br.ifname, host_port, proto)
            raise
    return {
        "SandboxKey": network.netns_path(c.netns),
        "IPAddress": str(endpoint.address.ip),
        "IPPrefixLen": endpoint.address.network.prefixlen,
        "Gateway": str(br.gateway),
        "Bridge": br.ifname,
        "Published": published,
    }


def free_port(proto: str, network) -> int:
    """A host port that no socket holds and labkit has not published (Docker's ``-p 80``).

    The kernel picks it: bind(2) to port 0 takes a free one from the ephemeral range
    (net.ipv4.ip_local_port_range), the range Docker's port allocator uses too.
    """
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    ours = {r.comment.split(" -> ")[0].rsplit(" ", 1)[-1] for r in network.rules()}
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("0.0.0.0", 0))
            port = probe.getsockname()[1]
        if str(port) not in ours:
            return port
    raise LabkitError(f"no free host port for {proto} was found: free some, or give one.")


def check_address(host_ip: str, host_port: int, proto: str) -> None:
    """Refuse a host IP that is not this host's (Docker: "cannot assign requested address")."""
    if not host_ip:
        return
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((host_ip, host_port))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise BadInput(
                    f"{host_ip} is not an address of this host: publish on one of its own "
                    "(ip -4 addr shows them), or on all of them."
                ) from None
            raise BadInput(
                f"host port {host_ip}:{host_port}/{proto} is already in use: choose another."
            ) from None


def _add_etc_files(c: manager.Container, spec, address: str | None) -> None:
    """Docker's /etc/resolv.conf, hostname and hosts, bind-mounted after the volumes (a volume
    given for one of them wins, as in Docker)."""
    taken = {m.destination.rstrip("/") for m in spec.mounts}
    readonly = bool(c.host_config.get("ReadonlyRootfs"))
    for m in etcfiles.write(c.dir, spec.hostname, address, readonly):
        if m.destination not in taken:
            spec.mounts.append(m)


# --- the container --------------------------------------------------------------------------------


class Streams:
    """The container's stdio on our side: output to the log, input from clients."""

    def __init__(self, c: manager.Container):
        self.tty = bool(c.config.get("Tty"))
        self.stdin_once = bool(c.config.get("StdinOnce"))
        self.open_stdin = bool(c.config.get("OpenStdin"))
        self.log = Writer(c.log_path)
        self.exit_status: int | None = None  # PID 1's wait status, once serve() has reaped it
        self.outputs: dict[int, str] = {}  # our read ends -> stream name
        self.stdin_w: int | None = None  # where input goes: a pipe, or the pty's master
        self.master: int | None = None
        self.child_fds: dict[str, int | None] = {}
        self.console: socket.socket | None = None
        if self.tty:
            self.console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            self.console_path = c.dir / "console.sock"
            # The path through an open handle on the directory: AF_UNIX paths are short.
            self.dir_fd = os.open(c.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self.console_short = f"/proc/self/fd/{self.dir_fd}/console.sock"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.console_path)
            self.console.bind(self.console_short)
            self.console.listen(1)
            return
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.outputs = {out_r: "stdout", err_r: "stderr"}
        stdin = None
        if self.open_stdin:
            stdin, self.stdin_w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(self.stdin_w, False)
        self.child_fds = {"stdin": stdin, "stdout": out_w, "stderr": err_w}

    def after_create(self) -> None:
        """Close the container's ends of the pipes (its process has them), or get the pty."""
        for fd in self.child_fds.values():
            if fd is not None:
                os.close(fd)
        if self.console is not None:
            conn, _ = self.console.accept()
            with conn:
                _msg, fds, _flags, _addr = socket.recv_fds(conn, 1024, 1)
            self.console.close()
            os.unlink(self.console_path)
            os.close(self.dir_fd)
            self.master = fds[0]
            os.set_blocking(self.master, False)
            self.outputs = {self.master: "stdout"}
            self.stdin_w = self.master if self.open_stdin else None

    def create_options(self) -> dict:
        if self.tty:
            return {"console_socket": self.console_short}
        null = subprocess_devnull()
        return {
            "stdin": self.child_fds["stdin"] if self.child_fds["stdin"] is not None else null,
            "stdout": self.child_fds["stdout"],
            "stderr": self.child_fds["stderr"],
        }


def subprocess_devnull() -> int:
    import subprocess

    return subprocess.DEVNULL


def run_container(record_dir: str, channel: Channel) -> None:
    c = manager.load_record(Path(record_dir))
    _become_monitor(c.dir, new_session=True)
    streams = None
    try:
        state = {"Status": "created", "MonitorPid": os.getpid()}
        state["MonitorStart"] = manager.proc_start_time(os.getpid())
        manager.write_json(c.dir / "state.json", state)  # cleanup finds us from here on
        net = set_up_network(c)
        spec = dockerconfig.to_spec(
            c.config,
            c.host_config,
            c.record["GraphDriver"]["MergedDir"],
            hostname=c.short_id,
            netns=c.netns if net else None,
        )
        _add_etc_files(c, spec, net.get("IPAddress"))
        streams = Streams(c)
        listener = _listen(c)
        with contextlib.suppress(lifecycle.NotFound):
            lifecycle.remove(lifecycle.get(c.runtime_id))  # left by a monitor that was killed
        rc = lifecycle.create(c.runtime_id, c.dir, spec=spec, **streams.create_options())
        streams.after_create()
        lifecycle.start(c.runtime_id)
    except BaseException as e:  # noqa: BLE001  any failure goes back to the starter, named
        if streams is not None:
            streams.log.close()
        manager.release_network(c)
        with contextlib.suppress(OSError):
            os.unlink(c.dir / "state.json")
        _report(channel, ERROR, **(_start_error(c, e) if isinstance(e, Exception) else KILLED))
        os._exit(1)
    state.update(
        Status="running",
        Running=True,
        Pid=rc.pid,
        PidStart=manager.proc_start_time(rc.pid),
        StartedAt=now(),
        NetworkSettings=net,
        StepTimes=rc.record.get("step_times", {}),  # the runtime's set-up, for lesson 50
    )
    manager.write_json(c.dir / "state.json", state)
    _report(channel, RUNNING, pid=rc.pid)
    try:
        status = serve(c, rc, streams, listener)
    except Exception:  # noqa: BLE001  a broken monitor must not leave the container unwatched
        import traceback

        traceback.print_exc()  # to monitor.err
        status = streams.exit_status
        if status is None:  # not reaped yet: the container cannot be served, so it ends
            lifecycle.kill_process(rc.pid)
            _, status = os.waitpid(rc.pid, 0)
    finish(c, rc, state, status, channel)


def _listen(c: manager.Container) -> socket.socket:
    """monitor.sock: where clients send input for the container's stdin, or a new pty size."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(c.socket_path)
    with manager.short_path(c.socket_path) as path:
        listener.bind(path)
    listener.listen(16)
    return listener


def serve(c: manager.Container, rc, streams: Streams, listener: socket.socket) -> int:
    """Copy output to the log and clients' input to stdin until PID 1 exits; its wait status."""
    pidfd = os.pidfd_open(rc.pid)
    clients: dict[socket.socket, bytes] = {}  # connection -> the start of its request line
    feeders: set[socket.socket] = set()  # connections whose bytes go to stdin
    pending = b""  # input the container has not taken yet
    drain_until = None
    while True:
        readers = [*streams.outputs, listener, *clients, *feeders]
        if streams.exit_status is None:
            readers.append(pidfd)
        writers = [streams.stdin_w] if pending and streams.stdin_w is not None else []
        timeout = None if drain_until is None else max(0.0, drain_until - time.monotonic())
        ready_r, ready_w, _ = select.select(readers, writers, [], timeout)
        if streams.exit_status is not None and (
            not streams.outputs or time.monotonic() >= drain_until
        ):
            break
        for fd in ready_r:
            if fd is pidfd:
                _, streams.exit_status = os.waitpid(rc.pid, 0)
                os.close(pidfd)
                drain_until = time.monotonic() + 2.0  # what is still in the pipes
            elif fd is listener:
                conn, _ = listener.accept()
                conn.setblocking(False)
                clients[conn] = b""
            elif fd in clients:
                _request(fd, clients, feeders, streams, pending)
            elif fd in feeders:
                data = _recv(fd)
                if data is None:
                    continue
                if data:
                    pending += data
                else:
                    feeders.discard(fd)
                    fd.close()
                    last = streams.stdin_once and not feeders and not streams.tty
                    if last and streams.stdin_w is not None:
                        _close_stdin(streams, pending)
                        pending = b""
            else:
                try:
                    data = os.read(fd, 65536)
                except OSError as e:
                    if e.errno == errno.EAGAIN:
                        continue
                    data = b""  # EIO: the pty's last slave closed
                if data:
                    streams.log.write(streams.outputs[fd], data)
                else:
                    del streams.outputs[fd]
                    if fd != streams.master:
                        os.close(fd)
        if ready_w and pending:
            try:
                sent = os.write(streams.stdin_w, pending)
                pending = pending[sent:]
            except BlockingIOError:
                pass
            except OSError:
                pending = b""  # the container closed its stdin
        if streams.exit_status is not None and not streams.outputs:
            break
    for conn in [*clients, *feeders]:
        conn.close()
    listener.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(c.socket_path)
    streams.log.close()
    return streams.exit_status


def _recv(sock: socket.socket) -> bytes | None:
    """What a client sent (b"" at its end of file; None: nothing yet)."""
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _close_stdin(streams: Streams, pending: bytes) -> None:
    """StdinOnce: the last writer has gone, so the container's stdin ends (after what is left)."""
    if pending:
        os.set_blocking(streams.stdin_w, True)
        with contextlib.suppress(OSError):
            os.write(streams.stdin_w, pending)
    os.close(streams.stdin_w)
    streams.stdin_w = None


def _request(conn, clients, feeders, streams: Streams, pending) -> None:
    """A client's first line: {"op": "stdin"} (what follows is input) or {"op": "resize"}."""
    try:
        chunk = conn.recv(4096)
    except BlockingIOError:
        return
    except OSError:
        chunk = b""
    buffer = clients[conn] + chunk
    if not chunk or b"\n" not in buffer:
        if not chunk:
            del clients[conn]
            conn.close()
        else:
            clients[conn] = buffer
        return
    line, rest = buffer.split(b"\n", 1)
    del clients[conn]
    try:
        request = json.loads(line)
    except ValueError:
        request = {}
    if request.get("op") == "stdin" and streams.stdin_w is not None:
        feeders.add(conn)
        if rest:
            try:
                os.write(streams.stdin_w, rest)
            except OSError:
                pass
        return
    if request.get("op") == "resize" and streams.master is not None:
        size = struct.pack("HHHH", int(request["height"]), int(request["width"]), 0, 0)
        fcntl.ioctl(streams.master, termios.TIOCSWINSZ, size)
        with contextlib.suppress(OSError):
            conn.setblocking(True)
            conn.sendall(b"ok\n")
    conn.close()


def finish(c: manager.Container, rc, state: dict, status: int, channel: Channel) -> None:
    """Record the exit, take the runtime container and network down, report, maybe remove."""
    oom = False
    with contextlib.suppress(LabkitError, OSError, AttributeError):
        oom = rc.cgroup.counter("oom_kills") > 0
    with contextlib.suppress(LabkitError, OSError):
        lifecycle.remove(rc)  # the one create returned: its record is what state.json holds
    manager.release_network(c)
    code = _exit_code(status)
    # Its ports are free again (a restart may get other ones for -p 80), as Docker shows it.
    state["NetworkSettings"] = dict(state.get("NetworkSettings") or {}, Published=[])
    state.update(
        Status="exited",
        Running=False,
        Pid=0,
        ExitCode=code,
        OOMKilled=oom,
        FinishedAt=now(),
        MonitorPid=None,
    )
    manager.write_json(c.dir / "state.json", state)
    _report(channel, EXITED, exit_code=code, oom=oom)
    if c.host_config.get("AutoRemove"):
        manager.write_tombstone(c, state)
        manager.remove_record(c)


# --- exec -----------------------------------------------------------------------------------------


def exec_spec(c: manager.Container, rc: lifecycle.Container, record: dict):
    """The container's process settings, for a process that joins its namespaces by path."""
    from labkit.container.spec import Namespace

    config = dict(c.config)
    pc = record["ProcessConfig"]
    config["Entrypoint"], config["Cmd"] = [pc["entrypoint"]], pc["arguments"]
    env = dict(e.partition("=")[::2] for e in config.get("Env") or [])
    env.update(dict(e.partition("=")[::2] for e in record.get("Env") or []))
    config["Env"] = [f"{k}={v}" for k, v in env.items()]
    config["User"] = pc.get("user") or config.get("User") or ""
    config["WorkingDir"] = record.get("WorkingDir") or config.get("WorkingDir") or ""
    config["Tty"] = False  # the caller's fds are the process's stdio
    host_config = dict(c.host_config, Binds=[])
    if pc.get("privileged"):
        host_config["Privileged"] = True
    # Users and groups by name come from the container's /etc, seen through its root.
    spec = dockerconfig.to_spec(config, host_config, f"/proc/{rc.pid}/root", hostname="")
    spec.root.path = "/"  # unused: the process enters the container's mount namespace
    spec.hostname = None
    spec.mounts = []
    spec.linux.resources = None
    spec.linux.masked_paths, spec.linux.readonly_paths = [], []
    kinds = {"pid": "pid", "ipc": "ipc", "uts": "uts", "mount": "mnt", "network": "net"}
    spec.linux.namespaces = [Namespace(t, f"/proc/{rc.pid}/ns/{k}") for t, k in kinds.items()]
    return spec


def run_exec(
    record_dir: str, exec_id: str, channel: Channel, console: str | None, console_size
) -> None:
    c = manager.load_record(Path(record_dir))
    path = c.dir / "execs" / f"{exec_id}.json"
    record = json.loads(path.read_text())
    # The caller's session: its terminal's Ctrl-C reaches the exec'd process, as before.
    _become_monitor(c.dir, new_session=False)
    try:
        rc = lifecycle.get(c.runtime_id)
        spec = exec_spec(c, rc, record)
        if console is not None:  # a pty of the container's own, made by its init
            spec.process.terminal = True
            spec.process.console_size = ConsoleSize(*console_size) if console_size else None
        pid = lifecycle.exec_in(rc, spec, path.with_suffix(""), console_socket=console)
    except BaseException as e:  # noqa: BLE001
        step = getattr(e, "step", None)
        code = 127 if step == "find_executable" else 126
        _report(channel, ERROR, error=str(e), step=step, exit_code=code)
        record.update(ExitCode=code)
        manager.write_json(path, record)
        os._exit(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # the caller sees end of file when the process (not we) is done
    record.update(
        Running=True,
        Pid=pid,
        MonitorPid=os.getpid(),
        MonitorStart=manager.proc_start_time(os.getpid()),
    )
    manager.write_json(path, record)
    _report(channel, RUNNING, pid=pid)
    os.close(channel.status)
    _, status = os.waitpid(pid, 0)
    record.update(Running=False, ExitCode=_exit_code(status), Pid=pid)
    with contextlib.suppress(OSError):
        manager.write_json(path, record)


def main(channel: Channel, fds: list[int]) -> None:
    """The monitor's entry (forkserver.launch): the request comes on the control pipe."""
    # Whatever the starter left in memory stays uncollected here: a file object of its,
    # finalized by our garbage collector, would close a descriptor number we have reused.
    gc.freeze()
    # We are single-threaded: fork the container's init ourselves, no fork server needed.
    forkserver.fork_in_this_process()
    request = channel.receive()
    os.close(channel.control)
    if request["mode"] == "container":
        run_container(request["dir"], channel)
    elif request["mode"] == "exec":
        run_exec(
            request["dir"],
            request["exec_id"],
            channel,
            request.get("console"),
            request.get("console_size"),
        )
    os._exit(0)
