"""Start-up cost of a command in new mnt+uts+ipc+pid+net namespaces: labkit against unshare(1).

Both are measured side by side in one run, on the same machine, as whole operations seen by a
caller: from "start it" to "it has exited and been reaped". The ratio is what matters; absolute
times depend on the machine.

    sudo .venv/bin/python benchmarks/startup.py [--runs 200]

The notebook's own process is multi-threaded, so the namespace work happens in a single-threaded
child (labkit/_init.py; see design.md). labkit's fork server (started once, in the warm-up)
forks that child from a Python that has labkit loaded; "a fresh python -S child" shows what one
new interpreter per command would cost instead. unshare(1) is a small C program that does the
same syscalls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import report, side_by_side
from labkit import namespaces

KINDS = ["mnt", "uts", "ipc", "pid", "net"]
UNSHARE = ["--fork", "--pid", "--mount-proc", "--uts", "--net", "--ipc", "--mount"]


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
        "a fresh python -S child, bare unshare+fork": unshare_true_in_child,
        "labkit namespaces.run": labkit_true,
    }
    samples = side_by_side(contenders, args.runs)
    report(
        f"start-up of `true` in new {'+'.join(KINDS)} namespaces, {args.runs} runs each",
        samples,
        "unshare(1)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
