"""A real ``labkit engine`` process for the engine tests, and the real clients that drive it.

The engine runs as its own process (``python -m labkit.cli engine``) on a socket outside the
state directory, with a private state directory (``LABKIT_STATE_DIR``) that the tests' own
process shares, so ``labkit cleanup`` and the leftover check see what the engine made. Clients
are Debian's docker CLI (``/usr/bin/docker``, package docker.io) and docker-py from PyPI,
never a stand-in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from labkit import archives, cleanup, images
from labkit.engine.process import EngineProcess
from labkit.lab.engine import UnixHTTPConnection  # the API by hand, as lesson 50 shows it

DOCKER = "/usr/bin/docker"  # Debian's docker.io: the client CI has


@dataclass
class Engine(EngineProcess):
    """The engine process (start, stop), and the clients pointed at it."""

    config: Path | None = None
    archive: Path | None = None

    @property
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(
            DOCKER_HOST=f"unix://{self.socket}",
            DOCKER_CONFIG=str(self.config),
            LABKIT_STATE_DIR=str(self.state),
        )
        return env

    def docker(self, *args, input=None, timeout=60, check=False) -> subprocess.CompletedProcess:
        """Run the real docker CLI against the engine; text in and out."""
        result = subprocess.run(
            [DOCKER, *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def request(self, method: str, path: str, body=None, headers=None):
        """One raw HTTP request; (status, headers, body bytes)."""
        conn = UnixHTTPConnection(str(self.socket))
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def log(self) -> str:
        return self.log_path.read_text()


def busybox_archive(path: Path) -> Path:
    """An archive of labkit's busybox image, as `labkit image export` writes it; the store is
    left as it was."""
    image = images.busybox_image("busybox:latest")
    try:
        return archives.export_image(image.id, path)
    finally:
        images.remove(image.id)


@pytest.fixture(scope="module")
def engine():
    if not os.path.exists(DOCKER):
        pytest.skip("Debian's docker CLI is missing: run 'sudo scripts/setup test' (docker.io)")
    # A short state dir: the manager's monitors bind unix sockets below it (108 bytes at most).
    base = Path(tempfile.mkdtemp(prefix="lke", dir="/tmp"))
    e = Engine(
        base / "engine.sock", base / "engine.log", state=base / "s", config=base / "docker-config"
    )
    e.config.mkdir()
    saved = os.environ.get("LABKIT_STATE_DIR")
    os.environ["LABKIT_STATE_DIR"] = str(e.state)
    try:
        e.archive = busybox_archive(base / "busybox.tar")
        e.start()
        yield e
        if e.running:
            assert e.stop() == 0, "the engine did not stop within 15 s of SIGTERM"
        assert not e.socket.exists(), "the engine left its socket behind"
        assert not (e.state / "managed").exists(), "the manager's records directory was left"
    finally:
        e.stop()
        cleanup.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        if saved is None:
            os.environ.pop("LABKIT_STATE_DIR", None)
        else:
            os.environ["LABKIT_STATE_DIR"] = saved


@pytest.fixture(scope="module")
def loaded(engine):
    """The engine with busybox:latest loaded through `docker load` (kept for the module)."""
    engine.docker("load", "-i", str(engine.archive), check=True)
    return engine
