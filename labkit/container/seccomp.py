"""Seccomp: a filter the kernel runs on every system call a process makes.

After ``seccomp(SECCOMP_SET_MODE_FILTER)`` (which libseccomp, through pyseccomp, compiles and
loads for us), each system call is checked against the filter first: allowed, refused with an
errno, or the process killed. It is the last wall: even root with every capability cannot mount
or unshare when the filter says no. ``/proc/self/status`` shows ``Seccomp: 2`` under a filter.

labkit's default is Docker's default profile, an *allow-list*: about 350 system calls a normal
program needs are allowed, and every other call fails with EPERM (the profile's default action).
Some are allowed only with a capability that makes them useful (``mount``, ``unshare`` and
``setns`` with CAP_SYS_ADMIN, ``reboot`` with CAP_SYS_BOOT...), and ``clone`` only without the
namespace flags, so a container that lacks CAP_SYS_ADMIN cannot make namespaces.

The profile is data, ``seccomp-default.json``, in Docker's own format (with its origin in the
file's ``comment``). That format has conditions (``includes``/``excludes`` by capability,
architecture and kernel version) that OCI's ``linux.seccomp`` has not: like dockerd, ``resolve``
turns the profile into a plain ``linux.seccomp`` for one container's capabilities and this
machine's architecture. Read ``man 2 seccomp`` beside this file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput
from . import capabilities
from .spec import SECCOMP_ACTIONS, SECCOMP_OPS, Seccomp, SeccompArg, SyscallRule

DEFAULT_PROFILE = Path(__file__).with_name("seccomp-default.json")
MAX_PROFILE_BYTES = 1 << 20  # Docker's own profile is 13 kB: a bigger file is not a profile

# This machine's architecture, as Docker's profiles name it (Go's names, libseccomp's spelling),
# and as libseccomp names it in OCI's linux.seccomp.architectures.
ARCHES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "i686": ("x86", "SCMP_ARCH_X86"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
}
PROFILE_ARCHES = {"x86", "amd64", "x32", "arm", "arm64", "mips64", "mips64n32", "mipsel64",
                  "mips3l64n32", "mipsel", "ppc", "ppc64", "ppc64le", "s390", "s390x",
                  "riscv64"}  # fmt: skip
SCMP_ARCHES = {f"SCMP_ARCH_{a}" for a in ("X86", "X86_64", "X32", "ARM", "AARCH64", "MIPS",
               "MIPS64", "MIPS64N32", "MIPSEL", "MIPSEL64", "MIPSEL64N32", "PPC", "PPC64",
               "PPC64LE", "S390", "S390X", "PARISC", "PARISC64", "RISCV64")}  # fmt: skip
_SYSCALL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_KERNEL = re.compile(r"^(\d+)\.(\d+)")


class ProfileError(BadInput):
    """A seccomp profile labkit will not use; ``key`` is the offending JSON key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"seccomp profile: {key} {message}")
        self.key = key


# --- Docker's profile format ----------------------------------------------------------------------


@dataclass
class Conditions:
    """When a rule applies (``includes``: all of these hold; ``excludes``: none of them)."""

    caps: list[str] = field(default_factory=list)
    arches: list[str] = field(default_factory=list)
    min_kernel: tuple[int, int] | None = None


@dataclass
class ProfileRule:
    rule: SyscallRule  # what goes into linux.seccomp when the conditions hold
    includes: Conditions = field(default_factory=Conditions)
    excludes: Conditions = field(default_factory=Conditions)


@dataclass
class Profile:
    default_action: str
    default_errno_ret: int | None
    arch_map: dict[str, list[str]]  # native architecture -> it and its sub-architectures
    syscalls: list[ProfileRule]


def load_profile(path: str | os.PathLike = DEFAULT_PROFILE) -> Profile:
    """Read and check a seccomp profile in Docker's JSON format; ProfileError names the key."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as e:
        raise BadInput(f"cannot read the seccomp profile {path}: {e.strerror}.") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(str(path), f"is larger than {MAX_PROFILE_BYTES} bytes.")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ProfileError(str(path), f"is not JSON: {e}.") from None
    return parse_profile(data)


def parse_profile(data: object) -> Profile:
    """Check a parsed profile key by key (nothing is trusted: it may come from anyone)."""
    top = _object(data, "", required={"defaultAction"}, optional={
        "defaultErrnoRet", "archMap", "architectures", "syscalls", "comment"})  # fmt: skip
    if "archMap" in top and "architectures" in top:
        raise ProfileError("architectures", "and archMap exclude each other: keep one.")
    arch_map: dict[str, list[str]] = {}
    for i, entry in enumerate(_list(top.get("archMap", []), "archMap", 64)):
        where = f"archMap[{i}]"
        e = _object(entry, where, required={"architecture"}, optional={"subArchitectures"})
        native = _choice(e["architecture"], f"{where}.architecture", SCMP_ARCHES)
        subs = _list(e.get("subArchitectures") or [], f"{where}.subArchitectures", 8)
        arch_map[native] = [native] + [
            _choice(s, f"{where}.subArchitectures[{j}]", SCMP_ARCHES) for j, s in enumerate(subs)
        ]
    for i, arch in enumerate(_list(top.get("architectures", []), "architectures", 32)):
        # The older form: the same list for every machine.
        arch_map.setdefault("*", []).append(_choice(arch, f"architectures[{i}]", SCMP_ARCHES))
    rules = [
        _profile_rule(r, f"syscalls[{i}]")
        for i, r in enumerate(_list(top.get("syscalls", []), "syscalls", 4096))
    ]
    return Profile(
        _choice(top["defaultAction"], "defaultAction", SECCOMP_ACTIONS),
        _errno(top.get("defaultErrnoRet"), "defaultErrnoRet"),
        arch_map,
        rules,
    )


def _profile_rule(data: object, where: str) -> ProfileRule:
    r = _object(data, where, required={"action"}, optional={
        "names", "name", "args", "errnoRet", "includes", "excludes", "comment"})  # fmt: skip
    if ("name" in r) == ("names" in r):
        raise ProfileError(where, "needs either names (a list) or name (one), not both.")
    names = [r["name"]] if "name" in r else _list(r["names"], f"{where}.names", 1024)
    for j, name in enumerate(names):
        if not isinstance(name, str) or not _SYSCALL_NAME.match(name):
            raise ProfileError(f"{where}.names[{j}]", "must be a system call's name, like read.")
    args = [_arg(a, f"{where}.args[{j}]") for j, a in enumerate(_list(r.get("args", []),
            f"{where}.args", 6))]  # fmt: skip
    rule = SyscallRule(
        names,
        _choice(r["action"], f"{where}.action", SECCOMP_ACTIONS),
        _errno(r.get("errnoRet"), f"{where}.errnoRet"),
        args,
    )
    return ProfileRule(
        rule,
        _conditions(r.get("includes", {}), f"{where}.includes"),
        _conditions(r.get("excludes", {}), f"{where}.excludes"),
    )


def _arg(data: object, where: str) -> SeccompArg:
    a = _object(data, where, required={"index", "value", "op"}, optional={"valueTwo"})
    index = _int(a["index"], f"{where}.index", 0, 5)  # a system call has six arguments
    value = _int(a["value"], f"{where}.value", 0, 2**64 - 1)
    value_two = _int(a.get("valueTwo", 0), f"{where}.valueTwo", 0, 2**64 - 1)
    return SeccompArg(index, value, _choice(a["op"], f"{where}.op", SECCOMP_OPS), value_two)


def _conditions(data: object, where: str) -> Conditions:
    c = _object(data, where, required=set(), optional={"caps", "arches", "minKernel"})
    caps = _list(c.get("caps", []), f"{where}.caps", 64)
    arches = _list(c.get("arches", []), f"{where}.arches", 32)
    min_kernel = None
    if "minKernel" in c:
        m = _KERNEL.match(c["minKernel"]) if isinstance(c["minKernel"], str) else None
        if m is None:
            raise ProfileError(f"{where}.minKernel", 'must be a kernel version like "4.8".')
        min_kernel = (int(m[1]), int(m[2]))
    return Conditions(
        [_choice(x, f"{where}.caps[{i}]", capabilities.NUMBERS) for i, x in enumerate(caps)],
        [_choice(x, f"{where}.arches[{i}]", PROFILE_ARCHES) for i, x in enumerate(arches)],
        min_kernel,
    )


def _object(data: object, where: str, required: set[str], optional: set[str]) -> dict:
    if not isinstance(data, dict):
        raise ProfileError(where or "the file", "must be a JSON object.")
    for key in data:
        if key not in required | optional:
            raise ProfileError(f"{where}.{key}".lstrip("."), "is not a key labkit knows.")
    for key in required:
        if key not in data:
            raise ProfileError(f"{where}.{key}".lstrip("."), "is required.")
    return data


def _list(data: object, where: str, most: int) -> list:
    if not isinstance(data, list) or len(data) > most:
        raise ProfileError(where, f"must be a list of at most {most} entries.")
    return data


def _choice(value: object, where: str, allowed) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ProfileError(where, f"{json.dumps(value)[:40]} is not one labkit knows.")
    return value


def _int(value: object, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProfileError(where, f"must be an integer from {low} to {high}.")
    return value


def _errno(value: object, where: str) -> int | None:
    return None if value is None else _int(value, where, 0, 4095)  # errno values end at 4095


# --- OCI's linux.seccomp, checked -----------------------------------------------------------------


def check_linux_seccomp(sc: Seccomp) -> None:
    """What the JSON types of config.json's linux.seccomp cannot say; SpecError names the key."""
    from .spec import SpecError

    where = "linux.seccomp"
    for i, arch in enumerate(sc.architectures):
        if arch not in SCMP_ARCHES:
            raise SpecError(f"{where}.architectures[{i}]", f"{arch!r} is not an SCMP_ARCH_ name.")
    if sc.default_errno_ret is not None and not 0 <= sc.default_errno_ret <= 4095:
        raise SpecError(f"{where}.defaultErrnoRet", "must be an errno from 0 to 4095.")
    for i, rule in enumerate(sc.syscalls):
        if not rule.names or not all(_SYSCALL_NAME.match(n) for n in rule.names):
            raise SpecError(f"{where}.syscalls[{i}].names", "must list system calls, like read.")
        if rule.errno_ret is not None and not 0 <= rule.errno_ret <= 4095:
            raise SpecError(f"{where}.syscalls[{i}].errnoRet", "must be an errno from 0 to 4095.")
        for j, a in enumerate(rule.args):
            if not (0 <= a.value < 2**64 and 0 <= a.value_two < 2**64):
                raise SpecError(f"{where}.syscalls[{i}].args[{j}]", "values must fit in 64 bits.")


# --- from a profile to one container's linux.seccomp ---------------------------------------------


def resolve(
    profile: Profile,
    bounding: list[str],
    machine: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> Seccomp:
    """linux.seccomp for a container with the bounding set *bounding*, as dockerd builds it.

    A rule is kept when all of its ``includes`` hold (every capability named is in the
    bounding set, the architecture is among those named, the kernel is at least minKernel)
    and none of its ``excludes`` does (any capability named is in the set...).
    """
    machine = machine or os.uname().machine
    arch, scmp_arch = ARCHES.get(machine, (machine, None))
    kernel = kernel or _kernel_version()
    caps = set(bounding)
    rules = [
        _copy(p.rule)
        for p in profile.syscalls
        if _holds_all(p.includes, caps, arch, kernel)
        and not _holds_any(p.excludes, caps, arch, kernel)
    ]
    architectures = profile.arch_map.get(scmp_arch, profile.arch_map.get("*", []))
    return Seccomp(profile.default_action, profile.default_errno_ret, list(architectures), rules)


def _holds_all(c: Conditions, caps: set[str], arch: str, kernel: tuple[int, int]) -> bool:
    return (
        caps.issuperset(c.caps)
        and (not c.arches or arch in c.arches)
        and (c.min_kernel is None or kernel >= c.min_kernel)
    )


def _holds_any(c: Conditions, caps: set[str], arch: str, kernel: tuple[int, int]) -> bool:
    return (
        bool(caps.intersection(c.caps))
        or arch in c.arches
        or (c.min_kernel is not None and kernel >= c.min_kernel)
    )


def _copy(rule: SyscallRule) -> SyscallRule:
    """A rule of its own for each spec: a caller may change its spec without changing others'."""
    args = [dataclasses.replace(a) for a in rule.args]
    return SyscallRule(list(rule.names), rule.action, rule.errno_ret, args)


def _kernel_version() -> tuple[int, int]:
    m = _KERNEL.match(os.uname().release)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def default_profile(bounding: list[str] | None = None) -> Seccomp:
    """Docker's default profile as linux.seccomp, for Docker's 14 capabilities unless given."""
    if bounding is None:
        bounding = list(capabilities.DOCKER_DEFAULT)
    return resolve(_default(), bounding)


@functools.cache
def _default() -> Profile:
    """Docker's profile, read once per process (a spec is made often, the file never changes)."""
    return load_profile(DEFAULT_PROFILE)
