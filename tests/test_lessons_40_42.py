"""The container lessons (40-container, 41-security, 42-oci): their helpers and exercise checks.

Every check is called with a correct answer (ok), a wrong one (not ok, with a hint) and the blank
(``...``: "replace the ..."), and each comes to its verdict by running containers on the real
kernel. The attacks of lesson 41 only read a loop device the test attaches, and write a sysctl
back with the value it had.
"""

from __future__ import annotations

import os

import pytest

from labkit import mountinfo
from labkit.errors import BadInput
from labkit.lab import container as lab

# --- 40-container -------------------------------------------------------------------------------


def test_each_step_records_its_time_and_the_plot_draws_them(state_dir):
    import matplotlib

    matplotlib.use("Agg")
    times = lab.step_times(runs=3)
    assert {"join_cgroup", "unshare_namespaces", "pivot_root", "load_seccomp"} <= set(times.steps)
    assert all(t >= 0 for t in times.steps.values()) and times.create > sum(times.steps.values())
    ax = lab.plot_step_times(times)
    assert len(ax.patches) == len(times.steps) + 1 and "ms" in ax.get_xlabel()
    with pytest.raises(BadInput):
        lab.step_times(runs=1000)


def test_the_fork_bomb_is_held_by_the_containers_cgroup_only(state_dir):
    assert lab.fork_bomb(10) <= 10
    assert lab.fork_bomb(10, skip=["join_cgroup"]) > 10
    with pytest.raises(BadInput):
        lab.fork_bomb(1000)


def test_pivot_root_and_proc_left_out(state_dir):
    assert "ended in the HOST's /" in lab.chroot_escape(skip_pivot_root=True)
    assert "ends in / itself" in lab.chroot_escape(skip_pivot_root=False)
    assert lab.ps_in_words(True) == "with /proc: ps lists 1 sh, 2 ps"
    assert "ps lists nothing; /proc is an empty directory" in lab.ps_in_words(False)


def test_mounts_leak_only_without_make_root_private_and_are_removed(state_dir):
    try:
        assert lab.leak(lab.LEAK_SKIP[1:]) == []
        leaked = lab.leak(lab.LEAK_SKIP)
        assert {"/", "/proc", "/dev"} <= set(leaked)
        assert lab.mounts_below(lab.shared_dir()) == []
    finally:
        lab.remove_shared()
    assert not mountinfo.is_mount_point(lab.shared_dir()) and not lab.shared_dir().exists()


def test_probe_shows_what_a_step_protected(state_dir):
    def rows(text: str) -> dict[str, str]:
        return dict(line.split(None, 1) for line in text.splitlines())

    default = rows(lab.probe())
    assert default["/proc/sys"] == "read-only" and default["capabilities"] == "14 (Docker's)"
    assert rows(lab.probe(["mount_readonly_paths"]))["/proc/sys"] == "WRITABLE"
    assert rows(lab.probe(["load_seccomp"]))["seccomp"] == "none"


def test_check_bomb_step(state_dir):
    assert lab.check_bomb_step("join_cgroup").ok
    wrong = lab.check_bomb_step("pivot_root")
    assert not wrong.ok and "cgroup" in wrong.hint
    assert not lab.check_bomb_step("exec_process").ok
    assert "replace the ..." in lab.check_bomb_step(...).message


def test_check_host_root_step(state_dir):
    assert lab.check_host_root_step("pivot_root").ok
    wrong = lab.check_host_root_step("mask_paths")
    assert not wrong.ok and wrong.hint
    assert "replace the ..." in lab.check_host_root_step(...).message


# --- 41-security --------------------------------------------------------------------------------


@pytest.fixture
def lesson_disk(state_dir):
    yield lab.lesson_disk()
    lab.remove_lesson_disk()
    assert not lab.disk_image().exists()


def test_every_attack_works_without_defences_and_none_with_all(lesson_disk):
    open_ = lab.attack()
    assert all(worked for worked, _ in open_.values()), open_
    assert open_["disk"][1] == "read 512 bytes: LABKIT LESSON DISK"
    closed = lab.attack(lab.DEFENCES)
    stopped = {name for name, (worked, _) in closed.items() if not worked}
    # The disk is guarded by the device cgroup: v1's devices list, v2's eBPF program.
    assert stopped == set(lab.ATTACKS), closed
    assert closed["setuid"][1] == "must be suid to work properly"
    assert lab.chroot_escape_with(lab.DEFENCES)  # no pivot_root: the rest does not help


def test_the_defence_table_and_its_picture(lesson_disk):
    import matplotlib

    matplotlib.use("Agg")
    table = lab.defence_table()
    assert table.worked["setuid"]["no_new_privs"] is False
    assert table.worked["sysctl"]["paths"] is False and table.worked["sysctl"]["seccomp"]
    assert table.worked["chroot"]["pivot_root"] is False and table.worked["chroot"]["none"]
    assert all(row["none"] for row in table.worked.values())
    ax = lab.plot_defence_table(table)
    assert len(ax.texts) == len(table.worked) * len(table.columns)
    assert "STOPPED" in str(table)


def test_check_setuid_defence(lesson_disk):
    assert lab.check_setuid_defence("no_new_privs").ok
    wrong = lab.check_setuid_defence("seccomp")
    assert not wrong.ok and "setuid" in wrong.hint
    assert not lab.check_setuid_defence("selinux").ok
    assert "replace the ..." in lab.check_setuid_defence(...).message


def test_check_three_stopped(lesson_disk):
    assert lab.check_three_stopped(["paths", "seccomp"]).ok
    assert lab.check_three_stopped(["capabilities", "paths"]).ok
    wrong = lab.check_three_stopped(["seccomp"])
    assert not wrong.ok and "sysctl" in wrong.message
    assert not lab.check_three_stopped(list(lab.DEFENCES)).ok  # more than two
    assert "replace the ..." in lab.check_three_stopped(...).message


def test_the_default_profile_refuses_what_the_lesson_says():
    names = ["mount", "unshare", "keyctl", "read", "write"]
    assert lab.refused_by_default_profile(names) == ["mount", "unshare", "keyctl"]


def test_a_security_spec_names_unknown_defences():
    with pytest.raises(BadInput, match="no defence 'selinux'"):
        lab.security_spec(["selinux"])


# --- 42-oci -------------------------------------------------------------------------------------


@pytest.fixture
def bundle(state_dir):
    made = lab.make_bundle()
    config = lab.read_config(made)
    config["process"].update(terminal=False, args=["sleep", "60"])
    lab.write_config(made, config)
    yield made
    lab.remove_bundle()
    assert not made.exists()


def test_both_runtimes_go_through_the_same_life_cycle(bundle):
    by_runc = lab.life_cycle("runc", bundle)
    assert lab.life_cycle("labkit-runtime", bundle) == by_runc
    assert [status for _, _, status in by_runc] == [
        "created",
        "running",
        "running",
        "stopped",
        "(no such container)",
    ]
    assert [code for _, code, _ in by_runc] == [0, 0, 1, 0, 0]
    assert lab.state_keys("labkit-runtime", bundle) == lab.state_keys("runc", bundle)


def test_the_probe_answers_the_same_under_both(bundle):
    answers = {name: lab.probe_with(name, bundle) for name in lab.runtimes()}
    assert answers["labkit-runtime"] == answers["runc"]
    assert "hostname runc" in answers["runc"] and "root read-only" in answers["runc"]
    assert lab.read_config(bundle)["process"]["args"] == ["sleep", "60"]  # put back


def test_check_readonly_key(bundle):
    assert lab.check_readonly_key(bundle, "root.readonly").ok
    wrong = lab.check_readonly_key(bundle, "process.terminal")
    assert not wrong.ok and "root" in wrong.hint
    assert "replace the ..." in lab.check_readonly_key(bundle, ...).message
    assert lab.read_config(bundle)["root"]["readonly"] is True


def test_check_exit_status(bundle):
    assert lab.check_exit_status(bundle, 3).ok
    assert not lab.check_exit_status(bundle, 0).ok
    assert "replace the ..." in lab.check_exit_status(bundle, ...).message


def test_no_loop_device_of_the_lesson_is_left(state_dir):
    assert not os.path.exists(lab.disk_image())


def test_the_namespace_steps_cannot_be_left_out(state_dir):
    # Without them the init would pivot the host's own root: refused before anything is made.
    from labkit.container import lifecycle

    for step in ("unshare_namespaces", "join_namespaces"):
        with pytest.raises(BadInput, match="host's own mount table"):
            lab.run(["true"], skip=[step])
    assert lifecycle.list_containers() == []
