"""A private dockerd (Debian's docker.io) for one run: the reference the benchmarks and the
engine tests compare labkit with, started and removed without touching the host's own Docker.

Everything it makes lives in one temporary directory: its API socket (``-H unix://...``), its
images and containers (``--data-root``), its run-time state and the containerd it starts
(``--exec-root``), its pid file and its own configuration file (a host's
/etc/docker/daemon.json must not change it). It is told to leave the network alone
(``--bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false``: no
docker0, no iptables/nftables rules, no sysctl), and on a cgroup v1 host to put its containers'
cgroups below this process's own cgroup. ``stop()`` ends it with a bounded wait, then removes
what is still there: processes started from the directory, mounts below it, the cgroups it made,
the few host paths dockerd creates on its own (/etc/docker/key.json, /run/docker,
/run/containerd) when they were not there before, and the directory.

    with PrivateDockerd() as dockerd:
        dockerd.docker("run", *UNCONFINED, "--rm", "busybox", "true")
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# labkit's containers run with no AppArmor profile, so dockerd's run with none either (like for
# like). On a kernel with AppArmor but no apparmor_parser (Debian's kernel without the apparmor
# package) dockerd would refuse to run any container: it could not load its docker-default.
UNCONFINED = ("--security-opt", "apparmor=unconfined")

# docker.io: Debian installs dockerd in /usr/sbin, Ubuntu in /usr/bin; it starts containerd.
DOCKERD = next((p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.path.exists(p)), None)
DOCKER = "/usr/bin/docker"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Paths dockerd 20.10 and its containerd create on the host whatever the flags say; removed
# after the run only when they were not there before it (deepest first).
HOST_PATHS = (
    Path("/etc/docker/key.json"),
    Path("/run/docker/plugins"),
    Path("/run/docker"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
)


def unavailable() -> str | None:
    """Why a private dockerd cannot run here (one sentence), or None when it can."""
    if os.geteuid() != 0:
        return "dockerd runs only as root: run this with sudo."
    for path in (DOCKERD or "/usr/sbin/dockerd", DOCKER, "/usr/bin/containerd"):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: install docker.io (sudo scripts/setup test)."
    return None


def start_or_why() -> tuple[PrivateDockerd | None, str | None]:
    """A started private dockerd, or None and why there is none (one sentence)."""
    why = unavailable()
    if why is not None:
        return None, why
    try:
        return PrivateDockerd().start(), None
    except RuntimeError as e:
        return None, str(e).splitlines()[0]


def _own_cgroup_path() -> str | None:
    """The deepest of this process's cgroup v1 paths (dockerd gives every hierarchy the same
    parent path, and each of the others is an ancestor of it here), or None on cgroup v2."""
    paths = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers and not controllers.startswith("name="):
                paths.append(path)
    return max(paths, key=len) if paths else None


def _cgroup_mounts() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1, named and v2)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                found.append(Path(fields[4]))
    return found


def _ping(path: Path) -> bool:
    """Does a Docker engine answer GET /_ping on the unix socket *path*?"""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(path))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.0 200")
    except OSError:
        return False


class PrivateDockerd:
    """One dockerd with everything of its own in a temporary directory (see the module)."""

    def __init__(self, storage_driver: str = "overlay2") -> None:
        self.storage_driver = storage_driver
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._cgroup: str | None = None
        self._cgroup_dirs: list[Path] = []  # made by dockerd, deepest first
        self._host_paths: list[Path] = []  # not there before the start

    @property
    def socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        """An environment for the docker CLI that talks to this daemon only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=str(self.dir / "client"))
        return env

    def docker(self, *args: str, timeout: float = 120, check: bool = True, **kw):
        """Run the docker CLI against this daemon; text out."""
        result = subprocess.run(
            [DOCKER, *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kw
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
        return result

    def version(self) -> str:
        """The daemon's own version, as `docker version` reports it."""
        return self.docker("version", "--format", "{{.Server.Version}}").stdout.strip()

    def start(self, timeout: float = 60) -> PrivateDockerd:
        """Start dockerd and wait (at most *timeout* s) until its API answers."""
        # /tmp, not a long temporary path: containerd's socket below it has 108 bytes at most.
        self.dir = Path(tempfile.mkdtemp(prefix="dockerd-", dir="/tmp"))
        (self.dir / "client").mkdir()
        # The classic image store (image id = config digest) on dockerd 29+ too, where the default
        # is containerd's; older dockerd ignores a feature it does not know.
        (self.dir / "daemon.json").write_text('{"features": {"containerd-snapshotter": false}}\n')
        self._host_paths = [p for p in HOST_PATHS if not p.exists()]
        argv = [
            DOCKERD,
            f"--host=unix://{self.socket}",
            f"--data-root={self.dir / 'data'}",
            f"--exec-root={self.dir / 'exec'}",
            f"--pidfile={self.dir / 'dockerd.pid'}",
            f"--config-file={self.dir / 'daemon.json'}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--shutdown-timeout=5",
        ]
        own = _own_cgroup_path()
        if own is not None:
            # cgroupfs, below our own cgroup: never a process outside the tree we started in.
            self._cgroup = f"{own.rstrip('/')}/{self.dir.name}"
            argv += ["--exec-opt=native.cgroupdriver=cgroupfs", f"--cgroup-parent={self._cgroup}"]
        else:
            # cgroup v2: dockerd's own default (systemd's scopes, which systemd removes, or
            # cgroupfs' /docker where systemd does not run).
            self._cgroup = "/docker"
        self._cgroup_dirs = self._missing_cgroup_dirs(self._cgroup)
        # overlay2 as Docker's default; vfs (plain copies, slow) where the file system under
        # /tmp cannot hold an overlay upper dir.
        for driver in dict.fromkeys([self.storage_driver, "vfs"]):
            if self._launch([*argv, f"--storage-driver={driver}"], timeout):
                self.storage_driver = driver
                return self
        why = self.log()[-1500:]
        self.stop()
        raise RuntimeError(f"dockerd did not start within {timeout:.0f} s: {why}")

    def _launch(self, argv: list[str], timeout: float) -> bool:
        """Start dockerd with *argv*; True once it answers, False (and it gone) otherwise."""
        log = open(self.dir / "dockerd.log", "ab")
        # Its own session: a ^C meant for the benchmark reaches dockerd only through stop().
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not _ping(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self._kill_the_rest()
                return False
            time.sleep(0.05)
        return True

    def _missing_cgroup_dirs(self, path: str) -> list[Path]:
        """The directories dockerd will create for cgroup *path*, deepest first."""
        parts = [p for p in path.split("/") if p]
        dirs = []
        for mount in _cgroup_mounts():
            for depth in range(len(parts), 0, -1):
                d = mount.joinpath(*parts[:depth])
                if d.exists():
                    break
                dirs.append(d)
        return sorted(dirs, key=lambda d: len(d.parts), reverse=True)

    def log(self) -> str:
        try:
            return (self.dir / "dockerd.log").read_text(errors="replace")
        except OSError:
            return ""

    def _processes(self) -> list[int]:
        """Processes whose command line names this daemon's directory (dockerd, its containerd,
        shims), and those in its containers' cgroups (what a dead shim left running)."""
        mark = str(self.dir).encode()
        found = []
        for d in self._cgroup_dirs:
            for procs in d.glob("**/cgroup.procs"):
                try:
                    found += [int(pid) for pid in procs.read_text().split()]
                except OSError:
                    pass  # removed meanwhile
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if mark in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    pass  # gone meanwhile
        return found

    def _kill_the_rest(self, seconds: float = 10) -> None:
        """SIGKILL what is left of this daemon (its containerd and shims after a crash)."""
        deadline = time.monotonic() + seconds
        while (left := self._processes()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def _mounts(self) -> list[str]:
        prefix = str(self.dir) + "/"
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        return [p for p in points if p == str(self.dir) or p.startswith(prefix)]

    def leftovers(self) -> list[str]:
        """What this daemon made that is still on the host, one line each."""
        if self.dir is None:
            return []
        found = [f"process: {pid}" for pid in self._processes()]
        found += [f"mount: {p}" for p in self._mounts()]
        found += [f"cgroup: {d}" for d in self._cgroup_dirs if d.exists()]
        found += [f"path: {p}" for p in self._host_paths if p.exists()]
        if self.dir.exists():
            found.append(f"directory: {self.dir}")
        return found

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM dockerd (it stops its containers and containerd), SIGKILL what is left after
        *timeout* s, then remove everything it made."""
        if self.dir is None:
            return
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._kill_the_rest()
        for point in sorted(self._mounts(), key=len, reverse=True):
            # MNT_DETACH (umount -l): a netns or overlay still held by a dying process goes too.
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        for d in self._cgroup_dirs:
            if d.exists():
                for parent, children, _files in os.walk(d, topdown=False):
                    for child in children:  # a container's cgroup its runc did not remove
                        _rmdir(Path(parent, child))
                _rmdir(d)
        for path in self._host_paths:  # made by this daemon: all that is in them is its own
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
        if not self._mounts():
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateDockerd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # busy or not empty: leftovers() names it
