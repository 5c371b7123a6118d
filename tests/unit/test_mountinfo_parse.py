"""labkit.mountinfo's parser on mountinfo text written as the kernel writes it."""

from __future__ import annotations

from labkit import mountinfo

# Lines as proc(5) documents them: id, parent, major:minor, root, point, options, optional
# fields, "-", fstype, source, super options. The third one has an escaped space and tab.
TEXT = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
    "35 22 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid master:5 - cgroup cgroup "
    "rw,cpu,cpuacct\n"
    "40 22 0:45 /sub /mnt/caf\xe9\\040x\\011y ro shared:7 master:3 - tmpfs lab\\134one "
    "rw,size=64k\n"
    "41 22 0:46 / /mnt/private rw - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w\n"
)


def test_each_field_lands_where_proc5_says():
    root, cgroup, tmp, overlay = mountinfo.parse(TEXT)
    assert (root.mount_id, root.parent_id, root.point, root.fstype) == (22, 1, "/", "ext4")
    assert root.source == "/dev/sda1" and root.options == ("rw", "relatime")
    assert cgroup.super_options == ("rw", "cpu", "cpuacct")
    assert (tmp.root, tmp.point, tmp.source) == ("/sub", "/mnt/café x\ty", "lab\\one")
    assert tmp.read_only and not root.read_only
    assert overlay.super_option("upperdir") == "/u" and overlay.super_option("rw") == ""
    assert overlay.super_option("index") is None


def test_propagation_comes_from_the_optional_fields():
    kinds = [m.propagation for m in mountinfo.parse(TEXT)]
    assert kinds == ["shared", "slave", "shared and slave", "private"]


def test_unescape_keeps_what_is_not_an_octal_escape():
    assert mountinfo.unescape(r"/a\040b\134\012") == "/a b\\\n"
    assert mountinfo.unescape(r"/no\9escape\04") == r"/no\9escape\04"
