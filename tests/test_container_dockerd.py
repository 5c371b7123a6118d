"""`labkit run` beside the real thing: the same probe run by a private dockerd (Debian's
docker.io, benchmarks/dockerd.py) and by labkit, answers compared.

The private dockerd leaves the host's network alone (--bridge=none), so only --network none is
compared here; skipped where docker.io is not installed.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from benchmarks.dockerd import UNCONFINED, PrivateDockerd, unavailable
from labkit import rootfs

from .test_container_run import labkit, nothing_made, store  # noqa: F401  (store: a fixture)


@pytest.fixture(scope="module")
def dockerd():
    why = unavailable()
    if why:
        pytest.skip(f"no private dockerd to compare with: {why}")
    daemon = PrivateDockerd()
    with tempfile.TemporaryDirectory(prefix="labkit-test-dockerd-") as tmp:
        try:
            daemon.start()
            # dockerd's image of the same busybox root as labkit's store holds.
            tree = rootfs.build(Path(tmp) / "rootfs")
            subprocess.run(["tar", "-C", str(tree), "-cf", f"{tmp}/root.tar", "."], check=True)
            daemon.docker("import", f"{tmp}/root.tar", "busybox:latest")
            yield daemon
        finally:
            daemon.stop()
    assert daemon.leftovers() == [], "the private dockerd left these behind"


# The three files, and how each is mounted (mount point and per-mount options only: the
# source paths are each engine's own).
ETC_PROBE = (
    "for f in hosts hostname resolv.conf; do echo == $f; cat /etc/$f; done; "
    "grep ' /etc/' /proc/self/mountinfo | cut -d' ' -f5,6; "
    "echo x >> /etc/hostname 2>/dev/null && echo written || echo refused"
)


@pytest.mark.parametrize("flags", [[], ["--read-only"]])
def test_hosts_hostname_and_resolv_conf_are_dockerds(store, dockerd, flags):  # noqa: F811
    args = ["run", "--rm", "--network", "none", "--hostname", "box", *flags]
    theirs = dockerd.docker(*args[:2], *UNCONFINED, *args[2:], "busybox", "sh", "-c", ETC_PROBE)
    ours = labkit(*args, "busybox", "sh", "-c", ETC_PROBE)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout
    assert "127.0.0.1\tlocalhost\n" in ours.stdout and "== hostname\nbox\n" in ours.stdout
    assert ours.stdout.endswith("refused\n" if flags else "written\n")
    nothing_made()
