"""Container start-up, side by side in one run: unshare(1), runc run and labkit's runtime.

Every contender runs `true` from the same busybox bundle (the config.json `runc spec` writes:
pid, net, ipc, uts and mount namespaces, a read-only root, /proc, /dev, /sys, masked paths,
3 capabilities, no_new_privs) and is timed as a whole, from "start it" to "it has exited and
everything is removed". The ratios matter; absolute times depend on the machine.

    sudo .venv/bin/python benchmarks/runtime.py [--runs 30]

- unshare(1): the namespaces alone (no root filesystem, cgroup or capabilities): the floor.
- runc run: Debian's runc, the reference.
- labkit-runtime run: the console script's command line, a fresh Python for the command and
  another for the container's init.
- labkit from Python: lifecycle.create/start/wait/delete in this process; one fresh Python
  (the init) per container.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit import rootfs  # noqa: E402
from labkit import sys as ksys  # noqa: E402
from labkit.container import lifecycle  # noqa: E402

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

    contenders = {
        "unshare(1)": [unshare, *UNSHARE, "true"],
        "runc run": [runc, "--root", runc_root, "run", "--bundle", str(bundle), "bench"],
        "labkit-runtime run": [*runtime, "run", "--bundle", str(bundle), "bench"],
        "labkit from Python": labkit_python,
    }

    def once(what) -> float:
        t0 = time.perf_counter()
        if callable(what):
            what()
        else:
            subprocess.run(what, check=True, env=env)
        return time.perf_counter() - t0

    samples: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for what in contenders.values():  # warm the page cache
            once(what)
        for _ in range(args.runs):  # interleaved, so drift on the machine hits all alike
            for name, what in contenders.items():
                samples[name].append(once(what))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(samples["runc run"])
    print(f"start-up of `true` from a busybox bundle (runc spec), {args.runs} runs each")
    print(f"{'':24}{'median':>10}{'p90':>10}{'vs runc':>9}")
    for name, values in samples.items():
        med = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:24}{med * 1e3:>8.1f}ms{p90 * 1e3:>8.1f}ms{med / base:>8.2f}x")
    print(f"python: {sys.executable} ({sys.version.split()[0]}), kernel {os.uname().release}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
