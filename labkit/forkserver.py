"""The fork server: one single-threaded Python that forks every init child (labkit's zygote).

Namespace work never happens in the caller's own process: a notebook kernel has threads, and
the kernel refuses ``unshare(CLONE_NEWUSER)`` to a multi-threaded process (see ``_init.py``).
So each namespaced command and each container needs a fresh single-threaded child. Starting a
new Python interpreter for each one costs tens of milliseconds, most of a container's start-up.
Instead, the first time a process needs such a child it starts this server, once: a fresh
Python without threads that has imported labkit's init code. For every child after that it
sends a request over a unix socket, and the server forks:

    owner (notebook kernel, engine, CLI)         fork server (single-threaded)
    -----------------------------------------------------------------------------------------
    socketpair(), start the server        -->   PR_SET_PDEATHSIG; import the init code
                                          <--   "ready"
    request: the entry ("namespaces",     -->   clone(CLONE_PARENT): the child is the
    "container", "monitor"), the umask,         owner's child, not the server's
    the import path, and fds by
    SCM_RIGHTS: stdin, stdout, stderr, the
    cwd, the status and control pipes,    <--   the child's PID
    and any extra (the exec FIFO, ...)
    follows the set-up on the pipes             the child: its fds put in place, every
    (channel.py), waits for the child           other fd closed, signals reset; it runs
                                                the entry: the steps, then exec

Why CLONE_PARENT: the owner is the one that waits for the child (its exit status, no zombie)
and may be its subreaper (``labkit-runtime run``); the server then never has a child to reap,
and a crash of the server leaves every child it made with its owner. The server dies with its
owner (a parent-death signal on the server only); the children do not inherit that signal, so a
detached container outlives the process that created it, as it did before.

One server per owner process and state directory: its command line names the state directory,
so ``labkit cleanup`` finds it (and any init child that has not exec'd yet) with ``/proc``.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import marshal
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence

if __name__ == "__main__":
    # Run as the server (python -I -S forkserver.py SOCKET_FD OWNER_PID STATE_DIR): make the
    # package importable without site-packages (-S starts faster), and serve from the module
    # itself, so that there is one copy of it.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["LABKIT_STATE_DIR"] = sys.argv[3]
    from labkit import forkserver  # noqa: PLW0406  the real module, not this __main__ copy

    forkserver.serve(int(sys.argv[1]), int(sys.argv[2]))
    sys.exit(0)

from labkit import sys as ksys
from labkit.channel import Channel, Parent
from labkit.errors import LabkitError
from labkit.state import state_dir

_SERVER = os.path.abspath(__file__)
SERVER_NAME = "labkit-forksrv"  # the server's /proc/PID/comm (at most 15 bytes)
# What a child can run, and its /proc/PID/comm until it execs (how ps and cleanup tell them).
ENTRIES = {
    "namespaces": "labkit-ns-init",
    "container": "labkit-ctr-init",
    "monitor": "labkit-monitor",
}
# Each entry's module, named rather than imported: the launcher sits below the runtime it starts.
MODULES = {
    "namespaces": "labkit._init",
    "container": "labkit.container.init",
    "monitor": "labkit.container.monitor",  # a container's monitor (it does not exec)
}
INITS = ("namespaces", "container")  # imported as the server starts: the init children's code
STDIO, CWD = 3, 1  # a request's fds start with stdin, stdout, stderr, then the cwd
FIRST_PIPE = 3  # in the child: the status pipe, then the control pipe, then any extra fds
MAX_FDS = 16
TIMEOUT = 30.0  # seconds the server may take to start or answer (emulated kernels are slow)


class ForkServerError(LabkitError):
    """The fork server could not be started, or died while starting a child."""


# --- the server ---------------------------------------------------------------------------------


def serve(sock_fd: int, owner: int) -> None:
    """Answer requests until the owner goes away; each request is one child to clone."""
    # Die with the owner. The kernel sends this signal when the *thread* that started us ends,
    # so the owner starts us from a thread that lives as long as we do (ForkServer.start).
    ksys.prctl(ksys.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != owner:
        return  # the owner died before the prctl: there is nobody to serve
    _set_comm(SERVER_NAME)
    # Ctrl-C in the owner's terminal reaches its whole process group, us too: what it means is
    # for the owner to decide. The server's only way out is its owner's end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    # The init entries, imported once, here: every child forked from now on has them loaded.
    for entry in INITS:
        _entry(entry)

    sock = socket.socket(fileno=sock_fd)
    sock.send(b"ready")
    while True:
        try:
            data, fds, flags, _ = socket.recv_fds(sock, 65536, MAX_FDS)
        except ConnectionError:
            return
        if not data:
            return  # the owner closed its end
        try:
            pid, in_cgroup = _clone(data, fds, flags)
            reply = {"pid": pid, "in_cgroup": in_cgroup}
        except (OSError, ImportError, ValueError, KeyError, TypeError, EOFError) as e:
            reply = {"error": str(e), "errno": getattr(e, "errno", None) or 0}
        finally:
            for fd in fds:  # the child has its copies; the server keeps none
                os.close(fd)
        sock.send(marshal.dumps(reply))


def _clone(data: bytes, fds: list[int], flags: int) -> int:
    """Check one request, then clone the child that will run it; return the child's PID."""
    if flags & socket.MSG_CTRUNC:
        raise ValueError(f"a request may pass at most {MAX_FDS} file descriptors")
    request = marshal.loads(data)
    if not isinstance(request, dict) or request.get("entry") not in ENTRIES:
        raise ValueError(f"a request names one of the entries {', '.join(ENTRIES)}")
    if len(fds) < STDIO + CWD + 2:
        raise ValueError("a request passes stdio, the cwd and the two pipes")
    _entry(request["entry"])  # imported here, once (a monitor's code: at the first request)
    cgroup = fds[-1] if request.get("cgroup") else None  # sent last; serve() closes it too
    pid, in_cgroup = _clone_child(cgroup, parent=True)
    if pid == 0:
        _run_child(request, fds[:-1] if cgroup is not None else fds)  # never returns
    return pid, in_cgroup


def _clone_child(cgroup: int | None, parent: bool) -> tuple[int, bool]:
    """A fork of this process (PID 0 in the child), and whether it was born in *cgroup*.

    *cgroup*: a cgroup2 directory's fd, or None.

    clone3, which can do that, is older than every kernel labkit supports; but Docker's default
    seccomp profile answers it with ENOSYS (so that the C library falls back to clone): there
    the child starts where we are, and the caller moves it in (``Child.in_cgroup`` says which).
    """
    if cgroup is not None:
        try:
            return ksys.clone_into_cgroup(cgroup, parent=parent), True
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
    return (ksys.clone_parent() if parent else os.fork()), False


def _run_child(request: dict, fds: list[int]) -> None:
    """In the new child: take only what the request gives, then run its entry. Never returns."""
    code = 127
    try:
        stdio, cwd, pipes = fds[:STDIO], fds[STDIO], fds[STDIO + CWD :]
        os.fchdir(cwd)  # the owner's working directory, as a fork of the owner would have
        os.umask(request["umask"])
        sys.path[:] = request["path"]  # the owner's: a monitor imports pyroute2 if it needs it
        _place_fds(stdio, pipes)
        _reset_signals()
        _set_comm(ENTRIES[request["entry"]])
        channel = Channel(FIRST_PIPE, FIRST_PIPE + 1)
        extra = list(range(FIRST_PIPE + 2, FIRST_PIPE + len(pipes)))
        try:
            _entry(request["entry"])(channel, extra)
        except SystemExit:
            raise
        except BaseException as e:  # noqa: BLE001  reported, as a step's failure would be
            channel.fail("starting the init child", e)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        os._exit(code)  # never back into the server's loop


def _entry(name: str):
    return importlib.import_module(MODULES[name]).main


def _place_fds(stdio: list[int], pipes: list[int]) -> None:
    """stdio at 0, 1, 2 (kept across exec); the pipes from 3 on (closed at exec); no others."""
    wanted = [*stdio, *pipes]
    # Move every fd above the slots first, so no dup2 below overwrites one still to be placed.
    first_free = len(wanted)
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, first_free) for fd in wanted]
    for slot, fd in enumerate(moved):
        os.dup2(fd, slot, inheritable=slot < STDIO)
    # Everything else goes: the server's socket, the other requests' fds, whatever it inherited.
    os.closerange(first_free, os.sysconf("SC_OPEN_MAX"))


def _reset_signals() -> None:
    """Every signal back to its default and none blocked, as a freshly exec'd program has them.

    The server is a Python: it ignores SIGPIPE and SIGXFSZ, and those would stay ignored across
    the command's exec.
    """
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass  # reserved by the C library
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _set_comm(name: str) -> None:
    with open("/proc/self/comm", "w") as f:
        f.write(name)


# --- the owner's end ----------------------------------------------------------------------------


class ForkServer:
    """The owner's handle on one server: started on first use, restarted after it died."""

    def __init__(self, state: str):
        self.state = state
        self.lock = threading.Lock()  # one request at a time on the socket
        self.sock: socket.socket | None = None
        self.pid: int | None = None
        self.exited = threading.Event()

    def running(self) -> bool:
        return self.sock is not None and not self.exited.is_set()

    def start(self) -> None:
        """Start the server and wait until it has imported the init code."""
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        started: list = []
        ready = threading.Event()
        exited = self.exited = threading.Event()
        argv = [
            sys.executable,
            "-I",
            "-S",
            _SERVER,
            str(theirs.fileno()),
            str(os.getpid()),
            self.state,
        ]

        def own() -> None:
            # This thread starts the server and waits for it: the parent-death signal follows
            # the thread that forked, and this one lives exactly as long as the server.
            try:
                server = subprocess.Popen(
                    argv,
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    cwd="/",  # holds no directory or mount busy
                )
            except OSError as e:
                started.append(e)
                return
            finally:
                ready.set()
            started.append(server)
            server.wait()
            exited.set()

        threading.Thread(target=own, name="labkit-forkserver", daemon=True).start()
        ready.wait()
        theirs.close()
        if isinstance(started[0], OSError):
            ours.close()
            raise ForkServerError(f"cannot start the fork server: {started[0]}.")
        self.pid = started[0].pid
        self.sock = ours
        if self._receive() != b"ready":
            self._died("starting (its error is on stderr)")

    def clone(
        self, entry: str, stdio: Sequence[int], pipes: Sequence[int], cgroup: int | None = None
    ) -> tuple[int, bool]:
        """Ask the server for a child running *entry*; it gets *stdio* and *pipes* only.

        Returns its PID, and whether it was born in the cgroup2 directory *cgroup* (an fd).
        """
        request = {
            "entry": entry,
            "umask": _umask(),
            "path": sys.path,
            "cgroup": cgroup is not None,  # its fd is the last one passed
        }
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with self.lock:
                if not self.running():
                    self.start()
                try:
                    fds = [*stdio, cwd, *pipes, *([cgroup] if cgroup is not None else [])]
                    socket.send_fds(self.sock, [marshal.dumps(request)], fds)
                except OSError:
                    self._died("starting a child")
                reply = self._receive()
        finally:
            os.close(cwd)
        if not reply:
            self._died("starting a child")
        answer = marshal.loads(reply)
        if "pid" not in answer:
            raise OSError(answer["errno"], f"the fork server could not clone: {answer['error']}")
        return answer["pid"], answer["in_cgroup"]

    def _receive(self) -> bytes:
        if not select.select([self.sock], [], [], TIMEOUT)[0]:
            pid = self.pid
            self.kill()
            raise ForkServerError(
                f"the fork server (PID {pid}) did not answer within {TIMEOUT:g} s and was "
                "killed (is the machine overloaded?); the next call starts a new one."
            )
        try:
            return self.sock.recv(65536)
        except OSError:
            return b""

    def _died(self, doing: str) -> None:
        pid = self.pid
        self.close()
        raise ForkServerError(
            f"the fork server (PID {pid}) died while {doing}; the next call starts a new one."
        )

    def kill(self) -> None:
        if self.pid is not None and not self.exited.is_set():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.close()

    def close(self) -> None:
        """Close our end: a running server sees end-of-file and exits."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None


_servers: dict[str, ForkServer] = {}
_servers_lock = threading.Lock()


def server() -> ForkServer:
    """This process's server for the current state directory (not started until first use)."""
    key = str(state_dir())
    with _servers_lock:
        if key not in _servers:
            _servers[key] = ForkServer(key)
        return _servers[key]


def _forget_servers() -> None:
    """In a child made by os.fork(): the servers are the parent's, and would clone children
    for the parent. Start afresh."""
    global _servers_lock
    _servers_lock = threading.Lock()
    for s in _servers.values():
        if s.sock is not None:
            s.sock.close()
    _servers.clear()


os.register_at_fork(after_in_child=_forget_servers)


def _umask() -> int:
    """The caller's umask, read without changing it (os.umask can only set, and threads race)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    raise OSError(0, "no Umask line in /proc/self/status")


def _own_stdio(fd: int, opened: list[int]) -> int:
    """Our own *fd* (0, 1 or 2), or /dev/null if we have it closed: a child with a closed
    stdout would find the first file it opens there."""
    try:
        os.fstat(fd)
        return fd
    except OSError:
        opened.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
        return opened[-1]


_fork_here = False


def fork_in_this_process() -> None:
    """Let this process fork its init children itself while it has a single thread.

    For a command-line program that makes one container and exits (``labkit``,
    ``labkit-runtime``) and for a container's monitor: starting a server, a second
    interpreter, would cost more than it saves. The child does what a server's child does; a
    process that has started threads uses the server all the same.
    """
    global _fork_here
    _fork_here = True


def _fork_in_this_process(entry: str, fds: list[int], cgroup: int | None) -> tuple[int, bool]:
    request = {"entry": entry, "umask": _umask(), "path": sys.path}
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pid, in_cgroup = _clone_child(cgroup, parent=False)
        if pid == 0:
            _run_child(request, [*fds[:STDIO], cwd, *fds[STDIO:]])  # never returns
    finally:
        os.close(cwd)
    return pid, in_cgroup


def _threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


class Child(subprocess.Popen):
    """A child the fork server cloned, with subprocess.Popen's pipes, wait and communicate.

    Popen makes the pipes asked for (stdin=PIPE, ...) and, once the child exists, reads, writes
    and waits for it; only the start differs. Popen would fork and exec here; this asks the fork
    server for the child instead. The child is ours (CLONE_PARENT), so Popen's wait works as is.
    """

    def __init__(
        self, entry: str, pipes: Sequence[int], cgroup: int | None = None, **popen_options
    ):
        self.entry = entry
        self._pipes = list(pipes)
        self._cgroup = cgroup
        self.in_cgroup = False  # born in the cgroup *cgroup* names (not if clone3 was refused)
        super().__init__([ENTRIES[entry]], **popen_options)

    def _execute_child(
        self,
        args,
        executable,
        preexec_fn,
        close_fds,
        pass_fds,
        cwd,
        env,
        startupinfo,
        creationflags,
        shell,
        p2cread,
        p2cwrite,
        c2pread,
        c2pwrite,
        errread,
        errwrite,
        restore_signals,
        gid,
        gids,
        uid,
        umask,
        start_new_session,
        process_group,
    ):
        # -1: the caller gave nothing, so the child shares the caller's own stdin/out/err.
        opened = []
        stdio = [
            fd if fd != -1 else _own_stdio(own, opened)
            for own, fd in enumerate((p2cread, c2pwrite, errwrite))
        ]
        try:
            if _fork_here and _threads() == 1:
                fds = [*stdio, *self._pipes]
                self.pid, self.in_cgroup = _fork_in_this_process(self.entry, fds, self._cgroup)
            else:
                self.pid, self.in_cgroup = server().clone(
                    self.entry, stdio, self._pipes, self._cgroup
                )
        finally:
            for fd in opened:
                os.close(fd)
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)


def launch(
    entry: str, extra_fds: Sequence[int] = (), cgroup: int | None = None, **popen_options
) -> tuple[Child, Parent]:
    """Start a child running *entry* ("namespaces", "container" or "monitor"); the one launcher.

    The child gets stdin, stdout and stderr as ``subprocess.Popen`` would (*popen_options*),
    the status and control pipes, and *extra_fds* (in the child: 5, 6, ...), and nothing else.
    With *cgroup* (a cgroup2 directory's fd) it is born in that cgroup (``Child.in_cgroup``).
    Returns the child and the parent's ends of its pipes (see channel.py).
    """
    status_r, status_w = os.pipe()
    control_r, control_w = os.pipe()
    try:
        child = Child(entry, [status_w, control_r, *extra_fds], cgroup, **popen_options)
    except BaseException:
        os.close(status_r)
        os.close(control_w)
        raise
    finally:
        # Only the child may hold these now: its exec closes status_w, and we see end-of-file.
        os.close(status_w)
        os.close(control_r)
    return child, Parent(status_r, control_w)


# --- labkit cleanup -----------------------------------------------------------------------------


def processes() -> list[tuple[int, str]]:
    """(PID, comm) of this state directory's servers and init children that have not exec'd.

    A child shares the server's command line until it execs (a fork does not change it), so
    the command line finds both; the comm tells them apart.
    """
    found = []
    wanted = [_SERVER.encode(), str(state_dir()).encode()]
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{entry.name}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue  # the process has exited meanwhile
        # python -I -S .../labkit/forkserver.py SOCKET_FD OWNER_PID STATE_DIR
        if len(args) >= 7 and [args[3], args[6]] == wanted and comm != ENTRIES["monitor"]:
            found.append((int(entry.name), comm))  # (monitors are the manager's to find)
    return found


def leftovers(known: set[int] = frozenset()) -> list[str]:
    """Container init children whose PIDs are not in *known* (a crash between fork and record).

    The servers themselves are not left over: each belongs to a live owner and ends with it.
    """
    return [
        f"process: {pid} (labkit container init)"
        for pid, comm in processes()
        if comm == ENTRIES["container"] and pid not in known
    ]


def remove_leftovers() -> None:
    """Kill this state directory's servers (their owners start new ones when they need them)
    and any init child still there."""
    for pid, _comm in processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
