"""Names and maps a user gives, checked before use: id maps, state names, image references;
and the tables that say them once (the namespace kinds, /proc/PID/status)."""

from __future__ import annotations

import pytest

from labkit import images, namespaces, proc, state
from labkit import sys as ksys
from labkit.errors import BadInput


def test_an_id_map_is_inside_outside_count_per_line():
    maps = namespaces.parse_id_map("0 100000 65536, 65536 1000 1")
    assert [(m.inside, m.outside, m.count) for m in maps] == [(0, 100000, 65536), (65536, 1000, 1)]
    assert namespaces.parse_id_map(maps) == maps
    for bad in ("0 100000", "0 100000 0", "a b c", "", "0 -1 5"):
        with pytest.raises(BadInput, match="INSIDE OUTSIDE COUNT"):
            namespaces.parse_id_map(bad)


@pytest.mark.parametrize("name", ["demo", "web-1", "a.b_c", "x" * 63])
def test_state_names_that_are_file_names(name):
    assert state.check_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "-x", ".hidden", "x" * 64, "é", 7])
def test_state_names_that_could_climb_out_are_refused(name):
    with pytest.raises(BadInput, match="is not usable"):
        state.check_name(name, "container name")


@pytest.mark.parametrize(
    "ref, full",
    [
        ("busybox", "busybox:latest"),
        ("busybox:1.36", "busybox:1.36"),
        ("library/alpine", "alpine:latest"),
        ("docker.io/library/busybox", "busybox:latest"),
        ("my.registry/a-b/c_d:v1.2", "my.registry/a-b/c_d:v1.2"),
    ],
)
def test_image_references_get_latest_when_untagged(ref, full):
    assert images.full_name(ref) == full


@pytest.mark.parametrize("ref", ["BusyBox", "busybox:", "a//b", "/abs", "x:y:z", "", "a b", None])
def test_malformed_image_references_are_refused(ref):
    with pytest.raises(BadInput, match="is not an image name"):
        images.full_name(ref)


def test_the_namespace_kinds_are_one_table():
    assert list(namespaces.KINDS) == list(ksys.CLONE_FLAGS)
    assert all(namespaces.KINDS[k].flag == flag for k, flag in ksys.CLONE_FLAGS.items())
    assert ksys.CLONE_NAMES[ksys.CLONE_NEWNS] == "CLONE_NEWNS"
    assert ksys.CLONE_NAMES[ksys.CLONE_NEWCGROUP] == "CLONE_NEWCGROUP"
    assert len(set(ksys.CLONE_FLAGS.values())) == 8  # one bit each
    assert namespaces.parse_kinds("pid, uts") == ["uts", "pid"]  # /proc order
    with pytest.raises(BadInput, match="unknown namespace kind 'usr'"):
        namespaces.parse_kinds("usr")


def test_proc_status_fields():
    text = "Name:\tsh\nState:\tS (sleeping)\nPPid:\t41\nUid:\t0\t100000\t0\t0\nNSpid:\t4242\t1\n"
    fields = proc.parse_status(text)
    assert fields["NSpid"].split() == ["4242", "1"] and fields["PPid"] == "41"
    assert fields["Uid"].split()[1] == "100000"
