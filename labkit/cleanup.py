"""Find and remove everything labkit made on this host: ``labkit cleanup``.

It works from what the kernel shows (mount table, /proc, interfaces), not from labkit's memory,
so it also works after a crash, a killed notebook kernel or a reboot. Each module that creates
something offers a ``leftovers()`` function (what is there, as readable strings) and a
``remove_leftovers()`` function; this module calls them in an order that undoes a container from
the outside in: processes first, then what they used.
"""

from __future__ import annotations

import shutil

from . import mountinfo
from . import sys as ksys
from .errors import require_root
from .state import state_dir


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
    stages.append(("processes and namespaces", namespaces.leftovers, namespaces.remove_leftovers))

    def orphan_inits():
        return forkserver.leftovers({c.pid for c in lifecycle.list_containers()})

    stages.append(("fork servers", orphan_inits, forkserver.remove_leftovers))
    from . import network

    stages.append(("network", network.leftovers, network.remove_leftovers))
    from . import cgroups

    stages.append(("cgroups", cgroups.leftovers, cgroups.remove_leftovers))
    stages.append(("mounts", _state_mount_leftovers, _remove_state_mounts))
    stages.append(("state files", _state_file_leftovers, _remove_state_files))
    return stages


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
    return [f"file: {p}" for p in sorted(root.iterdir())]


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
    for _name, _list_them, remove in _stages():
        remove()
    return found
