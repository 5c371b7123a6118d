"""Lesson 50's glue (50-engine): labkit's engine for the lesson, its request log read back, the
attach stream by hand, and the time each layer of a ``docker run`` takes, measured.

Nothing here serves the API: ``labkit.engine`` does, as its own process (``labkit engine``), on a
socket below the lesson's own state directory so that it never meets a student's engine on the
default socket. The clients are the real ones: Debian's docker CLI, and raw HTTP over AF_UNIX.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import images
from ..engine import server
from ..engine.process import EngineProcess
from ..errors import BadInput, LabkitError
from ..state import state_dir
from .checks import Verdict, graded, not_done, verdict

IMAGE = "lesson50/busybox"
DOCKER = "/usr/bin/docker"  # Debian's docker CLI (docker-cli on Debian 13, docker.io before)
PREFIX = "lesson50-"  # the names of the lesson's containers, so the clean-up finds them
# The lesson's containers stay off the network: the engine's bridge (lesson 30) is shared with
# any engine a student runs, and the lesson must leave it as it found it.
NO_NETWORK = ("--network", "none")


def lesson_dir() -> Path:
    """The lesson's own state: the engine's socket, its request log, the docker CLI's config."""
    return state_dir() / "lesson50"


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket: only ``connect`` differs from HTTP over TCP."""

    def __init__(self, path: str | os.PathLike, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


# --- the request log --------------------------------------------------------------------------


@dataclass
class Logged:
    """One request as the engine logged it: when its answer's head went out, and how long the
    request took until then (ms); for a stream (attach, wait) also when it ended."""

    at: float  # seconds since the epoch, to the millisecond
    method: str
    path: str
    status: int
    ms: float
    note: str = ""
    ended: float | None = None

    @property
    def began(self) -> float:
        return self.at - self.ms / 1000

    @property
    def route(self) -> str:
        """The path without the API version and with ids as {id}: the same on every host."""
        path = self.path
        if path.startswith("/v1."):
            path = "/" + path.split("/", 2)[2]
        parts = ["{id}" if len(p) == 64 and _hex(p) else p for p in path.split("/")]
        return "/".join(parts)


def _hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _epoch(stamp: str, near: float) -> float:
    """The log's local HH:MM:SS.mmm as seconds since the epoch, on the day of *near*."""
    day = datetime.datetime.fromtimestamp(near).replace(hour=0, minute=0, second=0, microsecond=0)
    h, m, s = stamp.split(":")
    t = day.timestamp() + int(h) * 3600 + int(m) * 60 + float(s)
    if t - near > 43200:  # the log line is from just before midnight
        t -= 86400
    return t


def parse_log(lines: list[str], near: float | None = None) -> list[Logged]:
    """The engine's log lines as requests, each stream's end matched to its request."""
    near = time.time() if near is None else near
    found: list[Logged] = []
    for line in lines:
        stamp, _, rest = line.partition(" ")
        words = rest.split()
        try:
            at = _epoch(stamp, near)
        except ValueError:
            continue
        if rest.startswith("  end of ") and len(words) == 6:
            for r in reversed(found):
                if (r.method, r.path) == (words[2], words[3]) and r.ended is None:
                    r.ended = at
                    break
        elif len(words) >= 4 and words[2].isdigit() and words[3].endswith("ms"):
            try:
                ms = float(words[3][:-2])
            except ValueError:
                continue
            note = " ".join(words[4:]).strip("()")
            found.append(Logged(at, words[0], words[1], int(words[2]), ms, note))
    return found


def requests_in_words(logged: list[Logged]) -> str:
    """One line per request: method, route, status, and what became of the connection."""
    rows = []
    for r in logged:
        note = f"  ({r.note})" if r.note in ("hijacked", "streaming") else ""
        rows.append(f"{r.method:5} {r.route:55} {r.status}{note}")
    return "\n".join(rows)


# --- the lesson's engine ------------------------------------------------------------------------


@dataclass
class Engine(EngineProcess):
    """A ``labkit engine`` process serving the lesson's socket, and the docker CLI pointed at it."""

    config: Path | None = None

    @property
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=str(self.config))
        return env

    def docker(self, *args: str, input: str | None = None, timeout: float = 60):
        """Run the docker CLI against this engine: (exit code, what it printed)."""
        if not os.path.exists(DOCKER):
            raise LabkitError(
                f"the docker CLI is not installed ({DOCKER}): run 'sudo scripts/setup lab', "
                "which installs Debian's docker CLI."
            )
        done = subprocess.run(
            [DOCKER, *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def requests_since(self, mark: int, settle: float = 5.0) -> list[Logged]:
        """The requests logged after line *mark* (``mark = len(engine.log_lines())``), once
        each stream's end is logged too (the engine logs it after the client has its answer)."""
        deadline = time.monotonic() + settle
        while True:
            logged = parse_log(self.log_lines()[mark:])
            streams = [r for r in logged if r.note in ("hijacked", "streaming")]
            if all(r.ended for r in streams) or time.monotonic() > deadline:
                return logged
            time.sleep(0.02)

    def request(self, method: str, path: str, body: dict | None = None):
        """One HTTP request by http.client: (status, the JSON or text answered)."""
        conn = UnixHTTPConnection(self.socket)
        try:
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=data, headers=headers)
            answer = conn.getresponse()
            raw = answer.read()
        finally:
            conn.close()
        try:
            return answer.status, json.loads(raw) if raw else None
        except ValueError:
            return answer.status, raw.decode(errors="replace")


def _stop_earlier() -> None:
    """An engine an earlier run of the lesson left on its socket (a restarted notebook kernel)."""
    mine = str(lesson_dir() / "engine.sock")
    for pid, path in server.running():
        if path == mine:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while pid in dict(server.running()) and time.monotonic() < deadline:
                time.sleep(0.05)


def start_engine() -> Engine:
    """Start ``labkit engine`` on the lesson's socket, with the lesson's busybox image in the
    store; return once it answers ``/_ping``."""
    _stop_earlier()
    d = lesson_dir()
    d.mkdir(parents=True, exist_ok=True)
    (d / "docker-config").mkdir(exist_ok=True)
    images.busybox_image(IMAGE)
    e = Engine(d / "engine.sock", d / "engine.log", config=d / "docker-config")
    e.log_path.write_bytes(b"")  # this session's requests only
    return e.start()


def lesson_containers(e: Engine) -> list[str]:
    """The ids of the containers the lesson made (named lesson50-..., or not yet named)."""
    status, found = e.request("GET", "/containers/json?all=1")
    if status != 200:
        return []
    return [c["Id"] for c in found if any(n.lstrip("/").startswith(PREFIX) for n in c["Names"])]


def finish(e: Engine) -> str:
    """Remove the lesson's containers, stop its engine, remove its image and its state."""
    for cid in lesson_containers(e):
        e.request("DELETE", f"/containers/{cid}?force=1")
    e.stop()
    removed = images.remove(IMAGE) != []
    shutil.rmtree(lesson_dir(), ignore_errors=True)  # (the engine took its own records away)
    return (
        f"engine stopped: {e.proc is not None and e.proc.poll() is not None} | "
        f"image removed: {removed} | socket left: {e.socket.exists()}"
    )


# --- a container's output over a hijacked connection, by hand ------------------------------------


def raw_attach(e: Engine, cid: str) -> tuple[bytes, socket.socket]:
    """Send ``attach`` with the upgrade headers on a socket of our own; (the answer's head, the
    socket, which from now on carries the container's multiplexed output)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(e.socket))
    s.sendall(
        f"POST /containers/{cid}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\n"
        "Host: localhost\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)  # byte by byte: what follows the head is the stream's, not ours
        if not chunk:
            break
        head += chunk
    return head, s


def read_all(s: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the engine sends until it closes the stream (the container's end)."""
    data = b""
    while len(data) < limit:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def attached_output(e: Engine, script: str) -> bytes:
    """Create a container running ``sh -c SCRIPT``, attach by hand, start it; the raw bytes."""
    status, made = e.request(
        "POST",
        f"/containers/create?name={PREFIX}frames-{os.getpid()}",
        {
            "Image": IMAGE,
            "Cmd": ["sh", "-c", script],
            "AttachStdout": True,
            "AttachStderr": True,
            "HostConfig": {"NetworkMode": "none"},
        },
    )
    if status != 201:
        raise LabkitError(f"create answered {status}: {made}")
    cid = made["Id"]
    try:
        head, s = raw_attach(e, cid)
        if not head.startswith(b"HTTP/1.1 101"):
            s.close()
            raise LabkitError(f"attach answered {head[:40]!r}, not 101")
        e.request("POST", f"/containers/{cid}/start")
        return read_all(s)
    finally:
        e.request("DELETE", f"/containers/{cid}?force=1")


def frames_in_words(data: bytes) -> str:
    """Each frame of *data*: its header's bytes, the stream it names, the payload."""
    names = {0: "stdin", 1: "stdout", 2: "stderr"}
    rows = []
    while len(data) >= 8:
        header, data = data[:8], data[8:]
        size = int.from_bytes(header[4:8], "big")
        payload, data = data[:size], data[size:]
        hexed = " ".join(f"{b:02x}" for b in header)
        rows.append(f"{hexed}  {names.get(header[0], '?'):6} {size:3} bytes  {payload!r}")
    if data:
        rows.append(f"({len(data)} bytes left over: not a whole frame)")
    return "\n".join(rows)


# --- the time each layer takes ---------------------------------------------------------------

LAYERS = [
    ("the docker CLI", "tab:blue"),
    ("HTTP and the engine", "tab:orange"),
    ("runtime set-up (monitor, init)", "tab:green"),
    ("the set-up steps (kernel work)", "tab:olive"),
    ("the process", "tab:red"),
    ("tear-down (exit seen, runtime delete)", "tab:grey"),
]


@dataclass
class Layers:
    """One ``docker run``, cut into the time each layer had it (ms); they add up to *total*."""

    total: float
    ms: dict[str, float] = field(default_factory=dict)

    @property
    def largest(self) -> str:
        return max(self.ms, key=self.ms.get)


def _iso(stamp: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as seconds since the epoch."""
    whole, _, frac = stamp.rstrip("Z").partition(".")
    dt = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    return dt.timestamp() + float("0." + (frac or "0"))


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def measure_run(e: Engine, n: int) -> Layers:
    """``docker run IMAGE true`` once, timed end to end, cut into layers from the engine's log
    (when each request came and was answered), the monitor's record (when the process started
    and ended) and the runtime's step times."""
    name = f"{PREFIX}timing-{os.getpid()}-{n}"
    mark = len(e.log_lines())
    began = time.time()
    code, out = e.docker("run", "--name", name, *NO_NETWORK, IMAGE, "true")
    ended = time.time()
    try:
        if code != 0:
            raise LabkitError(f"docker run exited {code}: {out.strip()}")
        status, found = e.request("GET", f"/containers/{name}/json")
        record = json.loads((state_dir() / "managed" / found["Id"] / "state.json").read_text())
        logged = e.requests_since(mark)
    finally:
        e.request("DELETE", f"/containers/{name}?force=1")
    by_route = {r.route.split("?")[0]: r for r in logged}
    start, wait = by_route["/containers/{id}/start"], by_route["/containers/{id}/wait"]
    run_from, run_to = _iso(record["StartedAt"]), _iso(record["FinishedAt"])
    # The engine logs a stream's end after the client has it, maybe after the CLI has exited.
    wait_end = min(max(wait.ended or ended, run_to), ended)
    spans = [(r.began, r.at) for r in logged] + [(start.began, wait_end)]
    busy = _union([(max(a, began), min(b, ended)) for a, b in spans if a < ended])
    steps = sum(record.get("StepTimes", {}).values())
    setup = max(0.0, run_from - start.began)
    ms = {
        LAYERS[0][0]: (ended - began) - busy,
        LAYERS[1][0]: busy - (wait_end - start.began),
        LAYERS[2][0]: setup - steps,
        LAYERS[3][0]: steps,
        LAYERS[4][0]: run_to - run_from,
        LAYERS[5][0]: wait_end - run_to,
    }
    return Layers((ended - began) * 1000, {k: max(0.0, v) * 1000 for k, v in ms.items()})


@dataclass
class Timing:
    runs: list[Layers]

    def median(self, layer: str) -> float:
        return statistics.median(r.ms[layer] for r in self.runs)

    @property
    def total(self) -> float:
        return statistics.median(r.total for r in self.runs)

    @property
    def largest(self) -> str:
        return max((name for name, _ in LAYERS), key=self.median)

    def summary(self) -> str:
        rows = [f"{len(self.runs)} runs of `docker run {IMAGE} true`, medians:"]
        rows += [f"  {name:42} {self.median(name):7.1f} ms" for name, _ in LAYERS]
        rows.append(f"  {'the whole docker run':42} {self.total:7.1f} ms")
        return "\n".join(rows)


def measure_layers(e: Engine, runs: int = 5) -> Timing:
    """*runs* timed ``docker run``s, after one that warms the engine up (not counted)."""
    if not 2 <= runs <= 20:
        raise BadInput("choose between 2 and 20 runs.")
    measure_run(e, 0)
    return Timing([measure_run(e, i + 1) for i in range(runs)])


def plot_layers(timing: Timing, ax=None):
    """One stacked bar per run: the time each layer had it, in the order they happen."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.5))
    for i, run in enumerate(timing.runs):
        left = 0.0
        for name, colour in LAYERS:
            width = run.ms[name]
            ax.barh(i + 1, width, left=left, color=colour, label=name if i == 0 else None)
            left += width
    ax.invert_yaxis()
    ax.set_yticks(range(1, len(timing.runs) + 1))
    ax.set_xlabel("time in each layer, stacked (ms)")
    ax.set_ylabel("run")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
    top = timing.largest
    share = timing.median(top) / timing.total if timing.total else 0.0
    ax.set_title(
        f"A docker run on labkit's engine takes {timing.total:.0f} ms (median); "
        f"the largest layer is\n{top}: {timing.median(top):.0f} ms, {share:.0%}; "
        f"the kernel's set-up steps take {timing.median(LAYERS[3][0]):.0f} ms",
        fontsize=10,
    )
    ax.figure.tight_layout()
    return ax


# --- 50: exercise checks ------------------------------------------------------------------------


@graded
def check_before_start(e: Engine, answer) -> Verdict:
    """50: which request's answer (its head) does the docker CLI wait for before it sends start?"""
    if answer is ...:
        return not_done("before start")
    given = str(answer).strip().strip("/").lower().removeprefix("containers/{id}/")
    mark = len(e.log_lines())
    code, out = e.docker("run", "--rm", *NO_NETWORK, IMAGE, "true")
    if code != 0:
        raise LabkitError(f"docker run exited {code}: {out.strip()}")
    logged = e.requests_since(mark)
    names = [r.route.split("?")[0].rsplit("/", 1)[-1] for r in logged]
    before = names[names.index("start") - 1] if "start" in names[1:] else None
    return verdict(
        given == before,
        f"before start: the CLI sent start only once {before}'s head had come back.",
        f"before start: {given!r} is not the request answered just before start in this run's log.",
        "print requests_in_words(...) for a docker run and read the line above start.",
    )


@graded
def check_stderr_header(e: Engine, header) -> Verdict:
    """50: the 8 header bytes of the frame that carries ``oops`` and a newline on stderr."""
    if header is ...:
        return not_done("stderr header")
    try:
        given = bytes(header)
    except (TypeError, ValueError):
        return Verdict(
            False,
            f"stderr header: expected 8 bytes, found {type(header).__name__}.",
            "write it as bytes([...]) with 8 numbers from 0 to 255.",
        )
    data = attached_output(e, "echo oops >&2")
    return verdict(
        given == data[:8],
        "stderr header: the engine's frame starts with exactly these 8 bytes.",
        f"stderr header: the engine sent {' '.join(f'{b:02x}' for b in data[:8])}, "
        f"not {' '.join(f'{b:02x}' for b in given)}.",
        "stream id first (1 stdout, 2 stderr), three zeros, then the size big-endian in 4 bytes.",
    )
