"""The container spec: OCI's ``config.json`` as dataclasses, loaded and checked.

An OCI *bundle* is a directory with a ``config.json`` (what to run and how to isolate it) and a
root filesystem. Each dataclass below is one object of that file, and each field one key: the
field ``no_new_privileges`` is the key ``noNewPrivileges``. ``load(bundle)`` reads the file and
checks it; ``Spec.to_dict()`` writes it back. Every problem found is one sentence that names the
key by its JSON path (``process.user.uid must be an integer``), before anything is made.

What labkit does not support is refused rather than ignored: a security setting silently dropped
(an AppArmor profile, say) would leave a container less isolated than its author thinks.
"""

import functools
import json
import os
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path

from ..errors import BadInput
from . import capabilities

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SpecError(BadInput):
    """A config.json (or a Spec) that labkit cannot run; ``path`` is the offending JSON key."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path} {message}" if path else message)
        self.path = path


def _json(name: str, json_name: str | None = None):
    """A field whose JSON key is not the camelCase of its name (``containerID``)."""
    return {"json": json_name} if json_name else {}


# --- the objects of config.json -------------------------------------------------------------------


@dataclass
class User:
    """``process.user``: the uid and gid the process runs as, its other groups, its umask."""

    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    umask: int | None = None


@dataclass
class Capabilities:
    """``process.capabilities``: the five capability sets (Docker's 14 by default)."""

    bounding: list[str] = field(default_factory=lambda: list(capabilities.DOCKER_DEFAULT))
    effective: list[str] = field(default_factory=lambda: list(capabilities.DOCKER_DEFAULT))
    inheritable: list[str] = field(default_factory=list)
    permitted: list[str] = field(default_factory=lambda: list(capabilities.DOCKER_DEFAULT))
    ambient: list[str] = field(default_factory=list)


@dataclass
class Rlimit:
    """One of ``process.rlimits``: a setrlimit(2) resource (``RLIMIT_NOFILE``...), hard and soft."""

    type: str
    hard: int
    soft: int


@dataclass
class ConsoleSize:
    """``process.consoleSize``: the terminal's rows and columns."""

    height: int
    width: int


@dataclass
class Process:
    """``process``: what runs (args, env, cwd, user) and the privileges it keeps."""

    args: list[str]
    env: list[str] = field(default_factory=lambda: [DEFAULT_PATH])
    cwd: str = "/"
    user: User = field(default_factory=User)
    terminal: bool = False
    console_size: ConsoleSize | None = None  # the terminal's rows and columns, set before exec
    capabilities: Capabilities | None = field(default_factory=Capabilities)
    no_new_privileges: bool = False
    rlimits: list[Rlimit] = field(default_factory=list)
    oom_score_adj: int | None = None


@dataclass
class Root:
    """``root``: the root filesystem's directory, and whether it is mounted read-only."""

    path: str = "rootfs"
    readonly: bool = False


@dataclass
class Mount:
    """One of ``mounts``: what mount(2) puts at *destination* inside the root."""

    destination: str
    type: str | None = None
    source: str | None = None
    options: list[str] = field(default_factory=list)


@dataclass
class Namespace:
    """One of ``linux.namespaces``: a namespace to make, or (with *path*) to join."""

    type: str
    path: str | None = None


@dataclass
class IdMapping:
    """One of ``linux.uidMappings`` or ``gidMappings``: *size* ids from *container_id* up are
    the host's from *host_id* up."""

    container_id: int = field(metadata=_json("container_id", "containerID"))
    host_id: int = field(metadata=_json("host_id", "hostID"))
    size: int


@dataclass
class Memory:
    """``linux.resources.memory``: the limit, memory + swap, and the soft limit, in bytes."""

    limit: int | None = None
    swap: int | None = None  # memory + swap, as cgroup v1's memsw
    reservation: int | None = None


@dataclass
class CPU:
    """``linux.resources.cpu``: the weight (shares), a quota per period (µs), CPUs and nodes."""

    shares: int | None = None
    quota: int | None = None
    period: int | None = None
    cpus: str | None = None
    mems: str | None = None


@dataclass
class Pids:
    """``linux.resources.pids``: how many processes (and threads) the cgroup may hold."""

    limit: int


@dataclass
class DeviceRule:
    """One of ``linux.resources.devices``: allow or deny access (r, w, m) to devices."""

    allow: bool
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    access: str | None = None


@dataclass
class Resources:
    """``linux.resources``: the container cgroup's limits."""

    memory: Memory | None = None
    cpu: CPU | None = None
    pids: Pids | None = None
    # Enforced by labkit.cgroups.devices: the v1 devices controller, or an eBPF program on v2.
    devices: list[DeviceRule] = field(default_factory=list)


@dataclass
class Device:
    """One of ``linux.devices``: a device node made in the container's /dev."""

    path: str
    type: str
    major: int
    minor: int
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass
class SeccompArg:
    """One of a syscall rule's ``args``: the argument at *index* compared with *value*."""

    index: int
    value: int
    op: str
    value_two: int = 0


@dataclass
class SyscallRule:
    """One of ``linux.seccomp.syscalls``: the action for these syscalls."""

    names: list[str]
    action: str
    errno_ret: int | None = None
    args: list[SeccompArg] = field(default_factory=list)


@dataclass
class Seccomp:
    """``linux.seccomp``: the default action, the architectures, the rules."""

    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] = field(default_factory=list)
    syscalls: list[SyscallRule] = field(default_factory=list)


@dataclass
class Linux:
    """``linux``: the kernel's part: namespaces, id maps, limits, masked paths, seccomp."""

    namespaces: list[Namespace] = field(
        default_factory=lambda: [Namespace(k) for k in ("pid", "network", "ipc", "uts", "mount")]
    )
    uid_mappings: list[IdMapping] = field(default_factory=list)
    gid_mappings: list[IdMapping] = field(default_factory=list)
    resources: Resources | None = None
    masked_paths: list[str] = field(default_factory=lambda: list(MASKED_PATHS))
    readonly_paths: list[str] = field(default_factory=lambda: list(READONLY_PATHS))
    sysctl: dict[str, str] = field(default_factory=dict)
    rootfs_propagation: str | None = None
    devices: list[Device] = field(default_factory=list)
    seccomp: Seccomp | None = field(default_factory=lambda: _default_seccomp())
    cgroups_path: str | None = None


@dataclass
class Spec:
    """One container, as config.json describes it (see ``load`` and ``to_dict``)."""

    process: Process
    root: Root = field(default_factory=Root)
    hostname: str | None = None
    mounts: list[Mount] = field(default_factory=lambda: default_mounts())
    linux: Linux = field(default_factory=Linux)
    annotations: dict[str, str] = field(default_factory=dict)
    oci_version: str = OCI_VERSION

    def to_dict(self) -> dict:
        """The spec as config.json's object (keys as the OCI spec spells them)."""
        return _dump(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: object, checked: bool = True) -> "Spec":
        """Check *data* (a parsed config.json) and build the spec; SpecError names the key.

        checked=False skips the checks beyond the JSON types: the init child uses it for the
        spec its parent has already checked.
        """
        spec = _load(cls, data, "")
        if checked:
            check(spec)
        return spec

    def namespace(self, kind: str) -> Namespace | None:
        """The namespace entry of OCI type *kind* ("pid", "network", "mount"...), or None."""
        return next((ns for ns in self.linux.namespaces if ns.type == kind), None)


def _default_seccomp() -> Seccomp:
    from .seccomp import default_profile

    return default_profile()


# What runc's `runc spec` and Docker hide from a container's /proc and /sys, and make read-only.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def default_mounts() -> list[Mount]:
    """The mounts of ``runc spec``: /proc, a small /dev with pts, shm and mqueue, /sys read-only."""
    return [
        Mount("/proc", "proc", "proc"),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        Mount(
            "/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
        ),
        Mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        Mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        Mount(
            "/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", "ro"]
        ),
    ]


# --- JSON <-> dataclasses -------------------------------------------------------------------------


def _key(f) -> str:
    if "json" in f.metadata:
        return f.metadata["json"]
    head, *rest = f.name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _describe(hint) -> str:
    if is_dataclass(hint):
        return "an object"
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list"
    if origin is dict:
        return "an object of strings"
    return {int: "an integer", str: "a string", bool: "true or false"}.get(hint, str(hint))


@functools.cache
def _keys(cls) -> dict:
    """The fields of dataclass *cls* by their JSON key.

    Each field's ``type`` is the type itself: this module does not defer its annotations, so
    nothing is left to resolve (in a forked init, resolving strings cost a millisecond or two).
    """
    return {_key(f): f for f in fields(cls)}


def _load(hint, value, path: str):
    """Check *value* against the type *hint* and convert it; the first problem raises."""
    if isinstance(hint, (types.UnionType,)) or typing.get_origin(hint) is typing.Union:
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        if value is None:
            return None
        return _load(options[0], value, path)
    if is_dataclass(hint):
        if not isinstance(value, dict):
            raise SpecError(path or "config.json", "must be a JSON object.")
        known = _keys(hint)
        for key in value:
            if key not in known:
                where = f"{path}.{key}" if path else key
                raise SpecError(where, "is not supported by labkit: remove it from config.json.")
        kwargs = {}
        for key, f in known.items():
            where = f"{path}.{key}" if path else key
            if key in value:
                kwargs[f.name] = _load(f.type, value[key], where)
            elif f.default_factory is not MISSING:
                kwargs[f.name] = _absent(f.type, where)
            elif f.default is MISSING:
                raise SpecError(where, "is required.")
        return hint(**kwargs)
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(path, f"must be a list, not {json.dumps(value)[:40]}.")
        (item,) = typing.get_args(hint)
        if item is str and all(type(v) is str for v in value):
            return list(value)  # one pass for the common case: seccomp's hundreds of names
        return [_load(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise SpecError(path, "must be an object whose values are strings.")
        return dict(value)
    ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    if not ok:
        raise SpecError(path, f"must be {_describe(hint)}, not {json.dumps(value)[:40]}.")
    return value


def _absent(hint, path: str):
    """What a key left out of config.json means: nothing (no mounts, no seccomp filter...).

    labkit's Python defaults (Docker's capabilities, runc's mounts) are for a Spec made in
    Python; a config.json says everything itself, as runc reads it.
    """
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return None
    origin = typing.get_origin(hint)
    if origin is list:
        return []
    if origin is dict:
        return {}
    return _load(hint, {}, path)


def _dump(value):
    """A spec (or a part of it) as config.json's JSON object."""
    if is_dataclass(value):
        out = {}
        for f in fields(value):
            item = getattr(value, f.name)
            if item is None or item == [] or item == {}:
                continue  # leave out what is unset: a key left out means nothing (_absent)
            out[_key(f)] = _dump(item)
        return out
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return dict(value)
    return value


# --- what the types alone cannot say --------------------------------------------------------------

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable")
RLIMITS = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
]  # in the kernel's order: the index is the resource number
SECCOMP_ACTIONS = (
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
)
SECCOMP_OPS = (
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$")
# Sysctls that belong to a namespace, so setting them inside cannot change the host (runc's list).
_IPC_SYSCTLS = (
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
)


def check(spec: Spec) -> None:
    """Check what the JSON types cannot: names, paths, ranges, and combinations."""
    p = spec.process
    if not p.args or not all(p.args):
        raise SpecError("process.args", 'must name the program to run, e.g. ["sh"].')
    if not p.cwd.startswith("/"):
        raise SpecError("process.cwd", f"must be an absolute path, not {p.cwd!r}.")
    for i, entry in enumerate(p.env):
        if "=" not in entry or entry.startswith("="):
            raise SpecError(f"process.env[{i}]", f"must be NAME=VALUE, not {entry!r}.")
    for name in ("uid", "gid"):
        if not 0 <= getattr(p.user, name) < 2**32 - 1:
            raise SpecError(f"process.user.{name}", "must be between 0 and 4294967294.")
    if p.capabilities:
        for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            for i, name in enumerate(getattr(p.capabilities, kind)):
                if name not in capabilities.NUMBERS:
                    raise SpecError(
                        f"process.capabilities.{kind}[{i}]",
                        f"{name!r} is not a capability: use names like CAP_CHOWN "
                        "(see man 7 capabilities).",
                    )
    for i, rl in enumerate(p.rlimits):
        if rl.type not in RLIMITS:
            raise SpecError(
                f"process.rlimits[{i}].type",
                f"{rl.type!r} is not a resource limit: use one of RLIMIT_NOFILE, "
                "RLIMIT_NPROC, ... (see man 2 setrlimit).",
            )
        if not 0 <= rl.soft <= rl.hard:
            raise SpecError(f"process.rlimits[{i}]", "needs 0 <= soft <= hard.")
    size = p.console_size
    if size is not None and not (0 <= size.height < 65536 and 0 <= size.width < 65536):
        raise SpecError("process.consoleSize", "height and width must be from 0 to 65535.")
    if p.oom_score_adj is not None and not -1000 <= p.oom_score_adj <= 1000:
        raise SpecError("process.oomScoreAdj", "must be between -1000 and 1000.")
    for i, m in enumerate(spec.mounts):
        if not m.destination.startswith("/"):
            raise SpecError(
                f"mounts[{i}].destination",
                f"must be an absolute path inside the container, not {m.destination!r}.",
            )
    _check_linux(spec)


def _check_linux(spec: Spec) -> None:
    lx = spec.linux
    seen = set()
    for i, ns in enumerate(lx.namespaces):
        if ns.type not in NAMESPACE_TYPES:
            raise SpecError(
                f"linux.namespaces[{i}].type",
                f"{ns.type!r} is not a namespace type: use one of {', '.join(NAMESPACE_TYPES)}.",
            )
        if ns.type in seen:
            raise SpecError(f"linux.namespaces[{i}]", f"repeats the {ns.type} namespace.")
        seen.add(ns.type)
        if ns.path is not None and not os.path.exists(ns.path):
            raise SpecError(f"linux.namespaces[{i}].path", f"{ns.path} does not exist.")
    if "mount" not in seen:
        raise SpecError(
            "linux.namespaces",
            "must include a mount namespace: labkit does not change the host's own mount table.",
        )
    if spec.hostname is not None:
        if "uts" not in seen:
            raise SpecError(
                "hostname",
                "needs a uts namespace in linux.namespaces, or the "
                "host's own hostname would change.",
            )
        if not _HOSTNAME.match(spec.hostname):
            raise SpecError(
                "hostname",
                f"{spec.hostname!r} is not a hostname: use 1 to 63 letters, digits, '.' or '-'.",
            )
    if (lx.uid_mappings or lx.gid_mappings) and "user" not in seen:
        raise SpecError("linux.uidMappings", "need a user namespace in linux.namespaces.")
    if "user" in seen and (not lx.uid_mappings or not lx.gid_mappings):
        raise SpecError(
            "linux.uidMappings",
            "and linux.gidMappings are required with a user "
            'namespace, e.g. [{"containerID": 0, "hostID": 100000, "size": 65536}].',
        )
    for name in ("uid_mappings", "gid_mappings"):
        for i, m in enumerate(getattr(lx, name)):
            if m.size < 1 or m.container_id < 0 or m.host_id < 0:
                key = "uidMappings" if name == "uid_mappings" else "gidMappings"
                raise SpecError(f"linux.{key}[{i}]", "needs ids >= 0 and a size of at least 1.")
    if lx.rootfs_propagation is not None and lx.rootfs_propagation not in PROPAGATIONS:
        raise SpecError(
            "linux.rootfsPropagation",
            f"{lx.rootfs_propagation!r} is not one of {', '.join(PROPAGATIONS)}.",
        )
    for key in lx.sysctl:
        _check_sysctl(key, seen)
    for name in ("masked_paths", "readonly_paths"):
        for i, path in enumerate(getattr(lx, name)):
            if not path.startswith("/"):
                key = "maskedPaths" if name == "masked_paths" else "readonlyPaths"
                raise SpecError(f"linux.{key}[{i}]", f"must be an absolute path, not {path!r}.")
    for i, dev in enumerate(lx.devices):
        if dev.type not in ("c", "b", "u", "p") or not dev.path.startswith("/dev/"):
            raise SpecError(f"linux.devices[{i}]", "needs a path below /dev and type c, b, u or p.")
    if lx.resources:
        resource_limits(spec)
        _check_device_rules(lx.resources.devices)
    if lx.seccomp:
        _check_seccomp(spec)


def _check_device_rules(rules: list[DeviceRule]) -> None:
    from ..cgroups import devices

    for i, r in enumerate(rules):
        try:
            devices.rule(r.allow, r.type, r.major, r.minor, r.access)
        except BadInput as e:
            raise SpecError(f"linux.resources.devices[{i}]", f"is refused: {e}") from None


def _check_sysctl(key: str, namespaces: set[str]) -> None:
    where = f"linux.sysctl.{key}"
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if "ipc" not in namespaces:
            raise SpecError(where, "needs an ipc namespace, or it would change the host's.")
    elif key.startswith("net."):
        if "network" not in namespaces:
            raise SpecError(where, "needs a network namespace, or it would change the host's.")
    elif key in ("kernel.hostname", "kernel.domainname"):
        if "uts" not in namespaces:
            raise SpecError(where, "needs a uts namespace, or it would change the host's.")
    else:
        raise SpecError(
            where,
            "is not a namespaced sysctl: setting it would change the whole "
            "host; only kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, net.*, "
            "kernel.hostname and kernel.domainname are allowed.",
        )


def _check_seccomp(spec: Spec) -> None:
    sc = spec.linux.seccomp
    if sc.default_action not in SECCOMP_ACTIONS:
        raise SpecError(
            "linux.seccomp.defaultAction",
            f"{sc.default_action!r} is not one of {', '.join(SECCOMP_ACTIONS)}.",
        )
    for i, rule in enumerate(sc.syscalls):
        if rule.action not in SECCOMP_ACTIONS:
            raise SpecError(
                f"linux.seccomp.syscalls[{i}].action",
                f"{rule.action!r} is not one of {', '.join(SECCOMP_ACTIONS)}.",
            )
        for j, arg in enumerate(rule.args):
            if arg.op not in SECCOMP_OPS or not 0 <= arg.index <= 5:
                raise SpecError(
                    f"linux.seccomp.syscalls[{i}].args[{j}]",
                    f"needs an index 0..5 and an op among {', '.join(SECCOMP_OPS)}.",
                )
    from .seccomp import check_linux_seccomp

    check_linux_seccomp(sc)  # and libseccomp compiles it (or refuses it) there


def resource_limits(spec: Spec) -> dict:
    """linux.resources as keyword arguments for ``labkit.cgroups.Cgroup.create``."""
    res = spec.linux.resources
    limits: dict = {}
    if res is None:
        return limits
    if res.memory:
        if res.memory.limit is not None and res.memory.limit > 0:
            limits["memory"] = res.memory.limit
        if res.memory.swap is not None and res.memory.swap > 0:
            if res.memory.limit is None or res.memory.swap < res.memory.limit:
                raise SpecError(
                    "linux.resources.memory.swap",
                    "is memory plus swap: it must be at least linux.resources.memory.limit.",
                )
            limits["swap"] = res.memory.swap - res.memory.limit
    if res.cpu:
        if res.cpu.quota is not None and res.cpu.quota > 0:
            limits["cpus"] = res.cpu.quota / (res.cpu.period or 100_000)
        if res.cpu.shares:
            # cpu.shares (2..262144) onto v2's weight (1..10000), as runc converts it.
            limits["weight"] = 1 + ((max(2, res.cpu.shares) - 2) * 9999) // 262142
        if res.cpu.cpus:
            limits["cpuset"] = res.cpu.cpus
    if res.pids and res.pids.limit > 0:
        limits["pids"] = res.pids.limit
    from ..cgroups.units import parse_limits

    try:
        parse_limits(set(range(os.cpu_count() or 1)), **limits)
    except BadInput as e:
        raise SpecError("linux.resources", f"is not usable: {e}") from None
    return limits


# --- bundles ------------------------------------------------------------------------------------


def load(bundle: str | os.PathLike, check_root: bool = True) -> Spec:
    """Read and check ``BUNDLE/config.json``; the root path is made absolute and checked.

    check_root=False: the root will come from elsewhere (an image), so root.path may be missing.
    """
    bundle = Path(bundle).absolute()
    config = bundle / "config.json"
    try:
        text = config.read_text()
    except FileNotFoundError:
        raise BadInput(
            f"{config} does not exist: give the bundle directory that holds "
            "config.json (runc spec writes one)."
        ) from None
    except OSError as e:
        raise BadInput(f"{config} cannot be read: {e.strerror}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(
            f"{config} is not JSON: {e.msg} at line {e.lineno}, column {e.colno}."
        ) from None
    spec = Spec.from_dict(data)
    root = Path(spec.root.path)
    spec.root.path = str(root if root.is_absolute() else bundle / root)
    if check_root and not os.path.isdir(spec.root.path):
        raise SpecError(
            "root.path",
            f"{spec.root.path} is not a directory: put the container's "
            "root filesystem there (labkit rootfs build DIR makes one).",
        )
    return spec
