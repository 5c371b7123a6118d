"""The lab VM: the Vagrantfile and scripts/provision-vm.

No VM boots here (no hypervisor, no systemd as PID 1). What runs: Vagrant's own validation of the
Vagrantfile, the settings the Vagrantfile hands Vagrant (read by loading it in Ruby with a stand-in
for Vagrant that records every setting), and provision-vm's file-writing part, run twice into a
scratch root with a stand-in systemctl that records any call.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

# What these check runs on the host (Vagrant and the provisioning scripts), whatever its kernel:
# scripts/test-v2 skips them.
pytestmark = pytest.mark.host_tooling

REPO = Path(__file__).resolve().parents[1]
PROVISION = REPO / "scripts" / "provision-vm"
VAGRANT = shutil.which("vagrant")
RUBY = shutil.which("ruby")
needs_vagrant = pytest.mark.skipif(
    VAGRANT is None, reason="no vagrant binary (scripts/setup test installs it)"
)
needs_ruby = pytest.mark.skipif(RUBY is None, reason="no ruby to load the Vagrantfile with")


def vagrant(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run vagrant on the repository's Vagrantfile, with its home and .vagrant kept in tmp_path."""
    full_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "VAGRANT_HOME": str(tmp_path / "vagrant.d"),
        "VAGRANT_CWD": str(REPO),
        "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot-vagrant"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_NO_COLOR": "1",
        **env,
    }
    return subprocess.run(
        [VAGRANT, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=full_env,
        cwd=tmp_path,
    )


@needs_vagrant
def test_vagrant_validates_the_vagrantfile(tmp_path):
    result = vagrant(tmp_path, "validate", "--ignore-provider")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout
    version = tuple(int(x) for x in vagrant(tmp_path, "--version").stdout.split()[1].split(".")[:2])
    old_vagrant_warnings = result.stderr.count("cannot choose a box by CPU architecture")
    assert old_vagrant_warnings == (1 if version < (2, 4) else 0), result.stderr
    assert not (REPO / ".vagrant").exists(), "vagrant left a .vagrant directory in the repository"


@needs_vagrant
def test_valid_overrides_pass_validation(tmp_path):
    result = vagrant(
        tmp_path,
        "validate",
        "--ignore-provider",
        LABKIT_VM_CPUS="3",
        LABKIT_VM_MEMORY="4096",
        LABKIT_VM_PORT="18888",
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_vagrant
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LABKIT_VM_CPUS", "two"),
        ("LABKIT_VM_CPUS", "0"),
        ("LABKIT_VM_MEMORY", "512"),
        ("LABKIT_VM_PORT", "70000"),
    ],
)
def test_a_bad_override_stops_vagrant_with_one_sentence(tmp_path, name, value):
    result = vagrant(tmp_path, "validate", "--ignore-provider", **{name: value})
    assert result.returncode != 0
    message = result.stderr.strip()
    assert message.startswith(f"labkit: {name}={value} is not a number"), message
    assert message.count("\n") == 0, message


# A stand-in for Vagrant: Vagrant.configure yields an object that records every setting made on
# it (path and value) and every call with arguments (network, synced_folder, provision).
RECORDER = r"""
require "json"
LOG = []
class Recorder
  def initialize(path) @path = path end
  def respond_to_missing?(*) true end
  def method_missing(name, *args, **kw, &blk)
    n = name.to_s
    if n == "[]="  # vmx["memsize"] = "2048"
      LOG << { "set" => @path + [args[0]], "value" => args[1] }
      return args[1]
    end
    if n.end_with?("=")
      LOG << { "set" => @path + [n.chomp("=")], "value" => args.first }
      return args.first
    end
    here = @path + [n] + args.map(&:to_s)
    LOG << { "call" => @path + [n], "args" => args, "kw" => kw } unless args.empty? && kw.empty?
    blk.call(Recorder.new(here), Recorder.new(here + ["override"])) if blk
    Recorder.new(here)
  end
end
module Vagrant
  def self.configure(version) yield Recorder.new([]) end
end
load ARGV[0]
puts JSON.generate(LOG)
"""


def vagrant_settings(tmp_path: Path, **env: str) -> tuple[dict, list]:
    """The settings the Vagrantfile makes under *env*: ({path: value}, [calls])."""
    script = tmp_path / "recorder.rb"
    script.write_text(RECORDER)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_VM_")}
    result = subprocess.run(
        [RUBY, str(script), str(REPO / "Vagrantfile")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, **env},
    )
    assert result.returncode == 0, result.stderr
    log = json.loads(result.stdout)
    settings = {tuple(e["set"]): e["value"] for e in log if "set" in e}
    calls = [e for e in log if "call" in e]
    return settings, calls


@needs_ruby
@pytest.mark.parametrize(
    ("env", "cpus", "memory"),
    [({}, 2, 2048), ({"LABKIT_VM_CPUS": "3", "LABKIT_VM_MEMORY": "3072"}, 3, 3072)],
)
def test_every_provider_gets_the_cpus_and_memory_asked_for(tmp_path, env, cpus, memory):
    settings, _ = vagrant_settings(tmp_path, **env)
    for provider in ("virtualbox", "parallels", "libvirt"):
        assert settings[("vm", "provider", provider, "cpus")] == cpus, provider
        assert settings[("vm", "provider", provider, "memory")] == memory, provider
    vmx = ("vm", "provider", "vmware_desktop", "vmx")  # VMware takes them as .vmx entries
    assert settings[vmx + ("numvcpus",)] == str(cpus)
    assert settings[vmx + ("memsize",)] == str(memory)


@needs_ruby
def test_boxes_are_pinned_and_libvirt_gets_its_own(tmp_path):
    settings, _ = vagrant_settings(tmp_path)
    assert settings[("vm", "box")] == "bento/ubuntu-24.04"
    assert settings[("vm", "box_version")].count(".") == 2  # an exact version, not a constraint
    override = ("vm", "provider", "libvirt", "override", "vm")
    assert settings[override + ("box",)] == "cloud-image/ubuntu-24.04"
    assert settings[override + ("box_version",)].count(".") == 2
    for provider in ("virtualbox", "vmware_desktop", "parallels"):
        assert ("vm", "provider", provider, "override", "vm", "box") not in settings


@needs_ruby
@pytest.mark.parametrize(("env", "host_port"), [({}, 8888), ({"LABKIT_VM_PORT": "18080"}, 18080)])
def test_jupyterlab_is_forwarded_to_the_host_loopback_only(tmp_path, env, host_port):
    _, calls = vagrant_settings(tmp_path, **env)
    forwards = [
        c for c in calls if c["call"] == ["vm", "network"] and c["args"] == ["forwarded_port"]
    ]
    assert len(forwards) == 1
    assert forwards[0]["kw"] == {
        "id": "jupyterlab",
        "guest": 8888,
        "host": host_port,
        "host_ip": "127.0.0.1",
    }
    # Nothing else puts the guest on a network the host shares with others.
    assert [c for c in calls if c["call"] == ["vm", "network"]] == forwards
    provision = [c for c in calls if c["call"] == ["vm", "provision"]]
    assert len(provision) == 1
    assert provision[0]["kw"]["env"] == {"LABKIT_HOST_PORT": str(host_port)}
    assert provision[0]["kw"]["inline"].endswith("/labkit/scripts/provision-vm")


@needs_ruby
def test_the_repository_is_copied_without_the_hosts_venv(tmp_path):
    _, calls = vagrant_settings(tmp_path)
    folders = {c["args"][1]: c["kw"] for c in calls if c["call"] == ["vm", "synced_folder"]}
    assert folders["/vagrant"] == {"disabled": True}
    assert folders["/labkit"]["type"] == "rsync"
    assert ".venv/" in folders["/labkit"]["rsync__exclude"]
    assert "--delete" not in folders["/labkit"]["rsync__args"]  # a lab's edits survive `vagrant up`


# --- provision-vm -----------------------------------------------------------------------------


def provision(
    root: Path, bin_dir: Path, *args: str, userns_switch: Path | None = None, env=None
) -> subprocess.CompletedProcess:
    """provision-vm into the scratch root; AppArmor's userns switch at *userns_switch* (none);
    *env*: more settings for it."""
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LABKIT_DESTDIR": str(root),
        "SYSTEMCTL_LOG": str(bin_dir / "systemctl.log"),
        "LABKIT_USERNS_SYSCTL": str(userns_switch or bin_dir / "no-such-switch"),
        **(env or {}),
    }
    return subprocess.run(
        ["bash", str(PROVISION), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture
def fake_systemctl(tmp_path) -> Path:
    """A bin directory whose systemctl/journalctl only record that they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("systemctl", "journalctl"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "$SYSTEMCTL_LOG"\n')
        tool.chmod(0o755)
    return bin_dir


def test_provisioning_twice_gives_the_same_files(tmp_path, fake_systemctl):
    root = tmp_path / "root"
    first = provision(root, fake_systemctl, "--no-setup")
    assert first.returncode == 0, first.stderr
    unit = root / "etc/systemd/system/jupyterlab.service"
    token = root / "etc/labkit/jupyter-token"
    unit_text = unit.read_text()
    token_stat = token.stat()
    token_text = token.read_text()

    second = provision(root, fake_systemctl, "--no-setup")
    assert second.returncode == 0, second.stderr
    assert unit.read_text() == unit_text
    assert token.read_text() == token_text
    assert (token.stat().st_ino, token.stat().st_mtime_ns) == (
        token_stat.st_ino,
        token_stat.st_mtime_ns,
    )
    assert "changed: yes" in first.stdout and "changed: no" in second.stdout
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "etc/labkit/jupyter-token",
        "etc/labkit/lab-vm",  # doctor's mark: inside the lab VM, never "use the lab VM"
        "etc/systemd/system/jupyterlab.service",
        "etc/systemd/system/lab-engine.service",
    ]
    # A scratch root never reaches the real systemd.
    assert not (fake_systemctl / "systemctl.log").exists()


def test_the_token_is_secret_and_random(tmp_path, fake_systemctl):
    tokens = []
    for name in ("a", "b"):
        root = tmp_path / name
        assert provision(root, fake_systemctl, "--no-setup").returncode == 0
        token = root / "etc/labkit/jupyter-token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
        tokens.append(token.read_text())
    assert all(len(t) == 48 and set(t) <= set("0123456789abcdef") for t in tokens), tokens
    assert tokens[0] != tokens[1]


def test_an_existing_token_is_kept(tmp_path, fake_systemctl):
    token = tmp_path / "root/etc/labkit/jupyter-token"
    token.parent.mkdir(parents=True)
    token.write_text("chosen-by-hand")
    assert provision(tmp_path / "root", fake_systemctl, "--no-setup").returncode == 0
    assert token.read_text() == "chosen-by-hand"


def test_the_unit_runs_scripts_lab_as_root_with_cgroup_delegation(tmp_path, fake_systemctl):
    root = tmp_path / "root"
    assert provision(root, fake_systemctl, "--no-setup").returncode == 0
    unit = root / "etc/systemd/system/jupyterlab.service"
    assert not unit.name.startswith("labkit")  # leak checks treat cgroups named labkit* as ours
    lines = unit.read_text().splitlines()
    assert "User=root" in lines
    assert "Delegate=yes" in lines
    assert "DelegateSubgroup=server" in lines
    assert f"ExecStart=/bin/bash {REPO}/scripts/lab" in lines
    assert "Environment=LABKIT_IP=0.0.0.0 LABKIT_PORT=8888" in lines
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644


def test_the_engine_unit_serves_labkits_engine_and_keeps_its_containers(tmp_path, fake_systemctl):
    root = tmp_path / "root"
    assert provision(root, fake_systemctl, "--no-setup").returncode == 0
    unit = root / "etc/systemd/system/lab-engine.service"
    lines = unit.read_text().splitlines()
    assert f"ExecStart={REPO}/.venv/bin/labkit engine" in lines
    # Containers' cgroups beside the leaf; a stop or restart of the engine leaves them running.
    assert {"User=root", "Delegate=yes", "DelegateSubgroup=engine", "KillMode=process"} <= set(
        lines
    )
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("name", ["jupyterlab.service", "lab-engine.service"])
def test_systemd_accepts_the_unit(tmp_path, fake_systemctl, name):
    root = tmp_path / "root"
    assert provision(root, fake_systemctl, "--no-setup").returncode == 0
    unit = root / "etc/systemd/system" / name
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    version = int(
        subprocess.run(
            ["systemd-analyze", "--version"],
            check=False,
            capture_output=True,
            text=True,
        ).stdout.split()[1]
    )
    complaints = [line for line in result.stderr.splitlines() if line.strip()]
    if version < 254:  # DelegateSubgroup= is newer than this host's systemd; Ubuntu 24.04 has 255
        complaints = [c for c in complaints if "Unknown key 'DelegateSubgroup'" not in c]
    assert complaints == []


def test_provision_vm_rejects_unknown_options(tmp_path, fake_systemctl):
    result = provision(tmp_path / "root", fake_systemctl, "--no-start")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "provision-vm: unknown option '--no-start': the only option is --no-setup."
    )
    assert not (tmp_path / "root").exists()


def test_the_token_is_not_in_the_unit(tmp_path, fake_systemctl):
    root = tmp_path / "root"
    assert provision(root, fake_systemctl, "--no-setup").returncode == 0
    token = (root / "etc/labkit/jupyter-token").read_text()
    assert "\n" not in token  # the server takes the file's whole text as the token
    assert token not in (root / "etc/systemd/system/jupyterlab.service").read_text()


def test_scripts_lab_hands_the_token_over_in_a_file():
    text = (REPO / "scripts" / "lab").read_text()
    exec_line = text[text.index("exec .venv/bin/jupyter") :]
    assert "token" not in exec_line.lower()  # on the command line, `ps` would show it
    assert "export JUPYTER_TOKEN_FILE=$token_file" in text
    assert "--LabApp.news_url=None" in exec_line  # no news pop-up


def test_apparmors_userns_restriction_is_lifted_where_the_kernel_has_it(tmp_path, fake_systemctl):
    switch = tmp_path / "apparmor_restrict_unprivileged_userns"
    switch.write_text("1\n")
    root = tmp_path / "root"
    first = provision(root, fake_systemctl, "--no-setup", userns_switch=switch)
    assert first.returncode == 0, first.stderr
    conf = root / "etc/sysctl.d/60-labkit-userns.conf"
    lines = conf.read_text().splitlines()
    assert "kernel.apparmor_restrict_unprivileged_userns = 0" in lines
    assert any(line.startswith("#") and "lesson 05" in line for line in lines)  # says why
    mtime = conf.stat().st_mtime_ns
    assert provision(root, fake_systemctl, "--no-setup", userns_switch=switch).returncode == 0
    assert conf.stat().st_mtime_ns == mtime
    assert switch.read_text() == "1\n"  # a scratch root never touches the running kernel


def test_no_sysctl_file_where_the_kernel_has_no_such_switch(tmp_path, fake_systemctl):
    root = tmp_path / "root"
    assert provision(root, fake_systemctl, "--no-setup").returncode == 0
    assert not (root / "etc/sysctl.d").exists()


def test_test_vm_can_be_skipped_for_quick_runs():
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "test-vm")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": os.environ["PATH"], "LABKIT_SKIP_VM": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "test-vm: skipped (LABKIT_SKIP_VM=1)."


def test_the_readme_test_command_runs_the_vm_after_the_v2_kernel():
    text = (REPO / "scripts" / "test").read_text()
    assert text.index("scripts/test-v2") < text.index("scripts/test-vm")


# --- scripts/vm/check-lab: the notebook run through a server's own kernels -------------------

CHECK_LAB = REPO / "scripts" / "vm" / "check-lab"


def check_lab(url, token_file, notebook, sanitize) -> subprocess.CompletedProcess:
    """scripts/vm/check-lab run against the server at *url* on one notebook."""
    args = ["--url", url, "--token-file", str(token_file), "--sanitize", str(sanitize)]
    return subprocess.run(
        [os.sys.executable, str(CHECK_LAB), *args, str(notebook)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def synthetic_notebook(path: Path) -> None:
    """Cells that pass, fail and are skipped or ignored, for nbval and check-lab alike."""
    import nbformat

    def cell(source, outputs=(), tags=None, count=1):
        c = nbformat.v4.new_code_cell(source)
        c.execution_count, c.outputs = count, list(outputs)
        if tags:
            c.metadata["tags"] = tags
        return c

    def out(text, name="stdout"):
        return nbformat.v4.new_output("stream", name=name, text=text)

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [
        cell('print("hello from pid", 4321)', [out("hello from pid 1111\n")]),  # 0 sanitized
        cell("import random\n# NBVAL_IGNORE_OUTPUT\nprint(random.random())", [out("0.5\n")]),
        cell("print('nbval skips me'); 1/0", tags=["nbval-skip"]),  # 2
        cell("6 * 7", [nbformat.v4.new_output("execute_result", data={"text/plain": "42"})]),
        cell('print("x")', [out("y\n")]),  # 4 differs
        cell('raise ValueError("boom")'),  # 5 error
        cell("# NBVAL_RAISES_EXCEPTION\n1/0", [], count=7),  # 6 error expected, output differs
        cell('print("never run before")', count=None),  # 7 not compared
        cell("import sys; print('err', file=sys.stderr)", [out("err\n", "stderr")]),  # 8
    ]
    nbformat.write(nb, str(path))


def failing_cells(text: str, pattern: str) -> set[int]:
    import re

    return {int(n) for n in re.findall(pattern, text)}


@pytest.fixture
def lab_server(tmp_path):
    """A JupyterLab server over tmp_path/nb whose token is in a file: (url, token file)."""
    import socket
    import urllib.request

    from tests.conftest import wait_until

    nb_dir = tmp_path / "nb"
    nb_dir.mkdir()
    token_file = tmp_path / "token"
    token_file.write_text("0123456789abcdef0123456789abcdef")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = Path(os.sys.executable).parent
    server = subprocess.Popen(
        [
            str(bin_dir / "jupyter"),
            "lab",
            "--allow-root",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={nb_dir}",
            "--LabApp.news_url=None",
        ],
        env={**os.environ, "JUPYTER_TOKEN_FILE": str(token_file), "HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers():
        try:
            urllib.request.urlopen(url + "/api", timeout=2).close()
            return True
        except OSError:
            return False

    try:
        assert wait_until(answers, 60), "jupyter lab did not start listening"
        yield url, token_file, nb_dir
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def test_check_lab_fails_the_cells_nbval_fails(lab_server):
    url, token_file, nb_dir = lab_server
    notebook = nb_dir / "t.ipynb"
    synthetic_notebook(notebook)
    sanitize = REPO / "notebooks" / "sanitize.cfg"
    nbval = subprocess.run(
        [
            os.sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--nbval",
            "--nbval-current-env",
            "--nbval-sanitize-with",
            str(sanitize),
            str(notebook),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=nb_dir,
    )
    ours = check_lab(url, token_file, notebook, sanitize)
    expected = failing_cells(nbval.stdout, r"FAILED \S*::Cell (\d+)")
    assert expected == {4, 5, 6}, nbval.stdout  # the notebook is built to fail these
    assert ours.returncode == 1, ours.stdout + ours.stderr
    assert failing_cells(ours.stdout, r"(?m)^    cell (\d+):") == expected, ours.stdout
    assert "FAIL t.ipynb (8 cells run, 5 compared, 1 skipped" in ours.stdout
    assert "refuses (302 to /login, 403)" in ours.stdout
    assert token_file.read_text() not in ours.stdout


def test_check_lab_passes_a_notebook_whose_outputs_match(lab_server):
    import nbformat

    url, token_file, nb_dir = lab_server
    notebook = nb_dir / "ok.ipynb"
    synthetic_notebook(notebook)
    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells = [c for i, c in enumerate(nb.cells) if i not in (4, 5, 6)]
    nbformat.write(nb, str(notebook))
    ours = check_lab(url, token_file, notebook, REPO / "notebooks" / "sanitize.cfg")
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert "PASS ok.ipynb (5 cells run, 3 compared, 1 skipped" in ours.stdout


def test_a_changed_scripts_lab_changes_the_unit(tmp_path, fake_systemctl):
    """The service restarts when the script it runs changed (a `git pull` then `vagrant up`)."""
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    for name in ("provision-vm", "lab"):
        shutil.copy(REPO / "scripts" / name, copy / "scripts" / name)
    root = tmp_path / "root"
    env = {
        "PATH": f"{fake_systemctl}:{os.environ['PATH']}",
        "LABKIT_DESTDIR": str(root),
        "LABKIT_USERNS_SYSCTL": str(tmp_path / "none"),
    }

    def run():
        return subprocess.run(
            ["bash", str(copy / "scripts" / "provision-vm"), "--no-setup"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )

    assert "changed: yes" in run().stdout
    assert "changed: no" in run().stdout
    with open(copy / "scripts" / "lab", "a") as lab:
        lab.write("# a change\n")
    assert "changed: yes" in run().stdout
