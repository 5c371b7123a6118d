"""Where labkit keeps what it makes, and how it names it.

Everything labkit creates carries its name so that ``labkit cleanup`` (and a student after a
crash) can find it: files and mounts below one state directory, ``/run/labkit`` unless
``LABKIT_STATE_DIR`` says otherwise; cgroups named ``labkit*``; network namespaces ``labkit-*``;
interfaces ``lk*``. ``/run`` is a tmpfs, so a reboot clears the state directory too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import BadInput

PREFIX = "labkit"
# Below the state directory, what labkit keeps only to be faster (compiled seccomp filters):
# anything in it can be made again, so it is no leftover; `labkit cleanup` removes it all the same.
CACHE = "cache"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def state_dir() -> Path:
    """The directory below which labkit keeps its files and mounts."""
    return Path(os.environ.get("LABKIT_STATE_DIR", "/run/labkit"))


def subdir(*parts: str) -> Path:
    """A directory below the state directory, created on first use."""
    path = state_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(*parts: str) -> Path:
    """A directory of the cache below the state directory (made by the code that writes it)."""
    return state_dir().joinpath(CACHE, *parts)


def check_name(name: str, what: str = "name") -> str:
    """Refuse a name that could not be a file name (or could climb out of the state dir)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInput(
            f"{what} {name!r} is not usable: use 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name
