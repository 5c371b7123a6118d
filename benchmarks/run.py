"""`labkit run --rm busybox true` against `docker run --rm`, side by side in one run.

Each contender runs `true` in a busybox image with no network and is timed as a whole, from
"start it" to "it has exited and been removed", after 0.2 s of quiet (as between commands).
The ratios matter; absolute times depend on the machine (and on how busy it is: run it on a
quiet one).

    sudo .venv/bin/python benchmarks/run.py [--runs 20] [--also OTHER_TREE]

- labkit run: the command line, as a user types it: the venv's ``labkit`` script (a fresh
  Python for the command; it forks the container's monitor, which forks the runtime's init: no
  other interpreter is started). The seccomp
  filter is compiled once and kept below the state directory: the warm-up run compiles it.
- labkit from Python: manager.create/start/wait in this process, as the engine does it.
- python -c pass and labkit run --help: what the command costs before its container: a new
  interpreter, then also the imports of `labkit run` (the parser and the modules it needs).
  The command's time is about these plus "from Python"; so the imports are what is left to cut.
  Both run from compiled bytecode: the run compiles labkit's modules first (a stale or missing
  .pyc, e.g. under PYTHONDONTWRITEBYTECODE, would be compiled again at every start).
- docker run --rm --network none: the host's Docker engine where one answers with a busybox
  image; otherwise a private dockerd started for the run (benchmarks/dockerd.py, Debian's
  docker.io) holding labkit's busybox image; where neither can run, it is left out and said so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dockerd import DOCKER, UNCONFINED, start_or_why
from benchmarks.timing import report, side_by_side
from labkit import archives, images
from labkit.container import manager

RUN = ["run", *UNCONFINED, "--rm", "--network", "none", "busybox", "true"]


def host_docker() -> bool:
    """Does the host's own Docker engine answer, with a busybox image?"""
    if not os.access(DOCKER, os.X_OK):
        return False
    probe = [DOCKER, "image", "inspect", "busybox"]
    return subprocess.run(probe, check=False, capture_output=True, timeout=30).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each, interleaved")
    parser.add_argument(
        "--also",
        metavar="TREE",
        help="a second labkit source tree (e.g. a checkout of main) whose `labkit run` runs "
        "alongside, for a before/after in one run",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/run.py runs containers: run it with sudo.", file=sys.stderr)
        return 2
    where = Path(tempfile.mkdtemp(prefix="labkit-bench-run-", dir="/run"))
    os.environ["LABKIT_STATE_DIR"] = str(where / "state")
    dockerd = None
    try:
        image = images.busybox_image("busybox:latest")
        tree = Path(__file__).resolve().parents[1]
        env = dict(os.environ, PYTHONPATH=str(tree))
        compile_all = [sys.executable, "-m", "compileall", "-q", str(tree / "labkit")]
        subprocess.run(compile_all, check=True, stdout=subprocess.DEVNULL)
        # The script pip made beside this Python (it imports labkit.cli and calls main); a Python
        # without one runs the module. PYTHONPATH (env) picks the tree either way.
        script = Path(sys.executable).with_name("labkit")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "labkit.cli"]
        cli = [*command, "run", "--rm", "busybox", "true"]
        # From the tree's own directory: `python -m` looks in the working directory first.
        quiet = {"check": True, "env": env, "stdout": subprocess.DEVNULL, "cwd": tree}

        def from_python() -> None:
            c = manager.start(manager.create({"Image": "busybox", "Cmd": ["true"]}))
            manager.wait(c)
            manager.remove(c)

        contenders = {
            "labkit run --rm (command)": lambda: subprocess.run(cli, check=True, env=env, cwd=tree),
            "labkit from Python": from_python,
            "python -c pass": lambda: subprocess.run([sys.executable, "-c", "pass"], **quiet),
            "labkit run --help": lambda: subprocess.run([*command, "run", "--help"], **quiet),
        }
        if args.also:
            other = dict(env, PYTHONPATH=str(Path(args.also).resolve()))
            also_compile = [*compile_all[:-1], str(Path(args.also).resolve() / "labkit")]
            subprocess.run(also_compile, check=True, stdout=subprocess.DEVNULL)
            contenders[f"labkit run --rm ({args.also})"] = lambda: subprocess.run(
                cli, check=True, env=other, cwd=args.also
            )
        docker_env, which, why = None, "the host's dockerd", None
        if host_docker():
            docker_env = dict(os.environ)
        else:
            # No engine answers here: a private dockerd for this run, with labkit's own
            # busybox image in it (the same layer both run).
            dockerd, why = start_or_why()
        if dockerd is not None:
            dockerd.docker("load", "-i", str(archives.export_image(image.id, where / "bb.tar")))
            docker_env, which = dockerd.env, f"a private dockerd {dockerd.version()}"
        if docker_env is not None:
            contenders["docker run --rm"] = lambda: subprocess.run(
                [DOCKER, *RUN], check=True, env=docker_env, stdout=subprocess.DEVNULL
            )
        samples = side_by_side(contenders, args.runs, pause=0.2)
        report(
            f"`busybox true`, started and removed, {args.runs} runs each",
            samples,
            "docker run --rm" if docker_env is not None else "labkit run --rm (command)",
        )
        if docker_env is None:
            print(f"docker run --rm: left out ({why})")
        else:
            print(f"docker run --rm: `docker {' '.join(RUN)}` on {which}")
    finally:
        if dockerd is not None:
            dockerd.stop()
        for c in manager.list_containers(all=True):
            manager.remove(c, force=True)
        images.remove("busybox:latest")
        shutil.rmtree(where, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
