"""labkit's engine, part 2: containers and exec, driven by the real docker CLI (Debian's
docker.io, /usr/bin/docker) and docker-py against a real ``labkit engine`` process."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import socket
import struct
import subprocess
import termios
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from labkit import network
from labkit.container import manager

from .conftest import http_get_in, wait_until
from .engine_env import DOCKER, engine, loaded  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def box(loaded):
    """The engine with busybox loaded and the lab bridge made (docker's default network is
    the bridge), both kept for the module and removed by its clean-up."""
    manager.bridge()
    return loaded


JSON = {"Content-Type": "application/json"}


def no_containers(e) -> bool:
    return e.docker("ps", "-aq", check=True).stdout == ""


def test_run_rm_prints_the_output_and_exits_with_the_code(box):
    hi = box.docker("run", "--rm", "busybox", "echo", "hi")
    assert (hi.returncode, hi.stdout) == (0, "hi\n"), hi.stderr
    both = box.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (both.returncode, both.stdout, both.stderr) == (3, "out\n", "err\n")
    assert no_containers(box)
    # The requests behind docker run: create, then attach and wait (the CLI sends both at
    # once), and start only once the wait's head went out.
    lines = box.log().splitlines()
    cid = re.findall(r"POST /v1\.41/containers/([0-9a-f]{64})/start", box.log())[-1]

    def line_of(what: str) -> int:
        return next(i for i, line in enumerate(lines) if what in line)

    attach = line_of(f"/containers/{cid}/attach?stderr=1&stdout=1&stream=1 101")
    wait = line_of(f"/containers/{cid}/wait?condition=removed 200")
    start = line_of(f"/containers/{cid}/start 204")
    create = max(i for i, line in enumerate(lines[:attach]) if "/containers/create 201" in line)
    assert create < min(attach, wait) and max(attach, wait) < start


def test_a_command_that_cannot_run_exits_127_and_leaves_nothing(box):
    result = box.docker("run", "--rm", "busybox", "no-such-command")
    assert result.returncode == 127 and "executable file not found" in result.stderr
    assert no_containers(box)
    # Without --rm it stays created, and says why, as with dockerd; the attach (made before
    # the start, with stdin: -i) ends with the failed start.
    kept = box.docker("run", "-i", "--name", "cannot", "busybox", "no-such-command", input="")
    assert kept.returncode == 127
    (state,) = json.loads(box.docker("inspect", "cannot", check=True).stdout)
    assert (state["State"]["Status"], state["State"]["ExitCode"]) == ("created", 127)
    assert "no-such-command" in state["State"]["Error"]
    attach = re.compile(rf"end of POST \S+/containers/{state['Id']}/attach")
    assert wait_until(lambda: attach.search(box.log()), 10)
    box.docker("rm", "cannot", check=True)
    assert no_containers(box)


def test_errors_are_one_sentence_with_the_right_status(box):
    create = "/v1.41/containers/create"
    for body, status, words in [
        ({"Image": "no-such-image"}, 404, "no-such-image"),
        ({"Image": "busybox", "HostConfig": {"Memory": "lots"}}, 400, "'lots' is not a size"),
        ({"Image": "busybox", "HostConfig": "no"}, 400, "HostConfig"),
        ({"Cmd": ["true"]}, 400, "Image"),
    ]:
        got, _, answer = box.request(
            "POST", create, json.dumps(body), {"Content-Type": "application/json"}
        )
        message = json.loads(answer)["message"]
        assert got == status and words in message, (body, got, message)
    run = box.docker("run", "--rm", "no-such-image", "true")
    assert run.returncode == 125 and "docker load" in run.stderr
    box.docker("create", "--name", "taken", "busybox", "true", check=True)
    again = box.docker("create", "--name", "taken", "busybox", "true")
    assert again.returncode != 0 and "taken" in again.stderr
    box.docker("rm", "taken", check=True)
    assert no_containers(box)


def test_detached_container_ps_logs_inspect_stop_rm(box):
    script = "echo started; echo oops >&2; while :; do sleep 0.1; done"
    run = box.docker("run", "-d", "--name", "web", "busybox", "sh", "-c", script, check=True)
    cid = run.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    try:
        listed = box.docker(
            "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}} {{.Status}}", check=True
        ).stdout.split()
        assert listed[:3] == [cid, "web", "Up"]
        assert wait_until(lambda: "started" in box.docker("logs", "web").stdout, 10)
        logs = box.docker("logs", "web", check=True)
        assert (logs.stdout, logs.stderr) == ("started\n", "oops\n")
        stamped = box.docker("logs", "-t", "web", check=True).stdout
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z started$", stamped.splitlines()[0])
        (state,) = json.loads(box.docker("inspect", "web", check=True).stdout)
        assert state["Id"] == cid and state["Name"] == "/web"
        assert state["State"]["Running"] and os.path.exists(f"/proc/{state['State']['Pid']}")
        assert state["Config"]["Cmd"] == ["sh", "-c", script]
        assert {"HostConfig", "NetworkSettings", "Mounts"} <= set(state)
        follow = subprocess.Popen(
            [DOCKER, "logs", "-f", "web"],
            env=box.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        box.docker("stop", "-t", "1", "web", check=True)  # SIGTERM; a second later SIGKILL
        out, _ = follow.communicate(timeout=30)  # -f ends when the container does
        assert out == "started\n"
        exited = box.docker("ps", "-a", "--filter", "name=web", "--format", "{{.Status}}")
        assert exited.stdout.startswith("Exited (137)")
        assert box.docker("ps", "-q", "--filter", "status=running").stdout == ""
    finally:
        box.docker("rm", "-f", "web")
    assert no_containers(box)


def test_kill_and_rm_force(box):
    box.docker("run", "-d", "--name", "k1", "busybox", "sleep", "300", check=True)
    box.docker("run", "-d", "--name", "k2", "busybox", "sleep", "300", check=True)
    box.docker("kill", "k1", check=True)
    # As dockerd's, the kill (SIGKILL) answers once the exit is recorded: no wait needed.
    shown = box.docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "k1", check=True)
    assert shown.stdout.strip() == "exited 137"
    refused = box.docker("rm", "k2")
    assert refused.returncode == 1 and "running" in refused.stderr
    pid = int(box.docker("inspect", "-f", "{{.State.Pid}}", "k2", check=True).stdout)
    box.docker("rm", "-f", "k1", "k2", check=True)
    assert no_containers(box) and wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10)


def test_exec_runs_in_the_container_with_its_exit_code_and_stdin(box):
    box.docker(
        "run", "-d", "--name", "ex", "--hostname", "inside", "busybox", "sleep", "300", check=True
    )
    try:
        assert box.docker("exec", "ex", "hostname", check=True).stdout == "inside\n"
        assert box.docker("exec", "ex", "sh", "-c", "exit 7").returncode == 7
        piped = box.docker("exec", "-i", "ex", "sh", "-c", "cat; echo err >&2", input="piped\n")
        assert (piped.returncode, piped.stdout, piped.stderr) == (0, "piped\n", "err\n")
        missing = box.docker("exec", "ex", "no-such-command")
        assert missing.returncode in (126, 127), missing
    finally:
        box.docker("rm", "-f", "ex")
    assert no_containers(box)


def test_run_i_passes_stdin_to_the_container(box):
    result = box.docker("run", "-i", "--rm", "busybox", "cat", input="x\n")
    assert (result.returncode, result.stdout) == (0, "x\n"), result.stderr
    assert no_containers(box)


def _on_a_pty(e, *args, size=(24, 80), timeout: float = 60) -> tuple[int, bytes]:
    """Run the docker CLI with a terminal of *size* (rows, columns); (exit status, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    proc = subprocess.Popen(
        [DOCKER, *args], env=e.env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the CLI closed the terminal
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), out


def test_run_it_gets_a_terminal(box):
    status, out = _on_a_pty(box, "run", "-it", "--rm", "busybox", "sh", "-c", "tty; exit 5")
    assert status == 5 and out.startswith(b"/dev/pts/0\r\n"), out
    assert no_containers(box)


# A size no program falls back to: the client's own, or none.
ODD_SIZE = (33, 101)
# The terminal's size once the client's resize has come, bounded in time.
SIZED = (
    'i=0; until s=$(stty size 2>/dev/null) && [ -n "$s" ] && [ "$s" != "0 0" ] '
    '|| [ $i -ge 200 ]; do sleep 0.05; i=$((i+1)); done; echo "size $s"'
)


def test_run_it_terminal_gets_the_clients_size(box):
    # CLI 20.10 (API 1.41: no ConsoleSize in create) sends resize only after start's answer,
    # as it does to dockerd 20.10: the container may start on a terminal of 0 rows and columns
    # (busybox's `stty size` then prints nothing, on stdout), so it waits for the size, bounded.
    status, out = _on_a_pty(box, "run", "-it", "--rm", "busybox", "sh", "-c", SIZED, size=ODD_SIZE)
    assert status == 0 and b"size 33 101\r\n" in out, out
    assert no_containers(box)


def test_exec_it_gets_a_terminal(box):
    box.docker("run", "-d", "--name", "term", "busybox", "sleep", "300", check=True)
    # CLI 20.10 resizes only after exec start's answer, as to dockerd: the command may start on
    # a terminal of 0 rows and columns, so it waits for the size (SIZED).
    script = f"tty; {SIZED}; : > /dev/tty && echo controlling; exit 4"
    try:
        status, out = _on_a_pty(box, "exec", "-it", "term", "sh", "-c", script, size=ODD_SIZE)
        # The terminal is the container's own (/dev/pts there), the process's controlling
        # terminal (a shell has job control), of the client's size.
        found = re.search(rb"^/dev/pts/\d+\r\nsize 33 101\r\ncontrolling\r\n", out)
        assert status == 4 and found, out
    finally:
        box.docker("rm", "-f", "term")


def test_exec_with_a_console_size_starts_on_a_terminal_of_that_size(box):
    # API 1.42+ clients (docker 23 on) send the size with the exec: no resize race then.
    box.docker("run", "-d", "--name", "sized", "busybox", "sleep", "300", check=True)
    try:
        body = {
            "Cmd": ["stty", "size"],
            "Tty": True,
            "AttachStdout": True,
            "ConsoleSize": [33, 101],
        }
        status, _, made = box.request(
            "POST", "/v1.44/containers/sized/exec", json.dumps(body), JSON
        )
        assert status == 201, made
        exec_id = json.loads(made)["Id"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(box.socket))
            start = json.dumps({"Detach": False, "Tty": True}).encode()
            s.sendall(
                f"POST /v1.44/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(start)}\r\n\r\n".encode()
                + start
            )
            s.shutdown(socket.SHUT_WR)  # no input: the CLI half-closes too
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        head, _, out = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101") and out == b"33 101\r\n", answer
        bad = dict(body, ConsoleSize=["tall", 80])
        status, _, said = box.request("POST", "/v1.44/containers/sized/exec", json.dumps(bad), JSON)
        assert status == 400 and b"ConsoleSize" in said
    finally:
        box.docker("rm", "-f", "sized")


def test_run_with_a_console_size_starts_on_a_terminal_of_that_size(box):
    # docker 23 on sends HostConfig.ConsoleSize with create: the pty is made that size.
    body = {
        "Image": "busybox",
        "Cmd": ["stty", "size"],
        "Tty": True,
        "HostConfig": {"ConsoleSize": [33, 101]},
    }
    status, _, made = box.request(
        "POST", "/v1.44/containers/create?name=sizedrun", json.dumps(body), JSON
    )
    assert status == 201, made
    try:
        assert box.request("POST", "/v1.44/containers/sizedrun/start")[0] == 204
        status, _, waited = box.request("POST", "/v1.44/containers/sizedrun/wait")
        assert status == 200 and json.loads(waited)["StatusCode"] == 0, waited
        status, _, out = box.request("GET", "/v1.44/containers/sizedrun/logs?stdout=1")
        assert status == 200 and out == b"33 101\r\n", out
        bad = dict(body, HostConfig={"ConsoleSize": [0, "wide"]})
        status, _, said = box.request("POST", "/v1.44/containers/create", json.dumps(bad), JSON)
        assert status == 400 and b"ConsoleSize" in said, said
    finally:
        box.docker("rm", "-f", "sizedrun")


def test_a_memory_limit_holds_and_the_oom_kill_shows_in_inspect(box):
    hog = "head -c 200m /dev/zero | tail > /dev/null"  # tail keeps a line with no end in memory
    result = box.docker(
        "run", "--name", "hog", "-m", "32m", "busybox", "sh", "-c", hog, timeout=120
    )
    try:
        assert result.returncode == 137, result
        (state,) = json.loads(box.docker("inspect", "hog", check=True).stdout)
        assert state["State"]["OOMKilled"] is True
        assert state["HostConfig"]["Memory"] == 32 << 20
    finally:
        box.docker("rm", "-f", "hog")


def test_cpus_sets_the_cfs_quota(box):
    read = (
        "cat /sys/fs/cgroup/cpu.max 2>/dev/null || "
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us"
    )
    result = box.docker("run", "--rm", "--cpus", "0.5", "busybox", "sh", "-c", read, check=True)
    assert result.stdout.split() == ["50000", "100000"], result.stdout


def test_top_and_stats_read_the_containers_cgroup(box):
    box.docker("run", "-d", "--name", "busy", "busybox", "sleep", "300", check=True)
    try:
        top = box.docker("top", "busy", check=True).stdout.splitlines()
        assert top[0].split()[:2] == ["UID", "PID"] and "sleep 300" in top[1]
        stats = box.docker(
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.PIDs}} {{.MemUsage}}",
            "busy",
            check=True,
        )
        name, pids, usage = stats.stdout.split(" ", 2)
        assert (name, pids) == ("busy", "1") and "/" in usage
    finally:
        box.docker("rm", "-f", "busy")


def test_a_published_port_is_reached_from_another_namespace(box):
    web = "mkdir /www; echo hello from the engine > /www/index.html; httpd -f -p 80 -h /www"
    box.docker(
        "run", "-d", "--name", "web", "-p", "18091:80", "busybox", "sh", "-c", web, check=True
    )
    client_bridge = network.bridge_add("lkbrcli")
    try:
        network.netns_add("labkit-tengine")
        network.connect(client_bridge, "labkit-tengine")
        answer = http_get_in(
            "labkit-tengine", str(client_bridge.gateway), 18091, b"hello", seconds=15
        )
        assert b"hello from the engine" in answer
        port = box.docker("port", "web", check=True).stdout
        assert "80/tcp -> 0.0.0.0:18091" in port
    finally:
        box.docker("rm", "-f", "web")
        if "labkit-tengine" in network.netns_list():
            network.netns_delete("labkit-tengine")
        network.bridge_delete("lkbrcli")


def test_docker_py_runs_containers(box):
    client = docker.DockerClient(base_url=f"unix://{box.socket}", timeout=120)
    try:
        assert client.containers.run("busybox", ["echo", "hi"], remove=True) == b"hi\n"
        c = client.containers.run(
            "busybox", ["sh", "-c", "echo out; echo err >&2; exit 3"], detach=True
        )
        assert c.wait(timeout=60)["StatusCode"] == 3
        assert c.logs() == b"out\nerr\n" and c.logs(stdout=False) == b"err\n"
        c.remove()
        c = client.containers.run("busybox", ["sleep", "300"], detach=True, name="py")
        assert client.containers.get("py").status == "running"
        result = c.exec_run(["sh", "-c", "echo a; echo b >&2; exit 2"], demux=True)
        assert result.exit_code == 2 and result.output == (b"a\n", b"b\n")
        c.remove(force=True)
        assert client.containers.list(all=True) == []
    finally:
        client.close()


def test_a_client_that_goes_away_mid_attach_leaves_the_engine_serving(box):
    loop = "while :; do echo tick; sleep 0.05; done"
    cli = subprocess.Popen(
        [DOCKER, "run", "--name", "gone", "busybox", "sh", "-c", loop],
        env=box.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert cli.stdout.readline() == b"tick\n"
        cli.kill()  # no goodbye: the hijacked connection just closes
        cli.wait(timeout=10)
        assert box.request("GET", "/_ping")[0] == 200
        # The container goes on, as with dockerd.
        assert box.docker("inspect", "-f", "{{.State.Running}}", "gone").stdout == "true\n"
    finally:
        box.docker("rm", "-f", "gone")
    assert no_containers(box)


def test_containers_outlive_an_engine_restart(box):
    box.docker("run", "-d", "--name", "lives", "busybox", "sleep", "300", check=True)
    try:
        pid = int(box.docker("inspect", "-f", "{{.State.Pid}}", "lives", check=True).stdout)
        assert box.stop() == 0
        assert os.path.exists(f"/proc/{pid}")  # the engine is gone, the container is not
        box.start()
        listed = box.docker("ps", "--format", "{{.Names}} {{.Status}}", check=True).stdout
        assert listed.startswith("lives Up")
        assert (
            box.docker("exec", "lives", "echo", "still here", check=True).stdout == "still here\n"
        )
    finally:
        box.docker("rm", "-f", "lives")
    assert no_containers(box)


# Fifty containers at once take many minutes in scripts/test-v2's emulated kernel: the load
# test is the host's.
@pytest.mark.host_timing
def test_many_parallel_runs_leave_nothing(box):
    def one(i: int) -> tuple[int, str, str]:
        r = box.docker("run", "--rm", "busybox", "echo", str(i), timeout=300)
        return r.returncode, r.stdout, r.stderr

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    failed = [r for r in results if r[0] != 0]
    assert not failed, failed[:3]
    assert [r[1] for r in results] == [f"{i}\n" for i in range(50)]
    assert no_containers(box) and manager.list_containers(all=True) == []
