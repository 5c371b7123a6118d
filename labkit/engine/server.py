"""The engine's HTTP server: a unix socket, one thread per connection, and the request log.

The docker CLI speaks HTTP/1.1 over ``/var/run/docker.sock``; this serves the same protocol on
labkit's own socket. The socket file's mode is the only lock on it: whoever may write to it
may run containers as root, so it is ``0600`` root unless a group is named. A request's path may
carry an API version prefix (``/v1.41/containers/json``) or none; the route is looked up without
it. Every request gets one log line (method, path, status, time to the answer's head), so the
requests behind a ``docker run`` can be watched.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import stat
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

from .. import __version__, proc
from ..errors import BadInput, LabkitError
from ..state import state_dir
from . import api
from .errors import ApiError, status_of

API_VERSION = "1.44"  # advertised: docker CLIs from 29.0 refuse engines below it
MIN_API_VERSION = "1.24"
_MAX_API_MINOR = 50
_VERSIONED = re.compile(r"^/v1\.(\d{1,3})(/.*)$")
MAX_CONNECTIONS = 512
IDLE_TIMEOUT = 120.0  # seconds a connection may sit idle between requests

# Known parts of Docker's API that labkit's engine does not have: 501, not 404.
_NOT_HERE = (
    "/networks",
    "/volumes",
    "/swarm",
    "/nodes",
    "/services",
    "/tasks",
    "/secrets",
    "/configs",
    "/plugins",
    "/build",
    "/session",
    "/distribution",
    "/commit",
    "/events",
    "/system",
    "/auth",
    "/grpc",
    "/images/search",
    "/images/prune",
    "/containers/prune",
    "/images/push",
)


def default_socket() -> Path:
    return state_dir() / "engine.sock"


# --- the engines that run: a record each, so `labkit cleanup` can find and stop them ------------


def _records(state: Path | None = None) -> Path:
    return (state or state_dir()) / "engines"


def _record_self(path: Path) -> Path:
    """Write ``engines/PID.json`` (the socket, and the start time that tells this PID from a
    later process given the same number)."""
    record = _records() / f"{os.getpid()}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    started = proc.stat(os.getpid())
    record.write_text(json.dumps({"socket": str(path), "start": started and started[1]}))
    return record


def running() -> list[tuple[int, str]]:
    """(PID, socket) of each engine that runs with this state directory."""
    found = []
    for record in sorted(_records().glob("*.json")) if _records().is_dir() else []:
        try:
            data = json.loads(record.read_text())
            pid = int(record.stem)
        except (OSError, ValueError):
            continue
        if _alive(pid, data.get("start")):
            found.append((pid, str(data.get("socket"))))
    return found


def _alive(pid: int, start: int | None = None) -> bool:
    """Running (not a zombie its parent has yet to reap), and the same process as recorded."""
    seen = proc.stat(pid)
    return seen is not None and seen[0] != "Z" and (start is None or seen[1] == start)


def leftovers() -> list[str]:
    # Without the PID: an engine restarted on the same socket is the same leftover.
    return [f"engine: serving unix://{path}" for _pid, path in running()]


def remove_leftovers(timeout: float = 10.0) -> None:
    """Stop every engine of this state directory: SIGTERM (it removes its socket), then SIGKILL."""
    engines = running()
    proc.signal_each([pid for pid, _ in engines], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid, _ in engines) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, path in engines:
        if _alive(pid):
            proc.signal_each([pid], signal.SIGKILL)
        forget(pid, path)
    if _records().is_dir():
        shutil.rmtree(_records(), ignore_errors=True)


def forget(pid: int, path: str | os.PathLike, state: Path | None = None) -> None:
    """Remove the socket and the record of engine *pid*, killed before it could (SIGKILL)."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    with contextlib.suppress(OSError):
        (_records(state) / f"{pid}.json").unlink()
        _records(state).rmdir()  # the last engine's


class Log:
    """The request log: one line per request, on stdout, flushed at once."""

    def __init__(self, out=None) -> None:
        self.out = out or sys.stdout
        self.lock = threading.Lock()

    def line(self, text: str) -> None:
        now = time.time()  # to the millisecond: lesson 50 lines requests up against each other
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        with self.lock:
            try:
                self.out.write(f"{stamp} {text}\n")
                self.out.flush()
            except (OSError, ValueError):
                pass  # a closed log must not take requests down


def printable(text: str, limit: int = 200) -> str:
    """A client's path as safe to print: control characters escaped, long ones cut."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; the routes in ``api.ROUTES`` answer."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"  # never answer without a status line (HTTP/0.9)
    timeout = IDLE_TIMEOUT
    server: _Server

    def handle_one_request(self) -> None:
        self._t0 = time.monotonic()  # reset in parse_request: idle time is not the request's
        try:
            super().handle_one_request()
        except OSError:  # the client reset the connection: nothing to answer, nobody to tell
            self.close_connection = True

    def parse_request(self) -> bool:
        self._t0 = time.monotonic()
        return super().parse_request()

    # --- wire ---------------------------------------------------------------------------------

    def version_string(self) -> str:
        return f"labkit-engine/{__version__} (linux)"

    def address_string(self) -> str:
        return "unix"  # a unix socket's peer has no address

    def log_request(self, code="-", size="-") -> None:
        pass  # we log at the head, with the time (see send_head)

    def log_message(self, format: str, *args) -> None:
        self.server.log.line(printable("error: " + (format % args)))

    def _common_headers(self) -> None:
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Ostype", "linux")
        self.send_header("Docker-Experimental", "false")

    def _logged(self, status: int, note: str = "") -> None:
        ms = (time.monotonic() - getattr(self, "_t0", time.monotonic())) * 1000
        if getattr(self, "command", None):
            what = f"{self.command} {printable(self.path)}"
        else:  # the request line itself was refused
            what = printable(getattr(self, "requestline", "") or "-", 60)
        self.server.log.line(f"{what} {status} {ms:.1f}ms{note}")

    def send_head(
        self,
        status: int,
        content_type: str | None,
        length: int | None = None,
        chunked: bool = False,
        extra: dict | None = None,
    ) -> None:
        self.send_response(status)
        self._common_headers()
        if content_type:
            self.send_header("Content-Type", content_type)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        # Logged before the head leaves (end_headers sends it: wfile is unbuffered): a client
        # that waits for it (docker run sends wait only after attach's 101) then never has its
        # next request logged first.
        self._logged(status, " (streaming)" if chunked else "")
        self.end_headers()
        self.wfile.flush()
        self._streaming = chunked

    def send_upgrade(self, content_type: str) -> None:
        """``101 UPGRADED``: from here the connection is the raw stream (docker's hijack)."""
        self.close_connection = True
        self.connection.settimeout(None)
        self.send_response(101, "UPGRADED")
        self._common_headers()
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", "tcp")
        self._logged(101, " (hijacked)")  # before it leaves, as in send_head
        self.end_headers()
        self.wfile.flush()
        self._streaming = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """A malformed request (line, headers): Docker's error JSON, then close."""
        self.close_connection = True
        text = {
            400: "the request is malformed",
            414: "the request line is too long (at most 64 kB)",
            431: "the request's headers are too many or too long (at most 100 lines of 64 kB)",
            501: "unsupported HTTP method",
        }.get(code, message or "bad request")
        self._answer(code, {"message": f"{text}: {printable(message or '', 80)}."})

    def _answer(
        self, status: int, body, content_type: str = "application/json", headers: dict | None = None
    ) -> None:
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        elif body is None:
            data = b""
        else:
            data = json.dumps(body).encode() + b"\n"
        if status in (204, 304):  # no body, and no Content-Length either (RFC 9110)
            self.send_head(status, None, None, extra=headers)
            return
        head = self.command == "HEAD"  # the head only: a body here is "unsolicited" to Go
        self.send_head(
            status, content_type if data else None, 0 if head else len(data), extra=headers
        )
        if not head:
            self.wfile.write(data)
            self.wfile.flush()

    # --- dispatch -----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._streaming = False
        request = None
        try:
            url = urlsplit(self.path)
            path = _unversioned(url.path)
            func, params = api.find(self.command, path)
            if func is None:
                raise _no_route(self.command, path, params)
            # The request line and headers are in; the endpoint decides how long it runs.
            self.connection.settimeout(None)
            request = api.Request(self, self.command, path, url.query, params)
            reply = func(request, **params)
            if reply is not None and not request.answered:
                self._answer(reply.status, reply.body, reply.content_type, reply.headers)
            request.drain()
        except api.ClientGone:
            self.close_connection = True
            if not self._streaming:  # a stream's head is logged already; its end follows
                self._logged(499, " (the client went away)")
        except (LabkitError, OSError) as e:
            self._fail(request, status_of(e) if isinstance(e, LabkitError) else 500, str(e))
        except Exception as e:  # noqa: BLE001  a bug in the engine: say so, keep serving
            self.server.log.line(
                "engine error: " + "".join(traceback.format_exception_only(type(e), e)).strip()
            )
            if os.environ.get("LABKIT_ENGINE_DEBUG"):
                traceback.print_exc()
            self._fail(
                request, 500, f"the engine failed on this request ({type(e).__name__}); see its log"
            )
        finally:
            if self._streaming:  # how long the stream lasted
                ms = (time.monotonic() - self._t0) * 1000
                self.server.log.line(
                    f"  end of {self.command} {printable(self.path)} after {ms:.1f}ms"
                )
            if self.close_connection is False:
                self.connection.settimeout(IDLE_TIMEOUT)

    def _fail(self, request, status: int, message: str) -> None:
        if request is not None and request.answered:
            self.close_connection = True  # too late for a status: the head went out
            self.server.log.line(f"  ... failed after its head: {printable(message)}")
            return
        if request is not None and not request.body_read:
            request.drain()
        try:
            self._answer(status, {"message": message})
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _dispatch


def _unversioned(path: str) -> str:
    match = _VERSIONED.match(path)
    if not match:
        return path
    minor = int(match.group(1))
    if not 24 <= minor <= _MAX_API_MINOR:
        raise ApiError(
            f"API version 1.{minor} is not supported: labkit's engine speaks 1.24 to "
            f"1.{_MAX_API_MINOR}; set DOCKER_API_VERSION={API_VERSION} or upgrade the client.",
            400,
        )
    return match.group(2)


def _no_route(method: str, path: str, other_method: bool) -> ApiError:
    if path.startswith(_NOT_HERE):
        return ApiError(
            f"labkit's engine does not implement {printable(path, 80)}: it runs containers "
            "and images only (no networks, volumes, builds, swarm or plugins).",
            501,
        )
    if other_method:
        return ApiError(f"{method} is not allowed on {printable(path, 80)}.", 405)
    return ApiError(f"page not found: {printable(path, 80)} is not part of the Engine API.", 404)


class _Server(socketserver.ThreadingMixIn, socketserver.BaseServer):
    """Threads for connections, and a bound on how many run at once."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # listen(2)'s backlog: 50 docker runs connect at once
    log: Log

    def setup_limits(self, log: Log) -> None:
        self.log = log
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def handle_error(self, request, client_address) -> None:
        # One line in the log, not socketserver's traceback on stderr.
        self.log.line(f"error on a connection: {sys.exc_info()[1]!r}"[:300])

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.log.line(f"refused a connection: {MAX_CONNECTIONS} are open already")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class UnixServer(_Server, socketserver.UnixStreamServer):
    pass


class TCPServer(_Server, socketserver.TCPServer):
    allow_reuse_address = True


def _free_socket_path(path: Path) -> None:
    """Remove a socket file left by an engine that is gone; refuse if one still answers."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BadInput(f"{path} exists and is not a socket: give another --socket path.")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        os.unlink(path)  # nobody listens: a stale socket from an engine that died
        return
    finally:
        probe.close()
    raise LabkitError(f"an engine already serves {path}: stop it first, or give another --socket.")


def unix_server(path: Path, group: str | None, log: Log) -> UnixServer:
    """Bind *path* with mode 0600 (0660 and the group's ownership if *group* is named)."""
    gid = None
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise BadInput(
                f"there is no group {group!r} on this host: create it or name another."
            ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    _free_socket_path(path)
    # The umask makes the socket 0600 from its first instant, not after a chmod.
    old = os.umask(0o177)
    try:
        server = UnixServer(str(path), Handler)
    finally:
        os.umask(old)
    if gid is not None:
        os.chown(path, 0, gid)
        os.chmod(path, 0o660)
    server.setup_limits(log)
    return server


def tcp_server(address: str, log: Log) -> TCPServer:
    """Listen on 127.0.0.1:PORT only: the API is root on this machine for whoever reaches it."""
    host, _, port = address.rpartition(":")
    host = host or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost") or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(
            f"--tcp {address!r} is refused: the engine listens on TCP only on 127.0.0.1, e.g. "
            "--tcp 127.0.0.1:2375 (anyone who reaches the API is root on this machine)."
        )
    server = TCPServer(("127.0.0.1", int(port)), Handler)
    server.setup_limits(log)
    return server


def _stop(signum, _frame):
    raise SystemExit(0)


def serve(
    socket_path: str | os.PathLike | None = None,
    group: str | None = None,
    tcp: str | None = None,
    out=None,
) -> None:
    """Serve the Engine API in the foreground until SIGTERM or SIGINT; containers keep running."""
    from . import containers, execs, images, system  # noqa: F401  (they register their routes)

    log = Log(out)
    path = Path(socket_path) if socket_path else default_socket()
    servers = [unix_server(path, group, log)]
    record = None
    try:
        if tcp:
            servers.append(tcp_server(tcp, log))
            log.line(
                f"warning: the API listens on TCP {tcp}: every local user who can connect "
                "is root on this machine."
            )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _stop)
        for extra in servers[1:]:
            threading.Thread(target=extra.serve_forever, daemon=True).start()
        mode = f"0660, group {group}" if group else "0600, root only"
        log.line(
            f"labkit engine {__version__}: API {API_VERSION} on unix://{path} ({mode}); "
            f"DOCKER_HOST=unix://{path}"
        )
        record = _record_self(path)
        servers[0].serve_forever()
    except SystemExit:
        pass
    finally:
        for s in servers:
            s.server_close()
        if record is not None:
            with contextlib.suppress(OSError):
                record.unlink()
                record.parent.rmdir()  # the last engine out
            if not running():  # nobody is left to wait for a removed container's exit
                from ..container import manager

                with contextlib.suppress(LabkitError, OSError):
                    manager.tidy_records()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        log.line("labkit engine stopped; its containers keep running.")
