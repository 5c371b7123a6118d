"""labkit: learn how Linux containers work by building one.

The package is laid out bottom-up, in the order the lessons teach it: ``labkit.sys`` (the
syscalls), ``labkit.namespaces``, ``labkit.rootfs``, then the later layers. Import the module you
need; importing ``labkit`` itself stays cheap because the namespace helper child imports it.
"""

__version__ = "0.1.0"

# The public modules, floor by floor (CONTRIBUTING.md): an arrow never points up, and nothing
# here imports labkit.lab, the lessons' glue on top. Importing labkit imports none of them.
__all__ = [
    "sys",  # the syscalls
    "errors",
    "state",
    "mountinfo",
    "proc",  # what /proc says about a process
    "bpf",  # bpf(2) and the instructions of a cgroup device filter
    "channel",  # the status pipe between a parent and the child it set up
    "forkserver",  # the kernel features, each usable alone
    "namespaces",
    "cgroups",
    "overlay",
    "rootfs",
    "layers",
    "images",
    "network",
    "traffic",
    "container",  # the runtime that composes them
    "engine",  # the Docker Engine API over the runtime
    "doctor",  # what this host supports, and the cleanup of what labkit made
    "cleanup",
    "cli",
    "course",  # the classroom: student copies and progress
]
