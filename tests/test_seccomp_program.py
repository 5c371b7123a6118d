"""The seccomp filter as the kernel gets it: compiled by libseccomp once, kept, loaded by seccomp().

labkit hands the kernel the program libseccomp compiled, with its own seccomp() call. These
tests read the filter back out of the kernel (ptrace's PTRACE_SECCOMP_GET_FILTER) and compare it
with the one libseccomp's own seccomp_load() installs; they try refused and allowed calls under
it; and they damage the kept program every way a file can be damaged, to see it compiled anew
rather than trusted.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import time

import pytest

from labkit import cleanup
from labkit import sys as ksys
from labkit.container import seccomp
from labkit.state import cache_dir

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SECCOMP_GET_FILTER = 16, 17, 0x420C
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}
KEYCTL_GET_KEYRING_ID = 0


@pytest.fixture
def fresh(state_dir, monkeypatch):
    """A private state directory and nothing compiled in this process yet."""
    monkeypatch.setattr(seccomp, "_programs", {})
    return state_dir


def in_child(load, then) -> tuple[int, dict]:
    """Fork; the child runs *load* (a filter goes in), reports then()'s dict, and waits to be
    killed. Returns the child's PID (stopped under ptrace) and its report."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            load()
            os.write(w, json.dumps(then()).encode())
        except BaseException as e:  # noqa: BLE001
            os.write(w, json.dumps({"error": repr(e)}).encode())
        finally:
            os.close(w)
            time.sleep(60)  # until the parent has read the filter and kills us
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = json.loads(f.read(65536) or b"{}")
    return pid, report


def kernels_copy(pid: int) -> bytes:
    """The filter the kernel runs for *pid*, as it holds it (the child is stopped to read it)."""
    assert libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0, os.strerror(ctypes.get_errno())
    try:
        os.waitpid(pid, os.WUNTRACED)
        count = libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, None, None)
        assert count > 0, os.strerror(ctypes.get_errno())
        buf = ctypes.create_string_buffer(count * seccomp.INSN_SIZE)
        assert libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, None, buf) == count
        return buf.raw
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)


def end(pid: int) -> None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)


def status_lines(pid_self: str = "self") -> dict:
    with open(f"/proc/{pid_self}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if line.startswith("Seccomp"))


def test_the_kernel_holds_the_filter_libseccomp_itself_would_load(fresh):
    sc = seccomp.default_profile()
    prog = seccomp.program(sc)
    by_libseccomp, seen_a = in_child(lambda: seccomp.libseccomp_filter(sc).load(), status_lines)
    by_labkit, seen_b = in_child(lambda: seccomp.load(seccomp.program(sc)), status_lines)
    try:
        theirs, ours = kernels_copy(by_libseccomp), kernels_copy(by_labkit)
    finally:
        end(by_libseccomp)
        end(by_labkit)
    assert ours == theirs == prog
    assert len(prog) // seccomp.INSN_SIZE > 500  # Docker's profile: some hundreds of them
    assert seen_a == seen_b == {"Seccomp": "2", "Seccomp_filters": "1"}


def test_under_the_filter_refused_calls_get_eperm_and_allowed_ones_work(fresh):
    sc = seccomp.default_profile()  # Docker's 14 capabilities: no CAP_SYS_ADMIN, no unshare

    def probe() -> dict:
        out = {"pid": os.getpid() > 0, "mkdir": None, "unshare": None, "keyctl": None}
        d = fresh / f"probe{os.getpid()}"
        os.mkdir(d)
        out["mkdir"] = d.is_dir()
        try:
            ksys.unshare(ksys.CLONE_NEWUTS)  # we are root, with CAP_SYS_ADMIN: the filter says no
        except OSError as e:
            out["unshare"] = errno.errorcode[e.errno]
        number = SYS_KEYCTL[os.uname().machine]
        if libc.syscall(ctypes.c_long(number), KEYCTL_GET_KEYRING_ID, -1, 0) == -1:
            out["keyctl"] = errno.errorcode[ctypes.get_errno()]
        return out

    pid, seen = in_child(lambda: seccomp.load(seccomp.program(sc)), probe)
    end(pid)
    assert seen == {"pid": True, "mkdir": True, "unshare": "EPERM", "keyctl": "EPERM"}
    # The same calls work without the filter (it is the filter that refuses them).
    pid, seen = in_child(lambda: None, probe)
    end(pid)
    assert seen["unshare"] is None


def test_a_kept_program_is_used_and_no_library_is_needed(fresh, monkeypatch):
    sc = seccomp.default_profile()
    prog = seccomp.program(sc)
    kept = seccomp.kept_path(seccomp.program_key(sc))
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.parent.stat().st_mode & 0o777 == 0o700
    monkeypatch.setattr(seccomp, "_programs", {})  # a new process: only the file is left

    def no_compiling(_sc):
        raise AssertionError("compiled again although a good program was kept")

    monkeypatch.setattr(seccomp, "compile_filter", no_compiling)
    assert seccomp.program(sc) == prog


def damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "a bit flipped":  # in the program's last instruction, before the checksum
        i = len(data) - seccomp.CRC_SIZE - 3
        path.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :])
    elif how == "not a filter, with a good checksum":
        prog = b"\x06\x00\x00\x00\x00\x00\xff\x7f"[:-1]  # 7 bytes: no whole instruction
        key = data.partition(b"\n")[0]
        path.write_bytes(seccomp._kept_file(key, prog))
    elif how == "another key's program":
        allow_all = b"\x06\x00\x00\x00\x00\x00\xff\x7f"  # BPF_RET SECCOMP_RET_ALLOW
        path.write_bytes(seccomp._kept_file(b'[1,"another key"]', allow_all))
    elif how == "a key that only begins the same":
        key, _, rest = data.partition(b"\n")
        path.write_bytes(seccomp._kept_file(key[:-1], rest[: -seccomp.CRC_SIZE]))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "writable by others":
        os.chmod(path, 0o666)
    elif how == "owned by nobody":
        os.chown(path, 65534, 65534)
    elif how == "a symlink":
        other = path.with_name("elsewhere")
        path.rename(other)
        path.symlink_to(other)


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "a bit flipped",
        "not a filter, with a good checksum",
        "another key's program",
        "a key that only begins the same",
        "empty",
        "writable by others",
        "owned by nobody",
        "a symlink",
    ],
)
def test_a_damaged_or_foreign_kept_program_is_compiled_anew_not_trusted(fresh, monkeypatch, how):
    sc = seccomp.default_profile()
    good = seccomp.program(sc)
    kept = seccomp.kept_path(seccomp.program_key(sc))
    damage(kept, how)
    monkeypatch.setattr(seccomp, "_programs", {})
    compiled = []
    real = seccomp.compile_filter
    monkeypatch.setattr(seccomp, "compile_filter", lambda s: compiled.append(1) or real(s))
    assert seccomp.program(sc) == good
    assert compiled == [1]
    # ... and kept again, whole: the next process reads it without compiling.
    assert not kept.is_symlink() and kept.stat().st_uid == 0
    assert seccomp._read_kept(kept, seccomp.program_key(sc)) == good


def test_a_directory_others_may_write_is_not_trusted(fresh, monkeypatch):
    sc = seccomp.default_profile()
    seccomp.program(sc)
    os.chmod(cache_dir("seccomp"), 0o777)
    monkeypatch.setattr(seccomp, "_programs", {})
    compiled = []
    real = seccomp.compile_filter
    monkeypatch.setattr(seccomp, "compile_filter", lambda s: compiled.append(1) or real(s))
    seccomp.program(sc)
    assert compiled == [1]


def test_the_cache_is_no_leftover_and_cleanup_removes_it(fresh):
    seccomp.program(seccomp.default_profile())
    assert cache_dir("seccomp").is_dir()
    assert cleanup.leftovers() == []  # nothing runs, nothing is mounted: only a cache
    cleanup.cleanup()
    assert not fresh.exists()


def test_load_refuses_what_is_not_a_filter_before_asking_the_kernel():
    for bad in (b"", b"\x06" * 7, b"\x00" * 8, b"\x06\x00\x00\x00\x00\x00\xff\x7f" * 4097):
        with pytest.raises(ValueError, match="whole 8-byte BPF instructions"):
            seccomp.load(bad)
    assert status_lines()["Seccomp"] == "0"
