"""The container lessons' glue (40-container, 41-security, 42-oci): probes, plots, checks.

Nothing here sets a container up: ``labkit.container`` does. These helpers create a container
from labkit's default spec (Docker's capabilities, runc's mounts, masked and read-only paths,
the default seccomp profile) around a small busybox probe, read what the kernel then shows, and
draw it. Every container is deleted before a helper returns.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import loop, mountinfo, rootfs
from ..container import lifecycle, steps
from ..container.spec import Pids, Process, Resources, Root, Spec
from ..errors import BadInput
from ..state import state_dir
from .checks import Verdict, graded, not_done, verdict

_runs = 0


def lesson_rootfs() -> Path:
    """The busybox root filesystem the lessons' containers run in (built once)."""
    return rootfs.build()


def lesson_spec(args: list[str], root: str | os.PathLike | None = None) -> Spec:
    """labkit's default spec for *args* in the lesson's busybox root, with hostname "box"."""
    return Spec(Process(list(args)), root=Root(str(root or lesson_rootfs())), hostname="box")


@dataclass
class Ran:
    """One container run to its end: what it printed, and how its set-up went."""

    output: str
    skipped: list[str]
    create_seconds: float  # lifecycle.create, from the call to "created"
    step_times: dict[str, float] = field(default_factory=dict)

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()


def run(
    args: list[str] | None = None,
    *,
    spec: Spec | None = None,
    skip: Iterable[str] = (),
    edit: Callable[[Spec], None] | None = None,
    image: str | None = None,
    timeout: float = 30.0,
) -> Ran:
    """Create, start, wait for and delete a container running *args* (or *spec*); its output.

    skip: set-up steps to leave out (names from ``steps.NAMES``); edit: a function that changes
    the spec first. stdout and stderr both land in the output.
    """
    global _runs
    if spec is None:
        if not args:
            raise BadInput("give the command to run, e.g. ['hostname'], or a spec.")
        spec = lesson_spec(args)
    if edit is not None:
        edit(spec)
    skip = list(skip)
    _runs += 1
    cid = f"lesson-{os.getpid()}-{_runs}"
    with tempfile.TemporaryFile("w+") as out:
        began = time.perf_counter()
        c = lifecycle.create(
            cid,
            state_dir(),
            spec=spec,
            skip=skip,
            image=image,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        seconds = time.perf_counter() - began
        try:
            if "wait_for_start" not in skip:
                lifecycle.start(cid)
            deadline = time.monotonic() + timeout
            while c.status != "stopped":
                if time.monotonic() > deadline:
                    raise BadInput(f"the container still ran after {timeout:g} s and was killed.")
                time.sleep(0.005)
        finally:
            lifecycle.delete(cid, force=True)
        out.seek(0)
        return Ran(out.read(), skip, seconds, dict(c.record.get("step_times", {})))


# --- 40: what each step protects ----------------------------------------------------------------

# A fork bomb with bounds: 40 sleeps of 5 s at most, forked by a subshell (a shell that cannot
# fork gives up, and PID 1 must outlive it). PID 1 then counts the processes of its PID
# namespace by sending signal 0 to each PID (builtins only: no fork, and no /proc needed), and
# kills them all.
BOMB = 40
_BOMB_SCRIPT = (
    f"( i=0; while [ $i -lt {BOMB} ]; do sleep 5 & i=$((i+1)); done ) 2>/dev/null; "
    "p=1; n=0; while [ $p -le 100 ]; do kill -0 $p 2>/dev/null && n=$((n+1)); p=$((p+1)); done; "
    "echo $n; kill -9 -1"
)


def fork_bomb(pids_limit: int = 20, skip: Iterable[str] = ()) -> int:
    """The most processes a bounded fork bomb had at once in a container with *pids_limit*."""
    if not 5 <= int(pids_limit) <= BOMB:
        raise BadInput(f"choose a pids limit between 5 and {BOMB}.")

    def limit(spec: Spec) -> None:
        spec.linux.resources = Resources(pids=Pids(int(pids_limit)))

    return int(run(["sh", "-c", _BOMB_SCRIPT], skip=skip, edit=limit).lines[-1])


def bomb_in_words(count: int, pids_limit: int) -> str:
    held = "the limit held" if count <= pids_limit else "the limit did not hold"
    return (
        f"pids limit {pids_limit}: {'at most' if count <= pids_limit else 'more than'} "
        f"{pids_limit} processes at once, {held}"
    )


# The double chroot of lesson 04, run by the host's Python as the container's process: a
# runtime without pivot_root that chroots into the rootfs (as bocker does) is escapable again.
_ESCAPE = """
import json, os, sys
os.chroot(sys.argv[1]); os.chdir("/")          # the runtime's chroot into the rootfs
os.chroot("tmp")                                 # the escape: root below the working dir...
for _ in range(64): os.chdir("..")               # ... so ".." is never stopped
os.chroot(".")
st = os.stat("/")
print(json.dumps([st.st_dev, st.st_ino]))
"""


def chroot_escape(skip_pivot_root: bool) -> str:
    """Where the double chroot ends in a container, with or without pivot_root, in words."""
    host = os.stat("/")
    if skip_pivot_root:
        # No pivot_root: the process's root is still the host's, so the host's Python runs.
        import json

        ran = run(
            [sys.executable, "-I", "-S", "-c", _ESCAPE, str(lesson_rootfs())], skip=["pivot_root"]
        )
        dev, ino = json.loads(ran.lines[-1])
        escaped = (dev, ino) == (host.st_dev, host.st_ino)
        return "without pivot_root, chroot, then the double chroot: ended in " + (
            "the HOST's / (escaped)" if escaped else "the rootfs's own /"
        )
    # With pivot_root nothing of the host is left: climbing from / leads to the same /, and the
    # mount table holds only the container's mounts.
    ran = run(["sh", "-c", "cd /; cd ../../../..; stat -c '%d %i' . /"])
    here, root = ran.lines
    return "with pivot_root: climbing from / ends in " + (
        "/ itself: the host's tree is not there to reach" if here == root else "another directory"
    )


# ps into a file first: in a pipe, the reader may not have been forked yet when ps looks.
_PS = "ps -o pid,comm > /dev/shm/ps; tail -n +2 /dev/shm/ps; echo entries $(ls /proc | wc -l)"


def ps_in_words(with_proc: bool = True) -> str:
    """What ``ps`` lists in a container, with its /proc mount or without it, in words."""

    def no_proc(spec: Spec) -> None:
        spec.mounts = [m for m in spec.mounts if m.destination != "/proc"]

    # The exec FIFO is reached through /proc: without it the container must run at once.
    ran = (
        run(["sh", "-c", _PS])
        if with_proc
        else run(["sh", "-c", _PS], edit=no_proc, skip=["wait_for_start"])
    )
    listed = [" ".join(line.split()) for line in ran.lines[:-1]]
    empty = ran.lines[-1] == "entries 0"
    return (
        f"{'with' if with_proc else 'without'} /proc: ps lists "
        f"{', '.join(listed) or 'nothing'}" + ("; /proc is an empty directory" if empty else "")
    )


# --- any step left out: what the container then looks like ---------------------------------------

_PROBE = (
    "exec 2>/dev/null; echo hostname $(hostname); echo root $(stat -c '%d:%i' /); "
    "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d ':'; "
    "grep -q ' /proc/keys ' /proc/self/mountinfo && echo keys masked; "
    # The container's own hostname, written back unchanged: refused only where /proc/sys is
    # read-only.
    "cat /proc/sys/kernel/hostname > /proc/sys/kernel/hostname && echo sysctl written"
)


def _own_caps() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))


def probe(skip: Iterable[str] = ()) -> str:
    """A container's isolation in a few words, with the steps in *skip* left out."""
    from ..container import capabilities

    ran = run(["sh", "-c", _PROBE], skip=skip)
    got = dict(line.split(None, 1) for line in ran.lines if " " in line or "\t" in line)
    host = os.stat("/")
    caps = len(capabilities.names(int(got.get("CapEff", "0"), 16)))
    own = len(capabilities.names(_own_caps()))
    rows = {
        "hostname": got.get("hostname"),
        "root": "the HOST's /" if got.get("root") == f"{host.st_dev}:{host.st_ino}" else "its own",
        "capabilities": f"{caps} (Docker's)"
        if caps == 14
        else "all of this notebook's"
        if caps == own
        else str(caps),
        "no_new_privs": "on" if got.get("NoNewPrivs") == "1" else "off",
        "seccomp": "a filter" if got.get("Seccomp") == "2" else "none",
        "/proc/keys": "masked" if got.get("keys") == "masked" else "VISIBLE",
        "/proc/sys": "WRITABLE" if "sysctl written" in ran.output else "read-only",
    }
    return "\n".join(f"{k:<14}{v}" for k, v in rows.items())


# --- propagation: a container's mounts on the host ------------------------------------------------


def shared_dir() -> Path:
    """A directory bind-mounted onto itself and made shared, as a systemd host's "/" is."""
    return state_dir() / "lesson40-shared"


# The container's mounts propagate into the host when its root is private no more. Without
# pivot_root the container's /proc is the host's own: the steps that remount /proc/sys read-only
# and mask /proc/kcore would then, on a shared host, reach the host's /proc too. They are left
# out with it (and pivot_root itself: the kernel refuses it below a shared mount).
LEAK_SKIP = ["make_root_private", "pivot_root", "mount_readonly_paths", "mask_paths"]


def _make_shared() -> Path:
    path = shared_dir()
    path.mkdir(parents=True, exist_ok=True)
    if not mountinfo.is_mount_point(path):
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        subprocess.run(["mount", "--make-shared", str(path)], check=True)
    return path


def mounts_below(path: str | os.PathLike) -> list[str]:
    """The host's mount points strictly below *path*."""
    top = str(path).rstrip("/") + "/"
    return [m.point for m in mountinfo.mounts() if m.point.startswith(top)]


def leak(skip: Iterable[str]) -> list[str]:
    """Run a container whose root is below a shared mount, leaving out *skip*; the mounts it
    left on the host (relative to its root). Whatever leaked is unmounted again."""
    tree = rootfs.build(_make_shared() / "rootfs")
    try:
        run(["true"], spec=lesson_spec(["true"], tree), skip=skip)
        return sorted(
            {"/" + os.path.relpath(p, tree) for p in mounts_below(tree)}
            | ({"/"} if mountinfo.is_mount_point(tree) else set())
        )
    finally:
        unmount_below(tree)


def unmount_below(path: str | os.PathLike) -> None:
    """Unmount *path* and everything below it on the host (deepest first)."""
    for _ in range(100):  # a bound: each round removes at least one mount
        found = mounts_below(path) + ([str(path)] if mountinfo.is_mount_point(path) else [])
        if not found:
            return
        subprocess.run(["umount", "-l", max(found, key=len)], check=True)


def remove_shared() -> None:
    """Undo ``leak``'s shared directory (its rootfs and the bind mount)."""
    path = shared_dir()
    if path.exists():
        unmount_below(path / "rootfs")
        while mountinfo.is_mount_point(path):
            subprocess.run(["umount", str(path)], check=True)
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    rootfs.remove()  # the lesson's busybox root (lesson_rootfs), rebuilt offline when needed


# --- the time each step takes -------------------------------------------------------------------


@dataclass
class StepTimes:
    """Medians over *runs* containers: seconds per step, and the whole of ``create``."""

    runs: int
    steps: dict[str, float]
    create: float

    @property
    def rest(self) -> float:
        """What no step accounts for: starting the init's interpreter, messages, the state."""
        return max(0.0, self.create - sum(self.steps.values()))

    def slowest(self, n: int = 3) -> list[str]:
        return sorted(self.steps, key=self.steps.get, reverse=True)[:n]

    def summary(self) -> str:
        total = sum(self.steps.values())
        return (
            f"{self.runs} containers: create took {self.create * 1e3:.0f} ms, the steps "
            f"{total * 1e3:.1f} ms of it; slowest: {', '.join(self.slowest())}"
        )


def step_times(runs: int = 7) -> StepTimes:
    """Create *runs* containers of ``true``; the median time of each step and of create."""
    if not 3 <= runs <= 30:
        raise BadInput("choose between 3 and 30 runs.")
    made = [run(["true"]) for _ in range(runs)]
    names = [n for n in steps.NAMES if any(n in r.step_times for r in made)]
    medians = {n: statistics.median(r.step_times.get(n, 0.0) for r in made) for n in names}
    return StepTimes(runs, medians, statistics.median(r.create_seconds for r in made))


def plot_step_times(times: StepTimes, ax=None):
    """Horizontal bars: each step's median time in ms, in the order they run."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 6.5))
    where = {st.name: st.where for st in steps.STEPS}
    names = list(times.steps) + ["(rest of create)"]
    values = [times.steps[n] * 1e3 for n in times.steps] + [times.rest * 1e3]
    colours = ["tab:orange" if where.get(n) == "parent" else "tab:blue" for n in times.steps]
    ax.barh(names, values, color=colours + ["tab:grey"])
    ax.invert_yaxis()  # the first step on top
    ax.set_xscale("log")
    ax.set_xlabel(f"time (ms, log scale; median of {times.runs} containers)")
    ax.set_ylabel("set-up step, in the order they run")
    top = times.slowest(2)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color="tab:orange", label="in the parent"),
            Patch(color="tab:blue", label="in the init child"),
            Patch(color="tab:grey", label="starting the init, messages, state"),
        ],
        loc="center right",
        fontsize=8,
    )
    ax.set_title(
        f"{top[0]} and {top[1]} take the most of the steps' "
        f"{sum(times.steps.values()) * 1e3:.1f} ms; the rest of create\n"
        f"({times.rest * 1e3:.0f} ms) is no step: starting the init's Python",
        fontsize=10,
    )
    ax.figure.tight_layout()
    return ax


# --- 40: exercise checks --------------------------------------------------------------------------


@graded
def check_bomb_step(step) -> Verdict:
    """40: the step whose absence lets the bounded fork bomb pass the container's pids limit."""
    if step is ...:
        return not_done("fork bomb step")
    if step not in steps.NAMES or step in steps.REQUIRED:
        return Verdict(
            False,
            f"fork bomb step: {step!r} is not a step you may leave out.",
            "pick a name from steps.describe().",
        )
    try:
        count = fork_bomb(20, skip=[step])
    except Exception as e:  # noqa: BLE001  a step whose absence breaks the set-up is an answer too
        return Verdict(
            False,
            f"fork bomb step: without {step} the container was not made ({e}).",
            "which step puts the init into the container's cgroup?",
        )
    return verdict(
        count > 20,
        f"fork bomb step: without {step} the bomb passed pids limit 20 "
        "(the container's cgroup was never joined).",
        f"fork bomb step: without {step} the bomb still stopped at pids limit 20.",
        "which step puts the init into the container's cgroup, where pids.max applies?",
    )


@graded
def check_host_root_step(step) -> Verdict:
    """40: the step whose absence leaves the host's / as the container's / ."""
    if step is ...:
        return not_done("host root step")
    if step not in steps.NAMES or step in steps.REQUIRED:
        return Verdict(
            False,
            f"host root step: {step!r} is not a step you may leave out.",
            "pick a name from steps.describe().",
        )
    host = os.stat("/")
    try:
        ran = run(["stat", "-c", "%d %i", "/"], skip=[step])
    except Exception as e:  # noqa: BLE001
        return Verdict(
            False,
            f"host root step: without {step} the container was not made ({e}).",
            "which step makes the rootfs the root of the mount namespace?",
        )
    same = ran.lines[-1] == f"{host.st_dev} {host.st_ino}"
    return verdict(
        same,
        f"host root step: without {step} the container's / is the host's.",
        f"host root step: without {step} the container's / is still its own.",
        "which step swaps the mount namespace's root for the rootfs?",
    )


# --- 41: attack, then fix -----------------------------------------------------------------------


SIGNATURE = b"LABKIT LESSON DISK"


def disk_image() -> Path:
    return state_dir() / "lesson41" / "disk.img"


def _disk_devices() -> list[str]:
    """The loop devices over the lesson's disk image, found as ``labkit cleanup`` finds them:
    by the backing file the kernel names in /sys/block/loopN/loop/backing_file."""
    return [dev for dev, path in loop.attached().items() if path == str(disk_image())]


def lesson_disk() -> tuple[str, int, int]:
    """A small disk for the lesson to attack: a loop device over a 1 MiB file whose first
    sector starts with SIGNATURE. (The host's own disk is attacked the same way, by its
    major:minor; a disk of our own keeps the attack to a sector we wrote.)"""
    image = disk_image()
    found = next(iter(_disk_devices()), "") if image.exists() else ""
    if not found:
        if not os.path.exists("/dev/loop-control"):
            # Where nothing made the loop driver's device nodes at boot (a bare kernel, as
            # scripts/test-v2 boots), loading the module makes them.
            subprocess.run(["modprobe", "loop"], capture_output=True, check=False)
        image.parent.mkdir(parents=True, exist_ok=True)
        with open(image, "wb") as f:
            f.write(SIGNATURE.ljust(512, b"\0") + bytes(1 << 20)[512:])
        found = subprocess.run(
            ["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=True
        ).stdout.strip()
    rdev = os.stat(found).st_rdev
    return found, os.major(rdev), os.minor(rdev)


def remove_lesson_disk() -> None:
    """Detach the lesson's loop device and delete its file."""
    image = disk_image()
    for device in _disk_devices():
        loop.detach(device)
    image.unlink(missing_ok=True)
    if image.parent.is_dir() and not any(image.parent.iterdir()):
        image.parent.rmdir()
    rootfs.remove()


ATTACKS = {
    "disk": "mknod a node for a disk, read its first sector",
    "sysctl": "write a host-wide sysctl (vm.overcommit_memory)",
    "cgroupfs": "mount the host's cgroup tree",
    "unshare": "make a new namespace (unshare -m)",
    "setuid": "run a setuid-root program as nobody, and be root",
}

# Each attack in a subshell, one line each: "NAME ok DETAIL" or "NAME no WHY". Nothing is
# ever written to a device: the disk is only read; and the sysctl gets back the value it had.
_ATTACK_SCRIPT = r"""
exec 2>&1
try() { name=$1; shift
        out=$( ("$@") 2>&1 ) && echo "$name ok $out" || echo "$name no ${out##*: }"; }
disk() { mknod /dev/disk b $DISK && head -c 512 /dev/disk > /dev/shm/sector &&
         echo "read $(wc -c < /dev/shm/sector) bytes: $(head -c 18 /dev/shm/sector)"; }
sysctl() { v=$(cat /proc/sys/vm/overcommit_memory) &&
           echo "$v" > /proc/sys/vm/overcommit_memory && echo "wrote back the value it read"; }
cgroupfs() { mkdir -p /dev/shm/cg && mount -t cgroup2 none /dev/shm/cg && echo mounted; }
ns() { unshare -m true && echo "made one"; }
# busybox's su, setuid root, run by nobody: it checks root's password only if it became root
# (and then, with no password to give, says so); otherwise it knows it gained nothing.
setuid() {
  cp /bin/busybox /tmp/busybox && chmod 4755 /tmp/busybox || return 1
  said=$(su -s /bin/sh nobody -c '/tmp/busybox su -c true root < /dev/null' 2>&1)
  case "$said" in *"incorrect password"*) echo "became root (it asked for a password)";;
                  *) echo "${said#su: }" >&2; return 1;; esac
}
try disk disk; try sysctl sysctl; try cgroupfs cgroupfs; try unshare ns
try setuid setuid
"""

DEFENCES = ("capabilities", "devices", "paths", "seccomp", "no_new_privs")
DEFENCE_NAMES = {
    "capabilities": "Docker's 14 capabilities",
    "devices": "device cgroup",
    "paths": "masked and read-only paths",
    "seccomp": "seccomp profile",
    "no_new_privs": "no_new_privs",
}


def security_spec(defences: Iterable[str] = (), args: list[str] | None = None) -> Spec:
    """Root with every capability, every device, no seccomp, nothing masked; plus *defences*.

    ``defences`` from DEFENCES; all of them together are labkit's (and Docker's) defaults.
    """
    from ..container.spec import DeviceRule, Mount

    defences = set(defences)
    unknown = defences - set(DEFENCES)
    if unknown:
        raise BadInput(f"no defence {min(unknown)!r}: choose from {', '.join(DEFENCES)}.")
    spec = lesson_spec(args or ["true"])
    # A tmpfs without nosuid, where the setuid attack puts its program.
    spec.mounts.append(Mount("/tmp", "tmpfs", "tmpfs", ["mode=1777", "size=16m"]))
    if "capabilities" not in defences:
        spec.process.capabilities = None  # keep all of root's
    if "devices" not in defences:
        spec.linux.resources = Resources(devices=[DeviceRule(True, access="rwm")])
    if "paths" not in defences:
        spec.linux.masked_paths, spec.linux.readonly_paths = [], []
    if "seccomp" not in defences:
        spec.linux.seccomp = None
    spec.process.no_new_privileges = "no_new_privs" in defences
    return spec


def attack(defences: Iterable[str] = ()) -> dict[str, tuple[bool, str]]:
    """Every attack in ATTACKS, in one container with *defences*: {name: (worked, detail)}."""
    _, major, minor = lesson_disk()
    script = f"DISK='{major} {minor}'\n"
    ran = run(spec=security_spec(defences, ["sh", "-c", script + _ATTACK_SCRIPT]))
    found = {}
    for line in ran.lines:
        name, _, rest = line.partition(" ")
        if name in ATTACKS:
            verdict_word, _, detail = rest.partition(" ")
            found[name] = (verdict_word == "ok", detail.strip())
    return found


def attacks_in_words(found: dict[str, tuple[bool, str]]) -> str:
    return "\n".join(
        f"{'WORKED ' if ok else 'stopped'}  {ATTACKS[name]}: {detail}"
        for name, (ok, detail) in found.items()
    )


def chroot_escape_with(defences: Iterable[str] = ()) -> bool:
    """Did the double chroot reach the host's / from a container without pivot_root?"""
    import json

    spec = security_spec(
        defences, [sys.executable, "-I", "-S", "-c", _ESCAPE, str(lesson_rootfs())]
    )
    # Without pivot_root the container's /proc is the host's; its masks stay in the container's
    # own (slave) mount table, as every mount here does.
    spec.mounts = [m for m in spec.mounts if m.destination != "/tmp"]
    ran = run(spec=spec, skip=["pivot_root"])
    try:
        dev, ino = json.loads(ran.lines[-1])
    except (ValueError, IndexError):
        return False  # refused before it could report
    host = os.stat("/")
    return (dev, ino) == (host.st_dev, host.st_ino)


@dataclass
class DefenceTable:
    """Which attack each defence stops: worked[attack][column] is True where the attack worked."""

    columns: list[str]
    worked: dict[str, dict[str, bool]]

    def __str__(self) -> str:
        short = {
            "capabilities": "14 caps",
            "devices": "devices",
            "paths": "paths",
            "seccomp": "seccomp",
            "no_new_privs": "nnp",
            "pivot_root": "pivot_root",
        }
        heads = ["none"] + [short[c] for c in self.columns[1:-1]] + ["all"]
        width = max(len(a) for a in self.worked) + 2
        lines = [" " * width + "".join(f"{h:>11}" for h in heads)]
        for name, row in self.worked.items():
            cells = "".join(f"{'worked' if row[c] else 'STOPPED':>11}" for c in self.columns)
            lines.append(f"{name:<{width}}{cells}")
        return "\n".join(lines)


def defence_table() -> DefenceTable:
    """Every attack against no defence, each defence alone, and all of them together."""
    columns = ["none", *DEFENCES, "pivot_root", "all"]
    sets = {"none": [], "all": list(DEFENCES), **{d: [d] for d in DEFENCES}}
    worked: dict[str, dict[str, bool]] = {name: {} for name in [*ATTACKS, "chroot"]}
    for column in [c for c in columns if c != "pivot_root"]:
        found = attack(sets[column])
        for name in ATTACKS:
            worked[name][column] = found.get(name, (False, ""))[0]
        if column != "all":
            worked["chroot"][column] = chroot_escape_with(sets[column])
    # The other attacks run after pivot_root in every column: alone, it stops none of them.
    for name in ATTACKS:
        worked[name]["pivot_root"] = worked[name]["none"]
    # The chroot escape needs the host's Python, which pivot_root leaves out of reach; what is
    # left to climb from / is the container's own /.
    worked["chroot"]["pivot_root"] = not _climb_contained([])
    worked["chroot"]["all"] = not _climb_contained(DEFENCES)
    return DefenceTable(columns, worked)


def _climb_contained(defences: Iterable[str]) -> bool:
    """After pivot_root, does climbing ".." from / end in / itself?"""
    climb = "cd /; cd ../../../..; stat -c '%d %i' . /"
    ran = run(spec=security_spec(defences, ["sh", "-c", climb]))
    here, root = ran.lines[-2:]
    return here == root


def plot_defence_table(table: DefenceTable, ax=None):
    """A grid: a red cell where the attack worked, green where the defence stopped it."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4))
    rows = list(table.worked)
    grid = [[0 if table.worked[r][c] else 1 for c in table.columns] for r in rows]
    ax.imshow(grid, cmap=ListedColormap(["#e06666", "#93c47d"]), vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(table.columns)))
    names = {**DEFENCE_NAMES, "pivot_root": "pivot_root"}
    ax.set_xticklabels(
        ["none"] + [names[c] for c in table.columns[1:-1]] + ["all"],
        rotation=20,
        ha="right",
        fontsize=8,
    )
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows)
    ax.set_xlabel("defence (alone, or all together)")
    ax.set_ylabel("attack by root in the container")
    for i, r in enumerate(rows):
        for j, c in enumerate(table.columns):
            ax.text(
                j,
                i,
                "worked" if table.worked[r][c] else "stopped",
                ha="center",
                va="center",
                fontsize=7,
            )
    stopped_by_all = all(not table.worked[r]["all"] for r in rows)
    ax.set_title(
        "Every attack works against root with all capabilities; "
        + (
            "all the defences together stop every one"
            if stopped_by_all
            else "some still work with every defence on"
        ),
        fontsize=10,
    )
    ax.figure.tight_layout()
    return ax


# --- 41: exercise checks --------------------------------------------------------------------------


def _defences_or_verdict(answer, what: str):
    names = [answer] if isinstance(answer, str) else answer
    try:
        names = list(names)
    except TypeError:
        return None, Verdict(
            False,
            f"{what}: give defence names, e.g. ['seccomp'].",
            f"choose from {', '.join(DEFENCES)}.",
        )
    wrong = [n for n in names if n not in DEFENCES]
    if wrong:
        return None, Verdict(
            False,
            f"{what}: {wrong[0]!r} is not a defence here.",
            f"choose from {', '.join(DEFENCES)}.",
        )
    return names, None


@graded
def check_setuid_defence(defence) -> Verdict:
    """41: the one defence that, alone, keeps a setuid-root program from making nobody root."""
    if defence is ...:
        return not_done("setuid defence")
    names, problem = _defences_or_verdict(defence, "setuid defence")
    if problem:
        return problem
    if len(names) != 1:
        return Verdict(False, "setuid defence: name one defence.", "which one is about exec?")
    worked, detail = attack(names)["setuid"]
    return verdict(
        not worked,
        f"setuid defence: with {names[0]} alone, su says: {detail}.",
        f"setuid defence: with {names[0]} alone, nobody still became root.",
        "which defence makes the kernel ignore setuid bits at exec?",
    )


@graded
def check_three_stopped(defences) -> Verdict:
    """41: at most two defences that together stop the sysctl, cgroupfs and unshare attacks."""
    if defences is ...:
        return not_done("two defences")
    names, problem = _defences_or_verdict(defences, "two defences")
    if problem:
        return problem
    if not 1 <= len(set(names)) <= 2:
        return Verdict(False, f"two defences: {len(set(names))} given.", "choose one or two.")
    found = attack(names)
    left = [a for a in ("sysctl", "cgroupfs", "unshare") if found[a][0]]
    return verdict(
        not left,
        f"two defences: {' + '.join(names)} stop all three attacks.",
        f"two defences: with {' + '.join(names)}, {', '.join(left)} still worked.",
        "look at the table: which column stops the sysctl write, which the other two?",
    )


# --- 42: one bundle, two runtimes -----------------------------------------------------------------

# Each line answers one question about the container; errors go to stdout, so that refusals are
# compared too. (/dev/core, a link to /proc/kcore, is there only where the kernel has kcore.)
OCI_PROBE = r"""
exec 2>&1
echo hostname $(hostname)
echo ids $(id -u) $(id -g)
echo pid $$
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\t' ' '
echo links $(ls /sys/class/net)
echo dev $(ls /dev | grep -v '^core$')
touch /written && echo root writable || echo root read-only
echo mounts $(awk '{print $5}' /proc/self/mountinfo | grep -v -E '^/(sys|proc)/' | sort)
grep -q ' /proc/sys ' /proc/self/mountinfo && echo /proc/sys is bound read-only
"""


def bundle_dir() -> Path:
    return state_dir() / "lesson42" / "bundle"


def runc() -> str:
    """Debian's runc (``scripts/setup`` installs it)."""
    import shutil

    path = shutil.which("runc") or ("/usr/sbin/runc" if os.path.exists("/usr/sbin/runc") else None)
    if path is None:
        raise BadInput("runc is not installed: apt-get install runc (scripts/setup test does).")
    return path


def runtimes() -> dict[str, list[str]]:
    """The two command lines OCI tooling could drive, each with its own state directory."""
    return {
        "runc": [runc(), "--root", str(state_dir() / "lesson42" / "runc")],
        "labkit-runtime": [sys.executable, "-m", "labkit.container.cli"],
    }


# Where runc puts the bundle's containers' cgroup. runc's default is the container's id (a
# "lesson42" cgroup, which nothing would know to be labkit's); a relative path is taken from
# runc's own cgroup (v1) or its parent (v2). runc deletes it with the container.
RUNC_CGROUPS_PATH = "labkit-runc-lesson42"


def make_bundle() -> Path:
    """A bundle as ``runc spec`` writes it, with the lesson's busybox as its rootfs and a
    cgroupsPath that names the containers' cgroup as labkit's (so ``labkit cleanup`` finds it)."""
    bundle = bundle_dir()
    if bundle.exists():
        remove_bundle()
    bundle.mkdir(parents=True)
    rootfs.exec_capable(bundle)  # where /run is noexec (the lab VM), a tmpfs that is not
    subprocess.run([runc(), "spec", "--bundle", str(bundle)], check=True)
    config = read_config(bundle)
    config["linux"]["cgroupsPath"] = RUNC_CGROUPS_PATH
    write_config(bundle, config)
    rootfs.build(bundle / "rootfs")
    return bundle


def read_config(bundle: Path) -> dict:
    import json

    return json.loads((bundle / "config.json").read_text())


def write_config(bundle: Path, config: dict) -> None:
    import json

    (bundle / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def runtime(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one command of runtime *name* ("runc" or "labkit-runtime")."""
    if args and args[0] == "create":
        # The created container keeps the runtime's stdio as its own: a pipe would stay open.
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run(
                [*runtimes()[name], *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=timeout,
                check=False,
            )
            out.seek(0)
            return subprocess.CompletedProcess(done.args, done.returncode, "", out.read())
    return subprocess.run(
        [*runtimes()[name], *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def _status(name: str, cid: str) -> str:
    import json

    out = runtime(name, "state", cid)
    return json.loads(out.stdout)["status"] if out.returncode == 0 else "(no such container)"


def life_cycle(name: str, bundle: Path, cid: str = "lesson42") -> list[tuple[str, int, str]]:
    """create, start, kill, delete of a ``sleep`` in *bundle* by runtime *name*: after each
    command, (command, its exit status, the state's status)."""
    seen = []
    for command in (
        ["create", "--bundle", str(bundle), cid],
        ["start", cid],
        ["start", cid],
        ["kill", cid, "KILL"],
        ["delete", cid],
    ):
        done = runtime(name, *command)
        if command[0] == "kill":
            deadline = time.monotonic() + 10
            while _status(name, cid) != "stopped" and time.monotonic() < deadline:
                time.sleep(0.02)
        seen.append((command[0], done.returncode, _status(name, cid)))
    runtime(name, "delete", "--force", cid)
    return seen


def life_cycle_in_words(seen: list[tuple[str, int, str]]) -> str:
    return "\n".join(f"{cmd:<7} exit {code}   status {status}" for cmd, code, status in seen)


def state_keys(name: str, bundle: Path, cid: str = "lesson42-state") -> list[str]:
    """The keys of ``state`` for a created container of runtime *name*."""
    import json

    runtime(name, "create", "--bundle", str(bundle), cid)
    try:
        return sorted(json.loads(runtime(name, "state", cid).stdout))
    finally:
        runtime(name, "delete", "--force", cid)


def probe_with(name: str, bundle: Path, cid: str = "lesson42-probe") -> list[str]:
    """OCI_PROBE's answers in *bundle* run by runtime *name* (its process is replaced)."""
    config = read_config(bundle)
    saved = config["process"]["args"]
    config["process"]["args"] = ["sh", "-c", OCI_PROBE]
    write_config(bundle, config)
    try:
        out = runtime(name, "run", "--bundle", str(bundle), cid)
    finally:
        config["process"]["args"] = saved
        write_config(bundle, config)
    return (out.stdout + out.stderr).splitlines()


def remove_bundle() -> None:
    import shutil

    for name in runtimes():
        for cid in ("lesson42", "lesson42-state", "lesson42-probe", "lesson42-check"):
            runtime(name, "delete", "--force", cid)
    if mountinfo.is_mount_point(bundle_dir()):
        subprocess.run(["umount", str(bundle_dir())], check=True)
    shutil.rmtree(state_dir() / "lesson42", ignore_errors=True)


# --- 42: exercise checks --------------------------------------------------------------------------


def _set_key(config: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for part in parents:
        config = config.setdefault(part, {})
    config[last] = value


@graded
def check_readonly_key(bundle: Path, key) -> Verdict:
    """42: the config.json key (dotted, like "process.cwd") that makes the root read-only."""
    if key is ...:
        return not_done("read-only key")
    if not isinstance(key, str) or not key:
        return Verdict(False, "read-only key: give a dotted path like 'process.cwd'.")
    config = read_config(bundle)
    saved = read_config(bundle)
    answers = {}
    try:
        for value in (False, True):
            _set_key(config, key, value)
            touch = "touch /written 2>/dev/null && echo rw || echo ro"
            config["process"]["args"] = ["sh", "-c", touch]
            write_config(bundle, config)
            for name in runtimes():
                out = runtime(name, "run", "--bundle", str(bundle), "lesson42-check")
                answers[(name, value)] = out.stdout.strip() or "refused the config"
    finally:
        write_config(bundle, saved)
    ok = all(answers[(n, True)] == "ro" and answers[(n, False)] == "rw" for n in runtimes())
    said = ", ".join(f"{n} with {v}: {a}" for (n, v), a in answers.items())
    return verdict(
        ok,
        f"read-only key: {key} true makes the root read-only under runc and labkit-runtime alike.",
        f"read-only key: {said}.",
        "look at the 'root' object of config.json.",
    )


@graded
def check_exit_status(bundle: Path, status) -> Verdict:
    """42: the exit status of ``RUNTIME run`` when the container's process runs ``exit 3``."""
    if status is ...:
        return not_done("exit status")
    config = read_config(bundle)
    saved = read_config(bundle)
    config["process"]["args"] = ["sh", "-c", "exit 3"]
    write_config(bundle, config)
    try:
        got = {
            name: runtime(name, "run", "--bundle", str(bundle), "lesson42-check").returncode
            for name in runtimes()
        }
    finally:
        write_config(bundle, saved)
    ok = set(got.values()) == {status}
    return verdict(
        ok,
        f"exit status: both runtimes exit {status}, as the container did.",
        f"exit status: {status!r} is not what they gave ({got}).",
        "`run` waits for the container and passes on its process's exit status.",
    )


def refused_by_default_profile(names: Iterable[str]) -> list[str]:
    """Those of *names* that labkit's default seccomp profile refuses outright (read from the
    profile itself, allow-list or deny-list; a rule with argument conditions does not count)."""
    from ..container.seccomp import default_profile

    profile = default_profile()
    listed = {n: r.action for r in profile.syscalls if not r.args for n in r.names}
    refusing = ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD")
    return [n for n in names if listed.get(n, profile.default_action) in refusing]
