"""Find and remove everything labkit made on this host: ``labkit cleanup``.

It works from what the kernel shows (mount table, /proc, interfaces), not from labkit's memory,
so it also works after a crash, a killed notebook kernel or a reboot. Each module that creates
something offers a ``leftovers()`` function (what is there, as readable strings) and a
``remove_leftovers()`` function; this module calls them in an order that undoes a container from
the outside in: processes first, then what they used. Two kinds are made by programs the
lessons run, and are found here: runc's containers (by runc's state below the state directory)
and loop devices (by the backing file the kernel names, below the state directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from . import loop, mountinfo, proc
from . import sys as ksys
from .errors import require_root
from .state import CACHE, state_dir


def _stages():
    """(name, leftovers, remove) for each kind of resource, outermost first."""
    from . import forkserver, namespaces
    from .container import lifecycle, manager

    # Monitors first (so none reacts to its container's end), then the containers: their
    # processes hold namespaces, cgroups and mounts the others remove.
    from .engine import server as engine  # an engine first: it would start containers anew

    stages = [("engines", engine.leftovers, engine.remove_leftovers)]
    stages.append(("container monitors", manager.leftovers, manager.remove_leftovers))
    stages.append(("containers", lifecycle.leftovers, lifecycle.remove_leftovers))
    stages.append(("runc containers", _runc_leftovers, _remove_runc_containers))
    stages.append(("processes and namespaces", namespaces.leftovers, namespaces.remove_leftovers))

    def orphan_inits():
        return forkserver.leftovers({c.pid for c in lifecycle.list_containers()})

    stages.append(("fork servers", orphan_inits, forkserver.remove_leftovers))
    from . import network

    stages.append(("network", network.leftovers, network.remove_leftovers))
    from . import cgroups

    stages.append(("cgroups", cgroups.leftovers, cgroups.remove_leftovers))
    stages.append(("loop devices", _loop_leftovers, _remove_loop_devices))
    stages.append(("mounts", _state_mount_leftovers, _remove_state_mounts))
    stages.append(("state files", _state_file_leftovers, _remove_state_files))
    return stages


# runc keeps each container's state in --root/ID/state.json; labkit's runc roots (lesson 42's
# is lesson42/runc) are directories named runc below the state directory.
def _runc_containers() -> list[tuple[Path, str]]:
    root = state_dir()
    roots = [p for p in (root / "runc", *sorted(root.glob("*/runc"))) if p.is_dir()]
    return [(r, d.name) for r in roots for d in sorted(r.iterdir()) if (d / "state.json").is_file()]


def _runc(root: Path, *args: str) -> subprocess.CompletedProcess | None:
    """``runc --root ROOT ARGS``; None where runc is not installed (or did not answer)."""
    runc = shutil.which("runc") or shutil.which("runc", path="/usr/sbin:/usr/bin")
    if runc is None:
        return None
    command = [runc, "--root", str(root), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return None  # cleanup goes on; leftovers() still lists the container


def _runc_leftovers() -> list[str]:
    found = []
    for root, cid in _runc_containers():
        state = _runc(root, "state", cid)
        try:
            status = json.loads(state.stdout)["status"] if state else "runc not answering"
        except (ValueError, KeyError):
            status = "state unreadable"
        found.append(f"runc container: {cid} ({status}, --root {root})")
    return found


def _remove_runc_containers() -> None:
    """``runc delete --force``: runc kills the container's processes, removes its cgroup and
    its state."""
    for root, cid in _runc_containers():
        _runc(root, "delete", "--force", cid)


def _loop_leftovers() -> list[str]:
    found = loop.attached_below(os.path.realpath(state_dir()))
    return [f"loop device: {dev} (over {path})" for dev, path in found.items()]


def _remove_loop_devices() -> None:
    for dev in loop.attached_below(os.path.realpath(state_dir())):
        with contextlib.suppress(OSError):
            loop.detach(dev)


def _state_mount_leftovers() -> list[str]:
    return [f"mount: {p}" for p in mountinfo.below(state_dir())]


def _remove_state_mounts() -> None:
    for point in mountinfo.below(state_dir()):
        try:
            # MNT_DETACH: a mount still in use by a dying process is detached now, freed later.
            ksys.umount2(point, ksys.MNT_DETACH)
        except OSError:
            pass  # already gone because its parent was detached


def _state_file_leftovers() -> list[str]:
    root = state_dir()
    if not root.exists():
        return []
    # The cache holds nothing that runs or is mounted: not a leftover, though removed below.
    return [f"file: {p}" for p in sorted(root.iterdir()) if p.name != CACHE]


def _remove_state_files() -> None:
    root = state_dir()
    if root.exists() and not mountinfo.below(root):
        shutil.rmtree(root, ignore_errors=True)


def leftovers() -> list[str]:
    """Everything labkit-named that is on this host now, one readable line each."""
    found: list[str] = []
    for _name, list_them, _remove in _stages():
        found.extend(list_them())
    return found


def cleanup() -> list[str]:
    """Remove everything labkit made; return what was there before."""
    require_root("labkit cleanup")
    found = leftovers()
    was_there = _in_labkit_cgroups()
    for _name, _list_them, remove in _stages():
        remove()
    _wait_for_reaping(was_there)
    return found


def _in_labkit_cgroups() -> set[int]:
    """The processes in labkit cgroups (of any state directory), zombies too."""
    found = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and "/labkit" in (entry / "cgroup").read_text():
                found.add(int(entry.name))
    return found


def _wait_for_reaping(pids: set[int], timeout: float = 5.0) -> None:
    """A process killed here whose parent had died was handed to PID 1 (or a subreaper), which
    reaps it when it gets round to it; until then /proc still shows it in its cgroup. Wait for
    that, a while (not for this process's own children: waiting would not reap them)."""
    mine = {pid for pid in pids if _parent(pid) == os.getpid()}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any((proc.stat(pid) or ("",))[0] == "Z" for pid in pids - mine):
            return
        time.sleep(0.02)


def _parent(pid: int) -> int | None:
    try:
        return int(proc.status(pid)["PPid"])
    except (OSError, KeyError, ValueError):
        return None
