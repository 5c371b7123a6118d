"""labkit cleanup finds what labkit made from the kernel's tables, even after a crash."""

from __future__ import annotations

import os
import subprocess
import sys

from labkit import cleanup, namespaces

from .conftest import dead, process_state, wait_until


def start_owner(state_dir):
    """A separate Python process plays the notebook kernel: it keeps a namespace alive and
    starts a long-running command, then sleeps without cleaning up."""
    code = (
        "import time\n"
        "from labkit import namespaces as ns\n"
        "p = ns.spawn(['sleep', '60'], ['uts', 'ipc', 'pid', 'mnt'], hostname='crashed')\n"
        "ns.persist(p.pid, 'crashed')\n"
        "print(p.popen.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "LABKIT_STATE_DIR": str(state_dir)},
    )
    return owner, int(owner.stdout.readline())


def test_cleanup_kills_running_helpers_and_releases_kept_namespaces(state_dir):
    owner, relay = start_owner(state_dir)
    try:
        found = cleanup.leftovers()
        assert "namespaces: crashed (mnt uts ipc pid)" in found
        assert f"process: {relay} (labkit namespace helper)" in found
        assert any(line.startswith("mount: ") for line in found)
        assert cleanup.cleanup() == found
        assert wait_until(lambda: dead(relay))
        assert cleanup.leftovers() == []
        assert not state_dir.exists()
        assert str(state_dir) not in open("/proc/self/mountinfo").read()
    finally:
        owner.kill()
        owner.wait()


def test_cleanup_after_the_owner_crashed(state_dir):
    owner, relay = start_owner(state_dir)
    owner.kill()  # the crash: its helper dies with it (PR_SET_PDEATHSIG), the mounts stay
    owner.wait()
    assert wait_until(lambda: dead(relay))
    assert cleanup.leftovers()[0] == "namespaces: crashed (mnt uts ipc pid)"
    cleanup.cleanup()
    assert cleanup.leftovers() == []


def test_cleanup_leaves_another_state_directorys_helpers_alone(state_dir, tmp_path, monkeypatch):
    with namespaces.spawn(["sleep", "30"], ["uts"]) as mine:
        monkeypatch.setenv("LABKIT_STATE_DIR", str(tmp_path / "other"))
        assert cleanup.leftovers() == []
        cleanup.cleanup()
        assert mine.returncode is None  # still running
        monkeypatch.setenv("LABKIT_STATE_DIR", str(state_dir))


def test_cli_cleanup_dry_run_lists_and_changes_nothing(state_dir, capfd):
    from labkit.cli import main

    with namespaces.spawn(["sleep", "30"], ["uts"]) as proc:
        namespaces.persist(proc.pid, "dry")
        assert main(["cleanup", "--dry-run"]) == 0
        out = capfd.readouterr().out
        assert "namespaces: dry (uts)" in out
        assert namespaces.persisted() == {"dry": ["uts"]}
        assert main(["cleanup"]) == 0
        assert "removed namespaces: dry (uts)" in capfd.readouterr().out
    assert namespaces.persisted() == {}


def start_lesson_owner(state_dir, code: str):
    """A Python process plays a notebook kernel halfway through a lesson: it runs *code*,
    says so, and waits to be killed."""
    owner = subprocess.Popen(
        [sys.executable, "-c", code + "\nprint('ready', flush=True)\nimport time; time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "LABKIT_STATE_DIR": str(state_dir)},
    )
    import select

    if not select.select([owner.stdout], [], [], 120)[0]:  # a bound: a hung set-up fails
        owner.kill()
    assert owner.stdout.readline().strip() == "ready"
    return owner


def kill(owner) -> None:
    owner.kill()  # SIGKILL: nothing of the lesson's clean-up runs
    owner.wait(timeout=10)


def test_cleanup_detaches_lesson_41s_disk_after_the_kernel_was_killed(state_dir):
    from labkit import loop
    from labkit.lab import container as lab

    owner = start_lesson_owner(
        state_dir, "from labkit.lab import container\ncontainer.lesson_disk()"
    )
    kill(owner)
    image = str(lab.disk_image())
    (device,) = [dev for dev, path in loop.attached().items() if path == image]
    assert f"loop device: {device} (over {image})" in cleanup.leftovers()
    cleanup.cleanup()
    assert image not in loop.attached().values()
    assert cleanup.leftovers() == []


def test_cleanup_finds_a_loop_device_whose_file_was_deleted(state_dir):
    from labkit import loop

    state_dir.mkdir()
    image = state_dir / "disk.img"
    image.write_bytes(bytes(1 << 16))
    device = subprocess.run(
        ["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    image.unlink()  # the device keeps the file alive; sysfs names it "... (deleted)"
    try:
        assert f"loop device: {device} (over {image})" in cleanup.leftovers()
        cleanup.cleanup()
        assert device not in loop.attached()
    finally:
        if device in loop.attached():
            loop.detach(device)


def _runc_cgroups() -> list[str]:
    from labkit.lab import container as lab

    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(top, d) for d in dirs if d == lab.RUNC_CGROUPS_PATH]
        if top.count("/") > 10:
            dirs.clear()  # a bound on the walk's depth
    return found


def test_cleanup_deletes_lesson_42s_runc_containers_after_the_kernel_was_killed(state_dir):
    import json

    from labkit.lab import container as lab

    setup = (
        "from labkit.lab import container as lab\n"
        "b = lab.make_bundle(); c = lab.read_config(b)\n"
        "c['process']['terminal'] = False; c['process']['args'] = ['sleep', '60']\n"
        "lab.write_config(b, c)\n"
        "assert lab.runtime('runc', 'create', '--bundle', str(b), 'lesson42').returncode == 0\n"
    )
    owner = start_lesson_owner(state_dir, setup)
    kill(owner)
    root = state_dir / "lesson42" / "runc"
    runc = lab.runtimes()["runc"]
    state = json.loads(subprocess.run([*runc, "state", "lesson42"], capture_output=True).stdout)
    assert state["status"] == "created"
    assert _runc_cgroups(), "the runc container's cgroup is named as labkit's"
    assert f"runc container: lesson42 (created, --root {root})" in cleanup.leftovers()
    cleanup.cleanup()
    # Not only killed but reaped: runc's init was handed to PID 1, and cleanup waits for it.
    assert process_state(state["pid"]) == "gone"
    assert _runc_cgroups() == []
    assert cleanup.leftovers() == []
    assert not state_dir.exists()


def test_cleanup_deletes_a_running_runc_container(state_dir):
    import json

    from labkit.lab import container as lab

    bundle = lab.make_bundle()
    config = lab.read_config(bundle)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sleep", "60"]
    lab.write_config(bundle, config)
    assert lab.runtime("runc", "create", "--bundle", str(bundle), "left").returncode == 0
    assert lab.runtime("runc", "start", "left").returncode == 0
    pid = json.loads(lab.runtime("runc", "state", "left").stdout)["pid"]
    assert any(line.startswith("runc container: left (running") for line in cleanup.leftovers())
    cleanup.cleanup()
    assert wait_until(lambda: dead(pid))
    assert _runc_cgroups() == []
    assert cleanup.leftovers() == []
