"""labkit: learn how Linux containers work by building one.

The package is laid out bottom-up, in the order the lessons teach it: ``labkit.sys`` (the
syscalls), ``labkit.namespaces``, ``labkit.rootfs``, then the later layers. Import the module you
need; importing ``labkit`` itself stays cheap because the namespace helper child imports it.
"""

__version__ = "0.1.0"

# The modules floor by floor, bottom-up as the course teaches the stack (CONTRIBUTING.md): a
# module may import its own floor and those below, never one above, and nothing below the top
# imports labkit.lab, the lessons' glue. tests/unit/test_floors.py checks this from the source.
# Importing labkit imports none of them.
FLOORS = [
    ["sys", "errors", "state", "mountinfo", "proc", "bpf", "channel", "loop"],  # syscalls, records
    [  # the kernel features, each usable alone
        "_init",
        "forkserver",
        "namespaces",
        "cgroups",
        "overlay",
        "rootfs",
        "layers",
        "images",
        "archives",
        "network",
        "traffic",
    ],
    ["container"],  # the runtime that composes them
    ["engine"],  # the Docker Engine API over the runtime
    ["doctor", "cleanup", "cli", "course"],  # the host's checks, the clean-up, the commands
    ["lab"],  # the lessons' glue
]

__all__ = [name for floor in FLOORS for name in floor if not name.startswith("_")]
