"""Docker's commands (labkit run, ps, exec, logs, stop, rm, inspect) against the real kernel.

Each test gets its own state directory on /run (a tmpfs, which overlayfs takes as upper and
lower everywhere) with the busybox image built offline in its store; the teardown runs
``labkit cleanup`` and the autouse fixture checks that nothing labkit-named is left.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest

from labkit import cleanup, images, network
from labkit.container import capabilities, lifecycle, manager, seccomp
from labkit.container.spec import Seccomp, SyscallRule

from .conftest import CARELESS_CALLER, NO_SIGNALS, dead, http_get_in, signal_fields, wait_until

LABKIT = [sys.executable, "-m", "labkit.cli"]


@pytest.fixture
def store(monkeypatch):
    """A private state directory on /run, with busybox:latest in its image store."""
    path = Path(tempfile.mkdtemp(prefix="labkit-test-run-", dir="/run"))
    monkeypatch.setenv("LABKIT_STATE_DIR", str(path / "state"))
    images.busybox_image("busybox:latest")
    yield path / "state"
    for err in (path / "state" / "managed").glob("*/monitor.err"):
        print(f"{err}:\n{err.read_text()}")  # shown when the test fails
    cleanup.cleanup()
    shutil.rmtree(path)


# (bounded generously: under software emulation, the first container on the bridge takes a minute)
def labkit(*args: str, input=None, timeout: float = 180, text=True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LABKIT, *args], input=input, capture_output=True, text=text, timeout=timeout, check=False
    )


def nothing_made() -> None:
    """No record, runtime container, monitor, cgroup, network namespace or lab link is left."""
    assert manager.list_containers(all=True) == []
    assert lifecycle.list_containers() == []
    assert manager._monitor_processes() == []
    assert not [n for n in network.netns_list() if n.startswith("labkit-")]
    from labkit import cgroups

    assert not [x for x in cgroups.leftovers() if "ctr-" in x]


def test_run_rm_shows_the_output_and_exits_as_the_command(store):
    out = labkit("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (out.returncode, out.stdout, out.stderr) == (3, "out\n", "err\n")
    nothing_made()


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["nosuch:latest", "true"], 125, "no image 'nosuch:latest'"),
        (["busybox", "nosuch"], 127, "executable file not found"),
        (["busybox", "/etc/passwd"], 126, "permission denied"),
    ],
)
def test_exit_codes_are_dockers(store, args, code, words):
    out = labkit("run", "--rm", *args)
    assert out.returncode == code, out.stderr
    assert words in out.stderr and len(out.stderr.splitlines()) == 1
    assert out.stdout == ""
    nothing_made()


def test_detached_then_ps_logs_follow_stop_rm(store):
    loop = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"
    out = labkit("run", "-d", "--name", "ticker", "busybox", "sh", "-c", loop)
    assert out.returncode == 0 and len(out.stdout.strip()) == 64, out.stderr
    cid = out.stdout.strip()
    ps = labkit("ps").stdout.splitlines()
    assert ps[0].split()[:2] == ["CONTAINER", "ID"]
    assert ps[1].startswith(cid[:12]) and ps[1].endswith("ticker") and "Up " in ps[1]
    assert wait_until(lambda: "tick 2" in labkit("logs", "ticker").stdout, 10)
    follow = subprocess.Popen([*LABKIT, "logs", "-f", "ticker"], stdout=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        assert labkit("stop", "-t", "1", "ticker").stdout == "ticker\n"
        assert time.monotonic() - t0 >= 1  # sh as PID 1 ignores SIGTERM: SIGKILL after 1 s
        lines = follow.communicate(timeout=10)[0].splitlines()  # -f ends when it stops
    finally:
        follow.kill()
        follow.wait()
    assert lines[:3] == ["tick 0", "tick 1", "tick 2"]
    (info,) = json.loads(labkit("inspect", "ticker").stdout)
    assert info["Id"] == cid and info["Name"] == "/ticker"
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 137
    assert info["State"]["FinishedAt"] > info["State"]["StartedAt"]
    assert labkit("ps").stdout.count("\n") == 1  # the header only
    assert "Exited (137)" in labkit("ps", "-a").stdout
    assert lifecycle.list_containers() == []  # the runtime's part is gone with the process
    assert labkit("rm", cid[:8]).stdout == f"{cid[:8]}\n"
    nothing_made()


def test_the_containers_processes_start_with_default_signals_and_stop_reaches_a_trap(store):
    # labkit run and exec from a caller that ignores and blocks signals (conftest): neither the
    # monitor (which ignores SIGTERM itself) nor the caller hands that on to the container.
    run = [*CARELESS_CALLER, *LABKIT, "run", "-d", "--name", "quiet", "busybox", "sleep", "60"]
    assert subprocess.run(run, capture_output=True, timeout=60, check=False).returncode == 0
    with open(f"/proc/{manager.get('quiet').pid}/status") as f:
        assert signal_fields(f.read()) == NO_SIGNALS  # PID 1, seen from the host
    exec_grep = ["exec", "quiet", "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]
    out = subprocess.run(
        [*CARELESS_CALLER, *LABKIT, *exec_grep], capture_output=True, text=True, timeout=60
    )
    assert signal_fields(out.stdout) == NO_SIGNALS, out.stderr
    assert labkit("rm", "-f", "quiet").returncode == 0
    # A PID 1 that traps SIGTERM gets it from stop, and exits as its trap says (not 137 after
    # SIGKILL at the end of the 30 s).
    trap = 'trap "exit 3" TERM; sleep 60 & wait'
    run = [*CARELESS_CALLER, *LABKIT, "run", "-d", "--name", "trapper", "busybox", "sh", "-c", trap]
    assert subprocess.run(run, capture_output=True, timeout=60, check=False).returncode == 0
    assert wait_until(lambda: "sleep" in str(manager.top("trapper")["Processes"]), 10)
    assert labkit("stop", "-t", "30", "trapper").returncode == 0
    assert manager.get("trapper").state()["ExitCode"] == 3
    assert labkit("rm", "trapper").returncode == 0
    nothing_made()


def test_rm_of_a_running_container_needs_force(store):
    labkit("run", "-d", "--name", "busy", "busybox", "sleep", "60")
    out = labkit("rm", "busy")
    assert out.returncode == 1 and "stop it first" in out.stderr
    assert labkit("rm", "-f", "busy").returncode == 0
    nothing_made()


def test_exec_joins_every_namespace_and_the_cgroup(store):
    # It must outlive six execs: in the emulated v2 kernel those took over 60 s (removed below).
    c = manager.start(manager.create({"Image": "busybox", "Cmd": ["sleep", "600"]}))
    pid = c.pid
    kinds = ("pid", "mnt", "net", "ipc", "uts")
    probe = "; ".join(f"readlink /proc/self/ns/{k}" for k in kinds)
    # Its cgroup, as the container's own PID 1 sees it: inside a cgroup namespace (cgroup v2)
    # both read the namespace's root, "0::/", so the two are compared with each other.
    probe += "; grep CapEff /proc/self/status; cat /proc/self/cgroup; echo --; cat /proc/1/cgroup"
    out = labkit("exec", c.name[1:], "sh", "-c", probe)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:5] == [os.readlink(f"/proc/{pid}/ns/{k}") for k in kinds]
    assert lines[:5] != [os.readlink(f"/proc/self/ns/{k}") for k in kinds]
    eff = int(lines[5].split()[1], 16)
    assert sorted(capabilities.names(eff)) == sorted(capabilities.DOCKER_DEFAULT)
    split = lines.index("--")
    assert lines[6:split] == lines[split + 1 :] and lines[6:split]
    with open(f"/proc/{pid}/cgroup") as f:
        assert "ctr-" in f.read()  # and that cgroup is the container's own
    assert labkit("exec", c.id, "sh", "-c", "exit 7").returncode == 7
    assert [row[1] for row in manager.top(c)["Processes"]] == [str(pid)]
    stats = manager.stats(c)
    assert stats["pids_stats"]["current"] == 1 and stats["memory_stats"]["usage"] > 0
    assert labkit("exec", c.id, "nosuch").returncode == 127
    # A user by name, from the container's /etc/passwd; -w and -e for the process alone.
    out = labkit("exec", "-u", "nobody", "-w", "/tmp", "-e", "X=1", c.id, "sh", "-c",
                 'echo $(id -u) $(pwd) $X')  # fmt: skip
    assert out.stdout == "65534 /tmp 1\n", out.stderr
    manager.remove(c, force=True)
    nothing_made()


def test_a_read_only_volume_refuses_writes_and_a_rw_one_writes_through(store, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("from the host\n")
    out = labkit(
        "run", "--rm", "-v", f"{src}:/data:ro", "busybox",
        "sh", "-c", "cat /data/f; echo x > /data/g",
    )  # fmt: skip
    assert out.returncode == 1 and out.stdout == "from the host\n"
    assert "Read-only file system" in out.stderr and not (src / "g").exists()
    out = labkit("run", "--rm", "-v", f"{src}:/data", "busybox", "sh", "-c", "echo x > /data/g")
    assert out.returncode == 0 and (src / "g").read_text() == "x\n"
    nothing_made()


def test_the_docker_options_reach_the_container(store):
    probe = (
        "hostname; id -u; id -g; pwd; echo $GREETING; touch /x 2>/dev/null || echo read-only; "
        "grep CapEff /proc/self/status"
    )
    out = labkit(
        "run", "--rm", "--hostname", "box", "-u", "1000:1000", "-w", "/work", "-e",
        "GREETING=hi", "--read-only", "--cap-drop", "ALL", "--cap-add", "net_bind_service",
        "busybox", "sh", "-c", probe,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:6] == ["box", "1000", "1000", "/work", "hi", "read-only"]
    assert lines[6] == "CapEff:\t0000000000000000"  # a non-root user keeps no effective ones
    out = labkit("run", "--rm", "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE",
                 "busybox", "grep", "CapBnd", "/proc/self/status")  # fmt: skip
    assert int(out.stdout.split()[1], 16) == 1 << capabilities.NUMBERS["CAP_NET_BIND_SERVICE"]
    nothing_made()


ETC_PROBE = (
    "for f in hosts hostname resolv.conf; do cat /etc/$f; echo ==; done; "
    "grep ' /etc/' /proc/self/mountinfo; echo x >> /etc/hosts 2>/dev/null || echo read-only"
)


def _logged(name: str, until: str, seconds: float = 30) -> str:
    """The container's output so far, waited for (at most *seconds*) until it holds *until*."""
    text = ""
    deadline = time.monotonic() + seconds
    while until not in text and time.monotonic() < deadline:
        text = labkit("logs", name).stdout
        time.sleep(0.1)
    return text


def test_hosts_hostname_and_resolv_conf_are_the_containers_own_as_dockers(store):
    from labkit.container import etcfiles

    out = labkit("run", "-d", "--name", "named", "--hostname", "box", "--network", "bridge",
                 "busybox", "sh", "-c", ETC_PROBE + "; echo done; sleep 60")  # fmt: skip
    assert out.returncode == 0, out.stderr
    c = manager.get("named")
    text = _logged("named", "done\n")
    hosts, hostname, resolv, rest = text.split("==\n")
    address = c.inspect()["NetworkSettings"]["IPAddress"]
    assert ipaddress.ip_address(address) in network.bridge(manager.BRIDGE).subnet
    assert hosts == etcfiles.hosts("box", address) and hosts.endswith(f"{address}\tbox\n")
    assert hostname == "box\n"
    # The host's, less the name servers a container cannot reach (never one added instead).
    assert resolv == etcfiles.resolv_conf(etcfiles.host_resolv_conf())
    # Each is a bind of the container's own file in its record, not a file of its layers.
    mounts = rest.splitlines()[:-1]
    roots = [line.split()[3] for line in mounts]
    assert [line.split()[4] for line in mounts] == [
        "/etc/resolv.conf",
        "/etc/hostname",
        "/etc/hosts",
    ]
    assert [r.rsplit("/", 2)[1:] for r in roots] == [[c.id, n] for n in etcfiles.FILES]
    inspected = c.inspect()
    assert inspected["HostsPath"] == str(c.dir / "hosts")
    assert Path(inspected["ResolvConfPath"]).read_text() == resolv
    assert (c.dir / "hosts").read_text() == hosts + "x\n"  # the probe's write landed there
    upper = Path(c.record["GraphDriver"]["UpperDir"])
    assert [p for p in (upper / "etc").glob("*") if p.stat().st_size] == []  # mount points only
    assert labkit("rm", "-f", "named").returncode == 0
    assert not c.dir.exists()  # the files went with the container
    nothing_made()


def test_with_network_none_and_a_read_only_root_the_files_are_read_only(store):
    from labkit.container import etcfiles

    out = labkit("run", "--rm", "--read-only", "busybox", "sh", "-c", ETC_PROBE)
    assert out.returncode == 0, out.stderr
    hosts, hostname, _resolv, rest = out.stdout.split("==\n")
    assert hosts == etcfiles.hosts(hostname.strip())  # localhost only, as Docker's
    assert len(hostname.strip()) == 12  # the short id
    mounts = rest.splitlines()
    assert mounts[-1] == "read-only"
    assert [line.split()[5].split(",")[0] for line in mounts[:-1]] == ["ro", "ro", "ro"]
    nothing_made()


PRIVILEGE_PROBE = (
    "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; "
    # /proc/kcore where the kernel has one (this VM's has not), and a masked file every one has
    "for f in /proc/kcore /proc/timer_list; do [ -e $f ] && stat -c 'masked? %n %F' $f; done; "
    "grep -E ' /(sys|proc/[a-z_]+) ' /proc/self/mountinfo | cut -d' ' -f5,6; "
    "stat -c 'loop-control %F %t:%T' /dev/loop-control; "
    ": < /dev/loop-control && echo loop-control opened"  # opened for reading only, then closed
)


def test_privileged_has_every_capability_no_seccomp_no_masks_and_the_hosts_devices(store):
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("this host has no /dev/loop-control to look for (modprobe loop)")
    with open("/proc/self/status") as f:
        ours = dict(line.rstrip("\n").split(":\t", 1) for line in f if line.startswith("Cap"))
    out = labkit("run", "--rm", "--privileged", "busybox", "sh", "-c", PRIVILEGE_PROBE)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for name in ("CapPrm", "CapEff", "CapBnd"):  # all we have (this host lacks SYS_RESOURCE)
        assert f"{name}:\t{ours['CapBnd']}" in lines
    assert "Seccomp:\t0" in lines and "NoNewPrivs:\t0" in lines
    masked = [line for line in lines if line.startswith("masked? ")]
    assert masked and all(" regular " in line for line in masked)  # no /dev/null over them
    assert [line for line in lines if line.startswith("/proc/")] == []  # nothing masked or ro
    assert "/sys rw,nosuid,nodev,noexec,relatime" in lines
    rdev = os.stat("/dev/loop-control").st_rdev
    major, minor = f"{os.major(rdev):x}", f"{os.minor(rdev):x}"
    assert f"loop-control character special file {major}:{minor}" in lines
    assert lines[-1] == "loop-control opened"  # the device cgroup lets it through
    # Without --privileged: Docker's defaults, and none of that.
    out = labkit("run", "--rm", "busybox", "sh", "-c", PRIVILEGE_PROBE)
    assert "Seccomp:\t2" in out.stdout and "CapEff:\t00000000a80425fb" in out.stdout
    assert "masked? /proc/timer_list character special file" in out.stdout  # /dev/null
    assert "/proc/sys ro,nosuid,nodev,noexec,relatime" in out.stdout
    assert "/sys ro,nosuid,nodev,noexec,relatime" in out.stdout
    assert "can't stat '/dev/loop-control'" in out.stderr
    nothing_made()


def test_stdin_with_i_and_a_terminal_with_t(store):
    out = labkit("run", "--rm", "-i", "busybox", "sh", "-c", "cat; echo done", input="hello\n")
    assert (out.returncode, out.stdout) == (0, "hello\ndone\n")
    out = labkit("run", "--rm", "-t", "busybox", "sh", "-c", "tty; exit 4", text=False)
    assert out.returncode == 4 and out.stdout.startswith(b"/dev/pts/")
    assert out.stdout.endswith(b"\r\n")  # the terminal's line discipline turned \n into \r\n
    nothing_made()


def through_a_pty(args: list[str], rows: int, columns: int, keys: bytes = b"") -> tuple[int, bytes]:
    """Run labkit with a pty of ours (of that size) as its terminal; its exit status and what
    it showed there. *keys* are typed on that terminal once labkit has made it raw."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    try:
        proc = subprocess.Popen([*LABKIT, *args], stdin=slave, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    shown = b""
    deadline = time.monotonic() + 60
    try:
        if keys:  # once labkit has made its terminal raw (the pair shares one termios)
            assert wait_until(lambda: not termios.tcgetattr(master)[3] & termios.ICANON, 30)
            os.write(master, keys)
        while time.monotonic() < deadline:  # until EIO: labkit, the last slave, has exited
            if select.select([master], [], [], 1)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
        return proc.wait(timeout=30), shown
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_exec_t_gives_the_process_a_terminal_of_the_containers_own(store):
    c = manager.start(manager.create({"Image": "busybox", "Cmd": ["sleep", "60"]}))
    # A controlling terminal (tty names it; /dev/tty opens) of the container's own devpts, of
    # our terminal's size from its first moment, and its exit code through.
    probe = "tty; stty size; test -t 0 && echo terminal; : < /dev/tty && echo controlling; exit 3"
    code, shown = through_a_pty(["exec", "-t", c.id, "sh", "-c", probe], 33, 77)
    assert code == 3, shown
    assert shown.split(b"\r\n")[:4] == [b"/dev/pts/0", b"33 77", b"terminal", b"controlling"]
    # -i -t: what we type reaches the process through its terminal (echoed by the line
    # discipline, as a terminal does), and ^D ends its input.
    code, shown = through_a_pty(["exec", "-i", "-t", c.id, "sh", "-c", "cat; echo end"], 24, 80,
                                b"typed\n\x04")  # fmt: skip
    assert code == 0 and b"typed\r\ntyped\r\n" in shown and b"end" in shown, shown
    # Without -t the process has no terminal, as before.
    assert labkit("exec", c.id, "sh", "-c", "test -t 0 || echo none").stdout == "none\n"
    manager.remove(c, force=True)
    nothing_made()


def test_a_memory_limit_ends_in_an_oom_kill_that_is_recorded(store):
    out = labkit("run", "--name", "hog", "--memory", "32m", "busybox", "sh", "-c",
                 "tail /dev/zero")  # fmt: skip
    assert out.returncode == 137, out.stderr
    (info,) = json.loads(labkit("inspect", "hog").stdout)
    assert info["State"]["OOMKilled"] is True and info["State"]["ExitCode"] == 137
    assert info["HostConfig"]["Memory"] == 32 * 1024 * 1024
    assert labkit("rm", "hog").returncode == 0
    nothing_made()


def test_a_published_port_is_reached_from_another_namespace(store):
    web = "mkdir /www; echo hello from the container > /www/index.html; httpd -f -p 80 -h /www"
    out = labkit("run", "-d", "--name", "web", "--network", "bridge", "-p", "18081:80",
                 "busybox", "sh", "-c", web)  # fmt: skip
    assert out.returncode == 0, out.stderr
    c = manager.get("web")
    settings = c.inspect()["NetworkSettings"]
    assert settings["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18081"}]}
    # A client namespace on a bridge of its own: it reaches the container only through the
    # host's published port (DNAT), never directly.
    client_bridge = network.bridge_add("lkclientbr")
    network.netns_add("labkit-tclient")
    network.connect(client_bridge, "labkit-tclient")
    answer = http_get_in("labkit-tclient", str(client_bridge.gateway), 18081, b"hello", seconds=10)
    assert b"hello from the container" in answer
    assert ipaddress.ip_address(settings["IPAddress"]) in network.bridge(manager.BRIDGE).subnet
    manager.remove("web", force=True)
    assert not [r for r in network.rules() if "18081" in r.comment]  # unpublished with it
    network.netns_delete("labkit-tclient")
    network.bridge_delete("lkclientbr")
    network.bridge_delete(manager.BRIDGE)
    nothing_made()


def test_p_80_takes_a_free_host_port_and_a_host_ip_publishes_there_only(store):
    # The client's namespace hangs on a bridge of its own; its gateway is an address of this
    # host's, the one the second -p names. All traffic stays between this machine's namespaces.
    client_bridge = network.bridge_add("lkclientbr")
    network.netns_add("labkit-tclient")
    network.connect(client_bridge, "labkit-tclient")
    there = str(client_bridge.gateway)
    web = "mkdir /www; echo hello from the container > /www/index.html; httpd -f -p 80 -h /www"
    publish = ["-p", "80", "-p", f"{there}::80", "-p", "18083:53/udp"]
    out = labkit("run", "-d", "--name", "web", "--network", "bridge", *publish, "busybox", "sh",
                 "-c", web)  # fmt: skip
    assert out.returncode == 0, out.stderr
    c = manager.get("web")
    ports = c.inspect()["NetworkSettings"]["Ports"]
    anywhere, only_there = ports["80/tcp"]
    assert anywhere["HostIp"] == "0.0.0.0" and only_there["HostIp"] == there
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    any_port, there_port = int(anywhere["HostPort"]), int(only_there["HostPort"])
    assert low <= any_port <= high and low <= there_port <= high and any_port != there_port
    assert ports["53/udp"] == [{"HostIp": "0.0.0.0", "HostPort": "18083"}]
    assert c.inspect()["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"] == ""  # as asked
    ps = labkit("ps").stdout
    for shown in (
        f"0.0.0.0:{any_port}->80/tcp",
        f"{there}:{there_port}->80/tcp",
        "0.0.0.0:18083->53/udp",
    ):
        assert shown in ps
    assert http_get_in("labkit-tclient", there, any_port, b"hello", seconds=10).endswith(
        b"hello from the container\n"
    )
    assert b"hello from the container" in http_get_in(
        "labkit-tclient", there, there_port, b"hello", 10
    )
    # Another of the host's addresses (the lab bridge's): the port published on all of them
    # answers there too, the one published on `there` does not (nothing listens on the host).
    lab = str(network.bridge(manager.BRIDGE).gateway)
    assert b"hello from the container" in http_get_in("labkit-tclient", lab, any_port, b"hello", 10)
    assert http_get_in("labkit-tclient", lab, there_port, b"hello", seconds=1) == b""
    assert len([r for r in network.rules() if "publish udp 18083 " in r.comment]) == 2
    assert labkit("stop", "-t", "1", "web").returncode == 0
    assert manager.get("web").inspect()["NetworkSettings"]["Ports"] == {}  # free again
    assert not [r for r in network.rules() if "publish" in r.comment]
    assert labkit("rm", "web").returncode == 0
    network.netns_delete("labkit-tclient")
    network.bridge_delete("lkclientbr")
    nothing_made()


def test_a_host_ip_that_is_not_this_hosts_is_one_sentence_and_nothing_is_made(store):
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): no host has it; only bind(2) is asked, no packet.
    out = labkit("run", "--rm", "--network", "bridge", "-p", "192.0.2.7:8080:80", "busybox", "true")
    assert out.returncode == 125 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "192.0.2.7 is not an address of this host" in out.stderr
    nothing_made()
    assert not [r for r in network.rules() if "publish" in r.comment]


def test_a_port_in_use_is_one_sentence_and_nothing_is_made(store):
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 18082))
        holder.listen(1)
        out = labkit("run", "--rm", "--network", "bridge", "-p", "18082:80", "busybox", "true")
    assert out.returncode == 125 and len(out.stderr.splitlines()) == 1
    assert "18082/tcp is already in use" in out.stderr
    nothing_made()
    assert not [r for r in network.rules() if "18082" in r.comment]


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--memory", "lots"], "is not a size"),
        (["--cap-add", "NOSUCH"], "is not a capability"),
        (["-v", "relative:/data"], "not an absolute path"),
        (["-p", "80:http"], "is not [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]"),
        (["-p", "8000-8010:80"], "(no ranges)"),
        (["-p", "1:2:3:4"], "is not [HOST_IP:]"),
        (["-p", "127.0.0.1:8080:80"], "publishing on 127.0.0.1 is not supported"),
        (["-p", "10.0.0.300::80"], "is not an IP address"),
        (["--network", "host"], "is not available"),
        (["--cpus", "many"], "is not a number of CPUs"),
        (["-u", "nobody-here"], "unable to find user"),
        (["--bogus"], "unknown flag: --bogus"),
    ],
)
def test_bad_input_is_one_sentence_and_nothing_is_made(store, flags, words):
    out = labkit("run", "--rm", *flags, "busybox", "true")
    assert out.returncode == 125 and words in out.stderr, out.stderr
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr
    nothing_made()
    from labkit import overlay

    assert not [o for o in overlay.live_overlays() if str(store) in str(o.merged)]


def test_the_creator_killed_the_container_is_still_managed(store):
    code = (
        "import time; from labkit.container import manager\n"
        "c = manager.start(manager.create({'Image': 'busybox', 'Cmd': ['sleep', '60']},"
        " name='orphan'))\n"
        "print(c.pid, flush=True); time.sleep(60)\n"
    )
    creator = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(creator.stdout.readline())
        creator.send_signal(signal.SIGKILL)
        creator.wait(timeout=10)
        creator.stdout.close()
        assert not dead(pid) and manager.get("orphan").status == "running"
        assert labkit("exec", "orphan", "true").returncode == 0
        labkit("stop", "-t", "0", "orphan")
        assert wait_until(lambda: manager.get("orphan").status == "exited", 10)
        assert manager.get("orphan").state()["ExitCode"] == 137  # recorded by its monitor
        assert dead(pid)
    finally:
        if creator.poll() is None:
            creator.kill()
            creator.wait()
    # labkit cleanup removes a running one, monitor and all.
    manager.start("orphan")
    assert any("monitor" in x for x in cleanup.leftovers())
    cleanup.cleanup()
    nothing_made()
    assert manager.records_dir().exists() is False


def test_a_container_is_made_whole_where_the_kernel_refuses_clone3(store):
    # Inside a Docker container, its default seccomp profile answers clone3 with ENOSYS (so the
    # C library falls back to clone): labkit's init is then forked where its monitor is, and
    # joins its cgroup itself. Here a real filter refuses clone3 to `labkit` and all it forks.
    refuse = Seccomp("SCMP_ACT_ALLOW", syscalls=[SyscallRule(["clone3"], "SCMP_ACT_ERRNO", 38)])
    prog = seccomp.compile_filter(refuse)

    def under_the_filter(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, preexec_fn=lambda: seccomp.load(prog), capture_output=True, text=True,
            timeout=180, check=False,
        )  # fmt: skip

    clone3 = "import os; from labkit import sys as k; k.clone_into_cgroup(os.open('/', 0))"
    probe = under_the_filter(sys.executable, "-c", clone3)
    assert "[Errno 38]" in probe.stderr  # refused (without the filter: EBADF, / is no cgroup)
    run = under_the_filter(*LABKIT, "run", "-d", "--network", "none", "busybox", "sleep", "60")
    assert run.returncode == 0, run.stderr
    cid = run.stdout.strip()
    pid = manager.get(cid).state()["Pid"]
    cgroups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    status = Path(f"/proc/{pid}/status").read_text()
    assert "Seccomp_filters:\t2" in status  # the refusing filter, then the container's own
    ours = Path("/proc/self/cgroup").read_text().splitlines()
    unified = next(line for line in cgroups if line.startswith("0::"))
    assert unified.endswith(f"/labkit-ctr-{cid[:12]}") and unified not in ours
    assert labkit("rm", "-f", cid).returncode == 0
    nothing_made()


def test_a_restart_keeps_the_containers_files_and_counts(store):
    c = manager.create({"Image": "busybox", "Cmd": ["sh", "-c", "date >> /runs; cat /runs"]})
    manager.wait(manager.start(c))
    manager.restart(c)
    assert manager.wait(c)["StatusCode"] == 0
    out = [e.data for e in manager.logs(c)]
    assert len(out) == 3  # one line, then two: the file in the writable layer survived
    assert c.inspect()["RestartCount"] == 1
    manager.remove(c)
    nothing_made()


def test_waiting_for_removal_gets_the_exit_code_of_an_auto_removed_container(store):
    c = manager.create(
        {"Image": "busybox", "Cmd": ["sh", "-c", "sleep 0.5; exit 9"]}, {"AutoRemove": True}
    )
    manager.start(c)  # its handle dropped: wait by id, as an engine's second request does
    assert manager.wait(c.id, "removed", timeout=30) == {"StatusCode": 9, "Error": None}
    with pytest.raises(manager.NotFound):
        manager.get(c.id)
    nothing_made()
