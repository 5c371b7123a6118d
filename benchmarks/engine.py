"""`docker run --rm busybox true` through labkit's engine and through dockerd, side by side.

The same docker CLI (Debian's docker.io) runs the same command against two engines in turn: a
`labkit engine` process on its own socket, and a private dockerd (benchmarks/dockerd.py:
Debian's docker.io started for this run with `--bridge=none --iptables=false`, removed
afterwards). Both hold the same busybox image (labkit's export, loaded with `docker load`) and
run it with `--network none`, each after 0.2 s of quiet (as between commands). The ratios
matter; absolute times depend on the machine.

    sudo .venv/bin/python benchmarks/engine.py [--runs 20]

Rows: `docker version` (the CLI's own start and one request: the floor both share), then
`docker run --rm` through each engine. After the table, where labkit's engine spent its time:
the median time to the answer's head of each request of a `docker run`, from the engine's log.
Where dockerd cannot run (not installed, not root), it is left out and said so.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dockerd import DOCKER, UNCONFINED, start_or_why
from benchmarks.timing import report, side_by_side
from labkit import archives, images
from labkit.engine.process import EngineProcess

RUN = ["run", "--rm", "--network", "none", "busybox", "true"]
LOGGED = re.compile(r"(GET|POST|DELETE|HEAD) (\S+) (\d{3}) ([\d.]+)ms")


class LabkitEngine(EngineProcess):
    """`labkit engine` on a socket of its own for the length of the run, and the CLI's env."""

    def __init__(self, where: Path) -> None:
        super().__init__(where / "engine.sock", where / "engine.log", state=where / "s")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env.update(DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=str(where / "client"))
        self.start()

    def docker(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER, *args], env=self.env, capture_output=True, timeout=120)


def command(argv: list[str], env: dict[str, str]):
    return lambda: subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)


def engine_breakdown(log: str, skip: int) -> None:
    """Median time to the answer's head per request kind, from the engine's log lines after
    the first *skip* (the set-up's)."""
    times: dict[str, list[float]] = defaultdict(list)
    for line in log.splitlines()[skip:]:
        found = LOGGED.search(line)
        if found:
            method, path, _status, ms = found.groups()
            path = re.sub(r"^/v1\.\d+", "", path.split("?")[0])
            kind = f"{method} {re.sub(r'/[0-9a-f]{64}', '/{id}', path)}"
            times[kind].append(float(ms))
    print("labkit's engine: median time to the answer's head, per request of the runs above")
    for kind, values in sorted(times.items()):
        print(f"  {kind:<36}{statistics.median(values):>8.1f}ms   ({len(values)} requests)")
    print("  (wait answers its head at once and attach at the hijack: the container's own time")
    print("   is between start's answer and the CLI's exit)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each, interleaved")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/engine.py runs containers: run it with sudo.", file=sys.stderr)
        return 2
    if not os.access(DOCKER, os.X_OK):
        print(f"{DOCKER} is missing: install Debian's docker.io.", file=sys.stderr)
        return 2
    # Short: the engine's monitors bind unix sockets below the state dir (108 bytes at most).
    where = Path(tempfile.mkdtemp(prefix="lkbe", dir="/tmp"))
    os.environ["LABKIT_STATE_DIR"] = str(where / "s")
    (where / "client").mkdir()
    engine = dockerd = None
    try:
        image = images.busybox_image("busybox:latest")
        archive = archives.export_image(image.id, where / "busybox.tar")
        images.remove(image.id)
        engine = LabkitEngine(where)
        engine.docker("load", "-i", str(archive)).check_returncode()
        contenders = {
            "docker version (labkit)": command([DOCKER, "version"], engine.env),
            "docker run --rm (labkit's engine)": command([DOCKER, *RUN], engine.env),
        }
        dockerd, why = start_or_why()
        if dockerd is not None:
            dockerd.docker("load", "-i", str(archive))
            run = [DOCKER, RUN[0], *UNCONFINED, *RUN[1:]]  # labkit's engine applies none
            contenders["docker run --rm (dockerd)"] = command(run, dockerd.env)
        skip = len(engine.log_path.read_text().splitlines())
        samples = side_by_side(contenders, args.runs, pause=0.2)
        reference = "docker run --rm (dockerd)" if dockerd else "docker run --rm (labkit's engine)"
        title = f"`docker run --rm --network none busybox true`, {args.runs} runs each"
        if dockerd:
            title += f" (dockerd {dockerd.version()}, {dockerd.storage_driver})"
        report(title, samples, reference)
        if dockerd is None:
            print(f"dockerd: left out ({why})")
        engine_breakdown(engine.log_path.read_text(), skip)
    finally:
        if dockerd is not None:
            dockerd.stop()
        if engine is not None:
            engine.docker("rmi", "-f", "busybox:latest")
            engine.stop()
        shutil.rmtree(where, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
