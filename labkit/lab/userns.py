"""The user-namespace lesson's helpers: ids seen from both sides, and running as nobody.

A user namespace maps a range of user ids inside to a range outside (``/proc/PID/uid_map``:
``INSIDE OUTSIDE COUNT`` per line). The kernel always stores the *outside* id: a process that is
root inside runs on the host as the mapped id (``Uid:`` in ``/proc/PID/status`` read from the
host), and a file owned by an id that has no mapping shows inside as the overflow id, 65534
(``/proc/sys/kernel/overflowuid``, the user "nobody").
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from labkit import namespaces
from labkit.proc import host_uid, overflow_uid

__all__ = ["NOBODY", "as_nobody", "host_uid", "overflow_uid", "plot_id_map"]

NOBODY = 65534


def _python_for_nobody() -> str:
    """An interpreter nobody may run: the venv's may live below /root (pyenv), so prefer the
    system's python3 when it is new enough for labkit (3.11)."""
    system = shutil.which("python3", path="/usr/bin:/bin")
    if (
        system
        and subprocess.run(
            [system, "-c", "import sys; assert sys.version_info >= (3, 11)"],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    ):
        return system
    return sys.executable


def _readable_copy(into: Path) -> None:
    """Copy labkit's sources into *into*, readable by everyone.

    The clone may sit where only root can read it (/root/labkit, a 0750 home): nobody could not
    import labkit from there, so nobody gets a world-readable copy for the one run.
    """
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(package, into / "labkit", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [into, *into.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def as_nobody(code: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run Python *code* as the unprivileged user nobody (uid and gid 65534, no groups),
    with labkit importable; return its exit status and output."""
    with tempfile.TemporaryDirectory(prefix="labkit-nobody-") as tmp:
        _readable_copy(Path(tmp))
        return subprocess.run(
            [
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                "--",
                _python_for_nobody(),
                "-c",
                code,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",
            env={
                "PYTHONPATH": tmp,
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/",
                "PYTHONDONTWRITEBYTECODE": "1",
            },
        )


def _span(start: int, count: int) -> str:
    return f"{start}" if count == 1 else f"{start}-{start + count - 1}"


def plot_id_map(maps: list[namespaces.IdMap], ax=None):
    """Draw an id map, one lane per line: the ids inside, an arrow, the ids outside they map to."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.8 + 0.7 * len(maps)))
    box = {"boxstyle": "round", "facecolor": "#cfe2f3"}
    for lane, m in enumerate(maps):
        y = -lane
        _ = ax.annotate("", xy=(0.66, y), xytext=(0.34, y), arrowprops={"arrowstyle": "->"})
        ids = f"{m.count} id{'s' if m.count != 1 else ''}"
        _ = ax.text(0.5, y + 0.12, ids, ha="center", fontsize=9)
        root = "  (root)" if m.inside == 0 else ""
        _ = ax.text(0.18, y, _span(m.inside, m.count) + root, ha="center", va="center", bbox=box)
        _ = ax.text(0.82, y, _span(m.outside, m.count), ha="center", va="center", bbox=box)
    _ = ax.text(0.18, 0.6, "inside the namespace", ha="center", weight="bold")
    _ = ax.text(0.82, 0.6, "outside (the host)", ha="center", weight="bold")
    ax.set_xlim(0, 1)
    ax.set_ylim(-len(maps) + 0.4, 0.9)
    ax.axis("off")
    ax.set_title("uid_map, as the kernel holds it")
    return ax
