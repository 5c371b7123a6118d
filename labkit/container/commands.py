"""``labkit run``, ``ps``, ``exec``, ``logs``, ``stop``, ``rm``, ``inspect``: Docker's commands.

Each command turns its flags into Docker's Config and HostConfig, as the docker client does
before it calls the engine, and calls ``manager``. Exit statuses are Docker's: ``run`` and
``exec`` exit as the container's command did, 125 when labkit itself refuses or fails, 126 when
the command cannot be executed, 127 when it is not found; the other commands exit 1 on error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading

from ..errors import BadInput, LabkitError
from . import dockerconfig, manager

LABKIT_FAILED = 125  # Docker's: the daemon (here: labkit) could not do it
NAMES = ("run", "ps", "exec", "logs", "stop", "rm", "inspect")  # the commands, in Docker's words


def _fail(message: object, status: int) -> int:
    print(f"labkit: {message}", file=sys.stderr)
    return status


# --- flags -> Docker's Config and HostConfig -----------------------------------------------------


def _publish(text: str) -> tuple[str, dict]:
    """Docker's -p: "80", "8080:80", "8080:80/udp", "192.168.1.5:8080:80", "192.168.1.5::80"
    -> ("80/tcp", {"HostIp": ..., "HostPort": ...}); a host port left out means any free one."""
    spec, _, proto = text.partition("/")
    parts = spec.split(":")
    if len(parts) <= 3:
        host_ip, host_port, port = [""] * (3 - len(parts)) + parts
    if (
        len(parts) > 3
        or proto not in ("", "tcp", "udp")
        or not port.isdigit()
        or not (host_port == "" or host_port.isdigit())
        or not all(1 <= int(p) <= 65535 for p in (port, host_port) if p)
    ):
        raise BadInput(
            f"-p {text} is not [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp] with ports 1 to "
            "65535 (no ranges): give e.g. -p 8080:80, -p 80 for any free host port, or "
            "-p 192.168.1.5:8080:53/udp."
        )
    key = f"{port}/{proto or 'tcp'}"
    return key, {"HostIp": host_ip, "HostPort": host_port}


def configs(args: argparse.Namespace) -> tuple[dict, dict]:
    """The run flags as Docker's (Config, HostConfig)."""
    config = {
        "Image": args.image,
        "Cmd": args.cmd or None,
        "Env": args.env or [],
        "WorkingDir": args.workdir or "",
        "User": args.user or "",
        "Hostname": args.hostname or "",
        "Tty": args.tty,
        "OpenStdin": args.interactive,
        "StdinOnce": args.interactive and not args.detach,
        "AttachStdin": args.interactive and not args.detach,
        "AttachStdout": not args.detach,
        "AttachStderr": not args.detach,
    }
    if args.entrypoint is not None:
        config["Entrypoint"] = [args.entrypoint] if args.entrypoint else None
    ports: dict[str, list] = {}
    for text in args.publish or []:
        key, binding = _publish(text)
        ports.setdefault(key, []).append(binding)
    host_config = {
        "AutoRemove": args.rm,
        "NetworkMode": args.network,
        "PortBindings": ports,
        "Binds": args.volume or [],
        "CapAdd": args.cap_add or [],
        "CapDrop": args.cap_drop or [],
        "ReadonlyRootfs": args.read_only,
        "Privileged": args.privileged,
    }
    if args.memory is not None:
        host_config["Memory"] = dockerconfig.parse_memory(args.memory)
    if args.cpus is not None:
        try:
            host_config["NanoCpus"] = int(float(args.cpus) * 1e9)
        except ValueError:
            raise BadInput(f"--cpus {args.cpus!r} is not a number of CPUs, e.g. 0.5.") from None
        if host_config["NanoCpus"] <= 0:
            raise BadInput(f"--cpus {args.cpus!r} must be more than 0, e.g. 0.5.")
    if args.pids_limit is not None:
        if not args.pids_limit.lstrip("-").isdigit():
            raise BadInput(f"--pids-limit {args.pids_limit!r} is not a number of processes.")
        host_config["PidsLimit"] = int(args.pids_limit)
    return config, host_config


# --- run ------------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        config, host_config = configs(args)
        c = manager.create(config, host_config, args.name)
    except (LabkitError, OSError) as e:
        return _fail(e, LABKIT_FAILED)
    # Attached before the start, as the docker CLI does: with --rm the container may exit and
    # be removed before a later attach could find it.
    attach = None if args.detach else manager.attach(c, stdin=args.interactive, logs=True)
    try:
        c = manager.start(c)
    except (LabkitError, OSError) as e:
        if attach:
            attach.close()
        if isinstance(e, manager.StartError):  # (start has removed a --rm container)
            return _fail(e, e.exit_code)
        if args.rm:
            with contextlib.suppress(LabkitError, OSError):
                manager.remove(c, force=True)
        return _fail(e, LABKIT_FAILED)
    if attach is None:
        print(c.id)
        return 0
    return _attached(c, attach, args)


def _attached(c: manager.Container, attach: manager.Attach, args: argparse.Namespace) -> int:
    """Show the container's output, feed it our stdin (-i), exit as it did."""
    restore = None
    if args.tty and os.isatty(0):
        restore = _raw_terminal()
        with contextlib.suppress(LabkitError, OSError):
            size = os.get_terminal_size(0)
            manager.resize(c, size.lines, size.columns)
    else:
        # Docker's --sig-proxy: signals to us go on to the container's PID 1.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda s, _f: _forward(c, s))
    if args.interactive:
        threading.Thread(target=_feed, args=(attach,), daemon=True).start()
    try:
        out = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
        for entry in attach.output():
            with contextlib.suppress(BrokenPipeError):  # `| head`: the reader has gone
                out[entry.stream].write(entry.data)
                out[entry.stream].flush()
        # With --rm, Docker's client waits until the container is gone, not only stopped.
        return manager.wait(c, "removed" if args.rm else "not-running")["StatusCode"]
    finally:
        if restore:
            restore()
        attach.close()


def _forward(c: manager.Container, sig: int) -> None:
    with contextlib.suppress(LabkitError, OSError):
        manager.kill(c, sig)


def _feed(attach: manager.Attach) -> None:
    """Copy our stdin to the container's until our end of file."""
    with contextlib.suppress(OSError):
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            attach.write(data)
    attach.close_stdin()


def _raw_terminal():
    """Put our terminal in raw mode (keys go to the container's pty); a function to undo it."""
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0)
    return lambda: termios.tcsetattr(0, termios.TCSADRAIN, saved)


# --- the others -----------------------------------------------------------------------------------


def _each(refs: list[str], action) -> int:
    """Run *action* on each container; print its name as Docker does; 1 if any failed."""
    status = 0
    for ref in refs:
        try:
            action(ref)
            print(ref)
        except (LabkitError, OSError) as e:
            status = _fail(e, 1)
    return status


def _cmd_ps(args: argparse.Namespace) -> int:
    try:
        found = manager.list_containers(all=args.all)
    except (LabkitError, OSError) as e:
        return _fail(e, 1)
    if args.quiet:
        for c in found:
            print(c.short_id)
        return 0
    rows = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
    for c in found:
        s = c.summary()
        command = s["Command"] if len(s["Command"]) <= 20 else s["Command"][:19] + "…"
        ports = ", ".join(
            f"{p['IP']}:{p['PublicPort']}->{p['PrivatePort']}/{p['Type']}" for p in s["Ports"]
        )
        created = manager.ago(c.record["Created"]) + " ago"
        rows.append(
            (c.short_id, s["Image"], f'"{command}"', created, s["Status"], ports, c.name[1:])
        )
    widths = [max(len(r[i]) for r in rows) + 3 for i in range(len(rows[0]))]
    for row in rows:
        print("".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _cmd_exec(args: argparse.Namespace) -> int:
    try:
        exec_id = manager.exec_create(
            args.container,
            args.cmd,
            env=args.env,
            user=args.user,
            workdir=args.workdir,
            tty=args.tty,
            privileged=args.privileged,
            stdin=args.interactive,
        )
        if args.tty:
            return _exec_on_a_pty(exec_id, args.interactive)
        manager.exec_start(exec_id, 0 if args.interactive else None, 1, 2)
    except manager.StartError as e:
        return _fail(e, e.exit_code)
    except (LabkitError, OSError) as e:
        return _fail(e, 1 if isinstance(e, manager.NotFound) else LABKIT_FAILED)
    return manager.exec_wait(exec_id)


def _exec_on_a_pty(exec_id: str, interactive: bool) -> int:
    """exec -t: the process gets a pty of the container's own; we copy between it and ours.

    As with runc's --console-socket, the container's init opens the pty inside the container
    (the slave becomes its controlling terminal) and sends us the master over a unix socket.
    Our own terminal goes raw, so keys (Ctrl-C too) reach the container's pty as typed.
    """
    import socket
    import tempfile

    with tempfile.TemporaryDirectory(prefix="labkit-exec-") as private:  # only root reaches it
        path = os.path.join(private, "console.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as listener:
            listener.bind(path)
            listener.listen(1)
            manager.exec_start(exec_id, console_socket=path, console_size=_window_size())
            conn, _ = listener.accept()
            with conn:
                _name, fds, _flags, _addr = socket.recv_fds(conn, 1024, 1)
    master = fds[0]
    restore = _raw_terminal() if os.isatty(0) else None
    try:
        signal.signal(signal.SIGWINCH, lambda _s, _f: _copy_window_size(master))
        _relay(master, interactive)
    finally:
        if restore:
            restore()
        os.close(master)
    return manager.exec_wait(exec_id)


def _window_size() -> tuple[int, int] | None:
    """Our terminal's (rows, columns), if stdin is one."""
    try:
        size = os.get_terminal_size(0)
    except OSError:
        return None
    return size.lines, size.columns


def _copy_window_size(master: int) -> None:
    """Our terminal's size onto the container's pty (TIOCSWINSZ), when we have a terminal."""
    import fcntl
    import termios

    with contextlib.suppress(OSError):
        fcntl.ioctl(master, termios.TIOCSWINSZ, fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))


def _relay(master: int, interactive: bool) -> None:
    """Copy the pty's output to our stdout (and, -i, our stdin to it) until it is closed."""
    import select

    inputs = [master, 0] if interactive else [master]
    while True:
        try:
            ready = select.select(inputs, [], [])[0]
        except InterruptedError:
            continue  # (a SIGWINCH)
        if 0 in ready:
            data = os.read(0, 65536)
            if data:
                _write_all(master, data)
            else:
                inputs.remove(0)  # our end of input; on a terminal, ^D is a key like the others
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last slave closed, the process has gone
                data = b""
            if not data:
                return
            with contextlib.suppress(BrokenPipeError):
                _write_all(1, data)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _cmd_logs(args: argparse.Namespace) -> int:
    out = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    try:
        for entry in manager.logs(args.container, follow=args.follow, tail=args.tail):
            stamp = entry.time.encode() + b" " if args.timestamps else b""
            out[entry.stream].write(stamp + entry.data)
            out[entry.stream].flush()
    except (LabkitError, OSError) as e:
        return _fail(e, 1)
    except KeyboardInterrupt:
        return 130
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    return _each(args.containers, lambda ref: manager.stop(ref, args.time))


def _cmd_rm(args: argparse.Namespace) -> int:
    return _each(args.containers, lambda ref: manager.remove(ref, force=args.force))


def _cmd_inspect(args: argparse.Namespace) -> int:
    found, status = [], 0
    for ref in args.containers:
        try:
            found.append(manager.get(ref).inspect())
        except (LabkitError, OSError) as e:
            status = _fail(e, 1)
    print(json.dumps(found, indent=4))
    return status


def _usage_errors_are_dockers(parser: argparse.ArgumentParser) -> None:
    """A bad flag is one line and status 125, as the docker client answers it."""

    def error(message: str):
        print(f"{parser.prog}: {message}; see '{parser.prog} --help'.", file=sys.stderr)
        sys.exit(LABKIT_FAILED)

    parser.error = error
    parse_known_args = parser.parse_known_args

    def strict(args=None, namespace=None):
        namespace, extras = parse_known_args(args, namespace)
        if extras:
            error(f"unknown flag: {extras[0]}")
        return namespace, extras

    parser.parse_known_args = strict


def add_commands(sub) -> None:
    """Add run, ps, exec, logs, stop, rm and inspect to the ``labkit`` command's subparsers."""
    try:
        _add_commands(sub)
    finally:
        for name in NAMES:
            if name in sub.choices:
                _usage_errors_are_dockers(sub.choices[name])


def _add_commands(sub) -> None:
    # -h is Docker's --hostname, so help is --help only.
    p = sub.add_parser("run", add_help=False, help="run a command in a new container (docker run)")
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument(
        "-d", "--detach", action="store_true", help="run in the background, print its id"
    )
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="give it a pseudo-terminal")
    p.add_argument("--name", help="a name for the container")
    p.add_argument("-e", "--env", action="append", help="NAME=VALUE in its environment")
    p.add_argument("-w", "--workdir", help="its working directory")
    p.add_argument("-u", "--user", help="USER[:GROUP] (names or numbers)")
    p.add_argument("-v", "--volume", action="append", help="SRC:DST[:ro] bind mount")
    p.add_argument(
        "-p", "--publish", action="append", help="[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/udp]"
    )
    p.add_argument("--network", default="none", help="none (default) or bridge (the lab bridge)")
    p.add_argument("--memory", "-m", help="memory limit, e.g. 64m")
    p.add_argument("--cpus", help="CPU time as a number of CPUs, e.g. 0.5")
    p.add_argument("--pids-limit", help="most processes and threads")
    p.add_argument("--hostname", "-h", help="its hostname (default: its short id)")
    p.add_argument("--cap-add", action="append", help="add a capability (or ALL)")
    p.add_argument("--cap-drop", action="append", help="drop a capability (or ALL)")
    p.add_argument("--read-only", action="store_true", help="mount its root read-only")
    p.add_argument(
        "--privileged", action="store_true", help="every capability, no seccomp or masks"
    )
    p.add_argument("--entrypoint", help="replace the image's entrypoint")
    p.add_argument("image")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("ps", help="list containers (docker ps)")
    p.add_argument("-a", "--all", action="store_true", help="also those not running")
    p.add_argument("-q", "--quiet", action="store_true", help="only ids")
    p.set_defaults(func=_cmd_ps)

    p = sub.add_parser("exec", help="run a command in a running container (docker exec)")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append")
    p.add_argument("-u", "--user")
    p.add_argument("-w", "--workdir")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("container")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(func=_cmd_exec)

    p = sub.add_parser("logs", help="a container's output (docker logs)")
    p.add_argument("-f", "--follow", action="store_true", help="go on until it stops")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("--tail", default="all", help="only the last N lines")
    p.add_argument("container")
    p.set_defaults(func=_cmd_logs)

    p = sub.add_parser("stop", help="SIGTERM, then SIGKILL after -t seconds (docker stop)")
    p.add_argument("-t", "--time", type=float, default=10)
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=_cmd_stop)

    p = sub.add_parser("rm", help="remove containers (docker rm)")
    p.add_argument("-f", "--force", action="store_true", help="kill a running one first")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=_cmd_rm)

    p = sub.add_parser("inspect", help="a container's record as JSON (docker inspect)")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=_cmd_inspect)
