"""The counter -> file table of labkit.cgroups.base read from cgroup files written as the kernel
writes them (in a scratch directory: the values are given, not measured)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.cgroups import base, sampler

PSI = "some avg10=1.50 avg60=0.00 avg300=0.00 total=777\nfull avg10=0.50 avg60=0 avg300=0 total=5\n"


def write(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_v2_counters_from_one_directory(tmp_path):
    write(
        tmp_path,
        {
            "memory.current": "2097152\n",
            "memory.peak": "4194304\n",
            "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
            "cpu.stat": "usage_usec 1500\nnr_periods 9\nnr_throttled 4\nthrottled_usec 700\n",
            "pids.current": "3\n",
            "pids.events": "max 2\n",
            "cgroup.procs": "10\n11\n",
            "cpu.pressure": PSI,
        },
    )
    s = base.read_stats("v2", lambda c: tmp_path if c == "" else None, tmp_path, frozen=False)
    assert (s.memory_current, s.memory_peak, s.oom_kills) == (2 << 20, 4 << 20, 1)
    assert (s.cpu_usage_us, s.cpu_periods, s.cpu_throttled, s.cpu_throttled_us) == (1500, 9, 4, 700)
    assert (s.pids_current, s.pids_refused) == (3, 2)
    assert s.pressure["cpu"].some_total_us == 777 and s.pressure["cpu"].full_avg10 == 0.5
    assert set(s.pressure) == {"cpu"}  # no memory.pressure, io.pressure here
    (tmp_path / "memory.peak").unlink()  # before 5.19
    (tmp_path / "pids.current").unlink()  # no pids controller: count the processes
    s = base.read_stats("v2", lambda c: tmp_path if c == "" else None, tmp_path, frozen=True)
    assert s.memory_peak is None and s.pids_current == 2 and s.frozen


def test_v1_counters_from_each_hierarchy_in_their_units(tmp_path):
    dirs = {c: tmp_path / c for c in ("memory", "cpu", "cpuacct", "pids")}
    write(
        dirs["memory"],
        {
            "memory.usage_in_bytes": "1048576\n",
            "memory.max_usage_in_bytes": "3145728\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        },
    )
    write(dirs["cpu"], {"cpu.stat": "nr_periods 5\nnr_throttled 1\nthrottled_time 3000000\n"})
    write(dirs["cpuacct"], {"cpuacct.usage": "2500000\n", "cgroup.procs": "7\n"})
    write(dirs["pids"], {"pids.current": "1\n", "pids.events": "max 0\n"})
    s = base.read_stats("v1", dirs.get, dirs["cpuacct"], frozen=False)
    assert (s.memory_current, s.memory_peak, s.oom_kills) == (1 << 20, 3 << 20, 2)
    # cpuacct.usage and throttled_time are nanoseconds on v1: the same µs as v2's.
    cpu = (s.cpu_usage_us, s.cpu_periods, s.cpu_throttled, s.cpu_throttled_us)
    assert cpu == (2500, 5, 1, 3000)
    assert s.pressure == {}  # pure v1: no cgroup2 twin


@pytest.mark.parametrize("mode", ["v1", "hybrid", "v2"])
def test_the_sampler_records_a_subset_of_the_one_table(mode):
    assert sampler.FILES[mode].items() <= base.COUNTER_FILES[mode].items()
    assert list(sampler.FILES[mode]) == [c for g in sampler.GROUPS for c in sampler.COUNTERS[g]]


def test_keyed_files_and_pressure_lines():
    assert base.keyed("a 1\nb 2 3\n\nbare\n") == {"a": "1", "b": "2 3"}
    p = base.Pressure.parse("some avg10=12.50 avg60=0 avg300=0 total=4242\n")
    assert (p.some_avg10, p.some_total_us, p.full_avg10) == (12.5, 4242, None)


def test_v2_plan_writes_its_limit_files_in_their_order_and_formats(tmp_path):
    from labkit.cgroups import v2
    from labkit.cgroups.layout import Hierarchy, Layout
    from labkit.cgroups.units import parse_limits

    backend = v2.Backend("labkit-x", Layout("v2", (Hierarchy((), tmp_path, "/"),)))
    every = parse_limits(
        {0, 1}, memory="64M", swap="0", memory_high="48M", cpus=0.5, weight=300, pids=20, cpuset="1"
    )
    writes = backend.plan(every)
    assert [p.name for p, _v in writes] == list(v2.LIMIT_FILES.values())
    assert all(p.parent == tmp_path / "labkit" / "labkit-x" for p, _v in writes)
    assert dict((p.name, v) for p, v in writes) == {
        "cpu.max": "50000 100000",
        "cpu.weight": "300",
        "pids.max": "20",
        "cpuset.cpus": "1",
        "memory.high": str(48 << 20),
        "memory.swap.max": "0",
        "memory.max": str(64 << 20),
    }
    assert backend.plan(parse_limits({0, 1}, cpus="max")) == [
        (tmp_path / "labkit" / "labkit-x" / "cpu.max", "max 100000")
    ]


def test_limits_read_back_in_the_units_set_takes(tmp_path):
    from labkit.cgroups import v1, v2
    from labkit.cgroups.layout import Hierarchy, Layout

    d = tmp_path / "v2" / "labkit" / "labkit-x"
    write(
        d,
        {
            "memory.max": f"{64 << 20}\n",
            "memory.swap.max": "max\n",
            "cpu.max": "25000 100000\n",
            "cpu.weight": "300\n",
            "pids.max": "max\n",
            "cpuset.cpus": "0-1\n",
        },
    )
    unified = Layout("v2", (Hierarchy((), tmp_path / "v2", "/"),))
    held = v2.Backend("labkit-x", unified).read_limits()
    assert (held.memory, held.swap, held.memory_high, held.cpus) == (64 << 20, "max", None, 0.25)
    assert (held.weight, held.pids, held.cpuset) == (300, "max", "0-1")

    hierarchies = tuple(Hierarchy((c,), tmp_path / "v1" / c, "/") for c in ("memory", "cpu"))
    write(
        tmp_path / "v1" / "memory" / "labkit" / "labkit-x",
        {
            "memory.limit_in_bytes": f"{32 << 20}\n",
            "memory.memsw.limit_in_bytes": f"{48 << 20}\n",
            "memory.soft_limit_in_bytes": "9223372036854771712\n",
        },
    )
    write(
        tmp_path / "v1" / "cpu" / "labkit" / "labkit-x",
        {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n", "cpu.shares": "3072\n"},
    )
    held = v1.Backend("labkit-x", Layout("v1", hierarchies)).read_limits()
    assert (held.memory, held.swap, held.memory_high) == (32 << 20, 16 << 20, "max")
    assert (held.cpus, held.weight, held.pids, held.cpuset) == ("max", 300, None, None)
