"""Shared fixtures. Every test runs as root against the real kernel and must leave nothing behind.

The autouse ``no_leftovers`` fixture asks ``labkit.cleanup.leftovers()`` (which reads the kernel's
own tables) after every test: a test that leaves a mount, a namespace, a process or a file in the
state directory fails, and the leftovers are removed so the next test starts clean.

The exception is tests/unit/: pure parsers given text, which touch no kernel state, so they run
as an ordinary user (``python -m pytest tests/unit``) and skip both the root check and this one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import cleanup, proc

UNIT = Path(__file__).resolve().parent / "unit"


def unprivileged(item) -> bool:
    """A test of tests/unit/: no root, no kernel state."""
    return UNIT in Path(item.path).resolve().parents


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0 and not all(unprivileged(item) for item in items):
        pytest.exit(
            "labkit's tests run against the real kernel as root: run 'sudo scripts/test' "
            "(or only the pure ones, as yourself: python -m pytest tests/unit).",
            2,
        )


@pytest.fixture(autouse=True)
def no_leftovers(request):
    if unprivileged(request.node):
        yield  # pure: nothing on the host to check
        return
    before = set(cleanup.leftovers())
    yield
    left = [x for x in cleanup.leftovers() if x not in before]
    if left:
        cleanup.cleanup()
        pytest.fail("the test left labkit resources behind: " + "; ".join(left))


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """A private state directory for one test (LABKIT_STATE_DIR), removed with the test."""
    path = tmp_path / "labkit-state"
    monkeypatch.setenv("LABKIT_STATE_DIR", str(path))
    yield path
    cleanup.cleanup()


def run_as_nobody(code: str) -> subprocess.CompletedProcess:
    """Run Python *code* with labkit importable as the unprivileged user nobody (the lesson's
    own helper: a world-readable copy of labkit, so a clone only root can read works too)."""
    from labkit.lab.userns import as_nobody

    return as_nobody(code, timeout=60)


def wait_until(predicate, seconds: float = 5.0) -> bool:
    """Poll *predicate* every 20 ms until it holds or *seconds* pass; its last answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def http_get_in(netns: str, host: str, port: int, expect: bytes, seconds: float) -> bytes:
    """GET / from inside network namespace *netns*, retried (at most *seconds*) until the answer
    holds *expect* (a server in a container may not be listening yet); the last answer."""
    from labkit import traffic

    answer = b""
    deadline = time.monotonic() + seconds
    while expect not in answer and time.monotonic() < deadline:
        with traffic.socket_in(netns) as sock:
            sock.settimeout(2)
            try:
                sock.connect((host, port))
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                answer = b"".join(iter(lambda: sock.recv(4096), b""))
            except OSError:
                time.sleep(0.1)  # not listening yet
    return answer


def process_state(pid: int) -> str:
    """The state letter of *pid* in /proc/PID/stat (R, S, Z, ...), or "gone"."""
    found = proc.stat(pid)
    return "gone" if found is None else found[0]


def dead(pid: int) -> bool:
    """Gone, or a zombie waiting for its parent to reap it."""
    return process_state(pid) in ("Z", "gone")


# A caller as a careless parent leaves it: SIGTERM, SIGINT, SIGQUIT, SIGHUP and SIGUSR1 ignored,
# SIGUSR2 and SIGALRM blocked. Ignored and blocked signals survive fork and exec: a runtime must
# not hand them on to the container's process (prefix a command with this).
CARELESS_CALLER = [
    sys.executable,
    "-c",
    "import os, signal, sys\n"
    "for s in ('TERM', 'INT', 'QUIT', 'HUP', 'USR1'):\n"
    "    signal.signal(getattr(signal, 'SIG' + s), signal.SIG_IGN)\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2, signal.SIGALRM])\n"
    "os.execvp(sys.argv[1], sys.argv[1:])",
]
NO_SIGNALS = ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"]  # grep's order


def signal_fields(text: str) -> list[str]:
    """The SigBlk and SigIgn lines of a /proc/PID/status."""
    return [line for line in text.splitlines() if line.startswith(("SigBlk:", "SigIgn:"))]
