"""Container start-up, side by side in one run: unshare(1), runc run and labkit's runtime.

Every contender runs `true` from the same busybox bundle (the config.json `runc spec` writes:
pid, net, ipc, uts and mount namespaces, a read-only root, /proc, /dev, /sys, masked paths,
3 capabilities, no_new_privs) and is timed as a whole, from "start it" to "it has exited and
everything is removed", after 0.2 s of quiet (as between commands). The ratios matter;
absolute times depend on the machine.

    sudo .venv/bin/python benchmarks/runtime.py [--runs 30]

- unshare(1): the namespaces alone (no root filesystem, cgroup or capabilities): the floor.
- runc run: Debian's runc, the reference.
- labkit-runtime run: the console script's command line: a fresh Python for the command, which
  starts its own fork server (another Python) for the one container's init.
- labkit from Python: lifecycle.create/start/wait/delete in this process, as a notebook or the
  engine does it; the fork server (started once, in the warm-up) forks each container's init.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import report, side_by_side
from labkit import rootfs
from labkit import sys as ksys
from labkit.container import lifecycle

UNSHARE = ["--fork", "--pid", "--mount-proc", "--uts", "--net", "--ipc", "--mount"]


def make_bundle(runc: str, where: Path) -> Path:
    where.mkdir()
    subprocess.run([runc, "spec", "--bundle", str(where)], check=True)
    rootfs.build(where / "rootfs")
    config = json.loads((where / "config.json").read_text())
    config["process"].update(terminal=False, args=["true"])
    (where / "config.json").write_text(json.dumps(config))
    return where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each, interleaved")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/runtime.py creates containers: run it with sudo.", file=sys.stderr)
        return 2
    runc, unshare = shutil.which("runc"), shutil.which("unshare")
    if not runc or not unshare:
        print("runc and unshare(1) are needed: apt-get install runc util-linux.", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="labkit-bench-runtime-"))
    os.environ["LABKIT_STATE_DIR"] = str(work / "state")
    bundle = make_bundle(runc, work / "bundle")
    runc_root = str(work / "runc")
    runtime = [sys.executable, "-m", "labkit.container.cli"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ksys.prctl(ksys.PR_SET_CHILD_SUBREAPER, 1)  # so this process can wait for its containers
    counter = iter(range(10**9))

    def labkit_python() -> None:
        cid = f"bench{next(counter)}"
        c = lifecycle.create(cid, bundle)
        lifecycle.start(cid)
        lifecycle.wait(c)
        lifecycle.delete(cid)

    def command(argv: list[str]):
        return lambda: subprocess.run(argv, check=True, env=env)

    contenders = {
        "unshare(1)": command([unshare, *UNSHARE, "true"]),
        "runc run": command([runc, "--root", runc_root, "run", "--bundle", str(bundle), "bench"]),
        "labkit-runtime run": command([*runtime, "run", "--bundle", str(bundle), "bench"]),
        "labkit from Python": labkit_python,
    }
    try:
        samples = side_by_side(contenders, args.runs, pause=0.2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(
        f"start-up of `true` from a busybox bundle (runc spec), {args.runs} runs each",
        samples,
        "runc run",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
