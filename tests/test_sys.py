"""Each syscall wrapper turns the kernel's refusal into an OSError that keeps errno and names
the call.

Every call here is made so that the kernel refuses it: nothing on the host changes.
"""

from __future__ import annotations

import errno
import os
import socket

import pytest

from labkit import sys as ksys


def refused(call, *args) -> OSError:
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value


def test_unshare_names_the_flags():
    # The kernel checks the flags before it does anything: an undefined bit (0x1) gets EINVAL
    # and pytest's own process keeps its namespaces.
    e = refused(ksys.unshare, ksys.CLONE_NEWUTS | 0x1)
    assert e.errno == errno.EINVAL
    assert str(e).startswith("[Errno 22] unshare(CLONE_NEWUTS): Invalid argument")


def test_setns_names_the_fd_and_kind(tmp_path):
    regular = tmp_path / "not-a-namespace"
    regular.write_text("")
    fd = os.open(regular, os.O_RDONLY)
    try:
        e = refused(ksys.setns, fd, ksys.CLONE_NEWNET)
    finally:
        os.close(fd)
    assert e.errno == errno.EINVAL
    assert f"setns({fd}, CLONE_NEWNET)" in str(e)


def test_setns_refuses_a_namespace_of_another_kind():
    fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
    try:
        e = refused(ksys.setns, fd, ksys.CLONE_NEWNET)
    finally:
        os.close(fd)
    assert e.errno == errno.EINVAL


def test_mount_names_source_and_target(tmp_path):
    missing = str(tmp_path / "missing")
    e = refused(ksys.mount, "tmpfs", missing, "tmpfs")
    assert e.errno == errno.ENOENT
    assert f"mount('tmpfs', {missing!r}, 'tmpfs')" in str(e)


def test_umount2_names_the_target(tmp_path):
    e = refused(ksys.umount2, str(tmp_path))  # a directory that is not a mount point
    assert e.errno == errno.EINVAL
    assert f"umount2({str(tmp_path)!r})" in str(e)


def test_pivot_root_names_both_paths(tmp_path):
    e = refused(ksys.pivot_root, str(tmp_path / "new"), str(tmp_path / "old"))
    assert e.errno == errno.ENOENT
    assert "pivot_root(" in str(e) and "new" in str(e)


def test_sethostname_refuses_a_name_too_long_and_changes_nothing():
    before = socket.gethostname()
    e = refused(ksys.sethostname, "x" * 65)
    assert e.errno == errno.EINVAL
    assert "sethostname('xxxx" in str(e)
    assert socket.gethostname() == before


def test_prctl_names_the_option():
    e = refused(ksys.prctl, 0x7FFF)
    assert e.errno == errno.EINVAL
    assert "prctl(32767)" in str(e)


def test_statfs_knows_proc():
    assert ksys.statfs("/proc") == 0x9FA0  # PROC_SUPER_MAGIC


def test_capget_reads_our_sets_and_names_a_missing_process():
    effective, permitted, _inheritable = ksys.capget()
    assert effective & ~permitted == 0 and effective >> 21 & 1  # root here holds CAP_SYS_ADMIN
    e = refused(ksys.capget, 2**22 + 1)  # above the kernel's largest PID
    assert e.errno == errno.ESRCH and "capget(4194305)" in str(e)


def test_capset_refuses_an_effective_set_beyond_the_permitted_one():
    # The kernel checks effective <= permitted before it changes anything.
    e = refused(ksys.capset, 1, 0, 0)
    assert e.errno == errno.EPERM and "capset" in str(e)
    assert ksys.capget()[0] >> 21 & 1  # still root's sets
