"""The exec endpoints: a second process in a running container, as ``docker exec`` asks.

``POST /containers/{id}/exec`` records what to run; ``POST /exec/{id}/start`` hijacks the
connection, *then* starts the process (docker-py loses bytes that arrive with the 101), with its
stdio on pipes (stdout and stderr framed apart) or on a pty (one raw stream, resizable);
``GET /exec/{id}/json`` gives the exit code the CLI exits with.

The pty is made as ``runc exec --console-socket`` makes it (and ``labkit exec -t``): by the
process's init, inside the container's own devpts, as its controlling terminal, of the size
asked so far; its master comes back over a unix socket (SCM_RIGHTS). The docker CLI sends
``/exec/{id}/resize`` as soon as start's 101 is in, often before there is a pty: that size is
kept and given to the pty when it is made.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading

from ..container import manager
from . import streams
from .api import Reply, route
from .errors import BadRequest, Conflict

# What each exec was created to attach, the pty of a running tty exec, and the size asked of
# a tty exec's pty before it was there (rows, columns).
_attach: dict[str, dict] = {}
_ptys: dict[str, int] = {}
_sizes: dict[str, tuple[int, int]] = {}
_lock = threading.Lock()


def _cmd(body: dict) -> list[str]:
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd or not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
        raise BadRequest('exec needs Cmd, a non-empty list of strings (e.g. ["ls", "/"]).')
    return cmd


@route("POST", "/containers/{id}/exec")
def create(request, id: str) -> Reply:
    body = request.json(required=True)
    env = body.get("Env") or None
    if env is not None and not (isinstance(env, list) and all(isinstance(e, str) for e in env)):
        raise BadRequest("exec's Env must be a list of NAME=VALUE strings.")
    exec_id = manager.exec_create(
        id,
        _cmd(body),
        env=env,
        user=body.get("User") or None,
        workdir=body.get("WorkingDir") or None,
        tty=bool(body.get("Tty")),
        privileged=bool(body.get("Privileged")),
        stdin=bool(body.get("AttachStdin")),
    )
    size = _console_size(body.get("ConsoleSize"))
    with _lock:
        if size is not None:  # API 1.42+: the client's terminal, known before the start
            _sizes[exec_id] = size
        _attach[exec_id] = {
            "stdin": bool(body.get("AttachStdin")),
            "stdout": bool(body.get("AttachStdout", True)),
            "stderr": bool(body.get("AttachStderr", True)),
            "tty": bool(body.get("Tty")),
        }
    return Reply(201, {"Id": exec_id})


def _console_size(value) -> tuple[int, int] | None:
    """ConsoleSize [rows, columns] as the docker CLI sends it (None, or [0, 0]: not given)."""
    if value is None or value == [0, 0]:
        return None
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(n, int) and 0 < n < 65536 for n in value)
    ):
        raise BadRequest("exec's ConsoleSize must be [rows, columns], whole numbers from 1.")
    return value[0], value[1]


def _options(exec_id: str) -> dict:
    with _lock:
        found = _attach.get(exec_id)
    if found is None:
        info = manager.exec_inspect(exec_id)  # NotFound if there is no such exec
        config = info.get("ProcessConfig") or {}
        found = {
            "stdin": bool(info.get("OpenStdin")),
            "stdout": True,
            "stderr": True,
            "tty": bool(config.get("tty")),
        }
    return found


@route("POST", "/exec/{id}/start")
def start(request, id: str) -> Reply | None:
    body = request.json()
    options = _options(id)
    state = manager.exec_inspect(id)
    if state.get("Running") or state.get("Pid"):
        raise Conflict(f"exec {id[:12]} has been started already: create another.")
    if body.get("Detach"):
        manager.exec_start(id)
        return Reply(200)
    try:
        if bool(body.get("Tty", options["tty"])):
            conn = request.hijack(streams.RAW)
            _run_on_console(conn, id, options)
        else:
            conn = request.hijack(streams.MULTIPLEXED)
            _run_on_pipes(conn, id, options)
    finally:
        with _lock:
            _sizes.pop(id, None)
            _attach.pop(id, None)
    conn.close_write()
    return None


def _start(conn, exec_id: str, tty: bool, **how) -> bool:
    """Start the process (``manager.exec_start(exec_id, **how)``); if it cannot run, say why in
    the stream, as dockerd does (the 101 went out already, so no status can)."""
    try:
        manager.exec_start(exec_id, **how)
    except manager.StartError as e:
        message = (str(e) + "\r\n").encode()
        try:
            conn.send(message if tty else streams.frame("stdout", message))
        except streams.ClientGone:
            pass
        try:  # the exit code (126, 127) is what the CLI exits with
            manager.exec_wait(exec_id, timeout=5)
        except (TimeoutError, manager.NotFound):
            pass
        return False
    return True


def _stdin_pipe(conn, options) -> int | None:
    """The read end of a pipe fed from the client, or None (stdin is /dev/null then)."""
    if not options["stdin"]:
        streams.drain_input(conn)
        return None
    read_end, write_end = os.pipe()

    def write(data: bytes) -> None:
        os.write(write_end, data)

    streams.pump_stdin(conn, write, lambda: os.close(write_end))
    return read_end


def _run_on_pipes(conn, exec_id: str, options) -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    stdin = _stdin_pipe(conn, options)
    try:
        started = _start(conn, exec_id, False, stdin=stdin, stdout=out_w, stderr=err_w)
    finally:
        for fd in (out_w, err_w, stdin):
            if fd is not None:
                os.close(fd)  # the process holds its own copies now
    if not started:
        os.close(out_r)
        os.close(err_r)
        return
    # Two readers, one writer: frames from each pipe go out whole, in the order they come.
    lock = threading.Lock()
    gone = threading.Event()

    def copy(fd: int, name: str) -> None:
        for entry in streams.read_fd(fd, name):
            if gone.is_set() or not options[name]:
                continue
            with lock:
                try:
                    conn.send(streams.frame(name, entry.data))
                except streams.ClientGone:
                    gone.set()
        os.close(fd)

    err_thread = threading.Thread(target=copy, args=(err_r, "stderr"), daemon=True)
    err_thread.start()
    copy(out_r, "stdout")
    err_thread.join()
    manager.exec_wait(exec_id)


def _run_on_console(conn, exec_id: str, options) -> None:
    """The process on a pty of the container's own, its master sent to our console socket."""
    # A directory only root can enter: whoever connects to the socket first gets the terminal.
    with tempfile.TemporaryDirectory(prefix="labkit-exec-") as private:
        path = os.path.join(private, "console.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as listener:
            listener.bind(path)
            listener.listen(1)
            with _lock:
                size = _sizes.get(exec_id)
            if not _start(conn, exec_id, True, console_socket=path, console_size=size):
                return
            # exec_start returned: the init has connected and sent the master already.
            listener.settimeout(manager.START_TIMEOUT)
            console, _ = listener.accept()
            with console:
                _msg, fds, _flags, _addr = socket.recv_fds(console, 1024, 1)
    master = fds[0]
    try:
        with _lock:
            _ptys[exec_id] = master
            later = _sizes.get(exec_id)
        if later is not None and later != size:  # asked for while the process started
            streams.set_window(master, *later)
        if options["stdin"]:

            def write(data: bytes) -> None:
                os.write(master, data)

            # The end of a tty's input is a keystroke (^D), not the client's half-close.
            streams.pump_stdin(conn, write, lambda: None)
        else:
            streams.drain_input(conn)
        streams.send_output(conn, streams.read_fd(master, "stdout"), tty=True)
        manager.exec_wait(exec_id)
    finally:
        with _lock:
            _ptys.pop(exec_id, None)
        os.close(master)


@route("POST", "/exec/{id}/resize")
def resize(request, id: str) -> Reply:
    height = request.int_arg("h", 0, high=10000)
    width = request.int_arg("w", 0, high=10000)
    state = manager.exec_inspect(id)  # 404 for an unknown exec
    if not _options(id)["tty"]:
        raise Conflict(f"exec {id[:12]} has no terminal (-t) to resize.")
    if state.get("ExitCode") is not None and not state.get("Running"):
        raise Conflict(f"exec {id[:12]} has ended: its terminal is gone.")
    with _lock:
        master = _ptys.get(id)
        if master is None:  # not made yet: the size it will be made with
            _sizes[id] = (height, width)
        else:
            streams.set_window(master, height, width)
    return Reply(200)


@route("GET", "/exec/{id}/json")
def inspect(request, id: str) -> Reply:
    return Reply(200, manager.exec_inspect(id))
