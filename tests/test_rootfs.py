"""The busybox root filesystem: built offline, complete, usable as a root, and never half-made."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import rootfs
from labkit.errors import BadInput, MissingFeature

BUSYBOX = rootfs.find_busybox()
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static (scripts/setup)")


def _building_dirs(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".building-" in p.name or ".old-" in p.name]


def test_static_busybox_has_no_interpreter_and_ls_has_one():
    # ldd (from libc) is the independent reading: it asks the dynamic loader itself.
    ldd_busybox = subprocess.run(["ldd", str(BUSYBOX)], check=False, capture_output=True, text=True)
    assert "not a dynamic executable" in ldd_busybox.stdout + ldd_busybox.stderr
    assert rootfs.elf_interpreter(BUSYBOX) is None

    ls = subprocess.run(["ldd", "/bin/ls"], capture_output=True, text=True, check=True).stdout
    loader = rootfs.elf_interpreter("/bin/ls")
    assert loader and loader.startswith("/") and loader in ls


def test_build_default_dest_in_state_dir(state_dir):
    dest = rootfs.build()
    assert dest == state_dir / "rootfs" / "busybox"
    assert rootfs.elf_interpreter(dest / "bin" / "busybox") is None

    # One symlink per applet, where busybox says it belongs, each resolving to bin/busybox.
    listed = subprocess.run(
        [str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    applets = [p for p in listed if "/" in p and p != "bin/busybox"]
    assert len(applets) > 100
    for applet in applets:
        link = dest / applet
        assert link.is_symlink(), applet
        assert link.resolve() == (dest / "bin" / "busybox").resolve(), applet
        assert not os.readlink(link).startswith("/"), applet  # relative: same inside and out

    for name in ("proc", "sys", "dev", "root", "etc", "run", "var"):
        assert (dest / name).is_dir(), name
    assert stat.S_IMODE((dest / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    passwd = (dest / "etc" / "passwd").read_text()
    assert passwd.startswith("root:x:0:0:") and "\nnobody:x:65534:65534:" in passwd
    assert "nobody:x:65534:" in (dest / "etc" / "group").read_text()
    assert (dest / "etc" / "hostname").read_text() == "labkit\n"
    assert "labkit busybox rootfs" in (dest / "etc" / "os-release").read_text()
    assert _building_dirs(dest.parent) == []


def test_shell_runs_inside_a_chroot(state_dir):
    dest = rootfs.build()
    out = subprocess.run(
        ["chroot", str(dest), "/bin/sh", "-c", "echo hi; cat /etc/hostname; ls /usr/sbin/chroot"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["hi", "labkit", "/usr/sbin/chroot"]


def test_rebuild_is_cheap_and_leaves_the_tree_alone(state_dir):
    dest = rootfs.build()
    inode, mtime = dest.stat().st_ino, (dest / "bin" / "busybox").stat().st_mtime_ns
    start = time.monotonic()
    assert rootfs.build() == dest
    assert time.monotonic() - start < 0.5
    assert dest.stat().st_ino == inode
    assert (dest / "bin" / "busybox").stat().st_mtime_ns == mtime


def test_stale_tree_is_replaced_whole(state_dir):
    dest = rootfs.build()
    inode = dest.stat().st_ino
    release = dest / "etc" / "os-release"
    release.write_text(release.read_text().replace("BUILD_ID=", "BUILD_ID=old"))
    (dest / "stray").write_text("from the old tree")
    assert rootfs.build() == dest
    assert dest.stat().st_ino != inode
    assert not (dest / "stray").exists()
    assert (dest / "bin" / "sh").is_symlink()
    assert _building_dirs(dest.parent) == []


def test_refuses_to_replace_a_directory_it_did_not_build(tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(BadInput, match="not a labkit busybox rootfs"):
        rootfs.build(dest)
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    assert _building_dirs(tmp_path) == []


def test_empty_directory_is_filled(tmp_path):
    dest = tmp_path / "empty"
    dest.mkdir()
    assert rootfs.build(dest) == dest
    assert (dest / "bin" / "sh").is_symlink()


def test_missing_busybox_is_refused_and_nothing_is_made(tmp_path):
    dest = tmp_path / "rootfs"
    with pytest.raises(MissingFeature) as caught:
        rootfs.build(dest, busybox=tmp_path / "no-busybox")
    message = str(caught.value)
    assert "no busybox at" in message and "apt-get install busybox-static" in message
    assert message.count(".") >= 1 and "\n" not in message
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_dynamic_busybox_is_refused_and_nothing_is_made(tmp_path):
    dest = tmp_path / "rootfs"
    with pytest.raises(MissingFeature, match="dynamically linked .*apt-get install busybox-static"):
        rootfs.build(dest, busybox="/bin/ls")  # a dynamically linked executable stands in
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_build_leaves_nothing_half_made(tmp_path, monkeypatch):
    dest = tmp_path / "rootfs"

    def broken(busybox):
        raise OSError(5, "simulated failure while listing applets")

    monkeypatch.setattr(rootfs, "_applets", broken)
    with pytest.raises(OSError, match="simulated"):
        rootfs.build(dest)
    assert list(tmp_path.iterdir()) == []


def test_failed_rebuild_keeps_the_previous_tree(tmp_path, monkeypatch):
    dest = rootfs.build(tmp_path / "rootfs")
    release = dest / "etc" / "os-release"
    release.write_text(release.read_text().replace("BUILD_ID=", "BUILD_ID=old"))

    def broken(tree, busybox, build_id):
        (tree / "half").write_text("half-made")
        raise OSError(28, "simulated: no space left")

    monkeypatch.setattr(rootfs, "_populate", broken)
    with pytest.raises(OSError, match="simulated"):
        rootfs.build(dest)
    assert (dest / "bin" / "sh").is_symlink() and not (dest / "half").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["rootfs"]


def test_cli_builds_and_prints_the_path(tmp_path):
    dest = tmp_path / "cli-rootfs"
    out = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "rootfs", "build", str(dest)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(dest)
    assert (dest / "bin" / "sh").is_symlink()


def test_namespaces_run_inside_the_rootfs(state_dir):
    namespaces = pytest.importorskip("labkit.namespaces")
    dest = rootfs.build()
    result = namespaces.run(
        ["/bin/sh", "-c", "echo $$; hostname"],
        ["mnt", "uts", "pid"],
        hostname="box",
        rootfs=str(dest),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "box"]


@pytest.fixture
def noexec_state_dir(tmp_path, monkeypatch):
    """A state directory on a tmpfs mounted noexec, as the lab VM mounts /run."""
    from labkit import cleanup, mountinfo
    from labkit import sys as ksys

    run = tmp_path / "run"
    run.mkdir()
    ksys.mount(
        "labkit-test-run", str(run), "tmpfs", ksys.MS_NOSUID | ksys.MS_NODEV | ksys.MS_NOEXEC
    )
    monkeypatch.setenv("LABKIT_STATE_DIR", str(run / "labkit"))
    yield run / "labkit"
    cleanup.cleanup()
    ksys.umount2(str(run), ksys.MNT_DETACH)
    assert not [p for p in mountinfo.below(tmp_path)]


def test_rootfs_runs_where_the_state_dir_is_noexec(noexec_state_dir):
    from labkit import mountinfo, namespaces

    # The kernel really refuses to run anything from the state dir's own filesystem...
    probe = noexec_state_dir / "probe"
    noexec_state_dir.mkdir()
    probe.write_bytes(Path(rootfs.static_busybox()).read_bytes())
    probe.chmod(0o755)
    with pytest.raises(PermissionError):
        subprocess.run([str(probe), "true"], timeout=30)
    # ...so build() mounts an exec-capable tmpfs for root filesystems, and says where.
    dest = rootfs.build()
    assert not rootfs.is_noexec(dest)
    assert str(dest.parent) in {m.point for m in mountinfo.mounts()}
    result = namespaces.run(["/bin/sh", "-c", "echo ran"], ["mnt", "pid"], rootfs=str(dest))
    assert result.returncode == 0 and result.stdout == "ran\n", result.stderr
    rootfs.remove()
    assert not dest.parent.exists()
    assert str(dest.parent) not in {m.point for m in mountinfo.mounts()}


def test_a_rootfs_on_a_noexec_mount_is_refused_with_the_reason(noexec_state_dir):
    from labkit import namespaces

    tree = rootfs.build(noexec_state_dir / "elsewhere")
    with pytest.raises(BadInput, match="noexec"):
        namespaces.run(["/bin/true"], ["mnt", "pid"], rootfs=str(tree))
