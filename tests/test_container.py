"""The container runtime against the real kernel: the steps, the life cycle, clean-up.

Each container here is made from a busybox bundle with labkit's own defaults (Docker's 14
capabilities, runc's mounts, masked and read-only paths) and its stdout in a file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from labkit import cleanup, rootfs
from labkit.cgroups import Cgroup
from labkit.cgroups import devices as cgroup_devices
from labkit.container import capabilities, lifecycle, spec, steps
from labkit.errors import BadInput

from .conftest import dead, wait_until

RUNTIME = [sys.executable, "-m", "labkit.container.cli"]


@pytest.fixture(scope="module")
def rootfs_dir(tmp_path_factory) -> Path:
    return rootfs.build(tmp_path_factory.mktemp("container") / "rootfs")


def make_bundle(path: Path, rootfs_dir: Path, args: list[str], **changes) -> Path:
    """A bundle at *path*: labkit's default spec running *args* in *rootfs_dir*."""
    path.mkdir(parents=True, exist_ok=True)
    s = spec.Spec(spec.Process(args), root=spec.Root(str(rootfs_dir)), hostname="box")
    config = s.to_dict()
    for key, value in changes.items():
        config[key] = value
    (path / "config.json").write_text(json.dumps(config))
    return path


def run_to_end(container_id: str, bundle: Path, out: Path, **options) -> str:
    """create, start, wait until it has stopped, delete; the container's stdout."""
    with open(out, "w") as f:
        c = lifecycle.create(container_id, bundle, stdout=f, stderr=subprocess.STDOUT, **options)
    lifecycle.start(container_id)
    assert wait_until(lambda: c.status == "stopped", 30), "the container did not finish"
    lifecycle.delete(container_id)
    return out.read_text()


def test_the_steps_are_listed_in_runcs_order():
    names = [step.name for step in steps.STEPS]
    order = [
        "join_cgroup",
        "unshare_user",
        "unshare_namespaces",
        "fork_pid1",
        "make_root_private",
        "bind_rootfs",
        "mount_filesystems",
        "create_devices",
        "pivot_root",
        "mask_paths",
        "set_hostname",
        "set_no_new_privs",
        "drop_bounding_set",
        "set_capabilities",
        "switch_user",
        "load_seccomp",
        "wait_for_start",
        "exec_process",
    ]
    positions = {n: len(names) - 1 - names[::-1].index(n) for n in order}  # the last place
    assert positions["join_cgroup"] < positions["unshare_user"] < positions["unshare_namespaces"]
    assert positions["fork_pid1"] < positions["make_root_private"] < positions["bind_rootfs"]
    assert positions["mount_filesystems"] < positions["create_devices"] < positions["pivot_root"]
    assert positions["pivot_root"] < positions["mask_paths"]
    assert positions["drop_bounding_set"] < positions["switch_user"] < positions["set_capabilities"]
    assert names[-3:] == ["load_seccomp", "wait_for_start", "exec_process"]
    table = steps.describe().splitlines()
    assert len(table) == len(names) and "parent join_cgroup" in table[0]


def test_a_container_is_isolated_as_the_spec_says(tmp_path, rootfs_dir, state_dir):
    probe = (
        "hostname; id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; "
        "echo $(ls /sys/class/net); echo $(ls /dev); "
        "grep -E ':pids:|^0::' /proc/self/cgroup | head -1; "
        "echo pid $$; "
        "wc -c < /proc/keys; ls /proc/acpi | wc -l; "
        "echo 1 > /proc/sys/vm/overcommit_memory || echo sysctl refused; "
        "mount -t tmpfs none /tmp || echo mount refused; grep Seccomp: /proc/self/status; "
        "unshare -n true || echo unshare refused"
    )
    bundle = make_bundle(tmp_path / "b", rootfs_dir, ["sh", "-c", probe])
    out = run_to_end("iso", bundle, tmp_path / "out").splitlines()
    assert out[0:2] == ["box", "0"]
    eff = int(out[2].split()[1], 16)
    assert sorted(capabilities.names(eff)) == sorted(capabilities.DOCKER_DEFAULT)
    assert out[3] == out[2].replace("CapEff", "CapBnd")
    assert out[4] == "NoNewPrivs:\t0"
    assert out[5] == "lo"  # a new network namespace holds only its loopback
    devices = set(out[6].split())
    assert (
        {
            "null",
            "zero",
            "full",
            "random",
            "urandom",
            "tty",
            "pts",
            "shm",
            "mqueue",
            "ptmx",
            "fd",
            "stdin",
        }
        <= devices
        and "sda" not in devices
        and "vda" not in devices
    )
    assert out[7].endswith("/labkit/labkit-ctr-iso")  # joined its cgroup before anything else
    assert out[8] == "pid 1"
    assert out[9:11] == ["0", "0"]  # /proc/keys masked by /dev/null, /proc/acpi by a tmpfs
    assert "sysctl refused" in out and "mount refused" in out
    assert "Seccomp:\t2" in out and "unshare refused" in out  # the default seccomp profile


def test_a_step_left_out_shows_what_it_protected(tmp_path, rootfs_dir, state_dir):
    probe = "grep NoNewPrivs /proc/self/status; hostname; grep CapEff /proc/self/status"
    bundle = make_bundle(
        tmp_path / "b",
        rootfs_dir,
        ["sh", "-c", probe],
        process={
            "args": ["sh", "-c", probe],
            "env": [spec.DEFAULT_PATH],
            "cwd": "/",
            "noNewPrivileges": True,
            "capabilities": {
                "bounding": ["CAP_KILL"],
                "effective": ["CAP_KILL"],
                "permitted": ["CAP_KILL"],
            },
        },
    )
    full = run_to_end("full", bundle, tmp_path / "full").splitlines()
    assert full[0] == "NoNewPrivs:\t1" and full[1] == "box"
    part = run_to_end(
        "part",
        bundle,
        tmp_path / "part",
        skip=["set_no_new_privs", "set_hostname", "drop_bounding_set", "set_capabilities"],
    ).splitlines()
    assert part[0] == "NoNewPrivs:\t0"
    assert part[1] == os.uname().nodename  # a new UTS namespace starts as a copy of the host's
    # For root, exec recomputes the sets from the bounding set: without it (and the capset)
    # the container's root keeps the host root's CAP_SYS_ADMIN, and may mount anything.
    assert "CAP_SYS_ADMIN" in capabilities.names(int(part[2].split()[1], 16))
    with pytest.raises(BadInput, match="no set-up step 'pivot'"):
        lifecycle.create("x", bundle, skip=["pivot"])
    with pytest.raises(BadInput, match="cannot be left out"):
        lifecycle.create("x", bundle, skip=["exec_process"])


def test_a_failure_in_the_init_names_its_step_and_nothing_is_left(tmp_path, rootfs_dir, state_dir):
    bundle = make_bundle(tmp_path / "b", rootfs_dir, ["no-such-program"])
    with pytest.raises(lifecycle.ContainerError) as caught:
        lifecycle.create("f1", bundle)
    assert caught.value.step == "find_executable"
    assert 'exec: "no-such-program": executable file not found in $PATH' in str(caught.value)
    # An error that is not the kernel's (a ValueError from Python) is named by its step too.
    bundle = make_bundle(
        tmp_path / "c",
        rootfs_dir,
        ["true"],
        process={"args": ["true"], "cwd": "/tmp\u0000x", "env": [spec.DEFAULT_PATH]},
    )
    with pytest.raises(lifecycle.ContainerError) as caught:
        lifecycle.create("f2", bundle)
    assert caught.value.step == "change_directory" and "ValueError" in str(caught.value)
    mounts = spec.Spec(spec.Process(["true"])).to_dict()["mounts"]
    mounts.append({"destination": "/mnt", "type": "nosuchfs", "source": "none"})
    bundle = make_bundle(tmp_path / "d", rootfs_dir, ["true"], mounts=mounts)
    with pytest.raises(lifecycle.ContainerError) as caught:
        lifecycle.create("f3", bundle)
    assert caught.value.step == "mount_filesystems" and "No such device" in str(caught.value)
    assert not Cgroup("ctr-f1").exists and not (state_dir / "containers").exists()


def test_the_life_cycle_follows_ocis_states(tmp_path, rootfs_dir, state_dir):
    bundle = make_bundle(
        tmp_path / "b", rootfs_dir, ["sleep", "60"], annotations={"org.example": "yes"}
    )
    c = lifecycle.create("life", bundle, pid_file=tmp_path / "pid")
    state = c.state()
    assert state["status"] == "created" and state["id"] == "life"
    assert state["pid"] == int((tmp_path / "pid").read_text()) > 1
    assert state["bundle"] == str(bundle) and state["annotations"] == {"org.example": "yes"}
    # Created: set up but waiting; its command is not yet running.
    assert b"sleep" not in Path(f"/proc/{c.pid}/cmdline").read_bytes()
    assert Cgroup("ctr-life").pids() == [c.pid]
    # In each hierarchy labkit uses, the init is in the container's cgroup: born in the cgroup2
    # one (clone3 into it), moved by itself into each v1 one.
    lines = Path(f"/proc/{c.pid}/cgroup").read_text().splitlines()
    placed = {line.split(":")[1] for line in lines if line.endswith("/labkit-ctr-life")}
    used = {",".join(h.controllers) for h in Cgroup("ctr-life").layout.hierarchies}
    assert placed == used | ({"devices"} if cgroup_devices.hierarchy() else set()), lines
    lifecycle.start("life")
    assert lifecycle.get("life").status == "running"
    assert wait_until(lambda: b"sleep" in Path(f"/proc/{c.pid}/cmdline").read_bytes())
    with pytest.raises(lifecycle.ContainerError, match="already running"):
        lifecycle.start("life")
    with pytest.raises(lifecycle.ContainerError, match="not stopped: running"):
        lifecycle.delete("life")
    lifecycle.kill("life", "KILL", all_processes=True)
    assert wait_until(lambda: lifecycle.get("life").status == "stopped")
    assert lifecycle.get("life").state()["pid"] == 0
    with pytest.raises(lifecycle.ContainerError, match="container not running"):
        lifecycle.kill("life", 9)
    lifecycle.delete("life")
    assert not Cgroup("ctr-life").exists
    with pytest.raises(lifecycle.NotFound, match="container does not exist"):
        lifecycle.get("life")


# Twenty Python inits at once take minutes in scripts/test-v2's emulated kernel (and can pass
# the set-up bound there when the host is busy): the load test is the host's.
@pytest.mark.host_timing
def test_twenty_containers_at_once_leave_nothing(tmp_path, rootfs_dir, state_dir):
    bundle = make_bundle(tmp_path / "b", rootfs_dir, ["sleep", "60"])
    ids = [f"many{i}" for i in range(20)]

    def up(cid: str) -> lifecycle.Container:
        c = lifecycle.create(cid, bundle)
        lifecycle.start(cid)
        return c

    # Created and started four at a time, from threads, as an engine would: the set-up of one
    # must not disturb another's (their inits share the status pipes' framing, cgroup parents).
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(up, cid) for cid in ids]
    try:
        made = [f.result() for f in futures]
        assert [c.status for c in lifecycle.list_containers()] == ["running"] * 20
        assert len({c.pid for c in made}) == 20
        assert all(Cgroup(f"ctr-{c.id}").pids() == [c.pid] for c in made)
    finally:
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(lambda c: lifecycle.delete(c.id, force=True), lifecycle.list_containers())
            )
    assert all(dead(f.result().pid) for f in futures)
    assert not any(Cgroup(f"ctr-{cid}").exists for cid in ids)
    assert cleanup.leftovers() == []


def test_a_container_outlives_its_creator_and_cleanup_removes_it(tmp_path, rootfs_dir, state_dir):
    bundle = make_bundle(tmp_path / "b", rootfs_dir, ["sleep", "60"])
    code = (
        "import sys, time; from labkit.container import lifecycle; "
        f"lifecycle.create('orphan', {str(bundle)!r}); print('made', flush=True); "
        "time.sleep(60)"
    )
    creator = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    try:
        assert creator.stdout.readline().strip() == "made"
    finally:
        creator.kill()  # kill -9 of the process that created the container
        creator.wait()
    c = lifecycle.get("orphan")
    assert c.status == "created"  # no parent-death signal: still there, found from its state
    lifecycle.start("orphan")
    assert c.status == "running"
    found = cleanup.leftovers()
    assert any(line.startswith("container: orphan (running") for line in found), found
    cleanup.cleanup()
    assert wait_until(lambda: dead(c.pid))
    assert not Cgroup("ctr-orphan").exists and cleanup.leftovers() == []


def test_labkit_runtime_run_exits_as_the_container_did(tmp_path, rootfs_dir, state_dir):
    bundle = make_bundle(tmp_path / "b", rootfs_dir, ["sh", "-c", "echo hello; exit 7"])
    out = subprocess.run(
        [*RUNTIME, "run", "--bundle", str(bundle), "r1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out.returncode, out.stdout, out.stderr) == (7, "hello\n", "")
    bundle = make_bundle(tmp_path / "c", rootfs_dir, ["no-such-program"])
    out = subprocess.run(
        [*RUNTIME, "run", "--bundle", str(bundle), "r2"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1
    assert "at step find_executable" in out.stderr
    assert lifecycle.list_containers() == []


def test_signals_by_name_and_number():
    assert lifecycle.parse_signal("KILL") == lifecycle.parse_signal("SIGKILL") == 9
    assert lifecycle.parse_signal("15") == signal.SIGTERM
    with pytest.raises(BadInput, match="is not a signal"):
        lifecycle.parse_signal("BOOM")


def test_a_root_from_the_image_store_is_an_overlay_removed_with_the_container(
    tmp_path, monkeypatch
):
    from labkit import images, overlay

    # The store on a tmpfs (/run): overlayfs takes it as upper and lower everywhere, also in
    # scripts/test-v2's guest, whose /tmp is itself an overlay.
    store = Path(tempfile.mkdtemp(prefix="labkit-test-image-root-", dir="/run"))
    monkeypatch.setenv("LABKIT_STATE_DIR", str(store / "state"))
    try:
        images.busybox_image("busybox:latest")
        bundle = make_bundle(
            tmp_path / "b", tmp_path / "unused", ["sh", "-c", "echo hi > /new; ls /"]
        )
        out = run_to_end("img", bundle, tmp_path / "out", image="busybox:latest")
        assert "new" in out.split() and "bin" in out.split()
        ours = [o.merged for o in overlay.live_overlays() if str(store) in str(o.merged)]
        assert ours == []  # unmounted by delete
        assert not (images.roots_dir() / "ctr-img").exists()
        images.remove("busybox:latest")
    finally:
        cleanup.cleanup()
        shutil.rmtree(store)


def test_an_image_not_in_the_store_is_one_sentence_and_nothing_is_made(tmp_path, state_dir):
    bundle = make_bundle(tmp_path / "b", tmp_path / "unused", ["true"])
    with pytest.raises(BadInput) as caught:
        lifecycle.create("noimg", bundle, image="nosuch:latest")
    assert "nosuch" in str(caught.value) and "\n" not in str(caught.value)
    assert not Cgroup("ctr-noimg").exists and not (state_dir / "containers").exists()


def test_a_user_namespace_maps_root_and_limits_reach_the_cgroup(tmp_path, state_dir):
    # The namespace's root is uid 100000 outside: the rootfs must be reachable by that uid, and
    # pytest's tmp_path (0700) is not.
    public = Path(tempfile.mkdtemp(prefix="labkit-test-userns-"))
    try:
        os.chmod(public, 0o755)
        run_in_user_namespace(tmp_path, rootfs.build(public / "rootfs"))
    finally:
        shutil.rmtree(public)


def run_in_user_namespace(tmp_path: Path, rootfs_dir: Path) -> None:
    probe = (
        "id -u; cat /proc/self/uid_map; grep CapEff /proc/self/status; "
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max"
    )
    s = spec.Spec(spec.Process(["sh", "-c", probe]), root=spec.Root(str(rootfs_dir)))
    s.linux.namespaces.append(spec.Namespace("user"))
    s.linux.uid_mappings = s.linux.gid_mappings = [spec.IdMapping(0, 100000, 65536)]
    s.linux.resources = spec.Resources(memory=spec.Memory(limit=64 << 20), pids=spec.Pids(20))
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text(s.to_json())
    with open(tmp_path / "out", "w") as f:
        c = lifecycle.create("userns", bundle, stdout=f, stderr=subprocess.STDOUT)
    # Root inside is uid 100000 outside: the host sees an unprivileged process.
    assert os.stat(f"/proc/{c.pid}").st_uid == 100000
    limits = Cgroup("ctr-userns").limits()
    assert limits["pids.max"] == "20"
    assert int(limits.get("memory.limit_in_bytes", limits.get("memory.max"))) == 64 << 20
    lifecycle.start("userns")
    assert wait_until(lambda: c.status == "stopped", 30)
    lifecycle.delete("userns")
    out = (tmp_path / "out").read_text().split("\n")
    assert out[0] == "0" and out[1].split() == ["0", "100000", "65536"]
    assert int(out[2].split()[1], 16) == capabilities.mask(capabilities.DOCKER_DEFAULT)
    if Path("/sys/fs/cgroup/memory").is_dir():  # v1 and hybrid hosts; v2 has one directory
        assert out[3:5] == [str(64 << 20), "20"]


def test_mount_points_behind_symlinks_stay_inside_the_root(tmp_path, state_dir):
    # A hostile image makes its mount points symlinks that climb out: /proc -> ../../../../OUT.
    outside = tmp_path / "outside"
    tree = rootfs.build(tmp_path / "rootfs")
    (tree / "proc").rmdir()
    (tree / "proc").symlink_to("../../../../../../../../.." + str(outside))
    (tree / "mnt").symlink_to(str(outside) + "-mnt")
    mounts = spec.Spec(spec.Process(["true"])).to_dict()["mounts"]
    mounts.append({"destination": "/mnt/x", "type": "tmpfs", "source": "tmpfs"})
    bundle = make_bundle(
        tmp_path / "b", tree, ["sh", "-c", "cat /proc/self/stat > /dev/null; ls /"], mounts=mounts
    )
    out = run_to_end("links", bundle, tmp_path / "out")
    # Nothing was made on the host's side of the links: they were resolved inside the root.
    assert not outside.exists() and not Path(f"{outside}-mnt").exists()
    assert (tree / f"{outside}-mnt".lstrip("/") / "x").is_dir()
    assert "No such file" not in out


def test_a_spec_made_in_python_is_checked_like_a_config_json(tmp_path, rootfs_dir, state_dir):
    s = spec.Spec(spec.Process(["true"]), root=spec.Root(str(rootfs_dir)))
    s.process.capabilities.effective.append("CAP_WIZARD")
    with pytest.raises(spec.SpecError, match=r"^process.capabilities.effective\[14\] 'CAP_WIZARD'"):
        lifecycle.create("py", tmp_path, spec=s)
    s = spec.Spec(spec.Process(["true"]), root=spec.Root(str(tmp_path / "none")))
    with pytest.raises(spec.SpecError, match="^root.path .* is not a directory"):
        lifecycle.create("py", tmp_path, spec=s)
    assert not (state_dir / "containers").exists()


def test_sysctls_user_and_cwd_are_the_containers_own(tmp_path, rootfs_dir, state_dir):
    probe = (
        "cat /proc/sys/net/ipv4/ip_forward; id -u; id -g; id -G; pwd; "
        "grep -E '^(CapEff|CapPrm)' /proc/self/status"
    )
    s = spec.Spec(spec.Process(["sh", "-c", probe]), root=spec.Root(str(rootfs_dir)))
    s.linux.sysctl = {"net.ipv4.ip_forward": "1"}
    s.process.user = spec.User(uid=65534, gid=65534, additional_gids=[100])
    s.process.cwd = "/tmp"
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text(s.to_json())
    host_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    out = run_to_end("who", bundle, tmp_path / "out").splitlines()
    assert out[0] == "1" and Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_forward
    assert out[1:5] == ["65534", "65534", "65534 100", "/tmp"]
    # For a user other than root, exec keeps only ambient capabilities (none were asked for):
    # the 14 of Docker's default are gone from both sets.
    assert out[5] == "CapPrm:\t0000000000000000" and out[6] == "CapEff:\t0000000000000000"
