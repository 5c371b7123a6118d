"""Device rules: which device nodes a cgroup's processes may use (v1 files, v2 eBPF).

A process with CAP_MKNOD may make a node for *any* device number, the host's disk included
(``mknod /sda b 8 0``), and a node is only a name: what guards the device is the kernel asking
the cgroup on every mknod and open. Docker and runc allow only a few harmless devices;
everything else is refused with EPERM, whatever the process's capabilities.

cgroup v1 has a devices controller: the list is written line by line, ``TYPE MAJOR:MINOR
ACCESS`` (``c 1:3 rwm``, ``*`` for any number, ``a`` for every device), into ``devices.deny``
and ``devices.allow`` of a cgroup in the devices hierarchy (``DeviceCgroup``).

cgroup v2 has no such files. There the kernel runs an eBPF program of type
BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup, once per mknod or open of a device node, and
the program's answer (1 allow, 0 EPERM) decides. runc compiles the rules into such a program;
``device_program`` does the same, and ``attach_filter`` loads and attaches it. The program is
held only by its attachment, so it is freed when the cgroup is removed: nothing else to clean.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import NamedTuple

from .. import bpf, mountinfo
from ..errors import BadInput, MissingFeature
from ..state import PREFIX, check_name
from . import layout as layout_mod
from .base import is_ours, make_dir, remove_dir, write


class Rule(NamedTuple):
    """One device rule (OCI's linux.resources.devices[]): allow or deny *access* to devices
    of *type* ("c" character, "b" block, "a" all) with these numbers (None: any)."""

    allow: bool
    type: str = "a"
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"  # r: open for reading, w: open for writing, m: mknod

    def line(self) -> str:
        """The rule as v1 writes it: "c 1:3 rwm", or "a" for every device."""
        if self.type == "a":
            return "a"  # every device: numbers and access do not apply
        return f"{self.type} {_n(self.major)}:{_n(self.minor)} {self.access}"


def _n(value: int | None) -> str:
    return "*" if value is None else str(value)


# What runc always allows: "m" (mknod) of any node, then use of the harmless ones.
DEFAULT_ALLOW = (
    Rule(True, "c", None, None, "m"),
    Rule(True, "b", None, None, "m"),
    Rule(True, "c", 1, 3),  # null
    Rule(True, "c", 1, 5),  # zero
    Rule(True, "c", 1, 7),  # full
    Rule(True, "c", 1, 8),  # random
    Rule(True, "c", 1, 9),  # urandom
    Rule(True, "c", 5, 0),  # tty
    Rule(True, "c", 5, 1),  # console
    Rule(True, "c", 5, 2),  # ptmx
    Rule(True, "c", 136, None),  # the pseudo-terminals in /dev/pts
    Rule(True, "c", 10, 200),  # tun
)


def rule(allow: bool, kind: str | None, major: int | None, minor: int | None, access: str | None):
    """One OCI device rule as a Rule; BadInput names what is wrong with it."""
    kind = kind or "a"
    access = access or "rwm"
    if kind not in ("a", "b", "c"):
        raise BadInput(f"a device rule's type must be a, b or c, not {kind!r}.")
    if not access or set(access) - set("rwm") or len(set(access)) != len(access):
        raise BadInput(f"a device rule's access must be letters of rwm, not {access!r}.")
    for number in (major, minor):
        if number is not None and not -1 <= number < 2**32:
            raise BadInput(f"a device number must be 0 to 4294967295 (or -1: any), not {number}.")
    # -1 is how OCI's tools write "any" (as runc reads it).
    return Rule(allow, kind, _any(major), _any(minor), "".join(sorted(access, key="rwm".index)))


def _any(value: int | None) -> int | None:
    return None if value is None or value < 0 else value


def restrict(cgroup, rules: list[Rule], name: str | None = None) -> DeviceCgroup | None:
    """Allow the processes of *cgroup* only *rules* and runc's defaults; deny the rest.

    On a host with a v1 devices hierarchy that is a DeviceCgroup beside it (returned: the caller
    adds the processes to it and removes it); on cgroup v2 an eBPF program attached to the
    cgroup itself (None: it goes with the cgroup).
    """
    if hierarchy() is not None:
        return DeviceCgroup.create(name or cgroup.name, rules)
    if cgroup.layout.mode == "v2":
        attach_filter(cgroup.dirs[0], rules)
    return None


def hierarchy() -> Path | None:
    """The directory below which labkit's device cgroups go (``<own cgroup>/labkit``), or None."""
    with open("/proc/self/cgroup") as f:
        own = layout_mod.own_cgroups(f.read())
    for m in mountinfo.mounts():
        if m.fstype == "cgroup" and "devices" in m.super_options and "devices" in own:
            rel = layout_mod.relative_to_root(own["devices"], m.root).strip("/")
            return Path(m.point) / rel / layout_mod.PARENT
    return None


class DeviceCgroup:
    """``<own cgroup>/labkit/labkit-<name>`` in the v1 devices hierarchy."""

    def __init__(self, name: str, parent: Path):
        self.name = check_name(name, "cgroup name")
        self.dir = parent / f"{PREFIX}-{name}"

    @classmethod
    def create(cls, name: str, rules: list[Rule]) -> DeviceCgroup | None:
        """mkdir it and write *rules* after "deny all"; None where there is no v1 hierarchy."""
        parent = hierarchy()
        if parent is None:
            return None
        group = cls(name, parent)
        parent.mkdir(exist_ok=True)
        make_dir(group.dir)
        try:
            write(group.dir / "devices.deny", "a")  # a whitelist from here: nothing allowed
            for r in [*rules, *DEFAULT_ALLOW]:
                write(group.dir / ("devices.allow" if r.allow else "devices.deny"), r.line())
        except BaseException:
            group.remove()
            raise
        return group

    def add(self, pid: int) -> None:
        write(self.dir / "cgroup.procs", str(pid))

    def tasks_files(self) -> list[Path]:
        """Where a single-threaded process moves itself in (see ``Cgroup.tasks_files``)."""
        return [self.dir / "tasks"]

    def remove(self, timeout: float = 5.0) -> None:
        remove_dir(self.dir, time.monotonic() + timeout)
        try:
            self.dir.parent.rmdir()  # the shared labkit/ goes with its last cgroup
        except OSError:
            pass


# --- cgroup v2: the rules as an eBPF program ----------------------------------------------

# What the kernel passes the program (struct bpf_cgroup_dev_ctx in <linux/bpf.h>): three u32,
# access_type = access << 16 | type, then the device's major and minor number.
CTX_ACCESS_TYPE, CTX_MAJOR, CTX_MINOR = 0, 4, 8
DEV_TYPE = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
PROGRAM_NAME = "labkit_devices"  # what `bpftool prog` shows (at most 15 characters)


def device_program(rules: list[Rule]) -> list[bpf.Insn]:
    """The eBPF program that answers as the rules (then runc's defaults) do, as runc builds it.

    On v1 a later rule overrides an earlier one; so the program tries the rules last first,
    and the first that matches returns its answer. If none matches, the answer is "deny".
    """
    program = _read_request()
    for r in reversed([*rules, *DEFAULT_ALLOW]):
        block = _rule_block(r)
        program += block
        if not any(insn.off for insn in block):
            # It matches every request: what follows could never run, and the verifier refuses
            # a program with unreachable instructions.
            return program
    return program + _answer(False, "no rule matched: deny")


def _read_request() -> list[bpf.Insn]:
    """Load the request into registers: R2 device type, R3 access, R4 major, R5 minor."""
    R1, R2, R3, R4, R5 = bpf.R1, bpf.R2, bpf.R3, bpf.R4, bpf.R5
    return [
        bpf.ldx_w(R2, R1, CTX_ACCESS_TYPE, "R2 = ctx->access_type"),
        bpf.mov32_reg(R3, R2, "R3 = R2"),
        bpf.and32_imm(R2, 0xFFFF, "R2 &= 0xffff: the device type (1 block, 2 char)"),
        bpf.rsh32_imm(R3, 16, "R3 >>= 16: the access asked (1 mknod, 2 read, 4 write)"),
        bpf.ldx_w(R4, R1, CTX_MAJOR, "R4 = ctx->major"),
        bpf.ldx_w(R5, R1, CTX_MINOR, "R5 = ctx->minor"),
    ]


def _rule_block(r: Rule) -> list[bpf.Insn]:
    """One rule: tests that jump past the block when the request does not match, then the answer."""
    block = []
    if r.type != "a":
        block.append(bpf.jne_imm(bpf.R2, DEV_TYPE[r.type], _NEXT, f"type not {r.type}: next rule"))
    if r.major is not None:
        block.append(bpf.jne_imm(bpf.R4, r.major, _NEXT, f"major not {r.major}: next rule"))
    if r.minor is not None:
        block.append(bpf.jne_imm(bpf.R5, r.minor, _NEXT, f"minor not {r.minor}: next rule"))
    mask = sum(ACCESS[a] for a in r.access)
    if r.type != "a" and mask != 7:
        # An allow must cover all that is asked (an open for reading and writing asks both);
        # a deny refuses as soon as it covers any of it. R0 is scratch until the answer.
        block.append(bpf.mov32_reg(bpf.R0, bpf.R3, "R0 = the access asked"))
        if r.allow:
            block.append(bpf.and32_imm(bpf.R0, 7 & ~mask, f"R0 &= what {r.access} does not give"))
            block.append(bpf.jne_imm(bpf.R0, 0, _NEXT, "asks for more: next rule"))
        else:
            block.append(bpf.and32_imm(bpf.R0, mask, f"R0 &= {r.access}"))
            block.append(bpf.jeq_imm(bpf.R0, 0, _NEXT, f"asks none of {r.access}: next rule"))
    block += _answer(r.allow, f"{r.line()} matches: {'allow' if r.allow else 'deny'}")
    # A jump's offset counts the instructions it skips: here, the rest of the block.
    return [
        insn._replace(off=len(block) - i - 1) if insn.off == _NEXT else insn
        for i, insn in enumerate(block)
    ]


_NEXT = 0x7FFF  # a placeholder offset, "to the next rule", until the block's length is known


def _answer(allow: bool, note: str) -> list[bpf.Insn]:
    verdict = int(allow)  # what the kernel does with it: 1 lets the access through, 0 is EPERM
    return [bpf.mov64_imm(bpf.R0, verdict, f"R0 = {verdict}: {note}"), bpf.exit_insn("return R0")]


def attach_filter(cgroup_dir: Path, rules: list[Rule]) -> int:
    """Load the rules' program and attach it to the v2 cgroup *cgroup_dir*; its program id.

    Our file descriptor for the program is closed at once: from then on the attachment is
    what keeps it, and removing the cgroup frees it.
    """
    program = device_program(rules)
    try:
        prog = bpf.prog_load(
            bpf.BPF_PROG_TYPE_CGROUP_DEVICE,
            program,
            PROGRAM_NAME,
            license="Apache-2.0",  # labkit's; no GPL-only kernel helper is called
            attach_type=bpf.BPF_CGROUP_DEVICE,
        )
    except OSError as e:
        raise MissingFeature(_no_bpf(e)) from None
    try:
        target = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            bpf.prog_attach(target, prog, bpf.BPF_CGROUP_DEVICE, bpf.BPF_F_ALLOW_MULTI)
            return attached_programs(target)[-1]
        finally:
            os.close(target)
    except OSError as e:
        raise MissingFeature(_no_bpf(e, f"attach it to {cgroup_dir}")) from None
    finally:
        os.close(prog)


def attached_programs(cgroup: int | Path) -> list[int]:
    """The ids of the device programs attached to one v2 cgroup (a directory or its fd)."""
    if isinstance(cgroup, int):
        return bpf.prog_query(cgroup, bpf.BPF_CGROUP_DEVICE)
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return bpf.prog_query(fd, bpf.BPF_CGROUP_DEVICE)
    finally:
        os.close(fd)


def _no_bpf(e: OSError, what: str = "load it") -> str:
    """One sentence for a kernel that will not run the device filter, with what to do."""
    why = {
        errno.ENOSYS: "this kernel has no bpf(2) (CONFIG_BPF_SYSCALL)",
        errno.EPERM: "the kernel refused bpf(2) (it needs root with CAP_SYS_ADMIN or CAP_BPF, "
        "and no lockdown or seccomp filter forbidding it)",
    }.get(e.errno, f"the kernel answered {e.strerror}")
    return (
        f"cgroup v2 guards devices with an eBPF program, and {why} when labkit tried to {what}; "
        "run labkit as root on a kernel built with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF."
    )


def leftovers() -> list[str]:
    """This state directory's device cgroups that still exist."""
    parent = hierarchy()
    if parent is None or not parent.is_dir():
        return []
    return [
        f"cgroup: {d.name} (devices: {parent})"
        for d in sorted(parent.iterdir())
        if d.is_dir() and d.name.startswith(PREFIX + "-") and is_ours(d)
    ]


def remove_leftovers() -> None:
    parent = hierarchy()
    if parent is None or not parent.is_dir():
        return
    for d in sorted(parent.iterdir()):
        if d.is_dir() and d.name.startswith(PREFIX + "-") and is_ours(d):
            try:
                DeviceCgroup(d.name[len(PREFIX) + 1 :], parent).remove()
            except OSError:
                pass  # still busy: leftovers() keeps listing it
