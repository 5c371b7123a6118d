"""A ``labkit engine`` process started from Python: lesson 50, the engine tests and the
benchmark each run one, on a socket of their own.

``start`` runs ``python -m labkit.cli engine --socket PATH`` (this very labkit, with a state
directory of the caller's choice) in a session of its own, its request log going to a file, and
returns once it answers ``GET /_ping``; ``stop`` sends SIGTERM, after which the engine removes
its socket and its record ``<state dir>/engines/PID.json`` itself. An engine that must be
killed cannot, so ``stop`` removes them; an engine nobody stopped is found by its record and
stopped by ``labkit cleanup``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabkitError
from . import server

START_TIMEOUT = 30.0  # seconds for a new engine to answer /_ping (a busy host's imports)
STOP_TIMEOUT = 15.0  # seconds for it to stop after SIGTERM, before SIGKILL


def answers_ping(path: str | os.PathLike) -> bool:
    """Does an engine answer ``GET /_ping`` with 200 on the unix socket *path*?"""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: labkit\r\n\r\n")
            return s.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


@dataclass
class EngineProcess:
    """One ``labkit engine`` on *socket*, its request log in *log_path*, its state below
    *state* (None: the caller's state directory)."""

    socket: Path
    log_path: Path
    state: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, timeout: float = START_TIMEOUT) -> EngineProcess:
        """Start the engine (its log appended to *log_path*); return once it answers /_ping."""
        env = dict(os.environ)
        if self.state is not None:
            env["LABKIT_STATE_DIR"] = str(self.state)
        # The engine imports the labkit this one is (a work tree's, not one installed elsewhere).
        here = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "labkit.cli", "engine", "--socket", str(self.socket)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C meant for the caller does not stop the engine
            )
        deadline = time.monotonic() + timeout
        while not answers_ping(self.socket):
            if self.proc.poll() is not None:
                raise LabkitError(
                    f"the engine exited at start (status {self.proc.returncode}): "
                    f"{self.log_path.read_text(errors='replace')[-800:].strip()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise LabkitError(
                    f"the engine did not answer /_ping within {timeout:g} s: see {self.log_path}."
                )
            time.sleep(0.05)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after *timeout* s; the engine's exit status (None: never run).

        The containers keep running, as with dockerd's live-restore."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self.proc.returncode == -signal.SIGKILL:
            server.forget(self.proc.pid, self.socket, self.state)  # it could not itself
        return self.proc.returncode
