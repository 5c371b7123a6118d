"""The fork server: one per process and state directory, forking every init child.

What a child gets (exactly its stdio, nothing the caller or the server had open, default signal
dispositions, the caller's umask and directory), whose child it is (the caller's), and what
happens around the server: its death mid-request, its owner's death, labkit cleanup.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labkit import cleanup, forkserver, namespaces, rootfs
from labkit import sys as ksys
from labkit.cgroups import Cgroup
from labkit.container import lifecycle, spec

from .conftest import dead, process_state, wait_until

SLEEP = ["sleep", "30"]


def fds_of(pid: int) -> list[int]:
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split()[1]
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def server_pids() -> list[int]:
    return [pid for pid, comm in forkserver.processes() if comm == forkserver.SERVER_NAME]


def test_a_child_gets_its_stdio_and_nothing_else(tmp_path):
    # An fd the caller would pass to an ordinary fork: inheritable, not close-on-exec.
    leaked = os.open(tmp_path / "secret", os.O_CREAT | os.O_WRONLY)
    os.set_inheritable(leaked, True)
    try:
        with (
            namespaces.spawn(SLEEP, ["uts"], stdin=subprocess.DEVNULL) as one,
            namespaces.spawn(SLEEP, ["uts"], stdin=subprocess.DEVNULL) as two,
        ):
            for proc in (one, two):
                # (sleep may have a locale file open for a moment as it starts)
                assert wait_until(lambda p=proc: fds_of(p.pid) == [0, 1, 2]), fds_of(proc.pid)
                targets = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in (0, 1, 2)]
                assert targets[0] == "/dev/null" and "secret" not in "".join(targets)
    finally:
        os.close(leaked)


def test_a_child_has_default_signals_and_the_callers_umask_and_directory(tmp_path, monkeypatch):
    # Python ignores SIGPIPE; a command must not start with it ignored (yes | head would hang).
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    old = os.umask(0o027)
    monkeypatch.chdir(tmp_path)
    try:
        with namespaces.spawn(SLEEP, ["uts"]) as proc:
            assert status_field(proc.pid, "SigIgn") == "0000000000000000"
            assert status_field(proc.pid, "SigBlk") == "0000000000000000"
            assert status_field(proc.pid, "Umask") == "0027"
            assert os.readlink(f"/proc/{proc.pid}/cwd") == str(tmp_path)
    finally:
        os.umask(old)


def test_children_are_the_callers_and_one_server_forks_them_all():
    with namespaces.spawn(SLEEP, ["uts"]) as a, namespaces.spawn(SLEEP, ["uts"]) as b:
        # Our children (CLONE_PARENT): we wait for them, the server never has to.
        assert status_field(a.pid, "PPid") == status_field(b.pid, "PPid") == str(os.getpid())
        assert server_pids() == [forkserver.server().pid]
    assert a.returncode == b.returncode == -signal.SIGKILL


def test_a_helper_outlives_the_thread_that_started_it():
    # A parent-death signal follows the thread that forked; the helper's parent must be the
    # thread that waits for the server, not whichever thread happened to ask first.
    made = []
    asker = threading.Thread(target=lambda: made.append(namespaces.spawn(SLEEP, ["uts"])))
    asker.start()
    asker.join(30)
    with made[0] as proc:
        time.sleep(0.3)  # a parent-death signal would have arrived by now
        assert proc.returncode is None and process_state(proc.pid) in ("S", "R")


def test_a_dead_server_is_replaced_by_the_next_call():
    namespaces.run(["true"], ["uts"]).check()
    first = forkserver.server().pid
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: forkserver.server().exited.is_set())
    assert namespaces.run(["hostname"], ["uts"], hostname="again").check().stdout == "again\n"
    assert forkserver.server().pid != first
    assert dead(first) and process_state(first) == "gone"  # reaped, not a zombie


def test_a_server_that_dies_mid_request_gives_one_clear_error():
    namespaces.run(["true"], ["uts"]).check()
    pid = forkserver.server().pid
    os.kill(pid, signal.SIGSTOP)  # the request waits in the socket...
    killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))  # ...until the server dies
    killer.start()
    try:
        with pytest.raises(forkserver.ForkServerError, match=r"died while starting a child; the"):
            namespaces.run(["true"], ["uts"])
    finally:
        killer.join()
    assert namespaces.run(["true"], ["uts"]).returncode == 0  # and the next call is served


def test_a_server_that_does_not_answer_is_killed(monkeypatch):
    namespaces.run(["true"], ["uts"]).check()
    pid = forkserver.server().pid
    monkeypatch.setattr(forkserver, "TIMEOUT", 0.5)
    os.kill(pid, signal.SIGSTOP)
    with pytest.raises(
        forkserver.ForkServerError, match="did not answer within 0.5 s and was killed"
    ):
        namespaces.run(["true"], ["uts"])
    assert wait_until(lambda: process_state(pid) == "gone")
    monkeypatch.undo()  # a new server may take its time to start
    assert namespaces.run(["true"], ["uts"]).returncode == 0


def start_owner(code: str, state_dir: Path) -> tuple[subprocess.Popen, list[str]]:
    """A separate Python plays the notebook kernel: it runs *code*, which prints a line."""
    owner = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "LABKIT_STATE_DIR": str(state_dir),
            "PYTHONPATH": str(Path(__file__).parents[1]),
        },
    )
    return owner, owner.stdout.readline().split()


def test_the_server_dies_with_its_owner(state_dir):
    owner, (server,) = start_owner(
        "import time; from labkit import namespaces, forkserver\n"
        "namespaces.run(['true'], ['uts']).check()\n"
        "print(forkserver.server().pid, flush=True); time.sleep(60)\n",
        state_dir,
    )
    assert process_state(int(server)) in ("S", "R")
    owner.kill()
    owner.wait()
    assert wait_until(lambda: process_state(int(server)) == "gone")
    assert forkserver.processes() == []


def test_a_detached_container_outlives_the_server_and_its_owner(tmp_path, state_dir):
    root = rootfs.build(tmp_path / "rootfs")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = spec.Spec(spec.Process(["sleep", "60"]), root=spec.Root(str(root))).to_dict()
    (bundle / "config.json").write_text(json.dumps(config))
    owner, (server,) = start_owner(
        "import time; from labkit import forkserver; from labkit.container import lifecycle\n"
        f"lifecycle.create('kept', {str(bundle)!r}); lifecycle.start('kept')\n"
        "print(forkserver.server().pid, flush=True); time.sleep(60)\n",
        state_dir,
    )
    try:
        owner.kill()
        owner.wait()
        assert wait_until(lambda: process_state(int(server)) == "gone")
        c = lifecycle.get("kept")
        assert c.status == "running"  # no parent-death signal reached the container
    finally:
        cleanup.cleanup()
    assert wait_until(lambda: dead(c.pid)) and cleanup.leftovers() == []


def test_cleanup_stops_the_server_and_leaves_nothing(state_dir):
    with namespaces.spawn(SLEEP, ["uts", "pid", "mnt"]) as proc:
        server = forkserver.server().pid
        assert sorted(comm for _pid, comm in forkserver.processes()) == [
            "labkit-forksrv",
            "labkit-ns-init",
        ]
        cleanup.cleanup()
        assert wait_until(lambda: dead(proc.popen.pid) and process_state(server) == "gone")
    assert forkserver.processes() == [] and cleanup.leftovers() == []
    assert namespaces.run(["true"], ["uts"]).returncode == 0  # a new server, on demand


def test_a_single_threaded_program_forks_its_children_itself(state_dir):
    # labkit-runtime's way: one container, no second interpreter; the child is the same.
    code = (
        "import os, time; from labkit import forkserver, namespaces\n"
        "forkserver.fork_in_this_process()\n"
        "with namespaces.spawn(['sleep', '30'], ['uts'], stdin=-3) as p:\n"
        # (as sleep starts, its loader and locale have a file open for a moment)
        "    for _ in range(100):\n"
        "        fds = sorted(os.listdir(f'/proc/{p.pid}/fd'))\n"
        "        if fds == ['0', '1', '2']:\n"
        "            break\n"
        "        time.sleep(0.05)\n"
        "    print(fds, forkserver.server().pid, flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert (out.stdout, out.stderr) == ("['0', '1', '2'] None\n", "")


def _cgroup2_of(pid: int) -> str:
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return next(line for line in lines if line.startswith("0::"))


@pytest.mark.parametrize("refused", [False, True], ids=["clone3", "clone3 refused"])
def test_a_child_is_born_in_the_cgroup_asked_for(monkeypatch, refused):
    # What a container's init gets: a fork of the caller, in the container's cgroup2 directory
    # from its first instruction. Where clone3 is refused (Docker's seccomp profile answers
    # ENOSYS), it is an ordinary fork, and says so: the caller then moves it in.
    if refused:

        def enosys(*_args, **_kwargs):
            raise OSError(errno.ENOSYS, "clone3(CLONE_INTO_CGROUP): Function not implemented")

        monkeypatch.setattr(ksys, "clone_into_cgroup", enosys)
    cgroup = Cgroup.create(f"t{os.getpid()}-born")
    try:
        unified = cgroup.dir("")
        if unified is None:
            pytest.skip("this host mounts no cgroup2 hierarchy")
        fd = os.open(unified, os.O_RDONLY | os.O_DIRECTORY)
        try:
            ours = _cgroup2_of(os.getpid())
            pid, born = forkserver._clone_child(fd, parent=False)
            if pid == 0:
                time.sleep(5)
                os._exit(0)
            try:
                where = _cgroup2_of(pid)
                assert born is not refused
                assert (where == ours) is refused and where.endswith(f"/{unified.name}") != refused
                assert _cgroup2_of(os.getpid()) == ours  # the caller has not moved
            finally:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        finally:
            os.close(fd)
    finally:
        cgroup.remove()


def test_a_clone3_the_kernel_refuses_names_the_call():
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)  # a directory, but not a cgroup's
    try:
        with pytest.raises(OSError) as info:
            ksys.clone_into_cgroup(fd)
    finally:
        os.close(fd)
    assert info.value.errno == errno.EBADF and "clone3(CLONE_INTO_CGROUP)" in str(info.value)
