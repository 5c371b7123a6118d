"""labkit.cgroups.units: what a student types, checked and turned into kernel units."""

from __future__ import annotations

import pytest

from labkit.cgroups import units
from labkit.errors import BadInput

MiB = 1 << 20


@pytest.mark.parametrize(
    "given, size",
    [
        ("64M", 64 * MiB),
        ("1.5G", 3 << 29),
        ("2048k", 2 * MiB),
        (" 2 MiB ", 2 * MiB),
        (4 * MiB, 4 * MiB),
        ("max", "max"),
        ("MAX", "max"),
    ],
)
def test_sizes_in_binary_units(given, size):
    assert units.parse_size(given) == size


@pytest.mark.parametrize("bad", ["", "64X", "-1M", "1e6", True, None, "12 M B"])
def test_a_malformed_size_is_one_sentence_naming_the_fix(bad):
    with pytest.raises(BadInput, match=r"is not a size: write a number .*'max' for no limit\."):
        units.parse_size(bad)


def test_a_size_below_one_mib_is_refused_as_too_small():
    with pytest.raises(BadInput, match="too small"):
        units.parse_size("512k")
    assert units.parse_size("512k", minimum=0) == 512 << 10


def test_format_size_reads_back_what_parse_size_took():
    for text in ("64M", "1G", "3M", "512K"):
        assert units.parse_size(
            units.format_size(units.parse_size(text, minimum=0)), minimum=0
        ) == units.parse_size(text, minimum=0)


def test_cpus_become_a_quota_per_period():
    assert units.parse_cpus(0.5, online=2) == 0.5
    assert units.quota_us(0.5) == units.CPU_PERIOD_US // 2
    assert units.parse_cpus("max", online=2) == "max"
    with pytest.raises(BadInput):
        units.parse_cpus(3, online=2)  # more CPUs than the host has
    with pytest.raises(BadInput):
        units.parse_cpus("half", online=2)


def test_weights_map_onto_v1_shares_with_100_as_1024():
    assert units.parse_weight("300") == 300
    assert units.weight_to_shares(100) == 1024 and units.weight_to_shares(1) == 10
    for bad in (0, 10001, "heavy"):
        with pytest.raises(BadInput):
            units.parse_weight(bad)


def test_pids_and_cpu_lists():
    assert units.parse_pids(20) == 20 and units.parse_pids("max") == "max"
    with pytest.raises(BadInput):
        units.parse_pids(0)
    assert units.parse_cpulist("0-2,5\n") == {0, 1, 2, 5}
    assert units.format_cpulist({5, 0, 1, 2}) == "0-2,5"
    assert units.parse_cpuset("1", {0, 1}) == "1"
    with pytest.raises(BadInput):
        units.parse_cpuset("3", {0, 1})  # a CPU this cgroup may not use


def test_parse_limits_checks_all_before_any_is_used():
    limits = units.parse_limits({0, 1}, memory="64M", cpus=0.5, pids=10)
    assert (limits.memory, limits.cpus, limits.pids, limits.swap) == (64 * MiB, 0.5, 10, None)
    with pytest.raises(BadInput):
        units.parse_limits({0, 1}, memory="64M", pids=-3)
