"""The exercise checks and plots of lessons 00-welcome, 01-namespaces and 02-uts-ipc.

Each check is called with a correct answer, a wrong one and the blank, against real processes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import matplotlib
import pytest

from labkit import namespaces as ns
from labkit.lab import checks, plots

from .conftest import wait_until

matplotlib.use("Agg")

SLEEP = ["sleep", "60"]


def assert_blank(v: checks.Verdict) -> None:
    assert not v.ok and "replace the ..." in v.message


def assert_wrong(v: checks.Verdict, *words: str) -> None:
    assert not v.ok and v.hint, v
    for word in words:
        assert word in str(v), (word, str(v))


# --- 00-welcome ----------------------------------------------------------------------------------


def test_kernel_release_check_compares_with_the_running_kernel():
    release = Path("/proc/sys/kernel/osrelease").read_text().strip()
    major_minor = ".".join(release.split(".")[:2]).split("-")[0]
    assert checks.check_kernel_release(major_minor).ok
    assert checks.check_kernel_release(release).ok
    assert checks.check_kernel_release(".".join(release.split(".")[:3])).ok  # e.g. 6.1.0
    assert_wrong(checks.check_kernel_release(major_minor + "9"))  # 6.19 is not 6.1
    assert_wrong(checks.check_kernel_release("2.4"), "'2.4'", "osrelease")
    assert_wrong(checks.check_kernel_release(release.split(".")[0]))  # a major alone is too vague
    assert_blank(checks.check_kernel_release(...))


def _fs_type(path: str) -> str | None:
    """The filesystem type at *path* as `stat -f` names it (its own table of magic numbers)."""
    if not os.path.isdir(path):
        return None
    out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return out.stdout.strip()


def test_cgroup_layout_check_accepts_the_layout_stat_reads():
    if _fs_type("/sys/fs/cgroup") == "cgroup2fs":
        layout = "v2"
    else:
        layout = "hybrid" if _fs_type("/sys/fs/cgroup/unified") == "cgroup2fs" else "v1"
    assert checks.check_cgroup_layout(layout.upper()).ok
    wrong = next(x for x in ("v1", "v2", "hybrid") if x != layout)
    assert_wrong(checks.check_cgroup_layout(wrong), repr(wrong))
    assert_blank(checks.check_cgroup_layout(...))


# --- 01-namespaces -------------------------------------------------------------------------------


def test_all_but_net_accepts_only_a_new_network_namespace():
    with ns.spawn(SLEEP, ["net"]) as good, ns.spawn(SLEEP, ["net", "uts"]) as extra:
        assert checks.check_all_but_net(good).ok
        assert checks.check_all_but_net(good.pid).ok  # a PID works as well as the Process
        assert_wrong(checks.check_all_but_net(extra), "uts")
    with ns.spawn(SLEEP, []) as nothing:
        assert_wrong(checks.check_all_but_net(nothing), "nothing")
    assert_blank(checks.check_all_but_net(...))


def test_checks_say_when_the_process_is_gone_or_not_a_process():
    proc = ns.spawn(["true"], ["net"])
    proc.wait(10)
    assert_wrong(checks.check_all_but_net(proc), "no longer running")
    assert_wrong(checks.check_all_but_net("sleep"), "found str")


def test_differing_kinds_counts_two_new_namespaces_of_a_kind_as_different():
    with ns.spawn(SLEEP, ["uts", "ipc"]) as a, ns.spawn(SLEEP, ["uts", "net"]) as b:
        assert checks.check_differing_kinds(a, b, {"uts", "ipc", "net"}).ok
        missed = checks.check_differing_kinds(a, b, {"ipc", "net"})
        assert_wrong(missed, "both made a new uts namespace")
        assert_wrong(checks.check_differing_kinds(a, b, {"mnt"}), "ns_ids")
        assert_wrong(checks.check_differing_kinds(a, b, 3), "set of kind names")
        assert_blank(checks.check_differing_kinds(a, b, ...))


# --- 02-uts-ipc ----------------------------------------------------------------------------------


def test_lab_hostname_is_read_from_inside_the_process():
    with (
        ns.spawn(SLEEP, ["uts"], hostname="lab-ab") as good,
        ns.spawn(SLEEP, ["uts"], hostname="lab-toolong") as long_name,
        ns.spawn(SLEEP, ["ipc"]) as no_uts,
    ):
        assert checks.check_lab_hostname(good).ok
        assert_wrong(checks.check_lab_hostname(long_name), "'lab-toolong'")
        assert_wrong(checks.check_lab_hostname(no_uts), "shares this notebook's UTS")
    assert_blank(checks.check_lab_hostname(...))


def test_message_queues_are_counted_per_ipc_namespace():
    host_before = checks.message_queues()
    script = "ipcmk -Q && ipcmk -Q && ipcmk -Q && exec sleep 60"
    with ns.spawn(["sh", "-c", script], ["ipc"], stdout=subprocess.DEVNULL) as proc:
        assert wait_until(lambda: checks.message_queues(proc.pid) == 3)
        assert checks.message_queues() == host_before


def test_host_sees_queues_needs_two_queues_inside_and_the_host_count():
    quiet = subprocess.DEVNULL
    two = "ipcmk -Q && ipcmk -Q && exec sleep 60"
    with (
        ns.spawn(["sh", "-c", two], ["ipc"], stdout=quiet) as good,
        ns.spawn(["sh", "-c", "ipcmk -Q && exec sleep 60"], ["ipc"], stdout=quiet) as one,
        ns.spawn(SLEEP, ["uts"]) as no_ipc,
    ):
        host = checks.message_queues()
        assert checks.check_host_sees_queues(good, host).ok
        assert_wrong(checks.check_host_sees_queues(good, host + 2), f"sees {host} message queues")
        assert_wrong(checks.check_host_sees_queues(one, host), "holds 1 queues")
        assert_wrong(checks.check_host_sees_queues(no_ipc, host), "shares this notebook's IPC")
        assert_blank(checks.check_host_sees_queues(good, ...))
        assert_blank(checks.check_host_sees_queues(..., host))


# --- plots ---------------------------------------------------------------------------------------


def test_sharing_matrix_letters_follow_the_inode_numbers():
    with ns.spawn(SLEEP, ["uts"]) as a, ns.spawn(SLEEP, ["uts", "net"]) as b:
        ids = {"me": ns.ns_ids(), "a": ns.ns_ids(a.pid), "b": ns.ns_ids(b.pid)}
        ax = plots.sharing_matrix({"me": "self", "a": a.pid, "b": b.pid})
    labels = plots.label_namespaces(ids)
    assert set(labels["me"].values()) == {"A"}
    assert labels["a"] == {k: "B" if k == "uts" else "A" for k in ns.KINDS}
    assert labels["b"]["uts"] == "C" and labels["b"]["net"] == "B" and labels["b"]["mnt"] == "A"
    texts = [[t.get_text() for t in ax.texts][i * 8 : (i + 1) * 8] for i in range(3)]
    assert texts == [[labels[r][k] for k in ns.KINDS] for r in ("me", "a", "b")]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["me", "a", "b"]


def test_feature_timeline_marks_what_the_running_kernel_lacks():
    features = [((3, 8), "user"), ((5, 6), "time"), ((2, 6, 19), "uts")]
    ax = plots.draw_feature_timeline(features, (5, 4))
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    colours = {line.get_xydata()[0][1]: line.get_color() for line in dots}
    assert colours == {0.0: "#55a868", 1.0: "#55a868", 2.0: "#c44e52"}  # sorted: uts, user, time
    assert plots.parse_release("2.6.19") == (2, 6, 19) < (3, 8)


def test_visible_counts_draws_one_bar_per_viewer_and_step():
    ax = plots.draw_visible_counts([1, 2, 3], {"host": [0, 0, 0], "A": [1, 2, 3], "B": [1, 2, 3]})
    heights = [p.get_height() for p in ax.patches]
    assert heights == [0, 0, 0, 1, 2, 3, 1, 2, 3]
    assert [t.get_text() for t in ax.texts] == ["0", "0", "0", "1", "2", "3", "1", "2", "3"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["host", "A", "B"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
