"""Docker's container configuration, checked, and turned into an OCI spec with Docker's defaults.

``docker run`` sends the engine two objects: ``Config`` (what to run: image, command, env,
user, working directory, terminal) and ``HostConfig`` (how the host runs it: limits, volumes,
ports, network, capabilities). The engine fills in the rest from the image's own config and
hands the runtime an OCI spec. This module does that step: ``check(config, host_config)``
refuses a bad value in one sentence before anything is made, ``to_spec`` builds the spec.

Docker's defaults kept here: the image's Env, Cmd, Entrypoint, WorkingDir and User; a new
namespace of every kind but user (and cgroup, which is new only on cgroup v2); the container's
short id as hostname; Docker's 14 capabilities, its seccomp profile, masked and read-only paths
(all of them off with Privileged).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import stat

from ..cgroups.units import parse_cpus, parse_size
from ..errors import BadInput
from . import capabilities
from .spec import (
    CPU,
    DEFAULT_PATH,
    ConsoleSize,
    Device,
    DeviceRule,
    Linux,
    Memory,
    Mount,
    Namespace,
    Pids,
    Process,
    Resources,
    Root,
    Spec,
    User,
)

NETWORK_MODES = ("none", "bridge", "default")
_PORT = re.compile(r"^(\d{1,5})(?:/(tcp|udp))?$")


def _capability(name: str) -> str:
    """ "net_admin", "NET_ADMIN" or "CAP_NET_ADMIN" -> "CAP_NET_ADMIN" (or "ALL")."""
    if not isinstance(name, str):
        raise BadInput(f"capability {name!r} is not a name: use names like NET_ADMIN.")
    upper = name.upper()
    if upper == "ALL":
        return "ALL"
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in capabilities.NUMBERS:
        raise BadInput(
            f"{name!r} is not a capability: use names like NET_ADMIN or CHOWN "
            "(see man 7 capabilities), or ALL."
        )
    return full


def capability_set(host_config: dict) -> list[str]:
    """Docker's 14 capabilities, with CapAdd added and CapDrop taken away (ALL allowed)."""
    if host_config.get("Privileged"):
        return capabilities.bounding()
    add = [_capability(c) for c in host_config.get("CapAdd") or []]
    drop = [_capability(c) for c in host_config.get("CapDrop") or []]
    caps = set(capabilities.DOCKER_DEFAULT)
    if "ALL" in drop:
        caps = set()
    caps -= set(drop)
    if "ALL" in add:
        caps = set(capabilities.bounding())
    caps |= {c for c in add if c != "ALL"}
    return sorted(caps, key=capabilities.NUMBERS.get)


# runc's HostDevices leaves these out: other filesystems' nodes, and the host's console.
_NOT_HOST_DEVICES = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev", "console"}


def host_devices(dev: str = "/dev", depth: int = 4) -> list[Device]:
    """Every device node below the host's /dev, as Docker gives a privileged container.

    Only character and block devices and fifos (as runc's HostDevices); symlinks are not
    followed; each node keeps its numbers, mode and owner.
    """
    found = []
    try:
        entries = sorted(os.scandir(dev), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        if entry.name in _NOT_HOST_DEVICES:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        if stat.S_ISDIR(st.st_mode) and depth > 0:
            found += host_devices(entry.path, depth - 1)
            continue
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else None
        if kind is None and stat.S_ISFIFO(st.st_mode):
            kind = "p"
        if kind is None:
            continue
        major, minor = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind != "p" else (0, 0)
        found.append(
            Device(entry.path, kind, major, minor, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        )
    return found


def parse_port(text: str) -> tuple[int, str]:
    """ "80", "80/tcp", "53/udp" -> (port, protocol); anything else is refused."""
    match = _PORT.match(str(text))
    if not match or not 1 <= int(match.group(1)) <= 65535:
        raise BadInput(f"{text!r} is not a port: use a number 1 to 65535, optionally /tcp or /udp.")
    return int(match.group(1)), match.group(2) or "tcp"


def _host_ip(text: str, key: str) -> str:
    """A HostIp: "" (all of the host's IPv4 addresses) or one IPv4 address that is not loopback."""
    if text in ("", "0.0.0.0"):
        return ""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise BadInput(
            f"{text!r} (the host address for {key}) is not an IP address: give one like "
            "192.168.1.5, or none to publish on all of the host's addresses."
        ) from None
    if ip.version != 4 or ip.is_loopback:
        # A DNAT to a bridge does not apply to loopback traffic; Docker needs its userland
        # proxy (docker-proxy) for that, and labkit's bridge has no IPv6.
        raise BadInput(
            f"publishing on {ip} is not supported: labkit publishes on the host's IPv4 "
            "addresses other than loopback; give one of them, or none for all."
        )
    return str(ip)


def publish_requests(host_config: dict) -> list[tuple[str, int, int, str]]:
    """HostConfig.PortBindings as (host IP, host port, container port, protocol), checked.

    A host IP of "" means all of the host's addresses; a host port of 0 means "any free one"
    (Docker's ``-p 80``), chosen when the container starts.
    """
    found = []
    bindings = host_config.get("PortBindings") or {}
    if not isinstance(bindings, dict):
        raise BadInput('PortBindings must map "PORT/PROTO" to a list of {"HostPort": ...}.')
    for key, targets in bindings.items():
        port, proto = parse_port(key)
        if targets is not None and not isinstance(targets, list):
            raise BadInput(f'the bindings of {key} must be a list of {{"HostPort": ...}}.')
        for target in targets or [{}]:
            if not isinstance(target, dict):
                raise BadInput(f'each binding of {key} must be an object {{"HostPort": ...}}.')
            host_ip = _host_ip(str(target.get("HostIp") or ""), key)
            host_port = str(target.get("HostPort") or "0")
            if not host_port.isdigit() or not 0 <= int(host_port) <= 65535:
                raise BadInput(
                    f"host port {host_port!r} for {key} is not a port number: give one from "
                    "1 to 65535, or none for any free port (labkit takes no port ranges)."
                )
            found.append((host_ip, int(host_port), port, proto))
    seen = set()
    for _ip, host_port, _port, proto in found:
        if host_port and (host_port, proto) in seen:
            raise BadInput(f"host port {host_port}/{proto} is given twice: publish it once.")
        seen.add((host_port, proto))
    return found


def port_bindings(host_config: dict) -> list[tuple[int, int, str]]:
    """The requests as (host port, container port, protocol); host port 0: any free one."""
    return [
        (host_port, port, proto) for _ip, host_port, port, proto in publish_requests(host_config)
    ]


def binds(host_config: dict) -> list[Mount]:
    """HostConfig.Binds ("SRC:DST[:ro|rw]") as bind mounts; the source must exist on the host."""
    mounts = []
    for bind in host_config.get("Binds") or []:
        parts = str(bind).split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise BadInput(
                f"volume {bind!r} is not SRC:DST or SRC:DST:ro: give a host directory or file "
                "and a path inside the container, e.g. /srv/data:/data:ro."
            )
        src, dst = parts[0], parts[1]
        if not src.startswith("/"):
            raise BadInput(
                f"volume source {src!r} is not an absolute path: labkit has no named volumes, "
                "give a host path like /srv/data."
            )
        if not os.path.exists(src):
            raise BadInput(f"volume source {src} does not exist on the host: create it first.")
        if not dst.startswith("/") or dst == "/":
            raise BadInput(f"volume destination {dst!r} must be an absolute path other than /.")
        options = ["rbind", "rprivate"] + (["ro"] if parts[2:] == ["ro"] else [])
        mounts.append(Mount(dst, "bind", os.path.realpath(src), options))
    return mounts


def resources(host_config: dict) -> Resources | None:
    """Memory, CPU and pids limits from HostConfig, as linux.resources."""
    res = Resources()
    memory = host_config.get("Memory") or 0
    if memory:
        limit = parse_size(memory, "memory limit")
        swap = host_config.get("MemorySwap") or 0
        if swap in (0, None):
            swap_total = 2 * limit  # Docker's default: as much swap as memory
        elif swap == -1:
            swap_total = None
        else:
            swap_total = parse_size(swap, "memory+swap limit")
            if swap_total < limit:
                raise BadInput(
                    "the memory+swap limit is below the memory limit: give --memory-swap at "
                    "least as large as --memory (or -1 for unlimited swap)."
                )
        res.memory = Memory(limit=limit, swap=swap_total if _swap_accounted() else None)
    cpu = CPU()
    if host_config.get("NanoCpus"):
        cpus = parse_cpus(host_config["NanoCpus"] / 1e9, os.cpu_count())
        cpu.quota, cpu.period = int(cpus * 100_000), 100_000
    if host_config.get("CpuQuota"):
        cpu.quota, cpu.period = (
            int(host_config["CpuQuota"]),
            int(host_config.get("CpuPeriod") or 100_000),
        )
    if host_config.get("CpuShares"):
        cpu.shares = int(host_config["CpuShares"])
    if cpu != CPU():
        res.cpu = cpu
    pids = host_config.get("PidsLimit")
    if pids:
        if not isinstance(pids, int) or isinstance(pids, bool) or pids < -1:
            raise BadInput(f"pids limit {pids!r} is not a number of processes: give e.g. 100.")
        if pids > 0:
            res.pids = Pids(pids)
    return res if (res.memory or res.cpu or res.pids) else None


def _unified() -> bool:
    """Whether this host's cgroups are v2 only (statfs of /sys/fs/cgroup)."""
    from ..cgroups import layout

    return layout.detect_mode() == "v2"


def _swap_accounted() -> bool:
    """Whether the kernel can limit memory+swap (v1 memsw files, or v2's memory.swap.max)."""
    if _unified():
        return True
    return os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")


def parse_memory(text: str) -> int:
    """ "64m", "1g", "512k", "1048576" -> bytes (Docker's units are powers of 1024)."""
    size = parse_size(str(text).strip(), "memory limit")
    if not isinstance(size, int):
        raise BadInput(f"memory limit {text!r} is not a size: write e.g. 64m or 1g.")
    return size


def check(config: dict, host_config: dict) -> None:
    """Refuse what cannot run, one sentence each, before anything is made."""
    if not isinstance(config, dict) or not isinstance(host_config, dict):
        raise BadInput("the container's Config and HostConfig must be JSON objects.")
    for key in ("Cmd", "Entrypoint", "Env"):
        value = config.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise BadInput(f"{key} must be a list of strings, not {value!r}.")
    for entry in config.get("Env") or []:
        if entry.startswith("="):
            raise BadInput(f"environment entry {entry!r} must be NAME=VALUE.")
    mode = host_config.get("NetworkMode") or "none"
    if mode not in NETWORK_MODES:
        raise BadInput(
            f"network {mode!r} is not available: labkit has --network none and --network bridge."
        )
    ports = port_bindings(host_config)
    if ports and mode == "none":
        raise BadInput("published ports need a network: add --network bridge.")
    capability_set(host_config)
    binds(host_config)
    resources(host_config)
    console_size(host_config)
    workdir = config.get("WorkingDir") or ""
    if workdir and not workdir.startswith("/"):
        raise BadInput(f"working directory {workdir!r} must be an absolute path.")
    hostname = config.get("Hostname") or ""
    if hostname and not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$", hostname):
        raise BadInput(f"{hostname!r} is not a hostname: use 1 to 63 letters, digits, '.' or '-'.")
    user = config.get("User") or ""
    if user and not re.match(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$", user):
        raise BadInput(f"user {user!r} is not USER or USER:GROUP (names or numbers).")


def merged_config(image_config: dict, config: dict) -> dict:
    """The container's Config: the image's config with what the caller gave on top (Docker's)."""
    base = dict(image_config.get("config") or {})
    out = dict(config)
    if not config.get("Cmd") and not config.get("Entrypoint"):
        out["Cmd"] = base.get("Cmd")
    out["Entrypoint"] = config.get("Entrypoint") or base.get("Entrypoint")
    env = {}
    for entry in (base.get("Env") or []) + (config.get("Env") or []):
        name, _, value = entry.partition("=")
        env[name] = value
    if "PATH" not in env:
        env["PATH"] = DEFAULT_PATH.split("=", 1)[1]
    out["Env"] = [f"{k}={v}" for k, v in env.items()]
    out["WorkingDir"] = config.get("WorkingDir") or base.get("WorkingDir") or ""
    out["User"] = config.get("User") or base.get("User") or ""
    out["Labels"] = {**(base.get("Labels") or {}), **(config.get("Labels") or {})}
    return out


ETC_FILE_LIMIT = 4 << 20  # bytes of /etc/passwd or /etc/group read from an image, at most


def _entry(root: str, file: str, name: str, what: str) -> list[str]:
    """The fields of *name*'s line in the container's /etc/passwd or /etc/group.

    The image is hostile: its /etc/passwd may be a symlink to the host's /etc/shadow (resolved
    inside the root here, as the container would), a FIFO that would block an open (O_NONBLOCK,
    and only a regular file is read) or a huge file (read up to a bound).
    """
    from .steps import in_root  # (steps is not needed to build a spec, only for this)

    try:
        fd = os.open(in_root(root, f"/etc/{file}"), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            text = f.read(ETC_FILE_LIMIT + 1)
    except OSError as e:
        raise BadInput(
            f"unable to find {what} {name}: the image's /etc/{file} cannot be read "
            f"({e.strerror}): give a number instead, e.g. -u 65534."
        ) from None
    if len(text) > ETC_FILE_LIMIT:
        raise BadInput(
            f"unable to find {what} {name}: the image's /etc/{file} is over "
            f"{ETC_FILE_LIMIT >> 20} MiB: give a number instead, e.g. -u 65534."
        )
    for line in text.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
            return fields
    raise BadInput(
        f"unable to find {what} {name}: no matching entries in /etc/{file} of the image."
    )


def user(root: str, text: str) -> User:
    """ "uid", "name", "uid:gid", "name:group" -> User, names read from the image's files."""
    if not text:
        return User(0, 0)
    name, _, group = text.partition(":")
    if name.isdigit():
        uid, gid = int(name), 0
    else:
        fields = _entry(root, "passwd", name, "user")
        uid = int(fields[2])
        gid = int(fields[3]) if len(fields) > 3 and fields[3].isdigit() else 0
    if group:
        gid = int(group) if group.isdigit() else int(_entry(root, "group", group, "group")[2])
    return User(uid, gid)


def command(config: dict) -> list[str]:
    """Entrypoint + Cmd, as Docker joins them."""
    return list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])


def console_size(host_config: dict) -> ConsoleSize | None:
    """HostConfig.ConsoleSize [rows, columns] (docker 23 on): the pty is made that size, so the
    command never sees the 0x0 a terminal has before the client's first resize."""
    value = host_config.get("ConsoleSize")
    if value is None or value == [0, 0]:
        return None
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(type(n) is int and 0 < n < 65536 for n in value)
    ):
        raise BadInput("ConsoleSize must be [rows, columns], whole numbers from 1 to 65535.")
    return ConsoleSize(height=value[0], width=value[1])


def to_spec(
    config: dict,
    host_config: dict,
    root: str,
    *,
    hostname: str,
    netns: str | None = None,
) -> Spec:
    """An OCI spec for the container: *config* already merged with the image's (merged_config)."""
    args = command(config)
    if not args:
        raise BadInput("no command given and the image has none: add a command after the image.")
    privileged = bool(host_config.get("Privileged"))
    caps = capability_set(host_config)
    from .spec import Capabilities

    process = Process(
        args,
        env=list(config["Env"]),
        cwd=config.get("WorkingDir") or "/",
        user=user(root, config.get("User") or ""),
        terminal=bool(config.get("Tty")),
        console_size=console_size(host_config) if config.get("Tty") else None,
        capabilities=Capabilities(caps, caps, [], caps, []),
    )
    namespaces = [Namespace(k) for k in ("pid", "ipc", "uts", "mount")]
    namespaces.append(Namespace("network", f"/run/netns/{netns}" if netns else None))
    if _unified():
        # Docker's default on cgroup v2 (--cgroupns private): the init joins its cgroup first,
        # so the new namespace is rooted there, and /sys/fs/cgroup shows the container's own.
        namespaces.append(Namespace("cgroup"))
    linux = Linux(namespaces=namespaces, resources=resources(host_config))
    spec = Spec(
        process,
        root=Root(root, readonly=bool(host_config.get("ReadonlyRootfs"))),
        hostname=config.get("Hostname") or hostname,
        linux=linux,
    )
    for m in spec.mounts:
        if m.destination == "/proc":
            m.options = ["nosuid", "noexec", "nodev"]  # Docker's, where `runc spec` sets none
    spec.mounts += binds(host_config)
    if privileged:
        # Docker's --privileged: every capability (above), no seccomp filter, nothing masked
        # or read-only, /sys and the cgroups writable, and the host's devices, all allowed.
        linux.masked_paths, linux.readonly_paths, linux.seccomp = [], [], None
        linux.devices = host_devices()
        linux.resources = linux.resources or Resources()
        linux.resources.devices = [DeviceRule(True, "a", access="rwm")]
        for m in spec.mounts:
            if m.destination in ("/sys", "/sys/fs/cgroup"):
                m.options = [o for o in m.options if o != "ro"]
    return spec
