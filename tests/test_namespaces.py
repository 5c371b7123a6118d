"""Each kind of namespace, shown to isolate on the real kernel; setns, persistence, bad input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from labkit import namespaces as ns
from labkit import sys as ksys
from labkit.errors import BadInput, NotRoot

from .conftest import process_state, run_as_nobody, wait_until


def sh(script: str, kinds, **options) -> ns.Result:
    return ns.run(["/bin/sh", "-c", script], kinds, **options).check()


def ns_members(kind: str, inode: int) -> list[int]:
    """Host PIDs of the processes whose *kind* namespace is *inode*."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/{kind}").st_ino == inode:
                    found.append(int(entry))
            except OSError:
                pass
    return found


# --- the kinds ----------------------------------------------------------------------------------


def test_kinds_are_the_kernels():
    assert list(ns.KINDS) == ["mnt", "uts", "ipc", "pid", "net", "user", "cgroup", "time"]
    assert sorted(ns.KINDS) == sorted(
        k for k in os.listdir("/proc/self/ns") if not k.endswith("_for_children")
    )


def test_ns_ids_match_proc_links():
    ids = ns.ns_ids(os.getpid())
    assert ids["uts"] == os.stat("/proc/self/ns/uts").st_ino
    parent = os.getppid()
    assert ns.shared(os.getpid(), parent)["uts"] == (
        ids["uts"] == os.stat(f"/proc/{parent}/ns/uts").st_ino
    )


def test_new_namespaces_differ_only_in_the_kinds_asked_for():
    with ns.spawn(["sleep", "30"], ["uts", "ipc"]) as proc:
        same = ns.shared(os.getpid(), proc.pid)
    assert same == {k: k not in ("uts", "ipc") for k in ns.KINDS}


# --- isolation, one kind at a time --------------------------------------------------------------


def test_uts_hostname_changes_inside_only():
    before = socket.gethostname()
    result = sh("hostname", ["uts"], hostname="lab-uts-test")
    assert result.stdout.strip() == "lab-uts-test"
    assert socket.gethostname() == before != "lab-uts-test"


def test_pid_namespace_makes_the_command_pid_1_with_its_own_proc():
    result = sh("echo $$; ls /proc | grep -c '^[0-9]'", ["mnt", "pid"])
    first, count = result.stdout.split()
    assert first == "1"
    # Only the shell and ls (and grep) are in the new namespace; the host has many more.
    assert int(count) <= 3 < len([p for p in os.listdir("/proc") if p.isdigit()])


def test_host_sees_the_container_pid_1_under_another_number():
    with ns.spawn(["sleep", "30"], ["mnt", "pid"]) as proc:
        nspid = Path(f"/proc/{proc.pid}/status").read_text().split("NSpid:")[1].split("\n")[0]
        assert nspid.split() == [str(proc.pid), "1"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_caller_sees_the_signal_that_ended_the_command(sig):
    # A new time namespace also puts a relay between us and the command (it applies to
    # children), without making sleep a PID 1, to which the kernel would not deliver SIGTERM.
    proc = ns.spawn(["sleep", "30"], ["uts", "time"], stderr=subprocess.PIPE)
    with proc:
        proc.signal(sig)
        assert proc.wait(5) == -sig
        assert proc.stderr.read() == ""  # the relay exited quietly, the way its child did


def test_killing_pid_1_ends_every_process_in_the_namespace():
    with ns.spawn(["/bin/sh", "-c", "sleep 60 & sleep 60 & wait"], ["mnt", "pid"]) as proc:
        inode = os.stat(f"/proc/{proc.pid}/ns/pid").st_ino
        assert wait_until(lambda: len(ns_members("pid", inode)) == 3)
    assert wait_until(lambda: ns_members("pid", inode) == [])


def zombies_in(pid_ns_inode: int) -> list[int]:
    return [p for p in ns_members("pid", pid_ns_inode) if process_state(p) == "Z"]


@pytest.mark.parametrize("init", [False, True])
def test_orphans_become_zombies_unless_pid_1_reaps_them(init):
    # The inner shell exits at once, orphaning "sleep 0.1", which is re-parented to PID 1. PID 1
    # then becomes "sleep 30", which never calls wait(): the orphan stays a zombie, unless
    # labkit's small init is PID 1 and reaps it.
    script = "sh -c 'sleep 0.1 &'; exec sleep 30"
    with ns.spawn(["/bin/sh", "-c", script], ["mnt", "pid"], init=init) as proc:
        inode = os.stat(f"/proc/{proc.pid}/ns/pid").st_ino

        def orphan_done() -> bool:
            # The shells are done (PID 1's shell has become "sleep 30") and the orphan has
            # exited: only "sleep 30" (under labkit's init, with init=True) is left running.
            alive = [p for p in ns_members("pid", inode) if process_state(p) not in ("Z", "gone")]
            comms = []
            for pid in alive:
                try:
                    comms.append(Path(f"/proc/{pid}/comm").read_text().strip())
                except FileNotFoundError:
                    return False  # one exited meanwhile: look again
            return len(alive) == (2 if init else 1) and "sh" not in comms

        assert wait_until(orphan_done, 30)
        time.sleep(0.2)  # time for a reaping init to reap
        assert bool(zombies_in(inode)) == (not init)


def test_ipc_objects_are_invisible_outside():
    result = sh("ipcmk -Q >/dev/null && ipcs -q | grep -c '^0x'", ["ipc"])
    assert result.stdout.strip() == "1"
    inside_only = sh("ipcs -q | grep -c '^0x' || true", ["ipc"])
    assert inside_only.stdout.strip() == "0"  # a second new namespace starts empty too


def test_mounts_in_a_new_mount_namespace_do_not_reach_the_host(tmp_path):
    target = tmp_path / "inside"
    target.mkdir()
    result = sh(
        f"mount -t tmpfs labkit-test {target} && grep -c ' {target} ' /proc/self/mountinfo", ["mnt"]
    )
    assert result.stdout.strip() == "1"
    assert str(target) not in Path("/proc/self/mountinfo").read_text()


def test_unchanged_propagation_leaks_a_mount_to_a_shared_host_mount(state_dir):
    shared_dir = state_dir / "shared"
    shared_dir.mkdir(parents=True)
    ksys.mount(str(shared_dir), str(shared_dir), None, ksys.MS_BIND)
    ksys.mount(None, str(shared_dir), None, ksys.MS_SHARED)
    target = shared_dir / "leak"
    target.mkdir()
    try:
        sh(f"mount -t tmpfs labkit-test {target}", ["mnt"], propagation="private")
        assert not os.path.ismount(target)
        sh(f"mount -t tmpfs labkit-test {target}", ["mnt"], propagation="unchanged")
        assert os.path.ismount(target)  # the mount made inside appeared on the host
    finally:
        if os.path.ismount(target):
            ksys.umount2(str(target), ksys.MNT_DETACH)
        ksys.umount2(str(shared_dir), ksys.MNT_DETACH)


def test_net_namespace_has_only_loopback():
    result = sh("ip -o link show | cut -d: -f2", ["net"])
    assert result.stdout.split() == ["lo"]
    inside = sh("readlink /proc/self/ns/net", ["net"]).stdout.strip()
    assert inside.startswith("net:[") and inside != os.readlink("/proc/self/ns/net")


def test_user_namespace_root_inside_is_unprivileged_outside():
    with ns.spawn(["sleep", "30"], ["user"]) as proc:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uids = status.split("Uid:")[1].split("\n")[0].split()
        assert uids == ["100000"] * 4
        assert ns.read_id_map(proc.pid) == [ns.IdMap(0, 100000, 65536)]
    assert sh("id -u", ["user"]).stdout.strip() == "0"


def test_user_namespace_custom_map():
    result = sh("id -u; cat /proc/self/uid_map", ["user"], uid_map="0 200000 10")
    lines = result.stdout.split("\n")
    assert lines[0] == "0" and lines[1].split() == ["0", "200000", "10"]


def test_cgroup_namespace_roots_the_view_at_the_own_cgroup():
    result = sh("cat /proc/self/cgroup", ["cgroup"])
    paths = {line.split(":", 2)[2] for line in result.stdout.split()}
    assert paths == {"/"}


def test_time_namespace_offsets_boottime():
    host_uptime = float(Path("/proc/uptime").read_text().split()[0])
    result = sh("cat /proc/uptime", ["time"], time_offsets={"boottime": 86400})
    inside = float(result.stdout.split()[0])
    assert 86400 - 5 < inside - host_uptime < 86400 + 5


# --- entering and keeping namespaces ------------------------------------------------------------


def test_enter_joins_the_namespaces_of_a_running_process():
    with ns.spawn(["sleep", "30"], ["uts", "net", "pid", "mnt"], hostname="target") as target:
        with ns.enter(target.pid, ["sleep", "30"]) as joined:
            assert ns.ns_ids(joined.pid) == ns.ns_ids(target.pid)
        result = ns.enter(target.pid, ["hostname"], stdout=subprocess.PIPE)
        out, _ = result.communicate(timeout=10)
        assert out.strip() == "target"


def test_enter_only_the_kinds_asked_for():
    with ns.spawn(["sleep", "30"], ["uts", "ipc"], hostname="target") as target:
        with ns.enter(target.pid, ["sleep", "30"], ["uts"]) as joined:
            same = ns.shared(target.pid, joined.pid)
            assert same["uts"] and not same["ipc"]


def test_persist_keeps_a_namespace_after_its_last_process(state_dir):
    with ns.spawn(["sleep", "30"], ["uts"], hostname="kept") as proc:
        inode = ns.ns_id(proc.pid, "uts")
        files = ns.persist(proc.pid, "keeper")
        assert [f.name for f in files] == ["uts"]
    assert ns.persisted() == {"keeper": ["uts"]}
    with ns.enter("keeper", ["sleep", "30"]) as joined:
        assert ns.ns_id(joined.pid, "uts") == inode
    assert ns.run(["hostname"], join={"uts": files[0]}).stdout.strip() == "kept"
    ns.release("keeper")
    assert ns.persisted() == {}


# --- bad input ----------------------------------------------------------------------------------


def test_unknown_kind_is_refused_with_the_choices():
    with pytest.raises(BadInput, match="unknown namespace kind 'utz': choose from mnt, uts"):
        ns.run(["true"], ["utz"])


def test_missing_pid_is_refused():
    with pytest.raises(BadInput, match="no process with PID 999999999"):
        ns.enter(999999999, ["true"])
    with pytest.raises(BadInput, match="does not exist"):
        ns.run(["true"], join={"uts": 999999999})


def test_missing_command_is_refused():
    with pytest.raises(BadInput, match="command not found: no-such-command"):
        ns.run(["no-such-command"], ["uts"])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"hostname": "x"}, "needs a new uts namespace"),
        ({"rootfs": "/"}, "needs a new mnt namespace"),
        ({"uid_map": "0 1000"}, "belong to a new user namespace"),
        ({"propagation": "sideways"}, "is not one of"),
    ],
)
def test_inconsistent_options_are_refused(options, message):
    with pytest.raises(BadInput, match=message):
        ns.run(["true"], ["ipc"], **options)


def test_malformed_uid_map_is_refused():
    with pytest.raises(BadInput, match="is not 'INSIDE OUTSIDE COUNT'"):
        ns.run(["true"], ["user"], uid_map="0 lots 1")


def test_not_root_gets_a_sentence_with_the_fix():
    result = run_as_nobody(
        "from labkit import namespaces as ns\n"
        "try:\n    ns.run(['true'], ['uts'])\nexcept Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("NotRoot creating uts namespaces needs root")
    assert "sudo" in result.stdout
    assert issubclass(NotRoot, PermissionError)


def test_unprivileged_user_can_create_namespaces_inside_a_user_namespace():
    result = run_as_nobody(
        "from labkit import namespaces as ns\n"
        "r = ns.run(['/bin/sh', '-c', 'id -u; hostname'], ['user', 'uts'], hostname='mine')\n"
        "print(r.returncode, r.stdout.split())\n"
    )
    assert result.stdout.strip() == "0 ['0', 'mine']", result.stderr


def test_cli_runs_a_command_in_namespaces(capfd):
    from labkit.cli import main

    assert main(["ns", "run", "--uts", "--hostname", "from-cli", "--", "hostname"]) == 0
    assert capfd.readouterr().out.strip() == "from-cli"


def test_cli_reports_bad_input_in_one_line(capfd):
    from labkit.cli import main

    assert main(["ns", "enter", "999999999", "--", "true"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "no process with PID 999999999" in err
