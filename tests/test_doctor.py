"""labkit doctor: the real host passes, and every failure path says what to fix.

Tests marked ``fake_tree`` run the checks against a directory laid out like ``/`` (a labelled fake
host); the others examine this machine and compare with an independent reading of the kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import doctor, rootfs
from labkit import sys as ksys
from labkit.doctor import FAIL, OK, WARN, Host
from labkit.namespaces import KINDS

from .conftest import run_as_nobody


def _by_name(results):
    return {r.name: r for r in results}


def _stat_f(path: str, fmt: str) -> str:
    return subprocess.run(
        ["stat", "-f", "-c", fmt, path], capture_output=True, text=True, check=True
    ).stdout.strip()


# --- the real host -------------------------------------------------------------------------------


def test_statfs_matches_stat_command():
    for path in ("/", "/proc", "/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/dev/shm"):
        if os.path.exists(path):
            assert ksys.statfs(path) == int(_stat_f(path, "%t"), 16), path
    with pytest.raises(FileNotFoundError, match="statfs"):
        ksys.statfs("/no/such/path")


@pytest.mark.host_timing
def test_real_host_passes_every_required_check_quickly():
    start = time.monotonic()
    results = doctor.run_checks()
    elapsed = time.monotonic() - start
    failed = [str(r) for r in results if r.required and r.status != OK]
    assert failed == []
    assert doctor.exit_status(results) == 0
    assert elapsed < 1.0, f"labkit doctor took {elapsed:.2f} s"


def test_layout_matches_an_independent_reading():
    # `stat -f` names the filesystem type from its own table of magic numbers.
    top, unified = _stat_f("/sys/fs/cgroup", "%T"), None
    if os.path.isdir("/sys/fs/cgroup/unified"):
        unified = _stat_f("/sys/fs/cgroup/unified", "%T")
    expected = "v2" if top == "cgroup2fs" else "hybrid" if unified == "cgroup2fs" else "v1"
    assert doctor.cgroup_layout(Host()) == expected
    check = _by_name(doctor.run_checks())["cgroups"]
    assert check.details["layout"] == expected and check.status == OK


def test_this_machine_is_hybrid():
    # The project's machines are measured hybrid (kernel-facts.md); the VM guest is v2.
    if _stat_f("/sys/fs/cgroup", "%T") != "tmpfs":
        pytest.skip("not the hybrid build machine")
    assert _stat_f("/sys/fs/cgroup/unified", "%T") == "cgroup2fs"
    assert doctor.cgroup_layout(Host()) == "hybrid"


def test_controller_dirs_are_this_process_s_own_cgroups():
    dirs = doctor.controller_dirs(Host())
    assert set(doctor.REQUIRED_CONTROLLERS) <= {c for c, d in dirs.items() if d}
    for controller, where in dirs.items():
        if where:
            # The kernel lists our pid in cgroup.procs of the cgroup we are in.
            procs = Path(where, "cgroup.procs").read_text().split()
            assert str(os.getpid()) in procs, (controller, where)


def test_namespace_probe_agrees_with_the_unshare_command():
    created = doctor.create_each_kind()
    assert set(created) == set(KINDS)
    option = {"mnt": "--mount"}
    for kind in KINDS:
        out = subprocess.run(
            ["unshare", option.get(kind, f"--{kind}"), "true"],
            check=False,
            capture_output=True,
            timeout=10,
        )
        assert (created[kind] == "") == (out.returncode == 0), (kind, created[kind], out.stderr)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labkit.cli", "doctor", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_json_has_one_entry_per_check():
    out = _cli("--json")
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    names = [e["name"] for e in entries]
    assert names == [r.name for r in doctor.run_checks()]
    assert len(set(names)) == len(names)
    for kind in KINDS:
        assert f"namespace {kind}" in names
    for entry in entries:
        assert entry["status"] in (OK, WARN, FAIL)
        assert isinstance(entry["required"], bool) and entry["summary"]


def test_cli_text_one_line_per_check_and_a_verdict():
    out = _cli()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(doctor.run_checks()) + 1
    assert all(line.startswith(("✔", "⚠", "✘")) for line in lines[:-1])
    assert lines[-1].startswith("labkit doctor: this host can run every lesson")


def test_as_nobody_the_root_check_fails_with_sudo_fix():
    out = run_as_nobody(
        "import sys; from labkit.cli import main; sys.exit(main(['doctor', '--json']))"
    )
    assert out.returncode != 0, out.stderr
    root = _by_name(doctor.Check(**e) for e in json.loads(out.stdout))["root"]
    assert root.status == FAIL and root.required
    assert "sudo" in root.fix


# --- failure paths, on a labelled fake tree ------------------------------------------------------

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = """\
8:pids:/
6:freezer:/
4:memory:/lab/student
3:cpuset:/
1:cpu,cpuacct:/
0::/
"""
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_CGROUP = "0::/lab.slice/student\n"


def _write(root: Path, path: str, text: str = "") -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


@pytest.fixture
def fake(tmp_path):
    """A healthy hybrid host as a fake tree; tests break one thing in it."""
    root = tmp_path / "fake-root"
    _write(root, "/proc/sys/kernel/osrelease", "6.1.0-fake\n")
    _write(root, "/proc/self/status", "Name:\tpython\nCapEff:\t000001ffffffffff\n")
    for kind in KINDS:
        _write(root, f"/proc/self/ns/{kind}")
    _write(root, "/proc/sys/user/max_user_namespaces", "15000\n")
    _write(root, "/proc/filesystems", "nodev\ttmpfs\nnodev\tcgroup2\nnodev\toverlay\n")
    _write(root, "/proc/self/mountinfo", V1_MOUNTINFO)
    _write(root, "/proc/self/cgroup", V1_CGROUP)
    for d in ("cpu,cpuacct", "cpuset", "memory/lab/student", "freezer", "pids", "unified"):
        (root / "sys/fs/cgroup" / d).mkdir(parents=True)
    (root / "bin").mkdir()
    shutil.copy(rootfs.find_busybox(), root / "bin" / "busybox")
    magic = {"sys/fs/cgroup": ksys.TMPFS_MAGIC, "sys/fs/cgroup/unified": ksys.CGROUP2_SUPER_MAGIC}

    def fs_type(path: str) -> int:
        return magic[os.path.relpath(path, root)]

    host = Host(root=root, system="Linux", euid=0, fs_type=fs_type, create_namespaces=False)
    host.magic = magic  # tests change the layout through this
    return host


@pytest.mark.fake_tree
def test_fake_healthy_host_passes(fake):
    results = doctor.run_checks(fake)
    assert [str(r) for r in results if r.status != OK] == []
    assert doctor.exit_status(results) == 0
    dirs = _by_name(results)["cgroup controllers"].details["dirs"]
    assert dirs["memory"] == "/sys/fs/cgroup/memory/lab/student"
    assert dirs["cpu"] == "/sys/fs/cgroup/cpu,cpuacct"


@pytest.mark.fake_tree
def test_fake_not_linux(fake):
    fake.system = "Darwin"
    check = doctor.check_linux(fake)
    assert check.status == FAIL and "Darwin" in check.summary and "vagrant up" in check.fix


@pytest.mark.fake_tree
def test_fake_not_root_fails_with_sudo(fake):
    fake.euid = 1000
    results = doctor.run_checks(fake)
    root = _by_name(results)["root"]
    assert root.status == FAIL and "uid 1000" in root.summary and "sudo" in root.fix
    assert doctor.exit_status(results) == 1
    text = doctor.render(results)
    assert "✘ root: running as uid 1000" in text and "→ fix: run it with sudo" in text
    assert text.splitlines()[-1].startswith("labkit doctor: 1 required check(s) failed (root)")


@pytest.mark.fake_tree
def test_fake_root_without_cap_sys_admin(fake):
    _write(fake.root, "/proc/self/status", "CapEff:\t00000000a80425fb\n")  # Docker's default set
    check = doctor.check_root(fake)
    assert check.status == FAIL and "CAP_SYS_ADMIN" in check.summary and "--privileged" in check.fix


@pytest.mark.fake_tree
@pytest.mark.parametrize(
    "release, status, named",
    [
        ("5.4.0-150-generic", WARN, "time namespaces (5.6+)"),
        ("5.15.0", WARN, "memory.peak (5.19+)"),
        ("4.4.0", WARN, "cgroup v2 (4.5+)"),
        ("3.10.0-1160.el7", FAIL, "overlayfs (3.18+)"),
        ("5.19.0", OK, "namespaces of every kind"),
    ],
)
def test_fake_kernel_versions(fake, release, status, named):
    _write(fake.root, "/proc/sys/kernel/osrelease", release + "\n")
    check = doctor.check_kernel(fake)
    assert check.status == status and named in check.summary and release in check.summary
    assert ("5.19" in check.fix) == (status != OK)


@pytest.mark.fake_tree
def test_fake_missing_namespace_kinds(fake):
    (fake.root / "proc/self/ns/time").unlink()
    results = doctor.run_checks(fake)
    time_ns = _by_name(results)["namespace time"]
    assert time_ns.status == FAIL and not time_ns.required and "CLONE_NEWTIME" in time_ns.summary
    assert "5.6" in time_ns.fix
    assert doctor.exit_status(results) == 0  # optional: one lesson section is skipped

    (fake.root / "proc/self/ns/pid").unlink()
    results = doctor.run_checks(fake)
    assert _by_name(results)["namespace pid"].blocking
    assert doctor.exit_status(results) == 1


@pytest.mark.fake_tree
@pytest.mark.parametrize(
    "sysctl, value, status, fix",
    [
        ("user/max_user_namespaces", "0", FAIL, "user.max_user_namespaces=15000"),
        ("kernel/unprivileged_userns_clone", "0", WARN, "kernel.unprivileged_userns_clone=1"),
        (
            "kernel/apparmor_restrict_unprivileged_userns",
            "1",
            WARN,
            "kernel.apparmor_restrict_unprivileged_userns=0",
        ),
        ("kernel/apparmor_restrict_unprivileged_userns", "0", OK, ""),
    ],
)
def test_fake_unprivileged_userns_sysctls(fake, sysctl, value, status, fix):
    _write(fake.root, f"/proc/sys/{sysctl}", value + "\n")
    check = doctor.check_unprivileged_userns(fake)
    assert check.status == status and fix in check.fix and not check.required


@pytest.mark.fake_tree
def test_fake_layouts(fake):
    assert doctor.cgroup_layout(fake) == "hybrid"
    fake.magic["sys/fs/cgroup/unified"] = ksys.TMPFS_MAGIC
    assert doctor.cgroup_layout(fake) == "v1"
    fake.magic["sys/fs/cgroup"] = ksys.CGROUP2_SUPER_MAGIC
    assert doctor.cgroup_layout(fake) == "v2"
    fake.magic["sys/fs/cgroup"] = ksys.TMPFS_MAGIC
    _write(fake.root, "/proc/self/mountinfo", "")
    check = doctor.check_cgroup_layout(fake)
    assert check.status == FAIL and check.details["layout"] == "none" and "mount" in check.fix


@pytest.mark.fake_tree
def test_fake_v2_controllers_come_from_cgroup_controllers(fake):
    fake.magic["sys/fs/cgroup"] = ksys.CGROUP2_SUPER_MAGIC
    _write(fake.root, "/proc/self/mountinfo", V2_MOUNTINFO)
    _write(fake.root, "/proc/self/cgroup", V2_CGROUP)
    own = "/sys/fs/cgroup/lab.slice/student"
    _write(fake.root, f"{own}/cgroup.controllers", "cpu io memory pids\n")

    check = doctor.check_cgroup_controllers(fake)
    assert check.status == WARN and check.summary.startswith("cpuset not usable")
    assert check.details["dirs"]["memory"] == own and check.details["dirs"]["freezer"] == own

    _write(fake.root, f"{own}/cgroup.controllers", "cpu pids\n")
    check = doctor.check_cgroup_controllers(fake)
    assert check.status == FAIL and check.blocking and "memory" in check.summary
    assert "subtree_control" in check.fix


@pytest.mark.fake_tree
def test_fake_read_only_cgroup_mount_is_not_usable(fake):
    _write(
        fake.root,
        "/proc/self/mountinfo",
        V1_MOUNTINFO.replace("/sys/fs/cgroup/memory rw,", "/sys/fs/cgroup/memory ro,"),
    )
    check = doctor.check_cgroup_controllers(fake)
    assert check.status == FAIL and check.details["dirs"]["memory"] is None


@pytest.mark.fake_tree
def test_fake_overlayfs(fake):
    _write(fake.root, "/proc/filesystems", "nodev\ttmpfs\n")
    check = doctor.check_overlayfs(fake)
    assert check.status == FAIL and "modprobe overlay" in check.fix
    _write(fake.root, "/lib/modules/6.1.0-fake/kernel/fs/overlayfs/overlay.ko.xz", "")
    assert doctor.check_overlayfs(fake).status == OK


@pytest.mark.fake_tree
def test_fake_busybox_missing_dynamic_or_not_elf(fake):
    binary = fake.root / "bin" / "busybox"
    binary.unlink()
    check = doctor.check_busybox(fake)
    assert check.status == FAIL and check.fix == "apt-get install busybox-static"

    shutil.copy("/bin/ls", binary)  # a dynamically linked executable stands in
    check = doctor.check_busybox(fake)
    assert check.status == FAIL and "dynamically linked" in check.summary
    assert "busybox-static" in check.fix

    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    check = doctor.check_busybox(fake)
    assert check.status == FAIL and "not an ELF" in check.summary


@pytest.mark.fake_tree
def test_fake_a_check_that_crashes_is_reported_not_raised(fake, monkeypatch):
    def check_explodes(host):
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "CHECKS", [doctor.check_linux, check_explodes])
    results = doctor.run_checks(fake)
    assert [r.status for r in results] == [OK, FAIL]
    assert results[1].name == "explodes" and "boom" in results[1].summary
    assert doctor.exit_status(results) == 1


@pytest.mark.fake_tree
def test_fake_lab_vm_delegated_unit(fake):
    """The lab VM's shape: the kernel in jupyterlab.service/server, the unit delegated.

    The real kernel checks the same placement in test_cgroups_delegation.py (scripts/test-v2);
    this pins down what the doctor says about it, and that it never sends a student in the lab
    VM to the lab VM.
    """
    fake.magic["sys/fs/cgroup"] = ksys.CGROUP2_SUPER_MAGIC
    _write(fake.root, "/proc/self/mountinfo", V2_MOUNTINFO)
    unit = "/sys/fs/cgroup/system.slice/jupyterlab.service"
    _write(fake.root, "/proc/self/cgroup", f"0::{unit.removeprefix('/sys/fs/cgroup')}/server\n")
    _write(fake.root, f"{unit}/cgroup.controllers", "cpuset cpu io memory pids\n")
    _write(fake.root, f"{unit}/server/cgroup.procs", "412\n613\n")
    _write(fake.root, doctor.LAB_VM_MARK, "")
    os.setxattr(fake.root / unit.lstrip("/"), "trusted.delegate", b"1")

    check = doctor.check_cgroup_controllers(fake)
    assert check.status == OK, check
    assert check.details["placement"] == "delegated"
    assert check.details["dirs"]["memory"] == unit
    assert f"in {unit}, delegated" in check.summary

    os.removexattr(fake.root / unit.lstrip("/"), "trusted.delegate")
    check = doctor.check_cgroup_controllers(fake)
    assert check.status == FAIL and check.details["dirs"]["memory"] is None
    assert f"{unit}/server holds some" in check.fix and "trusted.delegate" in check.fix
    assert all("use the lab VM" not in r.fix for r in doctor.run_checks(fake))
