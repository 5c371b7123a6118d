"""The PID, mount and user namespace lessons: their helpers and exercise checks, on the real kernel.

Every check is called with a correct answer (ok), a wrong one (not ok, with a hint) and the blank
(``...``: "replace the ..."), and each must come to its verdict by asking the kernel.
"""

from __future__ import annotations

import os
import signal

import pytest

from labkit import mountinfo, rootfs
from labkit import namespaces as ns
from labkit.errors import BadInput
from labkit.lab import checks, escape, proctree, userns


@pytest.fixture
def busybox_root(state_dir):
    return rootfs.build()


# --- 03-pid -------------------------------------------------------------------------------------


def test_members_show_both_pids_of_each_process_of_a_pid_namespace():
    with proctree.start_with_children(3) as proc:
        found = proctree.members_of(proc)
        assert [m.ns_pid for m in found] == [1, 2, 3, 4]
        assert found[0].host_pid == proc.pid and proctree.nspid(proc.pid) == [proc.pid, 1]
        assert all(m.host_ppid == proc.pid for m in found[1:])  # PID 1 is every sleep's parent
        assert [m.comm for m in found] == ["sh"] + ["sleep"] * 3
        assert proctree.host_process_count() > len(found)


def test_start_with_children_refuses_a_silly_count():
    with pytest.raises(BadInput, match="choose between 0 and 50"):
        proctree.start_with_children(500)


def test_pid_tree_plot_draws_one_box_per_process():
    import matplotlib

    matplotlib.use("Agg")
    with proctree.start_with_children(2) as proc:
        ax = proctree.plot_tree(proctree.members_of(proc))
    assert len(ax.texts) == 3 and "inside 1" in ax.texts[0].get_text()


def test_check_pid_kinds():
    assert checks.check_pid_kinds(["pid", "mnt"]).ok
    no_proc = checks.check_pid_kinds(["pid"])
    assert not no_proc.ok and "fresh /proc" in no_proc.hint
    no_pid = checks.check_pid_kinds(["mnt"])
    assert not no_pid.ok and "add 'pid'" in no_pid.hint
    assert not checks.check_pid_kinds(["pdi"]).ok
    assert "replace the ..." in checks.check_pid_kinds(...).message


def test_check_pid1_signal():
    assert checks.check_pid1_signal("SIGKILL").ok
    assert checks.check_pid1_signal(signal.SIGKILL).ok
    term = checks.check_pid1_signal("SIGTERM")
    assert not term.ok and "no handler" in term.hint
    assert not checks.check_pid1_signal("SIGNOPE").ok
    assert "replace the ..." in checks.check_pid1_signal(...).message


def test_check_no_zombies():
    assert checks.check_no_zombies(True).ok
    left = checks.check_no_zombies(False)
    assert not left.ok and "1 zombie" in left.message and "wait()" in left.hint
    assert "replace the ..." in checks.check_no_zombies(...).message


# --- 04-mount -----------------------------------------------------------------------------------


def test_chroot_is_escaped_and_pivot_root_is_not(busybox_root):
    chrooted = escape.attempt_escape(busybox_root, "chroot")
    assert chrooted.escaped and chrooted.root == (os.stat("/").st_dev, os.stat("/").st_ino)
    # Inside, mountinfo lists only what is below the new root; after the escape, the host's too.
    assert chrooted.mounts_inside < chrooted.mounts_on_host < chrooted.mounts_after
    pivoted = escape.attempt_escape(busybox_root, "pivot_root")
    assert not pivoted.escaped
    assert pivoted.root == (os.stat(busybox_root).st_dev, os.stat(busybox_root).st_ino)
    assert pivoted.mounts_after == pivoted.mounts_inside == chrooted.mounts_inside


def test_escape_refuses_an_unknown_method(busybox_root):
    with pytest.raises(BadInput, match="is not 'chroot' or 'pivot_root'"):
        escape.attempt_escape(busybox_root, "jail")
    with pytest.raises(BadInput, match="is not a root filesystem"):
        escape.attempt_escape("/nonexistent", "chroot")


@pytest.mark.parametrize("method", escape.METHODS)
def test_proc_root_leads_out_unless_there_is_a_new_pid_namespace(busybox_root, method):
    assert escape.attempt_proc_root(busybox_root, method, new_pid_namespace=False).reached
    closed = escape.attempt_proc_root(busybox_root, method, new_pid_namespace=True)
    assert not closed.reached and closed.entries == []


def test_propagation_reads_mountinfo(state_dir):
    path = escape.make_shared()
    try:
        assert escape.propagation(str(path)) == "shared"
        assert escape.leaks("unchanged")
        assert not escape.leaks("private") and not escape.leaks("slave")
        assert not mountinfo.is_mount_point(path / "leak")  # the leaked mount was removed
    finally:
        escape.remove_shared()
    assert not mountinfo.is_mount_point(path) and not path.parent.exists()
    with pytest.raises(BadInput, match="is not a mount point"):
        escape.propagation(str(path))


def test_check_no_leak(state_dir):
    assert checks.check_no_leak("private").ok
    assert checks.check_no_leak("slave").ok
    leaked = checks.check_no_leak("unchanged")
    assert not leaked.ok and "appeared on the host" in leaked.message
    assert not checks.check_no_leak("sideways").ok
    assert "replace the ..." in checks.check_no_leak(...).message
    assert not escape.shared_dir().parent.exists()  # the check removed what it made


def test_check_escape_proof(state_dir):
    assert checks.check_escape_proof("pivot_root").ok
    chroot = checks.check_escape_proof("chroot")
    assert not chroot.ok and "reached the host" in chroot.message
    assert not checks.check_escape_proof("jail").ok
    assert "replace the ..." in checks.check_escape_proof(...).message


def test_check_proc_root_closed(state_dir):
    assert checks.check_proc_root_closed(["mnt", "pid"]).ok
    still_open = checks.check_proc_root_closed(["mnt"])
    assert not still_open.ok and "still leads" in still_open.message
    assert not checks.check_proc_root_closed(["pid"]).ok
    assert "replace the ..." in checks.check_proc_root_closed(...).message


# --- 05-user ------------------------------------------------------------------------------------


def test_host_sees_root_inside_as_the_mapped_uid():
    with ns.spawn(["sleep", "30"], ["user"], uid_map="0 300000 1000") as proc:
        assert userns.host_uid(proc.pid) == 300000
    assert userns.overflow_uid() == userns.NOBODY


def test_as_nobody_runs_unprivileged():
    result = userns.as_nobody("import os; print(os.geteuid(), os.getegid(), os.getgroups())")
    assert result.stdout.split("\n")[0] == "65534 65534 []", result.stderr


def test_id_map_plot_shows_each_range():
    import matplotlib

    matplotlib.use("Agg")
    ax = userns.plot_id_map(ns.parse_id_map("0 100000 1000\n1000 5000 1"))
    labels = [t.get_text() for t in ax.texts]
    assert "1000 ids" in labels and "1 id" in labels
    assert "0-999  (root)" in labels and "100000-100999" in labels and "5000" in labels


def test_check_root_maps_to():
    assert checks.check_root_maps_to("0 200000 1000").ok
    assert checks.check_root_maps_to("0 200000 65536").ok
    wrong = checks.check_root_maps_to("0 100000 1000")
    assert not wrong.ok and "uid 100000 on the host, not 200000" in wrong.message
    unmapped = checks.check_root_maps_to("200000 0 1000")
    assert not unmapped.ok and "start the line with 0" in unmapped.hint
    assert not checks.check_root_maps_to("0 lots 1").ok
    assert "replace the ..." in checks.check_root_maps_to(...).message


def test_check_nobody_kinds():
    assert checks.check_nobody_kinds(["user", "uts"]).ok
    refused = checks.check_nobody_kinds(["uts"])
    assert not refused.ok and "needs root" in refused.message
    assert "replace the ..." in checks.check_nobody_kinds(...).message


def test_check_unmapped_owner():
    assert checks.check_unmapped_owner(65534).ok
    assert checks.check_unmapped_owner("65534").ok
    wrong = checks.check_unmapped_owner(0)
    assert not wrong.ok and "overflow" in wrong.hint
    assert "replace the ..." in checks.check_unmapped_owner(...).message
