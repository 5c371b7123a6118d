"""eBPF: small programs the kernel checks, then runs at its own hooks (here: a cgroup's devices).

``bpf(2)`` is one system call with many commands. ``BPF_PROG_LOAD`` hands the kernel a list of
8-byte instructions; its *verifier* walks every path through them (no loops it cannot bound, no
read outside the context it passes in, a return value in range) and refuses the program
otherwise. ``BPF_PROG_ATTACH`` then hangs the program on a hook, for example a cgroup v2
directory; the attachment holds the program, so once the loader closes its file descriptor the
program lives exactly as long as the cgroup does.

This module is the system call and a tiny assembler: one function per instruction, named like
the kernel's own macros in ``include/linux/filter.h`` (``BPF_LDX_MEM``, ``BPF_JMP_IMM``...).
What the instructions are for lives with the hook that runs them (``labkit.cgroups.devices``).
Read ``man 2 bpf`` and the kernel's ``Documentation/bpf/instruction-set.rst`` beside this file.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import NamedTuple

_libc = ctypes.CDLL(None, use_errno=True)

# bpf has no wrapper in glibc: it is called by number, which differs per architecture.
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280}

# Commands of bpf(2), from <linux/bpf.h> (enum bpf_cmd).
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
_COMMANDS = {
    BPF_PROG_LOAD: "BPF_PROG_LOAD",
    BPF_PROG_ATTACH: "BPF_PROG_ATTACH",
    BPF_PROG_GET_FD_BY_ID: "BPF_PROG_GET_FD_BY_ID",
    BPF_PROG_QUERY: "BPF_PROG_QUERY",
}

# The one program type and hook labkit uses (enum bpf_prog_type, enum bpf_attach_type).
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
# Attach flags: with ALLOW_MULTI a cgroup may hold several programs, and the programs of the
# cgroups above still run too (all must allow); it is also what runc and systemd use.
BPF_F_ALLOW_MULTI = 2

# The registers: R0 holds the return value, R1 the context pointer on entry, R2..R5 are free.
R0, R1, R2, R3, R4, R5 = range(6)


# --- the instructions -----------------------------------------------------------------------------


class Insn(NamedTuple):
    """One eBPF instruction, ``struct bpf_insn``: opcode, two registers, offset, immediate."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    note: str = ""  # what it does, for a student reading the program (not sent to the kernel)

    def encode(self) -> bytes:
        # 8 bytes: u8 opcode, u8 (src << 4 | dst), s16 offset, s32 immediate, little-endian.
        return struct.pack("<BBhi", self.code, self.src << 4 | self.dst, self.off, self.imm)


# The opcode is class | operation | source: BPF_LDX=0x01, BPF_ALU=0x04 (32-bit), BPF_JMP=0x05,
# BPF_ALU64=0x07; BPF_K=0x00 (the immediate), BPF_X=0x08 (a register); BPF_MEM=0x60, BPF_W=0x00.
def ldx_w(dst: int, src: int, off: int, note: str = "") -> Insn:
    """dst = *(u32 *)(src + off): read a 32-bit word (BPF_LDX | BPF_MEM | BPF_W)."""
    return Insn(0x61, dst, src, off, 0, note)


def mov32_reg(dst: int, src: int, note: str = "") -> Insn:
    """dst = src, 32 bits (BPF_ALU | BPF_MOV | BPF_X)."""
    return Insn(0xBC, dst, src, 0, 0, note)


def and32_imm(dst: int, imm: int, note: str = "") -> Insn:
    """dst &= imm, 32 bits (BPF_ALU | BPF_AND | BPF_K)."""
    return Insn(0x54, dst, 0, 0, imm, note)


def rsh32_imm(dst: int, imm: int, note: str = "") -> Insn:
    """dst >>= imm, 32 bits (BPF_ALU | BPF_RSH | BPF_K)."""
    return Insn(0x74, dst, 0, 0, imm, note)


def mov64_imm(dst: int, imm: int, note: str = "") -> Insn:
    """dst = imm (BPF_ALU64 | BPF_MOV | BPF_K)."""
    return Insn(0xB7, dst, 0, 0, imm, note)


def jne_imm(dst: int, imm: int, off: int, note: str = "") -> Insn:
    """if dst != imm: skip *off* instructions (BPF_JMP | BPF_JNE | BPF_K)."""
    return Insn(0x55, dst, 0, off, imm, note)


def jeq_imm(dst: int, imm: int, off: int, note: str = "") -> Insn:
    """if dst == imm: skip *off* instructions (BPF_JMP | BPF_JEQ | BPF_K)."""
    return Insn(0x15, dst, 0, off, imm, note)


def exit_insn(note: str = "") -> Insn:
    """Return R0 to the kernel (BPF_JMP | BPF_EXIT)."""
    return Insn(0x95, 0, 0, 0, 0, note)


def listing(program: list[Insn]) -> str:
    """The program as a numbered listing with each instruction's note (for lessons)."""
    return "\n".join(
        f"{i:3}: {insn.encode().hex(' ')}   {insn.note}" for i, insn in enumerate(program)
    )


# --- the system call ------------------------------------------------------------------------------


class _ProgLoad(ctypes.Structure):
    """The BPF_PROG_LOAD part of ``union bpf_attr`` (the kernel zero-fills what we leave out)."""

    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
    ]


class _ProgAttach(ctypes.Structure):
    """The BPF_PROG_ATTACH / BPF_PROG_DETACH part of ``union bpf_attr``."""

    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
    ]


class _ProgQuery(ctypes.Structure):
    """The BPF_PROG_QUERY part of ``union bpf_attr``."""

    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("query_flags", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("prog_ids", ctypes.c_uint64),
        ("prog_cnt", ctypes.c_uint32),
    ]


class _GetFdById(ctypes.Structure):
    _fields_ = [("prog_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32)]


def bpf(cmd: int, attr: ctypes.Structure, what: str = "") -> int:
    """Ask the kernel for one bpf(2) command; an OSError names it (and *what* it was for)."""
    machine = os.uname().machine
    number = _SYS_BPF.get(machine)
    call = f"bpf({_COMMANDS.get(cmd, cmd)}{', ' + what if what else ''})"
    if number is None:
        raise OSError(0, f"{call}: labkit does not know its syscall number on {machine}")
    size = ctypes.c_uint(ctypes.sizeof(attr))
    result = _libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), ctypes.byref(attr), size)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)}")
    return result


def prog_load(
    prog_type: int, program: list[Insn], name: str, license: str, attach_type: int = 0
) -> int:
    """Load *program*; the kernel verifies it first. A file descriptor for it, or OSError.

    The license matters only for helper functions the kernel keeps for GPL code; a program that
    calls no helper (as a device filter) may say anything, but must say something.
    If the verifier refuses, the OSError's message ends with the verifier's last words.
    """
    code = b"".join(insn.encode() for insn in program)
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(4096)
    attr = _ProgLoad(
        prog_type=prog_type,
        insn_cnt=len(program),
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(lic),
        prog_name=name.encode()[:15],
        expected_attach_type=attach_type,
    )
    try:
        return bpf(BPF_PROG_LOAD, attr, name)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EACCES):  # not the verifier's answer
            raise
        first = e
    # Load it once more with a log, only to learn why the verifier refused it.
    attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
    try:
        return bpf(BPF_PROG_LOAD, attr, name)
    except OSError:
        raise OSError(first.errno, f"{first.strerror}: {_verdict(log.value)}") from None


def _verdict(log: bytes) -> str:
    """The verifier's reason from its log: the last line before its statistics."""
    lines = [line for line in log.decode(errors="replace").splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("processed ", "verification time"))]
    return reasons[-1] if reasons else "the verifier gave no reason"


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    """Attach the program *prog_fd* to the hook *attach_type* of *target_fd* (a cgroup's dir)."""
    attr = _ProgAttach(
        target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type, attach_flags=flags
    )
    bpf(BPF_PROG_ATTACH, attr)


def prog_query(target_fd: int, attach_type: int, max_progs: int = 64) -> list[int]:
    """The ids of the programs attached to *target_fd*'s hook *attach_type* (its own only)."""
    ids = (ctypes.c_uint32 * max_progs)()
    attr = _ProgQuery(
        target_fd=target_fd,
        attach_type=attach_type,
        prog_ids=ctypes.addressof(ids),
        prog_cnt=max_progs,
    )
    bpf(BPF_PROG_QUERY, attr)
    return list(ids[: attr.prog_cnt])


def prog_exists(prog_id: int) -> bool:
    """Whether the kernel still holds the program *prog_id* (BPF_PROG_GET_FD_BY_ID)."""
    try:
        fd = bpf(BPF_PROG_GET_FD_BY_ID, _GetFdById(prog_id=prog_id))
    except FileNotFoundError:
        return False
    os.close(fd)
    return True
