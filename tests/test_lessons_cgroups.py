"""The cgroup lessons (10 to 13): their experiments, plots and exercise checks, on the real kernel.

Every check is called with a correct answer (ok), a wrong one (not ok, with a hint) and the blank
(``...``: "replace the ..."), and each comes to its verdict by asking the kernel.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from labkit.cgroups import Cgroup, detect, leftovers
from labkit.lab import cgroups as lab

MiB = 1 << 20


@pytest.fixture(autouse=True)
def own_state(state_dir):
    yield
    assert leftovers() == []


def blank(v) -> None:
    assert not v.ok and "replace the ..." in v.message


# --- 10 ---------------------------------------------------------------------------------------


def test_file_table_comes_from_both_backends():
    rows = {r[0]: r[1:] for r in lab.file_table()}
    assert rows["memory='64M'"] == (
        "memory.limit_in_bytes, memory.memsw.limit_in_bytes",
        "memory.max",
    )
    assert rows["memory='64M', swap='0'"][1] == "memory.swap.max, memory.max"
    assert rows["cpus=0.5"] == ("cpu.cfs_period_us, cpu.cfs_quota_us", "cpu.max")
    assert rows["weight=300"] == ("cpu.shares", "cpu.weight")
    assert rows["oom_kills"] == ("memory.oom_control", "memory.events")
    assert rows["cpu_stall_us"][0] == "cpu.pressure (cgroup2 twin)"
    assert "limit or counter" in lab.format_table(lab.file_table(), ("limit or counter", "a", "b"))


def test_limits_in_words_reads_back_what_the_kernel_holds():
    box = Cgroup.create(f"l{os.getpid()}-words", memory="40M", cpus=0.25, pids=9)
    try:
        assert lab.limits_in_words(box) == "memory 40.0 MiB, cpus 0.25, pids 9"
        box.set(memory="max", cpus="max", pids="max")
        assert lab.limits_in_words(box) == "memory no limit, cpus no limit, pids no limit"
    finally:
        box.remove()


def test_check_own_cgroup():
    # Read /proc/self/cgroup by hand: memory's line on v1 and hybrid, the 0:: line on v2.
    lines = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
    memory = [path for _, controllers, path in lines if "memory" in controllers.split(",")]
    own = memory[0] if memory else next(path for _, controllers, path in lines if not controllers)
    # ...and check with the kernel that this process really is in that cgroup.
    mount = "/sys/fs/cgroup/memory" if memory else "/sys/fs/cgroup"
    procs = Path(mount + own.rstrip("/"), "cgroup.procs").read_text().split()
    assert str(os.getpid()) in procs
    assert lab.own_cgroup_path() == own
    assert lab.check_own_cgroup(own).ok
    wrong = lab.check_own_cgroup("/somewhere/else")
    assert not wrong.ok and "/proc/self/cgroup" in wrong.hint
    blank(lab.check_own_cgroup(...))


def test_check_limit_file():
    right = "memory.max" if detect().mode == "v2" else "memory.limit_in_bytes"
    assert lab.check_limit_file(right).ok
    assert not lab.check_limit_file("memory.soft_limit_in_bytes").ok
    assert not lab.check_limit_file("cpu.max" if right != "memory.max" else "memory.high").ok
    blank(lab.check_limit_file(...))


# --- 11 ---------------------------------------------------------------------------------------


def test_memory_experiment_oom_kills_below_and_spares_above():
    tight = lab.memory_experiment("48M")
    assert tight.oom_killed and tight.oom_kills >= 1 and tight.peak <= 48 * MiB
    assert tight.oom_at is not None and tight.summary().endswith("peak within the limit: yes")
    assert max(tight.series["memory_current"]) > 32 * MiB  # the sampler saw it grow
    roomy = lab.memory_experiment("96M", total_mib=32)
    assert not roomy.oom_killed and roomy.oom_kills == 0 and roomy.oom_at is None
    assert "OOM killed: no" in roomy.summary()


def test_check_survivor_limit():
    assert lab.check_survivor_limit("48M").ok
    too_small = lab.check_survivor_limit("16M")
    assert not too_small.ok and "16 MiB OOM-killed: yes" in too_small.message
    assert not lab.check_survivor_limit("256M").ok
    assert not lab.check_survivor_limit("lots").ok
    blank(lab.check_survivor_limit(...))


def test_swap_words_says_what_this_host_has():
    has_swap = len(Path("/proc/swaps").read_text().splitlines()) > 1
    expected = "this host has swap" if has_swap else "this host has no swap"
    assert lab.swap_words().startswith(expected)


# --- 12 ---------------------------------------------------------------------------------------


@pytest.mark.host_timing  # shares measured over 1 s: not in an emulated kernel
def test_cpu_experiment_holds_workers_to_the_quota():
    run = lab.cpu_experiment(0.3, workers=2, seconds=1.0)
    assert 0.15 < run.share < 0.36 and run.throttled > 0  # loosely: benchmarks/ measures tightly
    assert "held to the quota: yes" in run.summary()


@pytest.mark.host_timing  # shares measured over 1 s: not in an emulated kernel
def test_weights_experiment_gives_the_heavier_group_more():
    run = lab.weights_experiment((100, 300), seconds=1.0)
    assert 0.6 < run.shares[1] < 0.9 and "got more: yes" in run.summary()


def test_check_quarter_cpu():
    assert lab.check_quarter_cpu(0.25).ok
    assert lab.check_quarter_cpu("0.25 CPUs").ok
    wrong = lab.check_quarter_cpu(0.5)
    assert not wrong.ok and "50000" in wrong.message
    assert not lab.check_quarter_cpu("a quarter").ok
    blank(lab.check_quarter_cpu(...))


@pytest.mark.host_timing  # shares measured over 1 s: not in an emulated kernel
def test_check_four_to_one():
    assert lab.check_four_to_one(400).ok
    wrong = lab.check_four_to_one(100)
    assert not wrong.ok and "not about 4" in wrong.message
    assert not lab.check_four_to_one(0).ok
    blank(lab.check_four_to_one(...))


# --- 13 ---------------------------------------------------------------------------------------


def test_pids_experiment_stays_at_the_limit():
    run = lab.pids_experiment(12, seconds=1.0)
    assert run.most == 12 and run.refused > 0
    assert "never above the limit: yes, reached it: yes" in run.summary()
    with pytest.raises(Exception, match="generations"):
        lab.fork_bomb(Cgroup(f"l{os.getpid()}-never"), generations=30)


def test_check_ten_tasks():
    assert lab.check_ten_tasks(10).ok
    wrong = lab.check_ten_tasks(5)
    assert not wrong.ok and "5 tasks" in wrong.message
    assert not lab.check_ten_tasks(-1).ok
    blank(lab.check_ten_tasks(...))


def test_check_frozen():
    spinner = Cgroup.create(f"l{os.getpid()}-spin")
    workers = lab.busy_workers(spinner, 1)
    try:
        running = lab.check_frozen(spinner)
        assert not running.ok and "frozen: no" in running.message
        spinner.freeze()
        assert lab.check_frozen(spinner).ok
        spinner.thaw()
        assert not lab.check_frozen("spinner").ok
        blank(lab.check_frozen(...))
    finally:
        spinner.remove()
        assert [w.wait(timeout=5) for w in workers] == [-9]


# --- plots and the widget panel -----------------------------------------------------------------


def test_plots_draw_the_series_and_the_limit():
    import matplotlib

    matplotlib.use("Agg")
    run = lab.memory_experiment("40M")
    ax = lab.plot_memory(run)
    assert len(ax.lines) == 3  # usage, the limit, the OOM kill
    assert ax.lines[1].get_ydata()[0] == pytest.approx(40)
    pids = lab.pids_experiment(8, seconds=0.5)
    assert lab.plot_pids(pids).lines[1].get_ydata()[0] == 8


def test_panel_runs_the_experiment_at_the_control_value():
    import ipywidgets as widgets

    slider = widgets.IntSlider(value=6)
    panel = lab.experiment_panel(slider, lab.pids_experiment, lab.plot_pids)
    slider.value = 7
    run = panel.run()
    assert run.limit == 7 and run.most == 7


# --- the labkit cgroup command ------------------------------------------------------------------


def test_cgroup_command_creates_runs_freezes_and_removes(capsys):
    from labkit.cli import main

    name = f"l{os.getpid()}-cli"
    assert main(["cgroup", "create", name, "--memory", "32M", "--pids", "5"]) == 0
    assert lab.limits_in_words(Cgroup(name)).startswith("memory 32.0 MiB")
    assert main(["cgroup", "list"]) == 0 and f"labkit-{name}" in capsys.readouterr().out
    assert main(["cgroup", "set", name, "--memory", "64 mega"]) == 2
    assert "not a size" in capsys.readouterr().err
    assert main(["cgroup", "freeze", name]) == 0 and Cgroup(name).stats().frozen
    assert main(["cgroup", "thaw", name]) == 0 and not Cgroup(name).stats().frozen
    assert main(["cgroup", "stats", name]) == 0 and "fork(s) refused" in capsys.readouterr().out
    assert main(["cgroup", "remove", name]) == 0 and not Cgroup(name).exists
    assert main(["cgroup", "stats", name]) == 2
    # run: a new group for one command, its stats on stderr, removed afterwards
    code = main(
        [
            "cgroup",
            "run",
            "--memory",
            "32M",
            "--swap",
            "0",
            name,
            "--",
            sys.executable,
            "-S",
            "-c",
            "x = b'x' * (64 << 20)",
        ]
    )
    assert code == 128 + 9 and "1 OOM kill(s)" in capsys.readouterr().err
    assert not Cgroup(name).exists
