"""labkit.cgroups.sampler against real cgroups: time series of the kernel's counters.

The sampler runs in a thread beside a real workload; these tests check that its timestamps are
monotonic and about as frequent as asked, that the memory series rises under an allocator, that
it is bounded (max_samples, max_seconds) and that it stops cleanly, closing what it opened.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from labkit.cgroups import Cgroup, leftovers
from labkit.cgroups.sampler import Sampler, counter_files
from labkit.errors import BadInput
from tests.test_cgroups_v2_fake import fake_kernel, make_tree  # noqa: F401 (a fixture)

PY = sys.executable
MiB = 1 << 20
# Allocate 2 MiB every 20 ms up to 40 MiB, say so, then hold it.
GROW = (
    "import time\nchunks = []\n"
    "for _ in range(20):\n    chunks.append(b'x' * (2 << 20)); time.sleep(0.02)\n"
    "print('full', flush=True)\ntime.sleep(30)\n"
)


@pytest.fixture
def group(state_dir):
    made: list[Cgroup] = []

    def make(tag: str, **limits) -> Cgroup:
        made.append(Cgroup.create(f"s{os.getpid()}-{tag}", **limits))
        return made[-1]

    yield make
    for cgroup in made:
        cgroup.remove()
    assert leftovers() == []


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_memory_rises_under_an_allocator_and_timestamps_are_monotonic(group):
    cgroup = group("grow", memory="64M", swap="0")
    fds = open_fds()
    with Sampler(cgroup, hz=50, groups=("memory",)) as sampler:
        proc = cgroup.start([PY, "-S", "-c", GROW], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "full\n"
        time.sleep(0.1)
    series = sampler.series
    assert series.ended == "stopped"
    assert not any(t.name == f"sampler-{cgroup.name}" for t in threading.enumerate())
    assert all(b > a for a, b in zip(series.t, series.t[1:]))
    memory = series["memory_current"]
    assert len(memory) == len(series) == len(series["memory_peak"])
    assert max(memory) - memory[0] > 30 * MiB  # the 40 MiB the allocator holds
    assert max(series["memory_peak"]) <= 64 * MiB and series["oom_kills"][-1] == 0
    # Loosely about the asked rate (the machine is shared): at least half the ticks were taken.
    assert len(series) >= 0.5 * series.t[-1] * 50
    cgroup.remove()
    proc.wait(timeout=5)
    proc.stdout.close()
    assert open_fds() == fds  # the sampler closed every file it opened


@pytest.mark.host_timing
def test_sampling_rate_is_close_to_the_asked_one(group):
    cgroup = group("rate")
    sampler = Sampler(cgroup, hz=20, max_seconds=1.0).start()
    sampler.wait(3)
    series = sampler.series
    assert series.ended == "max_seconds"
    gaps = [b - a for a, b in zip(series.t, series.t[1:])]
    assert 18 <= len(series) <= 22, len(series)
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(0.05, abs=0.005)
    assert series.sampler_cpu_s < 0.05  # cheap: well under 5% of one CPU at 20 Hz


def test_cpu_counters_and_rate(group):
    cgroup = group("cpu", cpus=0.5)
    proc = cgroup.start(["/bin/sh", "-c", "while :; do :; done"])
    with Sampler(cgroup, hz=20, groups=("cpu", "pids")) as sampler:
        time.sleep(1.0)
    series = sampler.series
    _mids, cpus = series.rate("cpu_usage_us", 1e6)
    assert series["pids_current"][-1] == 1
    assert series["cpu_usage_us"][-1] > series["cpu_usage_us"][0]
    assert 0.2 < sum(cpus) / len(cpus) < 0.8  # a quota of half a CPU, loosely
    assert series["cpu_throttled"][-1] > 0  # a busy loop over its quota is throttled
    cgroup.remove()
    assert proc.wait(timeout=5) == -9


def test_bounded_by_max_samples_and_ends_when_the_cgroup_goes(group):
    cgroup = group("bounds")
    sampler = Sampler(cgroup, hz=200, max_samples=7).start()
    sampler.wait(3)
    assert sampler.series.ended == "max_samples" and len(sampler.series) == 7
    gone = Sampler(cgroup, hz=50, groups=("pids",)).start()
    time.sleep(0.1)
    cgroup.remove()
    gone.wait(3)
    assert gone.series.ended == "cgroup removed"
    assert len(gone.series["pids_current"]) == len(gone.series) > 0


def test_reads_only_the_files_it_needs_and_refuses_bad_settings(group):
    cgroup = group("files")
    files = counter_files(cgroup, ["memory_current", "cpu_usage_us", "cpu_throttled"])
    assert set(files) == {"memory_current", "cpu_usage_us", "cpu_throttled"}
    assert all(p.is_file() and cgroup.dirname in str(p) for p in files.values())
    only_pids = Sampler(cgroup, groups=("pids",))
    assert set(only_pids.files) == {"pids_current", "pids_refused"}
    for bad, words in [
        ({"hz": 0}, "sampling rate"),
        ({"groups": ("disk",)}, "counter group"),
        ({"max_seconds": -1}, "bound"),
    ]:
        with pytest.raises(BadInput, match=words):
            Sampler(cgroup, **bad)
    sampler = Sampler(cgroup, max_samples=2).start()
    with pytest.raises(BadInput, match="already ran"):
        sampler.start()
    sampler.stop()


@pytest.mark.fake_tree
def test_v2_files_and_formats_against_a_fake_tree(tmp_path, fake_kernel):
    """FAKE tree (see test_cgroups_v2_fake.py): which v2 file each counter is read from and how
    it is parsed. Whether a v2 kernel agrees is for the lessons run by scripts/test-v2."""
    box = Cgroup.create("demo", layout=make_tree(tmp_path / "FAKE-cgroup2"))
    d = box.dirs[0]
    (d / "memory.current").write_text("1048576\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n")
    (d / "cpu.stat").write_text(
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
        "nr_periods 9\nnr_throttled 4\nthrottled_usec 700\n"
    )
    (d / "pids.events").write_text("max 5\n")
    (d / "memory.pressure").write_text(
        "some avg10=1.00 avg60=0.00 avg300=0.00 total=4242\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n"
    )
    sampler = Sampler(box, max_samples=2).start()
    sampler.wait(3)
    last = {name: values[-1] for name, values in sampler.series.values.items()}
    assert {p.name for p in sampler.files.values()} == {
        "memory.current",
        "memory.peak",
        "memory.events",
        "cpu.stat",
        "pids.current",
        "pids.events",
        "cpu.pressure",
        "memory.pressure",
    }
    assert last == {
        "memory_current": 1 << 20,
        "memory_peak": 0,
        "oom_kills": 2,
        "cpu_usage_us": 1500,
        "cpu_throttled": 4,
        "cpu_throttled_us": 700,
        "pids_current": 0,
        "pids_refused": 5,
        "cpu_stall_us": 0,
        "memory_stall_us": 4242,
    }
