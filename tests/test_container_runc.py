"""labkit-runtime against the real thing: the same busybox bundle run by Debian's runc and by us.

The bundle's config.json is what `runc spec` writes (runc's own defaults: 3 capabilities,
no_new_privs, a read-only root, masked and read-only paths), with the probe as its process. An
isolation probe inside answers the same questions under both runtimes, and the answers must be
identical. The life cycle is driven through both command lines with the same exit codes.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import mountinfo, rootfs
from labkit.cgroups import Cgroup
from labkit.container import capabilities
from labkit.container.spec import Process, Spec

from .conftest import CARELESS_CALLER, NO_SIGNALS, signal_fields

RUNTIME = [sys.executable, "-m", "labkit.container.cli"]

# Each line answers one question; errors go to stdout so that refusals are compared too.
PROBE = r"""
exec 2>&1
echo hostname $(hostname)
echo ids $(id -u) $(id -g) $(id -G)
echo pid $$
grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status
echo links $(ls /sys/class/net)
for f in /dev/* /dev/pts/*; do stat -c 'dev %n %F %a %t:%T' "$f"; done
echo nofile $(ulimit -n)
echo keys $(wc -c < /proc/keys) acpi $(ls /proc/acpi | wc -l) firmware $(ls /sys/firmware | wc -l)
v=$(cat /proc/sys/vm/overcommit_memory)
echo "$v" > /proc/sys/vm/overcommit_memory && echo sysctl written
echo h > /proc/sysrq-trigger && echo sysrq written
touch /root-write && echo root written
mknod /dev/shm/sda b 8 0 && echo mknod done
mount -t tmpfs none /dev/shm && echo mount done
mkdir /dev/shm/dir && echo mkdir done
echo mountinfo
cat /proc/self/mountinfo
"""


@pytest.fixture(scope="module")
def runc() -> str:
    path = shutil.which("runc")
    assert path, "runc is missing: `scripts/setup test` installs Debian's runc"
    return path


@pytest.fixture
def bundle(tmp_path, runc) -> Path:
    subprocess.run([runc, "spec", "--bundle", str(tmp_path)], check=True)
    rootfs.build(tmp_path / "rootfs")
    config = json.loads((tmp_path / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", PROBE]
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def change(bundle: Path, edit) -> None:
    config = json.loads((bundle / "config.json").read_text())
    edit(config)
    (bundle / "config.json").write_text(json.dumps(config))


def run_both(runc: str, bundle: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    """The probe's answers under runc and under labkit-runtime (same bundle, one after another)."""
    answers = []
    for command in ([runc, "--root", str(tmp_path / "runc")], RUNTIME):
        out = subprocess.run(
            [*command, "run", "--bundle", str(bundle), "probe"],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,  # the emulated v2 kernel (scripts/test-v2) is about 13 times slower
        )
        assert out.stderr == "" and out.returncode == 0, (command[0], out.stderr, out.stdout)
        answers.append(normalise(out.stdout))
    return answers[0], answers[1]


def normalise(output: str) -> list[str]:
    """The probe's lines, with the mount table reduced to what both runtimes must agree on.

    Mount ids, device numbers and the cgroup directories' names (runc's /<id>, labkit's
    labkit-ctr-<id>) differ by nature; what is mounted where, how, and with which options not.
    """
    head, table = output.split("mountinfo\n", 1)
    mounts = sorted(
        f"mount {m.point} {','.join(m.options)} {m.fstype} {m.source} {','.join(m.super_options)}"
        for m in mountinfo.parse(table)
    )
    return head.splitlines() + mounts


def test_the_isolation_probe_answers_the_same_under_runc_and_labkit(
    runc, bundle, tmp_path, state_dir
):
    by_runc, by_labkit = run_both(runc, bundle, tmp_path)
    assert by_labkit == by_runc
    # And the answers are the isolated ones (so two equally broken runtimes cannot pass).
    assert "hostname runc" in by_labkit and "pid 1" in by_labkit and "links lo" in by_labkit
    assert "CapEff:\t0000000020000420" in by_labkit and "NoNewPrivs:\t1" in by_labkit
    assert "keys 0 acpi 0 firmware 0" in by_labkit
    assert [line for line in by_labkit if line.endswith((" written", " done"))] == ["mkdir done"]
    assert any(line.startswith("mount /proc/sys ro,") for line in by_labkit)


def test_the_process_starts_with_no_signal_ignored_under_both(runc, bundle, tmp_path, state_dir):
    # The container's process reads its own dispositions; both runtimes are started by a caller
    # that ignores and blocks signals, and ignored signals survive fork and exec unless reset.
    grep = ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]
    change(bundle, lambda c: c["process"].update(args=grep))
    answers = []
    for command in ([runc, "--root", str(tmp_path / "runc")], RUNTIME):
        out = subprocess.run(
            [*CARELESS_CALLER, *command, "run", "--bundle", str(bundle), "signals"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert out.returncode == 0 and out.stderr == "", (command[0], out.stderr)
        answers.append(signal_fields(out.stdout))
    by_runc, by_labkit = answers
    assert by_labkit[1] == by_runc[1] == NO_SIGNALS[1]  # SigIgn: nothing ignored under either
    # runc hands its caller's blocked mask on to the process (SigBlk 0000000000002800 here, as
    # measured with runc 1.1); labkit starts it with none blocked, as a fresh process has.
    assert by_labkit == NO_SIGNALS


def test_a_seccomp_filter_is_applied_as_runc_applies_it(runc, bundle, tmp_path, state_dir):
    change(
        bundle,
        lambda c: c["linux"].update(
            seccomp={
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
                ],
            }
        ),
    )
    by_runc, by_labkit = run_both(runc, bundle, tmp_path)
    assert by_labkit == by_runc
    assert "Seccomp:\t2" in by_labkit
    assert "mkdir: can't create directory '/dev/shm/dir': Operation not permitted" in by_labkit


def run_with_dockers_capabilities(runc, bundle, tmp_path, probe: str) -> list[tuple[int, str]]:
    """(exit status, output) of *probe* under runc and labkit, with Docker's 14 capabilities."""
    docker = list(capabilities.DOCKER_DEFAULT)
    change(
        bundle,
        lambda c: c["process"].update(
            args=["sh", "-c", "exec 2>&1; " + probe],
            capabilities={k: docker for k in ("bounding", "effective", "permitted")},
        ),
    )
    answers = []
    for command in ([runc, "--root", str(tmp_path / "runc")], RUNTIME):
        out = subprocess.run(
            [*command, "run", "--bundle", str(bundle), "caps"],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,  # the emulated v2 kernel (scripts/test-v2) is about 13 times slower
        )
        answers.append((out.returncode, out.stdout))
    return answers


def test_dockers_capabilities_are_the_same_sets_under_both(runc, bundle, tmp_path, state_dir):
    answers = run_with_dockers_capabilities(
        runc, bundle, tmp_path, "grep -E '^Cap' /proc/self/status"
    )
    assert answers[1] == answers[0]
    assert "CapEff:\t00000000a80425fb" in answers[1][1]


def test_a_node_for_the_hosts_disk_cannot_be_opened_under_both(runc, bundle, tmp_path, state_dir):
    # With CAP_MKNOD, root in the container can make a node for the host's own disk; the device
    # rules let it make the node and refuse to open it: the v1 devices cgroup, or on cgroup v2
    # the eBPF program attached to the container's cgroup (runc's and labkit's alike).
    # (The attack only ever reads.)
    disk = os.stat("/").st_dev
    probe = (
        f"mknod /dev/disk b {os.major(disk)} {os.minor(disk)} && echo made; "
        "head -c 1 /dev/disk > /dev/null && echo read"
    )
    answers = run_with_dockers_capabilities(runc, bundle, tmp_path, probe)
    assert answers[1] == answers[0]
    assert answers[1][1].splitlines() == ["made", "head: /dev/disk: Operation not permitted"]


PRIVILEGED_PROBE = r"""
exec 2>&1
grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status
for f in $(find /dev -path /dev/pts -prune -o -print | sort); do
  stat -c 'dev %n %F %a %u:%g %t:%T' "$f"
done
: < /dev/loop-control && echo loop-control opened
echo mountinfo
cat /proc/self/mountinfo
"""


def test_the_spec_of_labkit_run_privileged_runs_the_same_under_runc(
    runc, bundle, tmp_path, state_dir
):
    # What `labkit run --privileged` asks of the runtime (every capability we have, no seccomp,
    # nothing masked or read-only, /sys writable, the host's devices all allowed), run by both.
    # The probe only lists the devices and opens one for reading: it never writes to one.
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("this host has no /dev/loop-control to look for (modprobe loop)")
    from labkit.container import dockerconfig

    config = {"Cmd": ["sh", "-c", PRIVILEGED_PROBE], "Env": ["PATH=/bin:/sbin"]}
    spec = dockerconfig.to_spec(
        config, {"Privileged": True}, str(bundle / "rootfs"), hostname="priv"
    )
    assert spec.linux.devices and spec.linux.seccomp is None and spec.linux.masked_paths == []
    (bundle / "config.json").write_text(spec.to_json())
    by_runc, by_labkit = run_both(runc, bundle, tmp_path)
    assert by_labkit == by_runc
    assert f"CapEff:\t{capabilities.mask(capabilities.bounding()):016x}" in by_labkit
    assert "Seccomp:\t0" in by_labkit and "loop-control opened" in by_labkit
    rdev = os.stat("/dev/loop-control").st_rdev
    assert any(
        line.startswith("dev /dev/loop-control character special file ")
        and line.endswith(f" {os.major(rdev):x}:{os.minor(rdev):x}")
        for line in by_labkit
    )
    assert any(line.startswith("mount /sys rw,") for line in by_labkit)


def syscall_program(number: int, *args: int) -> bytes:
    """A static x86_64 program that makes one system call and exits with its errno (0: success).

    busybox has no applet for some calls Docker's profile refuses (keyctl), so the test writes
    the ten instructions itself: an ELF header, one loadable segment, then the code.
    """
    code = bytes([0xB8]) + struct.pack("<i", number)  # mov eax, number
    for opcode, arg in zip((0xBF, 0xBE, 0xBA), args):  # mov edi/esi/edx, arg
        code += bytes([opcode]) + struct.pack("<i", arg)
    code += bytes.fromhex(
        "0f05"  # syscall: the kernel's answer in eax, -errno on failure
        "31ff"  # xor edi, edi: exit status 0...
        "85c0"  # test eax, eax
        "7904"  # jns +4: ...if the call succeeded
        "89c7f7df"  # mov edi, eax; neg edi: else the errno
        "b8e7000000"  # mov eax, 231 (exit_group)
        "0f05"  # syscall
    )
    base, headers = 0x400000, 64 + 56
    size = headers + len(code)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)  # 64-bit, little-endian, ELF version 1
    elf = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, 0x3E, 1, base + headers, 64, 0, 0, 64, 56,
                      1, 0, 0, 0)  # fmt: skip
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD, r-x
    return elf + segment + code


KEYCTL = 250  # x86_64's number; keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
SECCOMP_PROBE = """
grep Seccomp: /proc/self/status
unshare -U true && echo unshare done
mount -t tmpfs none /dev/shm && echo mount done
/keyctl; echo keyctl $?
echo one two three | tr a-z A-Z | wc -w
"""


def test_dockers_seccomp_profile_refuses_as_under_runc(runc, bundle, tmp_path, state_dir):
    if os.uname().machine != "x86_64":
        pytest.skip("the keyctl probe is an x86_64 program")
    keyctl = bundle / "rootfs" / "keyctl"
    keyctl.write_bytes(syscall_program(KEYCTL, 0, -3, 0))
    keyctl.chmod(0o755)
    # labkit's default linux.seccomp: Docker's profile for Docker's capabilities.
    profile = Spec(Process(["sh"])).to_dict()["linux"]["seccomp"]
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    # Without a filter, the same probe may make a user namespace and ask for its keyring:
    # so what is refused below is refused by the profile (mount needs CAP_SYS_ADMIN anyway).
    change(bundle, lambda c: c["linux"].pop("seccomp", None))
    open_answers = run_with_dockers_capabilities(runc, bundle, tmp_path, SECCOMP_PROBE)
    change(bundle, lambda c: c["linux"].update(seccomp=profile))
    answers = run_with_dockers_capabilities(runc, bundle, tmp_path, SECCOMP_PROBE)
    assert answers[1] == answers[0]
    assert open_answers[1] == open_answers[0]
    lines = answers[1][1].splitlines()
    assert open_answers[1][1].splitlines()[:2] == ["Seccomp:\t0", "unshare done"]
    assert "keyctl 0" in open_answers[1][1].splitlines()
    assert lines[0] == "Seccomp:\t2"
    assert lines[1].endswith("Operation not permitted")  # unshare, refused by the filter
    assert lines[2] == "mount: permission denied (are you root?)"  # busybox's words for EPERM
    assert lines[3:] == ["keyctl 1", "3"]  # EPERM; and a pipeline of allowed calls still works


def test_the_life_cycle_has_runcs_exit_codes_and_states(runc, bundle, tmp_path, state_dir):
    # Killed by the steps: long enough for 27 commands under emulation (scripts/test-v2).
    change(bundle, lambda c: c["process"].update(args=["sleep", "600"]))
    steps = [
        ("state", "c1"),
        ("create", "--bundle", str(bundle), "c1"),
        ("state", "c1"),
        ("create", "--bundle", str(bundle), "c1"),
        ("start", "c1"),
        ("state", "c1"),
        ("start", "c1"),
        ("delete", "c1"),
        ("kill", "c1", "KILL"),
        ("wait",),
        ("state", "c1"),
        ("kill", "c1", "9"),
        ("delete", "c1"),
        ("delete", "c1"),
        ("bogus",),
        ("kill",),
        ("create", "--bundle", str(bundle), "c2"),
        ("delete", "c2"),
        ("state", "c2"),
        ("create", "--bundle", str(bundle), "c3"),
        ("start", "c3"),
        ("delete", "--force", "c3"),
        ("run", "--detach", "--bundle", str(bundle), "c4"),
        ("state", "c4"),
        ("kill", "c4", "SIGKILL"),
        ("delete", "--force", "c4"),
        ("list", "--format", "json"),
    ]
    results = {}
    try:
        for name, command in (
            ("runc", [runc, "--root", str(tmp_path / "runc")]),
            ("labkit", RUNTIME),
        ):
            results[name] = drive(command, steps, tmp_path)
    finally:
        for cid in ("c1", "c2", "c3", "c4"):
            subprocess.run(
                [runc, "--root", str(tmp_path / "runc"), "delete", "--force", cid],
                check=False,
                capture_output=True,
            )
    assert results["labkit"] == results["runc"]
    assert ("state", 0, ("created", "c1", str(bundle), True)) in results["labkit"]
    assert ("start", 1, None) in results["labkit"]  # the second start
    assert ("bogus", 3, None) in results["labkit"]
    assert not Cgroup("ctr-c3").exists


def drive(command: list[str], steps: list[tuple[str, ...]], tmp_path: Path) -> list[tuple]:
    """Run each step's command line; (command, exit status, what state/list said) for each."""
    seen: list[tuple] = []
    for step in steps:
        if step == ("wait",):
            state = {}
            for _ in range(100):  # bounded: at most 100 polls
                out = subprocess.run(
                    [*command, "state", "c1"], check=False, capture_output=True, text=True
                )
                state = json.loads(out.stdout)
                if state["status"] == "stopped":
                    break
            seen.append(("wait", state["status"]))
            continue
        # Files, not pipes: a created container keeps the runtime's stdio open.
        with open(tmp_path / "out", "w") as f, open(tmp_path / "err", "w") as e:
            out = subprocess.run(
                [*command, *step],
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=e,
                timeout=120,
                check=False,
            )
        text = (tmp_path / "out").read_text()
        status = None
        if step[0] == "state" and out.returncode == 0:
            state = json.loads(text)
            status = (state["status"], state["id"], state["bundle"], state["pid"] > 0)
        if step[0] == "list":
            status = text.strip()
        seen.append((step[0], out.returncode, status))
    return seen


def console_session(command: list[str], bundle: Path, tmp_path: Path, cid: str) -> tuple:
    """create --console-socket, receive the terminal's master, start, read what the process
    wrote to its terminal; (create's status, the output), the container deleted after."""
    path = tmp_path / f"{cid}.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(30)
    out = tmp_path / f"{cid}.out"
    with open(out, "w") as f:
        create = subprocess.Popen(
            [*command, "create", "--console-socket", str(path), "--bundle", str(bundle), cid],
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=f,
        )
    try:
        conn, _ = server.accept()
        with conn:
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 1024, 1)
        assert create.wait(30) == 0, out.read_text()
        master = fds[0]
        subprocess.run([*command, "start", cid], check=True, timeout=120)
        text = b""
        for _ in range(100):  # bounded: until the terminal closes (EIO) or 100 reads
            if not select.select([master], [], [], 5)[0]:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break  # EIO: the last process holding the terminal exited
            if not chunk:
                break
            text += chunk
        os.close(master)
        return create.returncode, text.decode()
    finally:
        subprocess.run([*command, "delete", "--force", cid], check=False, capture_output=True)
        server.close()


def test_a_terminal_through_the_console_socket_as_runc_gives_it(runc, bundle, tmp_path, state_dir):
    probe = "tty; test -t 0 && echo stdin-tty; test -t 1 && echo stdout-tty; echo done"
    change(bundle, lambda c: c["process"].update(terminal=True, args=["sh", "-c", probe]))
    by_runc = console_session([runc, "--root", str(tmp_path / "runc")], bundle, tmp_path, "t1")
    by_labkit = console_session(RUNTIME, bundle, tmp_path, "t2")
    assert by_labkit == by_runc
    assert by_labkit[1].splitlines() == ["/dev/pts/0", "stdin-tty", "stdout-tty", "done"]


def test_a_terminal_without_a_console_socket_is_refused_by_both(runc, bundle, tmp_path, state_dir):
    change(bundle, lambda c: c["process"].update(terminal=True))
    results = []
    for command in ([runc, "--root", str(tmp_path / "runc")], RUNTIME):
        out = subprocess.run(
            [*command, "create", "--bundle", str(bundle), "tty"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        results.append((out.returncode, "cannot allocate tty if" in out.stderr))
    assert results[1] == results[0] == (1, True)
    assert not Cgroup("ctr-tty").exists
