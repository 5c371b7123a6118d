"""labkit.mountinfo against the kernel's own mount table, and its escapes."""

from __future__ import annotations

from labkit import mountinfo
from labkit import sys as ksys


def test_escapes_are_undone_and_utf8_is_kept():
    assert mountinfo.unescape(r"/mnt/café\040x") == "/mnt/café x"
    assert mountinfo.unescape(r"a\134b\011c\012d") == "a\\b\tc\nd"
    assert mountinfo.unescape("/plain/ümlaut") == "/plain/ümlaut"


def test_a_real_mount_with_spaces_tabs_and_utf8_reads_back_exactly(tmp_path):
    point = tmp_path / "café x\ty\\z"
    point.mkdir()
    ksys.mount("labkit-test", str(point), "tmpfs")
    try:
        raw = open("/proc/self/mountinfo", encoding="utf-8").read()
        assert "\\040" in raw and "\\011" in raw and "\\134" in raw  # the kernel escaped them
        found = [m for m in mountinfo.mounts() if m.point == str(point)]
        assert len(found) == 1 and found[0].fstype == "tmpfs" and found[0].source == "labkit-test"
        assert mountinfo.is_mount_point(point)
        assert mountinfo.below(tmp_path) == [str(point)]
    finally:
        ksys.umount2(str(point))
    assert not mountinfo.is_mount_point(point)
