"""labkit.cgroups.layout's parsers on /proc/PID/cgroup and mountinfo text, and its choices
given answers a test supplies (no cgroup file system is read here)."""

from __future__ import annotations

from pathlib import Path

from labkit import sys as ksys
from labkit.cgroups import layout

HYBRID_CGROUP = (
    "12:pids:/user.slice\n"
    "4:cpu,cpuacct:/user.slice/session-3.scope\n"
    "1:name=systemd:/user.slice/session-3.scope\n"
    "0::/user.slice/session-3.scope\n"
)
MOUNTS = (
    "30 22 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n"
    "31 22 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    "32 22 0:28 /user.slice /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    "33 22 0:29 / /tmp rw - tmpfs tmpfs rw\n"
)


def test_own_cgroups_reads_every_line_kind():
    own = layout.own_cgroups(HYBRID_CGROUP)
    assert own["pids"] == "/user.slice"
    assert own["cpu"] == own["cpuacct"] == "/user.slice/session-3.scope"
    assert own["name=systemd"] == own[""] == "/user.slice/session-3.scope"
    assert layout.own_cgroups("garbage\n\n") == {}


def test_cgroup_mounts_and_their_controllers():
    found = layout.cgroup_mounts(MOUNTS)
    assert [m.point for m in found] == [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/pids",
    ]
    assert [layout.controllers_of(m) for m in found] == [(), ("cpu", "cpuacct"), ("pids",)]


def test_a_mount_of_a_subtree_shortens_the_path():
    assert layout.relative_to_root("/user.slice/x", "/user.slice") == "/x"
    assert layout.relative_to_root("/user.slice", "/user.slice") == "/"
    assert layout.relative_to_root("/user.slicex/y", "/user.slice") == "/user.slicex/y"
    assert layout.relative_to_root("/a/b", "/") == "/a/b"


def test_detect_mode_asks_statfs_of_the_root_then_of_unified(tmp_path):
    cgroup2 = {tmp_path}

    def fs_type(path):
        return ksys.CGROUP2_SUPER_MAGIC if Path(path) in cgroup2 else 0x01021994  # tmpfs

    assert layout.detect_mode(tmp_path, fs_type) == "v2"
    cgroup2 = {tmp_path / "unified"}
    assert layout.detect_mode(tmp_path, fs_type) == "hybrid"
    cgroup2 = set()
    assert layout.detect_mode(tmp_path, fs_type) == "v1"


def test_layout_looks_up_a_controllers_directory():
    v1 = layout.Hierarchy(("cpu", "cpuacct"), Path("/cg/cpu"), "/me")
    v2 = layout.Hierarchy((), Path("/cg/unified"), "/me")
    both = layout.Layout("hybrid", (v1, v2))
    assert both.hierarchy("cpuacct") is v1 and both.hierarchy("") is v2
    assert both.directory("cpu", "labkit-x") == Path("/cg/cpu/me/labkit/labkit-x")
    assert both.directory("", "labkit-x") == Path("/cg/unified/me/labkit/labkit-x")
    assert both.directory("memory", "labkit-x") is None
