"""The engine about itself: ``/_ping``, ``/version`` and ``/info``.

Every docker command starts with ``HEAD /_ping``: its ``Api-Version`` header tells the client
which API version to speak (the lower of the two). ``/version`` and ``/info`` are what
``docker version`` and ``docker info`` print; the host's facts come from the kernel (uname,
/proc/meminfo, the cgroup filesystem's type).
"""

from __future__ import annotations

import os
import platform
import socket
import threading
import time

from .. import __version__
from ..cgroups.layout import detect_mode
from ..state import state_dir
from . import images as image_routes
from .api import Reply, route
from .errors import NotFound
from .server import API_VERSION, MIN_API_VERSION

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_STARTED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@route("GET", "/_ping")
def ping(request) -> Reply:
    # The headers are what the client reads: server.py puts Api-Version and Ostype on every
    # answer; a HEAD gets them with no body.
    return Reply(
        200,
        b"OK",
        "text/plain; charset=utf-8",
        {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"},
    )


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        return fields.get("PRETTY_NAME", "Linux").strip('"')
    except OSError:
        return "Linux"


def mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


@route("GET", "/version")
def version(request) -> Reply:
    arch = _GOARCH.get(platform.machine(), platform.machine())
    details = {
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": platform.release(),
        "GitCommit": "labkit",
        "GoVersion": f"python{platform.python_version()}",
        "BuildTime": _STARTED,
    }
    return Reply(
        200,
        {
            "Platform": {"Name": "labkit engine"},
            "Components": [
                {"Name": "Engine", "Version": __version__, "Details": details},
                {
                    "Name": "labkit-runtime",
                    "Version": __version__,
                    "Details": {"GitCommit": "labkit"},
                },
            ],
            "Version": __version__,
            **details,
        },
    )


@route("GET", "/info")
def info(request) -> Reply:
    from . import containers

    counts = containers.counts()
    mode = detect_mode()
    return Reply(
        200,
        {
            "ID": _engine_id(),
            "Containers": sum(counts.values()),
            "ContainersRunning": counts.get("running", 0),
            "ContainersPaused": counts.get("paused", 0),
            "ContainersStopped": sum(
                n for s, n in counts.items() if s not in ("running", "paused")
            ),
            "Images": image_routes.count(),
            "Driver": "overlay",
            "DriverStatus": [["Backing Filesystem", "labkit image store"]],
            "Plugins": {
                "Volume": [],
                "Network": ["none", "bridge"],
                "Authorization": None,
                "Log": ["json-file"],
            },
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": True,
            "PidsLimit": True,
            "KernelMemory": False,
            "OomKillDisable": False,
            "IPv4Forwarding": True,
            "BridgeNfIptables": False,
            "BridgeNfIp6tables": False,
            "Debug": False,
            "NFd": len(os.listdir("/proc/self/fd")),
            "NGoroutines": threading.active_count(),
            "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if mode == "v2" else "1",
            "NEventsListener": 0,
            "KernelVersion": platform.release(),
            "OperatingSystem": _os_name(),
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": platform.machine(),
            "IndexServerAddress": "",
            "RegistryConfig": {"InsecureRegistryCIDRs": [], "IndexConfigs": {}, "Mirrors": []},
            "NCPU": os.cpu_count() or 1,
            "MemTotal": mem_total(),
            "DockerRootDir": str(state_dir()),
            "Name": socket.gethostname(),
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": __version__,
            "Runtimes": {"labkit": {"path": "labkit-runtime"}},
            "DefaultRuntime": "labkit",
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": False,
                "Error": "",
                "RemoteManagers": None,
            },
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": {"ID": "", "Expected": ""},
            "RuncCommit": {"ID": "labkit", "Expected": "labkit"},
            "InitCommit": {"ID": "", "Expected": ""},
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "Warnings": []
            if mode != "hybrid"
            else ["cgroups are hybrid here: limits use the v1 hierarchies"],
        },
    )


def _engine_id() -> str:
    """A stable id for this host's engine: the machine id, as Docker's is per install."""
    try:
        with open("/etc/machine-id") as f:
            return f.read().strip() or socket.gethostname()
    except OSError:
        return socket.gethostname()


# `docker inspect NAME` tries containers, images, then networks, volumes and plugins, and stops
# at the first answer that is not a 404: there are none of those here, so each one is a 404.
@route("GET", "/networks/{name}")
def no_network(request, name: str) -> None:
    raise NotFound(f"No such network: {name[:200]}")


@route("GET", "/volumes/{name}")
def no_volume(request, name: str) -> None:
    raise NotFound(f"No such volume: {name[:200]}")


@route("GET", "/plugins/{name*}/json")
def no_plugin(request, name: str) -> None:
    raise NotFound(f"No such plugin: {name[:200]}")
