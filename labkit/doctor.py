"""``labkit doctor``: can this host run every lesson?

Each check asks the kernel (through /proc, /sys and a few system calls) for one thing the lessons
rely on, and answers with one line: ok, a warning, or a failure with the fix. A *required* check
that fails makes ``labkit doctor`` exit non-zero.

The checks read the host through a ``Host``: the real machine by default, or a labelled fake tree
(a directory laid out like ``/``) in the tests, so that every failure path can be exercised.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import mountinfo, rootfs
from . import sys as ksys
from .cgroups import layout
from .namespaces import KINDS

OK, WARN, FAIL = "ok", "warn", "fail"
_MARK = {OK: "✔", WARN: "⚠", FAIL: "✘"}

CAP_SYS_ADMIN = 21  # the capability behind mount, unshare and most of what the lessons do

# Kernel releases that brought what the lessons use, and whether the lessons need it (the cgroup
# lessons also run on v1 hierarchies).
KERNEL_FEATURES = [
    ((3, 8), "user namespaces", True),
    ((3, 18), "overlayfs", True),
    ((4, 5), "cgroup v2", False),
    ((4, 6), "cgroup namespaces", False),
    ((5, 2), "the cgroup v2 freezer", False),
    ((5, 6), "time namespaces", False),
    ((5, 14), "cgroup.kill", False),
    ((5, 19), "memory.peak", False),
]

# Namespace kinds a lesson cannot do without; the others only take one section each.
REQUIRED_KINDS = ("mnt", "uts", "ipc", "pid", "net", "user")

# Controllers the cgroup lessons use; the first three are required.
CONTROLLERS = ("memory", "cpu", "pids", "cpuset", "freezer")
REQUIRED_CONTROLLERS = ("memory", "cpu", "pids")

VM_FIX = "or use the lab VM (vagrant up), which has everything"
LAB_VM_MARK = "/etc/labkit/lab-vm"  # written by scripts/provision-vm inside the lab VM


def in_lab_vm(host: Host) -> bool:
    """Whether *host* is the lab VM (its provisioning leaves a mark)."""
    return host.path(LAB_VM_MARK).exists()


def vm_fix(host: Host) -> str:
    """The last resort a fix offers: the lab VM, or inside it, provisioning it again."""
    if in_lab_vm(host):
        return "or provision the lab VM again (vagrant provision on your computer)"
    return VM_FIX


@dataclass
class Check:
    """The outcome of one check: a status, one line to show, and a fix when it is not ok."""

    name: str
    status: str  # ok | warn | fail
    summary: str
    fix: str = ""
    required: bool = True
    details: dict = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        """A required check that failed: the lessons cannot run until it is fixed."""
        return self.required and self.status == FAIL

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        optional = "" if self.required or self.status == OK else " (optional)"
        line = f"{_MARK[self.status]} {self.name}: {self.summary}{optional}"
        return line + (f" → fix: {self.fix}" if self.fix else "")


@dataclass
class Host:
    """The machine being checked: the real one, or a fake tree rooted at *root* in tests."""

    root: Path = Path("/")
    system: str = field(default_factory=platform.system)
    euid: int = field(default_factory=os.geteuid)
    fs_type: Callable[[str], int] = ksys.statfs  # statfs(path) -> f_type
    create_namespaces: bool = True  # really create each kind in a child (real host only)

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        try:
            return self.path(absolute).read_text()
        except OSError:
            return None


# --- the host ------------------------------------------------------------------------------------


def check_linux(host: Host) -> Check:
    if host.system == "Linux":
        return Check("linux", OK, f"Linux on {platform.machine()}")
    return Check(
        "linux",
        FAIL,
        f"this is {host.system}, and the lessons use Linux kernel features",
        fix=f"run labkit in a Linux machine: {vm_fix(host)}",
    )


def _capabilities(host: Host) -> int:
    for line in (host.read("/proc/self/status") or "").splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_root(host: Host) -> Check:
    if host.euid != 0:
        return Check(
            "root",
            FAIL,
            f"running as uid {host.euid}: namespaces, mounts and cgroups need root",
            fix="run it with sudo (sudo labkit doctor), or as root inside the lab VM",
        )
    if not _capabilities(host) >> CAP_SYS_ADMIN & 1:
        return Check(
            "root",
            FAIL,
            "uid 0 but without CAP_SYS_ADMIN (a container without privileges?)",
            fix=f"run with all capabilities (docker run --privileged), {vm_fix(host)}",
        )
    return Check("root", OK, "uid 0 with CAP_SYS_ADMIN")


def kernel_release(host: Host) -> tuple[str, tuple[int, int]]:
    """The running kernel's release string and its (major, minor)."""
    release = (host.read("/proc/sys/kernel/osrelease") or "").strip()
    found = re.match(r"(\d+)\.(\d+)", release)
    return release, (int(found[1]), int(found[2])) if found else (0, 0)


def check_kernel(host: Host) -> Check:
    release, version = kernel_release(host)
    missing = [(v, what, req) for v, what, req in KERNEL_FEATURES if version < v]
    details = {"release": release, "version": list(version)}
    if not missing:
        return Check(
            "kernel",
            OK,
            f"{release}: namespaces of every kind, cgroup2, overlayfs",
            details=details,
        )
    too_old = ", ".join(f"{what} ({v[0]}.{v[1]}+)" for v, what, _ in missing)
    status = FAIL if any(req for *_, req in missing) else WARN
    return Check(
        "kernel",
        status,
        f"{release or 'unknown'} is too old for {too_old}",
        fix=f"boot a kernel 5.19 or newer, {vm_fix(host)}",
        details=details,
    )


# --- namespaces ----------------------------------------------------------------------------------

# Run in a fresh child: unshare() each kind in turn (user last: a process in a new user namespace
# may create the other kinds even without privileges on the host, which would hide a failure).
_PROBE = """
import json, sys
from labkit import sys as ksys
result = {}
for name, flag in json.loads(sys.argv[1]):
    try:
        ksys.unshare(flag)
        result[name] = ""
    except OSError as e:
        result[name] = e.strerror
print(json.dumps(result))
"""


def create_each_kind() -> dict[str, str]:
    """Ask the kernel for a new namespace of every kind, in a short-lived child.

    Returns ``{kind: ""}`` for success or ``{kind: the error}``. The child exits at once, and its
    namespaces go with it. Done in a child because unshare() changes the caller for good.
    """
    order = [k for k in KINDS if k != "user"] + ["user"]
    kinds = json.dumps([(name, KINDS[name].flag) for name in order])
    package_parent = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": package_parent}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, kinds],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,  # an interpreter starts in 0.1 s, but in an emulated VM it can take 10
        env=env,
    )
    if out.returncode != 0:
        raise OSError(0, f"the namespace probe child failed: {out.stderr.strip()[-200:]}")
    return json.loads(out.stdout)


def _namespace_check(host: Host, name: str, error: str | None) -> Check:
    """One kind: *error* is None when not tried, "" when created, else why unshare() failed."""
    required, since = name in REQUIRED_KINDS, KINDS[name].since
    flag = ksys.CLONE_NAMES[KINDS[name].flag]
    label = f"namespace {name}"
    if not host.path(f"/proc/self/ns/{name}").exists():
        return Check(
            label,
            FAIL,
            f"not in /proc/self/ns: this kernel was built without {flag}",
            fix=f"boot a kernel {since}+ built with it, {vm_fix(host)}",
            required=required,
        )
    if error is None:
        return Check(label, OK, "present in /proc/self/ns", required=required)
    if error:
        fix = (
            "set the sysctl user.max_user_namespaces above 0"
            if name == "user"
            else "run as root with all capabilities, outside a restricted container"
        )
        return Check(label, FAIL, f"unshare({flag}) failed: {error}", fix=fix, required=required)
    return Check(label, OK, f"unshare({flag}) works", required=required)


def check_namespaces(host: Host) -> list[Check]:
    # Creating them needs root; without it the root check already says what to do.
    created = create_each_kind() if host.create_namespaces and host.euid == 0 else {}
    return [_namespace_check(host, name, created.get(name)) for name in KINDS]


# The sysctls that can keep an ordinary user from creating a user namespace, in the order the
# kernel asks them: (key, when its value refuses, how bad, what it means, the fix). A value is
# None where the file is missing: the last two are Debian's and Ubuntu's additions.
USERNS_SYSCTLS = [
    (
        "user.max_user_namespaces",
        lambda value: (value or 0) <= 0,
        FAIL,
        "user.max_user_namespaces is 0: nobody may create one",
        "sysctl -w user.max_user_namespaces=15000",
    ),
    (
        "kernel.unprivileged_userns_clone",  # Debian's own patch
        lambda value: value == 0,
        WARN,
        "kernel.unprivileged_userns_clone is 0: only root may create one",
        "sysctl -w kernel.unprivileged_userns_clone=1",
    ),
    (
        "kernel.apparmor_restrict_unprivileged_userns",  # Ubuntu 23.10 and later
        lambda value: value == 1,
        WARN,
        "AppArmor restricts them (kernel.apparmor_restrict_unprivileged_userns=1)",
        "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (to keep it, put the line "
        "kernel.apparmor_restrict_unprivileged_userns=0 in /etc/sysctl.d/60-labkit.conf)",
    ),
]


def check_unprivileged_userns(host: Host) -> Check:
    """Can an ordinary user create a user namespace (the rootless lesson)?"""
    name = "unprivileged user namespaces"
    for key, refuses, status, says, fix in USERNS_SYSCTLS:
        text = (host.read(f"/proc/sys/{key.replace('.', '/')}") or "").strip()
        if refuses(int(text) if text.lstrip("-").isdigit() else None):
            return Check(name, status, says, fix=fix, required=False)
    return Check(name, OK, "allowed", required=False)


# --- cgroups -------------------------------------------------------------------------------------


def cgroup_mounts(host: Host) -> list[mountinfo.Mount]:
    return layout.cgroup_mounts(host.read("/proc/self/mountinfo") or "")


def own_cgroups(host: Host) -> dict[str, str]:
    """This process's cgroup in each hierarchy: {"memory": path, ..., "": the v2 path}."""
    return layout.own_cgroups(host.read("/proc/self/cgroup") or "")


def cgroup_layout(host: Host) -> str:
    """v2 (unified), hybrid (v1 hierarchies and cgroup2 beside them), v1 (legacy) or none.

    Decided by the filesystem magic number (statfs f_type) of /sys/fs/cgroup, as systemd does.
    """
    mode = layout.detect_mode(host.path("/sys/fs/cgroup"), host.fs_type)
    if mode == "v1" and not any(m.fstype == "cgroup" for m in cgroup_mounts(host)):
        return "none"
    return mode


def check_cgroup_layout(host: Host) -> Check:
    layout = cgroup_layout(host)
    summary = {
        "v2": "v2 (one unified hierarchy at /sys/fs/cgroup)",
        "hybrid": "hybrid (v1 hierarchies, and cgroup2 at /sys/fs/cgroup/unified)",
        "v1": "v1 (one hierarchy per controller)",
    }
    if layout == "none":
        return Check(
            "cgroups",
            FAIL,
            "no cgroup filesystem is mounted",
            fix="mount -t cgroup2 none /sys/fs/cgroup",
            details={"layout": layout},
        )
    return Check("cgroups", OK, summary[layout], details={"layout": layout})


def _below(mount: mountinfo.Mount, path: str) -> str | None:
    """The directory of cgroup *path* in *mount*, or None if that hierarchy is mounted read-only."""
    if mount.read_only:
        return None
    # /proc/self/cgroup paths start at the hierarchy's root; the mount may show a subtree of it.
    if mount.root != "/" and (path == mount.root or path.startswith(mount.root + "/")):
        path = path[len(mount.root) :]
    return "/".join(part for part in (mount.point.rstrip("/"), path.strip("/")) if part)


def v2_placement(host: Host) -> tuple[str | None, str]:
    """(directory, placement) of the cgroup that would hold labkit/ in the cgroup2 hierarchy.

    The same decision as ``labkit.cgroups.layout.v2_base``: the root cgroup; beside this
    process's leaf inside a delegated subtree; else this process's own cgroup.
    """
    mounts, own = cgroup_mounts(host), own_cgroups(host)
    unified = next((m for m in mounts if m.fstype == "cgroup2"), None)
    own_dir = _below(unified, own[""]) if unified and "" in own else None
    if own_dir is None:
        return None, layout.OWN_CGROUP
    if cgroup_layout(host) != "v2":
        return own_dir, layout.OWN_CGROUP  # hybrid: no controllers there to enable
    base, placement = layout.v2_base(host.path(own_dir), host.path(unified.point))
    return "/" + str(base.relative_to(host.root)).lstrip("./"), placement


def controller_dirs(host: Host) -> dict[str, str | None]:
    """For each controller, the cgroup directory labkit would create its cgroups in (or None).

    In the v1 hierarchy of that controller, this process's own cgroup; else, in the v2
    hierarchy, the cgroup that holds labkit/ (see ``v2_placement``) when the controller is in its
    ``cgroup.controllers`` (enabled by the parent) and the kernel would let it enable it for
    children (it is the root, or holds no processes). The v2 freezer is not a controller but the
    ``cgroup.freeze`` file (kernel 5.2+).
    """
    mounts, own = cgroup_mounts(host), own_cgroups(host)
    v2_dir, placement = v2_placement(host)
    v2_has = set((host.read(f"{v2_dir}/cgroup.controllers") or "").split()) if v2_dir else set()
    if v2_dir and placement == layout.OWN_CGROUP and cgroup_layout(host) == "v2":
        if layout.holds_processes(host.path(v2_dir)):
            v2_has = set()  # no internal processes: it may not enable them for children
    if v2_dir and kernel_release(host)[1] >= (5, 2):
        v2_has.add("freezer")
    found: dict[str, str | None] = {}
    for controller in CONTROLLERS:
        v1 = next(
            (m for m in mounts if m.fstype == "cgroup" and controller in m.super_options), None
        )
        if v1 is not None and controller in own:
            found[controller] = _below(v1, own[controller])
        elif controller in v2_has:
            found[controller] = v2_dir
        else:
            found[controller] = None
        where = found[controller]
        if where and not host.path(where).is_dir():
            found[controller] = None
    return found


def _where(host: Host) -> str:
    """Where labkit's cgroups go on this host, in words."""
    if cgroup_layout(host) != "v2":
        return "below this process's own cgroup"
    v2_dir, placement = v2_placement(host)
    if placement == layout.ROOT_CGROUP:
        return "below the root cgroup"
    if placement == layout.DELEGATED:
        return f"in {v2_dir}, delegated to this process, beside its own leaf"
    return f"below this process's own cgroup {v2_dir}"


def check_cgroup_controllers(host: Host) -> Check:
    dirs = controller_dirs(host)
    usable = [c for c in CONTROLLERS if dirs[c]]
    missing = [c for c in CONTROLLERS if not dirs[c]]
    v2_dir, placement = v2_placement(host)
    details = {"dirs": dirs, "placement": placement}
    if not missing:
        return Check(
            "cgroup controllers", OK, f"{' '.join(usable)} usable {_where(host)}", details=details
        )
    status = FAIL if set(missing) & set(REQUIRED_CONTROLLERS) else WARN
    blocked = (
        cgroup_layout(host) == "v2"
        and placement != layout.ROOT_CGROUP
        and v2_dir is not None
        and layout.holds_processes(host.path(v2_dir))
    )
    if blocked:
        from .cgroups.v2 import no_internal_processes

        fix = no_internal_processes(Path(v2_dir), placement)
    else:
        fix = (
            "on v2, enable them in the parent's cgroup.subtree_control (under systemd: a unit "
            f"with Delegate=yes); on v1, mount their hierarchies; {vm_fix(host)}"
        )
    return Check(
        "cgroup controllers",
        status,
        f"{' '.join(missing)} not usable {_where(host)}"
        + (f" (usable: {' '.join(usable)})" if usable else ""),
        fix=fix,
        details=details,
    )


# --- filesystems ---------------------------------------------------------------------------------


def check_overlayfs(host: Host) -> Check:
    filesystems = host.read("/proc/filesystems") or ""
    if any(line.split()[-1:] == ["overlay"] for line in filesystems.splitlines()):
        return Check("overlayfs", OK, "in /proc/filesystems")
    release, _ = kernel_release(host)
    module = host.path(f"/lib/modules/{release}/kernel/fs/overlayfs")
    if module.is_dir() and any(p.name.startswith("overlay.ko") for p in module.iterdir()):
        return Check("overlayfs", OK, "a module, which the kernel loads on the first overlay mount")
    return Check(
        "overlayfs",
        FAIL,
        "not in /proc/filesystems and no overlay module",
        fix=f"modprobe overlay, or boot a kernel built with CONFIG_OVERLAY_FS, {vm_fix(host)}",
    )


def check_busybox(host: Host) -> Check:
    fix = "apt-get install busybox-static"
    found = rootfs.find_busybox(tuple(str(host.path(p)) for p in rootfs.BUSYBOX_PATHS))
    if found is None:
        return Check(
            "busybox",
            FAIL,
            f"no busybox at {' or '.join(rootfs.BUSYBOX_PATHS)}, "
            "which the root filesystems are built from",
            fix=fix,
        )
    shown = "/" + str(found.relative_to(host.root))
    try:
        loader = rootfs.elf_interpreter(found)
    except Exception as e:  # not an ELF file, unreadable, truncated
        return Check("busybox", FAIL, f"{shown} is not a usable executable ({e})", fix=fix)
    if loader:
        return Check(
            "busybox",
            FAIL,
            f"{shown} is dynamically linked (needs {loader}): "
            "it would not run inside a minimal root filesystem",
            fix=fix,
        )
    return Check("busybox", OK, f"{shown} is static: it runs inside a root filesystem alone")


# --- all of it -----------------------------------------------------------------------------------

CHECKS = [
    check_linux,
    check_root,
    check_kernel,
    check_namespaces,
    check_unprivileged_userns,
    check_cgroup_layout,
    check_cgroup_controllers,
    check_overlayfs,
    check_busybox,
]


def run_checks(host: Host | None = None) -> list[Check]:
    """Run every check on *host* (the real machine by default), in the order of the lessons."""
    host = host or Host()
    results: list[Check] = []
    for check in CHECKS:
        try:
            outcome = check(host)
        except Exception as e:  # a doctor reports what it could not examine, it does not crash
            name = check.__name__.removeprefix("check_").replace("_", " ")
            outcome = Check(name, FAIL, f"could not be checked: {e}", fix="report this as a bug")
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def exit_status(results: list[Check]) -> int:
    """0 when every required check passes, else 1."""
    return 1 if any(r.blocking for r in results) else 0


def render(results: list[Check]) -> str:
    """One line per check, then a verdict: readable in a terminal and in a notebook."""
    lines = [str(r) for r in results]
    blocking = [r.name for r in results if r.blocking]
    warnings = sum(r.status != OK and not r.blocking for r in results)
    note = f" ({warnings} warning{'s' * (warnings != 1)})" if warnings else ""
    if blocking:
        failed = f"{len(blocking)} required check(s) failed ({', '.join(blocking)})"
        lines.append(f"labkit doctor: {failed}{note}: apply the fixes above and run it again.")
    else:
        lines.append(f"labkit doctor: this host can run every lesson{note}.")
    return "\n".join(lines)
