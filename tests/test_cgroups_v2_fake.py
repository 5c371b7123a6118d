"""The cgroup v2 backend against a FAKE tree of plain files in tmp_path: formats and error paths.

FAKE: no real cgroup v2 kernel checks anything in this file, wherever it runs. A directory of
ordinary files stands in for /sys/fs/cgroup; ``fake_kernel`` fills a new cgroup directory with
the files a kernel would show, and nothing here enforces a limit. These tests pin down what
labkit writes and reads (file names, value formats, order, refusals, roll-back), including paths
a real run rarely reaches (a non-root cgroup holding processes, a kernel without memory.peak).
Whether the kernel agrees is for test_cgroups.py run inside a cgroup v2 kernel (issue 5).
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from labkit.cgroups import Cgroup, Layout
from labkit.cgroups import base as base_mod
from labkit.cgroups import layout as layout_mod
from labkit.errors import BadInput, MissingFeature

pytestmark = pytest.mark.fake_tree

MiB = 1 << 20

# What a 6.x kernel shows in a new v2 cgroup with cpuset, cpu, memory and pids enabled (FAKE).
NEW_CGROUP = {
    "cgroup.procs": "",
    "cgroup.subtree_control": "",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.freeze": "0",
    "cgroup.kill": "",
    "memory.max": "max",
    "memory.swap.max": "max",
    "memory.high": "max",
    "memory.current": "0",
    "memory.peak": "0",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    "cpu.max": "max 100000",
    "cpu.weight": "100",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\n"
    "throttled_usec 0\nnr_bursts 0\nburst_usec 0\n",
    "pids.max": "max",
    "pids.current": "0",
    "pids.events": "max 0\n",
    "cpuset.cpus": "",
    "cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
}


def make_tree(root: Path, own: str = "/", procs: str = "1\n") -> Layout:
    """A FAKE cgroup2 mount at *root*, the caller's cgroup at *own* (holding *procs*)."""
    own_dir = root / own.strip("/")
    own_dir.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    (own_dir / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    (own_dir / "cgroup.subtree_control").write_text("")
    (own_dir / "cgroup.procs").write_text(procs)
    (own_dir / "cpuset.cpus.effective").write_text("0-1\n")
    return Layout("v2", (layout_mod.Hierarchy((), root, own),))


@pytest.fixture
def fake_kernel(monkeypatch):
    """FAKE: mkdir fills a cgroup with NEW_CGROUP's files; rmdir takes them away again."""

    def make_dir(path: Path) -> None:
        path.mkdir()
        for name, text in NEW_CGROUP.items():
            (path / name).write_text(text)

    def remove_dir(path: Path, deadline: float) -> None:
        shutil.rmtree(path, ignore_errors=True)

    monkeypatch.setattr(base_mod, "make_dir", make_dir)
    monkeypatch.setattr(base_mod, "remove_dir", remove_dir)


@pytest.fixture
def tree(tmp_path, fake_kernel) -> Layout:
    return make_tree(tmp_path / "FAKE-cgroup2")


def test_create_enables_controllers_top_down_and_makes_the_leaf(tree):
    """FAKE tree: the "+controller" lines written to each level's cgroup.subtree_control."""
    box = Cgroup.create("demo", layout=tree)
    root = tree.hierarchies[0].mount
    assert box.dirs == [root / "labkit" / "labkit-demo"]
    assert (root / "cgroup.subtree_control").read_text() == "+cpuset +cpu +memory +pids"
    assert (root / "labkit" / "cgroup.subtree_control").read_text() == "+cpuset +cpu +memory +pids"
    assert box.exists


def test_limits_are_written_in_v2_formats(tree):
    """FAKE tree: file names and value formats only; no kernel enforced these limits."""
    box = Cgroup.create(
        "demo",
        layout=tree,
        memory="64M",
        swap="0",
        memory_high="48M",
        cpus=0.5,
        weight=300,
        pids=10,
        cpuset="0",
    )
    assert box.limits() == {
        "memory.max": str(64 * MiB),
        "memory.swap.max": "0",
        "memory.high": str(48 * MiB),
        "cpu.max": "50000 100000",
        "cpu.weight": "300",
        "pids.max": "10",
        "cpuset.cpus": "0",
    }
    box.set(memory="max", cpus="max", pids="max")
    limits = box.limits()
    assert (limits["memory.max"], limits["cpu.max"], limits["pids.max"]) == (
        "max",
        "max 100000",
        "max",
    )
    assert limits["cpu.weight"] == "300"  # a limit not given stays as it was


def test_no_internal_processes_refused_with_the_fix(tmp_path, fake_kernel):
    """FAKE tree: our own (non-root) cgroup holds processes, so v2 forbids enabling controllers."""
    layout = make_tree(tmp_path / "FAKE-cgroup2", own="/user.slice/session-1.scope", procs="42\n")
    with pytest.raises(MissingFeature, match="leaf") as refused:
        Cgroup.create("demo", layout=layout)
    assert "echo $$ >" in str(refused.value)
    own = layout.hierarchies[0].own_dir
    assert not (own / "labkit").exists()
    assert (own / "cgroup.subtree_control").read_text() == ""


def test_bad_values_and_missing_controllers_write_nothing(tree, tmp_path):
    """FAKE tree: a refusal (ours or the missing-file check) leaves every file as it was."""
    box = Cgroup.create("demo", layout=tree, pids=10)
    before = box.limits()
    with pytest.raises(BadInput, match="not a size"):
        box.set(pids=20, memory="64 mega")
    (box.dirs[0] / "memory.max").unlink()  # as if the memory controller were not enabled
    with pytest.raises(MissingFeature, match="memory.max"):
        box.set(pids=20, memory="64M")
    assert box.limits() == {k: v for k, v in before.items() if k != "memory.max"}


def test_a_kernel_refusal_half_way_puts_back_what_was_written(tree, monkeypatch):
    """FAKE kernel: pids.max refuses with EBUSY after memory.max and cpu.max were written."""
    box = Cgroup.create("demo", layout=tree)
    real_write = base_mod.write

    def refusing_write(path: Path, value: str) -> None:
        if path.name == "pids.max":
            raise OSError(errno.EBUSY, f"write({str(path)!r}, {value!r}): Device or resource busy")
        real_write(path, value)

    monkeypatch.setattr(base_mod, "write", refusing_write)
    with pytest.raises(OSError) as refused:
        box.set(memory="64M", cpus=0.5, pids=5)
    assert refused.value.errno == errno.EBUSY
    assert (box.limits()["memory.max"], box.limits()["cpu.max"]) == ("max", "max 100000")


def test_stats_are_read_from_v2_files(tree):
    """FAKE tree: counters the kernel would write, in v2's formats, read into Stats."""
    box = Cgroup.create("demo", layout=tree)
    d = box.dirs[0]
    (d / "memory.current").write_text(f"{20 * MiB}\n")
    (d / "memory.peak").write_text(f"{64 * MiB}\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n")
    (d / "cpu.stat").write_text(
        "usage_usec 1500000\nuser_usec 1400000\nsystem_usec 100000\n"
        "nr_periods 20\nnr_throttled 5\nthrottled_usec 250000\n"
    )
    (d / "pids.current").write_text("5\n")
    (d / "pids.events").write_text("max 16\n")
    (d / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    (d / "memory.pressure").write_text(
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=4242\n"
        "full avg10=10.00 avg60=2.00 avg300=0.50 total=4000\n"
    )
    s = box.stats()
    assert (s.memory_current, s.memory_peak, s.oom_kills) == (20 * MiB, 64 * MiB, 1)
    assert (s.cpu_usage_us, s.cpu_periods, s.cpu_throttled, s.cpu_throttled_us) == (
        1500000,
        20,
        5,
        250000,
    )
    assert (s.pids_current, s.pids_refused, s.frozen) == (5, 16, True)
    assert s.pressure["memory"].some_total_us == 4242 and s.pressure["memory"].full_avg10 == 10.0
    assert [line.split()[0] for line in s.summary().splitlines()] == [
        "memory:",
        "cpu:",
        "pids:",
        "pressure",
    ]
    (d / "memory.peak").unlink()  # kernels before 5.19 have no memory.peak
    assert box.stats().memory_peak is None


def test_freeze_waits_for_cgroup_events_and_kill_uses_cgroup_kill(tree):
    """FAKE tree: freeze writes cgroup.freeze and waits for "frozen 1", bounded in time."""
    box = Cgroup.create("demo", layout=tree)
    d = box.dirs[0]
    with pytest.raises(TimeoutError, match="frozen"):
        box.freeze(timeout=0.05)  # no kernel here to report frozen
    assert (d / "cgroup.freeze").read_text() == "1"
    (d / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    box.freeze(timeout=0.05)
    box.thaw()
    assert (d / "cgroup.freeze").read_text() == "0"
    box.kill(timeout=0.05)  # the fake cgroup.procs is empty: nothing to wait for
    assert (d / "cgroup.kill").read_text() == "1"
    (d / "cgroup.procs").write_text("4242\n")  # a task that never goes away
    with pytest.raises(TimeoutError, match="4242"):
        box.kill(timeout=0.05)


def test_start_writes_the_pid_then_execs_and_a_refused_join_exits_125(tree):
    """FAKE tree: the join shell writes $$ to cgroup.procs (a plain file here) before exec."""
    box = Cgroup.create("demo", layout=tree)
    procs = box.dirs[0] / "cgroup.procs"
    proc = box.start(["sh", "-c", "echo $$"], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert procs.read_text().split() == [str(proc.pid)] == [out.strip()]
    procs.unlink()
    procs.mkdir()  # a join the "kernel" refuses: the command must not run outside the cgroup
    proc = box.start(
        ["sh", "-c", "echo ran"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    out, _ = proc.communicate(timeout=5)
    assert (proc.returncode, out) == (125, "")
    procs.rmdir()
    procs.write_text("")


def test_a_name_in_use_is_refused(tree):
    """FAKE tree: mkdir of an existing cgroup is refused before anything is written."""
    Cgroup.create("demo", layout=tree, pids=10)
    with pytest.raises(BadInput, match="already exists"):
        Cgroup.create("demo", layout=tree, pids=20)
    assert Cgroup("demo", layout=tree).limits()["pids.max"] == "10"


def test_layout_parsing_of_proc_files():
    """Sample /proc/self/cgroup and mountinfo texts (v2 and hybrid), not this host's."""
    own = layout_mod.own_cgroups("0::/user.slice/user-1000.slice/session-3.scope\n")
    assert own == {"": "/user.slice/user-1000.slice/session-3.scope"}
    hybrid = layout_mod.own_cgroups("4:memory:/process_api/1f\n3:cpu,cpuacct:/\n0::/\n")
    assert hybrid == {"memory": "/process_api/1f", "cpu": "/", "cpuacct": "/", "": "/"}
    mountinfo = (
        "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
        "31 25 0:27 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    )
    mounts = layout_mod.cgroup_mounts(mountinfo)
    assert [(m.fstype, layout_mod.controllers_of(m)) for m in mounts] == [
        ("cgroup2", ()),
        ("cgroup", ("memory",)),
        ("cgroup", ("cpu", "cpuacct")),
    ]
    assert layout_mod.relative_to_root("/docker/abc/x", "/docker/abc") == "/x"
