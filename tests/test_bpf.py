"""The eBPF device filter against the real kernel: loaded, attached to a cgroup v2 directory,
obeyed by the processes in it, and freed with the cgroup.

It needs a cgroup2 hierarchy: the whole tree on a v2 host (scripts/test-v2), or the hybrid
layout's /sys/fs/cgroup/unified, where the kernel runs the program before the v1 devices
controller's own check (so the filter is tested on this machine too).
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from labkit import bpf, mountinfo, rootfs
from labkit.cgroups import Cgroup, devices, layout
from labkit.cgroups.base import make_dir, remove_dir
from labkit.container import lifecycle
from labkit.container.spec import Process, Root, Spec
from labkit.errors import MissingFeature

from .conftest import wait_until


@pytest.fixture
def cgroup2(state_dir) -> Path:
    """An empty cgroup v2 directory below this process's own, removed after the test."""
    if layout.detect().mode == "v2":
        group = Cgroup.create("bpftest")
        yield group.dirs[0]
        group.remove()
        return
    mount = next((m for m in mountinfo.mounts() if m.fstype == "cgroup2"), None)
    if mount is None:
        pytest.skip("no cgroup2 hierarchy on this host: the device filter needs one")
    with open("/proc/self/cgroup") as f:
        own = layout.own_cgroups(f.read())[""]
    parent = Path(mount.point) / own.strip("/") / "labkit"
    made_parent = not parent.is_dir()
    if made_parent:
        parent.mkdir()
    d = parent / "labkit-bpftest"
    make_dir(d)
    yield d
    remove_dir(d, deadline=float("inf"))
    if made_parent:
        parent.rmdir()


def in_cgroup(directory: Path, script: str) -> list[str]:
    """Run *script* in a shell that first joins the cgroup; its output lines (errors included)."""
    out = subprocess.run(
        ["sh", "-c", f"echo $$ > {directory}/cgroup.procs && exec 2>&1; {script}; true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.splitlines()


def disk_node(path: Path) -> str:
    """A shell line that makes a node for the host's own disk (the attack only ever reads it)."""
    disk = os.stat("/").st_dev
    return f"mknod {path} b {os.major(disk)} {os.minor(disk)} && echo made"


def test_the_program_passes_the_verifier_and_hangs_on_the_cgroup(cgroup2):
    program = devices.device_program([])
    prog_id = devices.attach_filter(cgroup2, [])
    assert devices.attached_programs(cgroup2) == [prog_id]
    assert bpf.prog_exists(prog_id)
    # The listing a lesson shows: every instruction explained, and runc's last word is "deny".
    text = bpf.listing(program)
    assert len(text.splitlines()) == len(program) and text.splitlines()[-2].endswith(
        "R0 = 0: no rule matched: deny"
    )


def test_only_the_default_devices_can_be_opened(cgroup2, tmp_path):
    # The kernel's log (c 1:11) is no default device; it is only ever opened here, never written.
    # Without the filter this shell opens it: so the refusal below is the filter's.
    kmsg = tmp_path / "kmsg"
    script = (
        f"mknod {kmsg} c 1 11 && echo made; (exec 3< {kmsg}) && echo opened; "
        "head -c 1 /dev/zero > /dev/null && echo zero; echo x > /dev/null && echo null; "
        f"rm {kmsg}"
    )
    assert in_cgroup(cgroup2, script) == ["made", "opened", "zero", "null"]
    devices.attach_filter(cgroup2, [])
    made, refused, *rest = in_cgroup(cgroup2, script)
    assert (made, rest) == ("made", ["zero", "null"]) and refused.endswith(
        "Operation not permitted"
    )


def test_a_node_for_the_hosts_disk_is_made_but_cannot_be_opened(cgroup2, tmp_path):
    devices.attach_filter(cgroup2, [])
    made, refused = in_cgroup(
        cgroup2, f"{disk_node(tmp_path / 'disk')}; head -c 1 {tmp_path / 'disk'}"
    )
    assert made == "made" and refused.endswith("Operation not permitted")


def test_a_rule_of_the_spec_allows_only_the_access_it_names(cgroup2, tmp_path):
    kmsg = tmp_path / "kmsg"  # the kernel's log (c 1:11): opened here, never written to
    subprocess.run(["mknod", str(kmsg), "c", "1", "11"], check=True)
    devices.attach_filter(cgroup2, [devices.rule(True, "c", 1, 11, "r")])
    opened, refused, answer = in_cgroup(
        cgroup2, f"exec 3< {kmsg} && echo read-open; (exec 4> {kmsg}) || echo write-refused"
    )
    assert opened == "read-open" and answer == "write-refused"
    assert refused.endswith("Operation not permitted")


def test_the_program_is_freed_with_its_cgroup(cgroup2):
    prog_id = devices.attach_filter(cgroup2, [])
    assert bpf.prog_exists(prog_id)
    os.rmdir(cgroup2)
    assert wait_until(lambda: not bpf.prog_exists(prog_id))  # the kernel frees it a bit later


def test_a_program_the_verifier_refuses_says_why():
    # No R0 set before exit: the verifier will not let the kernel return garbage.
    with pytest.raises(OSError, match="R0 !read_ok") as e:
        bpf.prog_load(bpf.BPF_PROG_TYPE_CGROUP_DEVICE, [bpf.exit_insn()], "bad", "Apache-2.0")
    assert e.value.errno == errno.EACCES


def test_a_kernel_without_bpf_gets_one_sentence(cgroup2, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(errno.EPERM, "bpf(BPF_PROG_LOAD, labkit_devices): Operation not permitted")

    monkeypatch.setattr(bpf, "prog_load", refused)
    with pytest.raises(MissingFeature, match=r"^cgroup v2 guards devices with an eBPF program, "):
        devices.attach_filter(cgroup2, [])
    assert devices.attached_programs(cgroup2) == []


def test_a_container_on_a_kernel_without_bpf_is_refused_and_nothing_is_left(
    tmp_path, state_dir, monkeypatch
):
    if layout.detect().mode != "v2":
        pytest.skip("only a cgroup v2 host guards a container's devices with eBPF")
    bundle = tmp_path / "b"
    bundle.mkdir()
    spec = Spec(Process(["true"]), root=Root(str(rootfs.build(bundle / "rootfs"))))
    (bundle / "config.json").write_text(spec.to_json())

    def refused(*args, **kwargs):
        raise OSError(errno.EPERM, "bpf(BPF_PROG_LOAD, labkit_devices): Operation not permitted")

    monkeypatch.setattr(bpf, "prog_load", refused)
    with pytest.raises(MissingFeature, match="^cgroup v2 guards devices with an eBPF program"):
        lifecycle.create("nobpf", bundle)
    assert not Cgroup("ctr-nobpf").exists and not (state_dir / "containers" / "nobpf").exists()


def test_a_bad_device_rule_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match="^a device rule's access must be letters of rwm"):
        devices.rule(True, "c", 1, 3, "rwx")
    assert devices.rule(True, "c", -1, 3, "mr") == devices.Rule(True, "c", None, 3, "rm")
