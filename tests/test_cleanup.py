"""labkit cleanup finds what labkit made from the kernel's tables, even after a crash."""

from __future__ import annotations

import os
import subprocess
import sys

from labkit import cleanup, namespaces

from .conftest import dead, wait_until


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
