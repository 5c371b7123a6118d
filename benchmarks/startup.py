"""Start-up cost of a command in new mnt+uts+ipc+pid+net namespaces: labkit against unshare(1).

Both are measured side by side in one run, on the same machine, as whole operations seen by a
caller: from "start it" to "it has exited and been reaped". The ratio is what matters; absolute
times depend on the machine.

    sudo .venv/bin/python benchmarks/startup.py [--runs 200]

What labkit pays for: a fresh Python interpreter for the helper child (labkit/_init.py), which
the notebook needs because its own process is multi-threaded (see design.md). unshare(1) is a
small C program that does the same syscalls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit import namespaces  # noqa: E402

KINDS = ["mnt", "uts", "ipc", "pid", "net"]
UNSHARE = ["--fork", "--pid", "--mount-proc", "--uts", "--net", "--ipc", "--mount"]


def time_once(start) -> float:
    t0 = time.perf_counter()
    start()
    return time.perf_counter() - t0


def labkit_true() -> None:
    namespaces.run(["true"], KINDS).check()


def unshare_true(unshare: str) -> None:
    subprocess.run([unshare, *UNSHARE, "true"], check=True)


def unshare_true_in_child() -> None:
    # the same work labkit's spawn does, without labkit's pipes: a fresh python that unshares
    code = (
        "import os, ctypes; libc = ctypes.CDLL(None, use_errno=True);"
        "assert libc.unshare(0x00020000|0x04000000|0x08000000|0x20000000|0x40000000) == 0;"
        "pid = os.fork()\n"
        "if pid == 0: os.execvp('true', ['true'])\n"
        "os.waitpid(pid, 0)"
    )
    subprocess.run([sys.executable, "-I", "-S", "-c", code], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs of each, interleaved")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/startup.py creates namespaces: run it with sudo.", file=sys.stderr)
        return 2
    unshare = shutil.which("unshare")
    if not unshare:
        print("unshare(1) is missing: apt-get install util-linux.", file=sys.stderr)
        return 2

    contenders = {
        "unshare(1)": lambda: unshare_true(unshare),
        "python -S child, bare unshare+fork": unshare_true_in_child,
        "labkit namespaces.run": labkit_true,
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for start in contenders.values():  # warm the page cache
        start()
    for _ in range(args.runs):  # interleaved, so drift on the machine hits all alike
        for name, start in contenders.items():
            samples[name].append(time_once(start))

    base = statistics.median(samples["unshare(1)"])
    print(f"start-up of `true` in new {'+'.join(KINDS)} namespaces, {args.runs} runs each")
    print(f"{'':38}{'median':>10}{'p90':>10}{'ratio':>8}")
    for name, values in samples.items():
        med = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:38}{med * 1e3:>8.1f}ms{p90 * 1e3:>8.1f}ms{med / base:>7.1f}x")
    print(f"python: {sys.executable} ({sys.version.split()[0]}), kernel {os.uname().release}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
