"""`labkit run --rm busybox true` against `docker run --rm`, side by side in one run.

Each contender runs `true` in a busybox image with no network and is timed as a whole, from
"start it" to "it has exited and been removed". The ratios matter; absolute times depend on the
machine (and on how busy it is: run it on a quiet one).

    sudo .venv/bin/python benchmarks/run.py [--runs 20]

- labkit run: the command line (a fresh Python for the command, one for the container's
  monitor, and the runtime's init).
- labkit from Python: manager.create/start/wait in this process, as the engine does it.
- docker run: only where a Docker engine answers (`docker info`) and has a busybox image;
  otherwise it is left out and said so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit import images
from labkit.container import manager


def _docker() -> list[str] | None:
    docker = shutil.which("docker")
    if not docker:
        return None
    probe = [docker, "image", "inspect", "busybox"]
    ok = subprocess.run(probe, check=False, capture_output=True, timeout=30)
    if ok.returncode != 0:
        return None
    return [docker, "run", "--rm", "--network", "none", "busybox", "true"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each, interleaved")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/run.py runs containers: run it with sudo.", file=sys.stderr)
        return 2
    where = Path(tempfile.mkdtemp(prefix="labkit-bench-run-", dir="/run"))
    os.environ["LABKIT_STATE_DIR"] = str(where / "state")
    try:
        images.busybox_image("busybox:latest")
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        cli = [sys.executable, "-m", "labkit.cli", "run", "--rm", "busybox", "true"]

        def from_python() -> None:
            c = manager.start(manager.create({"Image": "busybox", "Cmd": ["true"]}))
            manager.wait(c)
            manager.remove(c)

        contenders = {
            "labkit run --rm (command)": lambda: subprocess.run(cli, check=True, env=env),
            "labkit from Python": from_python,
        }
        docker = _docker()
        if docker:
            contenders["docker run --rm"] = lambda: subprocess.run(docker, check=True)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for run in contenders.values():
            run()  # warm-up: caches, the image's pages
        for _ in range(args.runs):
            for name, run in contenders.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["labkit run --rm (command)"])
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:<28} median {median * 1000:7.1f} ms   x{median / base:.2f}")
        if not docker:
            print("docker run --rm: left out (no Docker engine with a busybox image answers here)")
    finally:
        for c in manager.list_containers(all=True):
            manager.remove(c, force=True)
        images.remove("busybox:latest")
        shutil.rmtree(where, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
