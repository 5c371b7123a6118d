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
machine's architecture.

A filter is a classic BPF program: 8-byte instructions the kernel runs on each call's number and
arguments. libseccomp compiles linux.seccomp into one (about 8 ms for Docker's profile); the
``seccomp(SECCOMP_SET_MODE_FILTER)`` call that hands it to the kernel takes a few microseconds.
So ``program`` compiles each profile once and keeps the program (in memory, and in a file below
the state directory for the next process), and ``load`` makes the system call itself, with the
very program libseccomp's own ``seccomp_load`` would hand over. Read ``man 2 seccomp`` beside
this file.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import functools
import json
import os
import re
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput, MissingFeature
from ..state import cache_dir
from . import capabilities
from .spec import SECCOMP_ACTIONS, SECCOMP_OPS, Seccomp, SeccompArg, SpecError, SyscallRule

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
    """One of a profile's ``syscalls``: a rule, and when it applies (arch, caps, kernel)."""

    rule: SyscallRule  # what goes into linux.seccomp when the conditions hold
    includes: Conditions = field(default_factory=Conditions)
    excludes: Conditions = field(default_factory=Conditions)


@dataclass
class Profile:
    """A seccomp profile in Docker's JSON format, before it is fitted to this host."""

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
    # What only libseccomp can say: it compiles the filter now (once per profile, see program),
    # so a filter it refuses is refused before anything is made.
    program(sc)


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


# --- compiled once, loaded by the system call -----------------------------------------------------

SECCOMP_SET_MODE_FILTER = 1  # seccomp(2)'s operation, from <linux/seccomp.h>
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}  # no wrapper in glibc: called by number
INSN_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
BPF_MAXINSNS = 4096  # the kernel refuses a longer filter (EINVAL)
BPF_RET = 0x06  # the class of the instruction that ends every path: return an action
# Bump when libseccomp_filter() changes what it asks of libseccomp: a program an older labkit
# kept is then not found any more, rather than loaded.
COMPILER = 1
CRC_SIZE = 4  # a kept program's file ends with the CRC-32 of the rest (_kept_file)

_programs: dict[bytes, bytes] = {}  # key -> program, for this process and the children it forks
_libc = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    """``struct sock_fprog``: how many instructions, and where they are."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _Version(ctypes.Structure):
    """``struct scmp_version``, as ``seccomp_version()`` returns it."""

    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def _missing() -> MissingFeature:
    return MissingFeature(
        "linux.seccomp needs the pyseccomp package and libseccomp2: pip install pyseccomp and "
        "apt-get install libseccomp2, or remove linux.seccomp from config.json."
    )


def library():
    """The kept seccomp library (pyseccomp over libseccomp), needed only to compile a filter.

    Its import asks ``ldconfig -p`` where libseccomp is (a few milliseconds): a run whose
    filter is kept already never pays for it, and only checks that it is installed.
    """
    try:
        import pyseccomp
    except (ImportError, OSError, RuntimeError):
        raise _missing() from None
    return pyseccomp


@functools.cache
def libseccomp_version() -> str:
    """The version of libseccomp, found by its soname (the dynamic loader, no ldconfig)."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        raise _missing() from None
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def program_key(sc: Seccomp) -> bytes:
    """What the program depends on, as text: the filter, libseccomp, this labkit, the machine."""
    rules = [
        [r.names, r.action, r.errno_ret, [[a.index, a.value, a.op, a.value_two] for a in r.args]]
        for r in sc.syscalls
    ]
    uname = os.uname()
    what = [COMPILER, libseccomp_version(), uname.machine, uname.release, sc.default_action,
            sc.default_errno_ret, sc.architectures, rules]  # fmt: skip
    return json.dumps(what, separators=(",", ":")).encode()  # one line: no newline in it


def kept_path(k: bytes) -> Path:
    """Where the program of key *k* is kept. The name is a short checksum of the key: two keys
    that share it only take turns in one file, because the file holds its whole key (_read_kept)."""
    return cache_dir("seccomp") / f"{zlib.crc32(k):08x}.bpf"


def program(sc: Seccomp) -> bytes:
    """The BPF program libseccomp makes of *sc*: kept in memory, else in the cache, else compiled.

    The cache is a file per program below the state directory (``cache/seccomp/KEY.bpf``), so
    the next ``labkit run`` finds it; ``labkit cleanup`` removes it with the state directory.
    """
    k = program_key(sc)
    if k not in _programs:
        path = kept_path(k)
        kept = _read_kept(path, k)
        if kept is None:
            kept = compile_filter(sc)
            _keep(path, k, kept)
        _programs[k] = kept
    return _programs[k]


def compile_filter(sc: Seccomp) -> bytes:
    """Have libseccomp compile *sc*: the program its ``seccomp_load`` would hand the kernel."""
    try:
        f = libseccomp_filter(sc)
        # seccomp_export_bpf writes the program to a file descriptor: a file in memory here.
        with open(os.memfd_create("labkit-seccomp", os.MFD_CLOEXEC), "w+b") as out:
            f.export_bpf(out)
            out.seek(0)
            return out.read()
    except OSError as e:
        raise SpecError("linux.seccomp", f"cannot be compiled by libseccomp: {e}.") from None


def libseccomp_filter(sc: Seccomp):
    """*sc* as libseccomp's filter object (pyseccomp's SyscallFilter), rule by rule."""
    seccomp = library()

    def action(name: str, errno_ret: int | None):
        if name == "SCMP_ACT_ERRNO":
            return seccomp.ERRNO(errno_ret if errno_ret is not None else errno.EPERM)
        if name == "SCMP_ACT_TRACE":
            return seccomp.TRACE(errno_ret or 0)
        return getattr(seccomp, name.removeprefix("SCMP_ACT_"))

    ops = {
        f"SCMP_CMP_{op}": getattr(seccomp, op)
        for op in ("NE", "LT", "LE", "EQ", "GE", "GT", "MASKED_EQ")
    }
    f = seccomp.SyscallFilter(action(sc.default_action, sc.default_errno_ret))
    f.set_attr(seccomp.Attr.CTL_NNP, 0)  # no_new_privs is the spec's to set, not libseccomp's
    for arch in sc.architectures:
        try:
            f.add_arch(getattr(seccomp.Arch, arch.removeprefix("SCMP_ARCH_")))
        except OSError as e:
            if e.errno != errno.EEXIST:  # the native one is there already
                raise
    for rule in sc.syscalls:
        args = [seccomp.Arg(a.index, ops[a.op], a.value, a.value_two) for a in rule.args]
        for name in rule.names:
            try:
                f.add_rule(action(rule.action, rule.errno_ret), name, *args)
            except ValueError:
                continue  # a syscall this kernel or libseccomp does not know: runc skips it too
    return f


def _check_program(data: bytes) -> bool:
    """Is *data* shaped like a filter the kernel would take: whole instructions, not too many,
    the last one a return? (The kernel checks every jump again when it loads it.)"""
    n, rest = divmod(len(data), INSN_SIZE)
    return rest == 0 and 0 < n <= BPF_MAXINSNS and data[-INSN_SIZE] & 0x07 == BPF_RET


def _read_kept(path: Path, k: bytes) -> bytes | None:
    """A kept program, or None if it is missing or not to be trusted (then it is compiled anew).

    The file is read as hostile input. Only root may have written it: the file and its directory
    belong to us (root) and nobody else may write them, so a program planted by someone else is
    never loaded. It holds its key in full, which must be this key, byte for byte (a change of
    profile, libseccomp, kernel or labkit looks for another key, and a file that another key
    took is not used); its CRC-32 must match (a torn or damaged file); and the program must be
    shaped like a filter.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not (_ours(st) and stat.S_ISREG(st.st_mode) and _ours(os.stat(path.parent))):
            return None
        data = f.read(len(k) + 1 + BPF_MAXINSNS * INSN_SIZE + CRC_SIZE + 1)
    prog = data[len(k) + 1 : -CRC_SIZE]
    # The whole file must be what _keep writes for this key and program: key, CRC-32 and all.
    if data != _kept_file(k, prog) or not _check_program(prog):
        return None
    return prog


def _ours(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _kept_file(k: bytes, prog: bytes) -> bytes:
    """A kept program's file: its key, a newline, the program, and the CRC-32 of those."""
    body = k + b"\n" + prog
    return body + zlib.crc32(body).to_bytes(CRC_SIZE, "big")


def _keep(path: Path, k: bytes, prog: bytes) -> None:
    """Keep *prog* for the next process; a cache that cannot be written is only slower."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as f:
            f.write(_kept_file(k, prog))
        os.replace(tmp, path)  # whole or not at all, for a reader at the same time
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def load(prog: bytes) -> None:
    """seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog): from now on the kernel runs *prog* on every
    system call of this thread and of what it execs or forks. A filter cannot be taken off."""
    if not _check_program(prog):
        raise ValueError("a seccomp filter is a list of whole 8-byte BPF instructions")
    machine = os.uname().machine
    if machine not in _SYS_SECCOMP:
        raise OSError(0, f"seccomp: labkit does not know its syscall number on {machine}")
    insns = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // INSN_SIZE, ctypes.addressof(insns))
    flags = 0  # as libseccomp's own load: no TSYNC (we have one thread), no LOG, no SPEC_ALLOW
    args = (ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags), ctypes.byref(fprog))
    if _libc.syscall(ctypes.c_long(_SYS_SECCOMP[machine]), *args) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(err)}")
