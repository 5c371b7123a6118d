"""Self-checking exercises: each ``check_...()`` inspects the real kernel state a student produced.

A check accepts any valid way to reach the goal, and answers with one line: what was expected,
what was found, and a hint when they differ (the way codecrafters and iximiuz Labs grade).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Verdict:
    """The outcome of one exercise check; prints as one line in a notebook."""

    ok: bool
    message: str
    hint: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"✅ {self.message}"
        return f"❌ {self.message}" + (f"\n   hint: {self.hint}" if self.hint else "")

    def _repr_pretty_(self, p, cycle):  # IPython shows the verdict, not the dataclass
        p.text(str(self))

    __repr__ = __str__


def verdict(ok: bool, passed: str, failed: str, hint: str = "") -> Verdict:
    """A Verdict that says *passed* when ok, else *failed* with *hint*."""
    return Verdict(ok, passed if ok else failed, "" if ok else hint)


def not_done(what: str) -> Verdict:
    """The answer still holds the blank (``...``) the exercise left for the student."""
    return Verdict(False, f"{what}: replace the ... with your answer, then run the cell again.")


# --- reporting: what `labkit course progress` collects -----------------------------------------
# Every check is wrapped by @graded: it records, under the exercise's name (the function's name
# without "check_"), whether the last attempt passed. `labkit course progress` runs a notebook
# headless and then asks the same kernel for reports().

DONE, NOT_YET, ERROR = "done", "not yet", "error"
GRADED: dict[str, Callable[..., Verdict]] = {}  # exercise name -> its check, for every lesson
_reports: dict[str, dict[str, str]] = {}  # exercise name -> status and message of its last run


def exercise_name(check: Callable) -> str:
    """The name an exercise is reported under: its check's name without the ``check_`` prefix."""
    return check.__name__.removeprefix("check_")


def report(exercise: str, outcome: Verdict | BaseException) -> None:
    """Record the outcome of *exercise*'s last check: done, not yet, or an error it raised."""
    if isinstance(outcome, BaseException):
        status, message = ERROR, f"{type(outcome).__name__}: {outcome}"
    else:
        status, message = (DONE if outcome.ok else NOT_YET), outcome.message
    _reports[exercise] = {"status": status, "message": message}


def reports() -> dict[str, dict[str, str]]:
    """The outcome of every exercise checked in this process so far, by exercise name."""
    return {name: dict(r) for name, r in _reports.items()}


def all_graded() -> list[str]:
    """The names of every exercise check in the lessons (each module of labkit.lab imported)."""
    import importlib
    import pkgutil

    from .. import lab

    for module in pkgutil.iter_modules(lab.__path__):
        importlib.import_module(f"{lab.__name__}.{module.name}")
    return sorted(GRADED)


def graded(check: Callable[..., Verdict]) -> Callable[..., Verdict]:
    """Make *check* an exercise check: each call reports its Verdict (or its error)."""
    name = exercise_name(check)
    other = GRADED.get(name)
    if other is not None and other.__module__ != check.__module__:  # reports would mix them up
        raise ValueError(f"two exercise checks are named {check.__name__}: rename one of them")

    @functools.wraps(check)
    def run(*args, **kwargs) -> Verdict:
        try:
            outcome = check(*args, **kwargs)
        except Exception as e:  # the student sees the traceback; progress sees "error"
            report(name, e)
            raise
        report(name, outcome)
        return outcome

    run.exercise = name
    GRADED[name] = run
    return run


# --- 00-welcome, 01-namespaces, 02-uts-ipc ------------------------------------------------------


@graded
def check_kernel_release(answer) -> Verdict:
    """00: which kernel release does this machine run? ("6.18" or the whole release string)."""
    if answer is ...:
        return not_done("kernel release")
    from ..doctor import Host, kernel_release

    release, _ = kernel_release(Host())
    given = str(answer).strip()
    # Any leading part of the release that names at least major.minor: "6.1", "6.1.0", the whole.
    ok = "." in given and (given == release or release.startswith((given + ".", given + "-")))
    return verdict(
        ok,
        f"kernel release: this machine runs Linux {release}.",
        f"kernel release: {given!r} is not the running kernel.",
        "read /proc/sys/kernel/osrelease (or doctor's 'kernel' line); "
        "give major.minor, e.g. '5.15', or the whole release string.",
    )


@graded
def check_cgroup_layout(answer) -> Verdict:
    """00: which cgroup layout did doctor find: "v1", "v2" or "hybrid"?"""
    if answer is ...:
        return not_done("cgroup layout")
    from ..doctor import Host, cgroup_layout

    layout = cgroup_layout(Host())
    given = str(answer).strip().lower()
    return verdict(
        given == layout,
        f"cgroup layout: {layout}, as doctor says.",
        f"cgroup layout: {given!r} is not what this host has.",
        "look at doctor's 'cgroups' line; answer 'v1', 'v2' or 'hybrid'.",
    )


def _running_pid(answer, what: str) -> tuple[int | None, Verdict | None]:
    """The PID of *answer* (a labkit Process or a PID) if it is still running, else a Verdict."""
    import os

    pid = getattr(answer, "pid", answer)
    if isinstance(pid, bool) or not isinstance(pid, int):
        return None, Verdict(
            False,
            f"{what}: expected a process from namespaces.spawn(...) "
            f"(or its PID), found {type(answer).__name__}.",
            "assign the result of namespaces.spawn([...], [...]) to the variable.",
        )
    running = getattr(answer, "returncode", None) is None and os.path.exists(f"/proc/{pid}")
    if not running:
        return None, Verdict(
            False,
            f"{what}: the process {pid} is no longer running.",
            "start a command that stays, e.g. ['sleep', '300'], then check.",
        )
    return pid, None


@graded
def check_all_but_net(answer) -> Verdict:
    """01: a process that shares every namespace with this notebook except the network one."""
    if answer is ...:
        return not_done("all but net")
    pid, problem = _running_pid(answer, "all but net")
    if problem:
        return problem
    from .. import namespaces

    same = namespaces.shared("self", pid)
    own = [k for k, s in same.items() if not s]
    return verdict(
        own == ["net"],
        "all but net: the process has a network namespace of its own and shares all the others.",
        f"all but net: the process has its own {', '.join(own) or 'nothing'}; expected net only.",
        "ask spawn for exactly one kind: the network namespace ('net').",
    )


@graded
def check_differing_kinds(proc_a, proc_b, answer) -> Verdict:
    """01: in which kinds do the namespaces of two processes differ? (a set of kind names)"""
    if answer is ...:
        return not_done("differing kinds")
    from .. import namespaces

    try:
        given = {answer} if isinstance(answer, str) else set(answer)
    except TypeError:
        return Verdict(
            False,
            f"differing kinds: expected a set of kind names, found {answer!r}.",
            "write them as a set of strings, e.g. {'mnt', 'pid'}.",
        )
    pid_a, problem = _running_pid(proc_a, "differing kinds")
    pid_b, problem_b = _running_pid(proc_b, "differing kinds")
    if problem or problem_b:
        return problem or problem_b
    differ = {k for k, same in namespaces.shared(pid_a, pid_b).items() if not same}
    hint = "compare namespaces.ns_ids() of the two PIDs kind by kind (or use namespaces.shared)"
    own_a, own_b = namespaces.shared("self", pid_a), namespaces.shared("self", pid_b)
    both_new = {k for k in differ - given if not own_a[k] and not own_b[k]}
    if both_new and given <= differ:  # each process made its own namespace of that kind: two
        hint = f"both made a new {min(both_new)} namespace, but each got a different one"
    named = ", ".join(sorted(given)) or "none"
    return verdict(
        given == differ,
        f"differing kinds: {', '.join(sorted(differ))}.",
        f"differing kinds: you named {named}; that is not the set that differs.",
        hint + ".",
    )


@graded
def check_lab_hostname(answer) -> Verdict:
    """02: a running process in its own UTS namespace whose hostname is "lab-" plus initials."""
    if answer is ...:
        return not_done("lab hostname")
    import re
    import socket

    from .. import namespaces

    pid, problem = _running_pid(answer, "lab hostname")
    if problem:
        return problem
    if namespaces.shared("self", pid)["uts"]:
        return Verdict(
            False,
            "lab hostname: the process shares this notebook's UTS namespace.",
            "start it in a new one: the kinds must include 'uts'.",
        )
    inside = namespaces.run(["hostname"], join={"uts": pid}, timeout=10).stdout.strip()
    ok = re.fullmatch(r"lab-[A-Za-z]{2,4}", inside) is not None
    return verdict(
        ok and inside != socket.gethostname(),
        f"lab hostname: the process sees {inside!r}; the host still has its own.",
        f"lab hostname: the process sees {inside!r}, not 'lab-' plus 2 to 4 initials.",
        "pass hostname='lab-' + your initials to namespaces.spawn, e.g. 'lab-ab'.",
    )


def message_queues(pid: int | str = "self") -> int:
    """How many System V message queues the IPC namespace of *pid* holds (/proc/sysvipc/msg).

    The file lists the queues of the reader's IPC namespace, so for another process it is read
    by a child that joins that process's IPC namespace first.
    """
    if pid == "self":
        with open("/proc/sysvipc/msg") as f:
            text = f.read()
    else:
        from .. import namespaces

        queues = namespaces.run(["cat", "/proc/sysvipc/msg"], join={"ipc": int(pid)}, timeout=10)
        text = queues.stdout
    return len(text.splitlines()) - 1  # the first line is a header


@graded
def check_host_sees_queues(proc, answer) -> Verdict:
    """02: *proc* made two queues in a new IPC namespace; *answer*: how many the host sees."""
    import time

    from .. import namespaces

    if proc is ... or answer is ...:
        return not_done("queues")
    pid, problem = _running_pid(proc, "queues")
    if problem:
        return problem
    if namespaces.shared("self", pid)["ipc"]:
        return Verdict(
            False,
            "queues: the process shares this notebook's IPC namespace.",
            "start it in a new one (kinds ['ipc']), or the queues land on the host.",
        )
    deadline = time.monotonic() + 3  # the command may still be making its queues
    while (inside := message_queues(pid)) != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    if inside != 2:
        return Verdict(
            False,
            f"queues: the process's IPC namespace holds {inside} queues, not 2.",
            "run ipcmk -Q twice inside, then keep the process alive: "
            "sh -c 'ipcmk -Q && ipcmk -Q && exec sleep 300'.",
        )
    host = message_queues()
    return verdict(
        answer == host,
        f"queues: 2 inside, and the host sees {host}: they live in another namespace.",
        f"queues: the host sees {host} message queues, not {answer!r}.",
        "count the lines of /proc/sysvipc/msg (after its header) in this notebook.",
    )


# --- end of 00-02 -----------------------------------------------------------------------------


# --- 03-pid, 04-mount, 05-user -----------------------------------------------------------------


def _kinds_or_verdict(kinds, what: str):
    """Parse namespace kinds the student gave; a Verdict instead when they are not valid."""
    from ..errors import BadInput
    from ..namespaces import parse_kinds

    try:
        return parse_kinds(kinds)
    except (BadInput, TypeError) as e:
        return Verdict(False, f"{what}: {e}", "give a list such as ['uts', 'ipc'].")


@graded
def check_pid_kinds(kinds) -> Verdict:
    """03: the kinds under which a shell is PID 1 and ``ps`` lists only its own namespace."""
    if kinds is ...:
        return not_done("kinds for a private process list")
    kinds = _kinds_or_verdict(kinds, "kinds for a private process list")
    if isinstance(kinds, Verdict):
        return kinds
    from .. import namespaces

    # $$ is the shell's own PID; ps -e lists every process the /proc it reads knows about.
    out = namespaces.run(["/bin/sh", "-c", "echo $$; ps -e -o pid= | wc -l"], kinds).check()
    own_pid, listed = (int(n) for n in out.stdout.split())
    passed = own_pid == 1 and listed <= 3
    if own_pid != 1:
        hint = f"the shell is PID {own_pid} of the host's PID namespace: add 'pid'."
    else:
        hint = (
            f"the shell is PID 1, but ps lists {listed} processes: it reads the host's /proc. "
            "Add 'mnt', so labkit can mount a fresh /proc for the new PID namespace."
        )
    return verdict(
        passed,
        f"with {kinds}: the shell is PID 1 and ps lists only {listed} processes.",
        f"with {kinds}: not a private process list.",
        hint,
    )


def _signal_number(sig) -> int:
    import signal

    if isinstance(sig, str):
        name = sig.upper() if sig.upper().startswith("SIG") else "SIG" + sig.upper()
        return int(signal.Signals[name])
    return int(sig)


@graded
def check_pid1_signal(sig) -> Verdict:
    """03: a signal that, sent from the host, ends a PID 1 (``sleep``) that has no handlers."""
    if sig is ...:
        return not_done("signal that ends PID 1")
    import os
    import signal
    import subprocess

    try:
        number = _signal_number(sig)
        name = signal.Signals(number).name
    except (KeyError, ValueError, TypeError):
        return Verdict(
            False,
            f"signal that ends PID 1: {sig!r} is not a signal.",
            "give a name such as 'SIGHUP' or a number such as 1.",
        )
    from .. import namespaces

    with namespaces.spawn(["sleep", "30"], ["mnt", "pid"]) as proc:
        os.kill(proc.pid, number)  # to PID 1 itself, not to labkit's relay outside
        try:
            proc.wait(0.5)
            ended = True
        except subprocess.TimeoutExpired:
            ended = False
    return verdict(
        ended,
        f"{name} ended PID 1 of the namespace (and with it, the namespace).",
        f"PID 1 (sleep, no signal handlers) is still running after {name}.",
        "the kernel drops every signal PID 1 has no handler for, even from the host; "
        "only two signals are forced on it from outside, and one of them only stops it.",
    )


@graded
def check_no_zombies(init) -> Verdict:
    """03: the ``init`` option under which an orphan re-parented to PID 1 is reaped."""
    if init is ...:
        return not_done("init option")
    import time

    from .. import namespaces
    from .proctree import zombies

    # The inner shell exits at once and orphans "sleep 0.1"; PID 1 then becomes "sleep 30".
    script = "sh -c 'sleep 0.1 &'; exec sleep 30"
    with namespaces.spawn(["/bin/sh", "-c", script], ["mnt", "pid"], init=bool(init)) as proc:
        time.sleep(0.6)
        found = zombies(proc)
    return verdict(
        not found,
        f"init={init!r}: the orphan was reaped, no zombie left.",
        f"init={init!r}: {len(found)} zombie(s) in the namespace.",
        "the orphan's new parent is PID 1; here PID 1 is 'sleep', which never calls wait(). "
        "Let labkit's small init be PID 1.",
    )


@graded
def check_no_leak(propagation) -> Verdict:
    """04: a propagation under which a mount made inside does not appear on a shared host mount."""
    if propagation is ...:
        return not_done("propagation")
    from .. import mountinfo
    from ..errors import BadInput
    from . import escape

    made_here = not mountinfo.is_mount_point(escape.shared_dir())
    try:
        leaked = escape.leaks(propagation)
    except BadInput as e:
        return Verdict(False, f"propagation: {e}", "choose one of 'private', 'slave', 'unchanged'.")
    finally:
        if made_here:
            escape.remove_shared()
    return verdict(
        not leaked,
        f"propagation={propagation!r}: the tmpfs stayed inside the new namespace.",
        f"propagation={propagation!r}: the tmpfs mounted inside appeared on the host.",
        "the copied mount is still a peer of the host's shared mount; cut the link "
        "(a peer group only sends events to its members and its slaves).",
    )


@graded
def check_escape_proof(method) -> Verdict:
    """04: a way of entering the rootfs that the double-chroot escape cannot get out of."""
    if method is ...:
        return not_done("root method")
    from .. import rootfs
    from ..errors import BadInput
    from . import escape

    try:
        attempt = escape.attempt_escape(rootfs.build(), method)
    except BadInput as e:
        return Verdict(False, f"root method: {e}", "choose 'chroot' or 'pivot_root'.")
    return verdict(
        not attempt.escaped,
        f"{method}: the escape attempt stayed in the rootfs.",
        f"{method}: the escape attempt reached the host's /.",
        "the method you chose leaves the host's mounts in the mount namespace; use the one "
        "that swaps the root mount and detaches the old one.",
    )


@graded
def check_proc_root_closed(kinds) -> Verdict:
    """04: the kinds under which /proc/<host PID>/root no longer leads out of a chroot."""
    if kinds is ...:
        return not_done("kinds that close /proc/PID/root")
    kinds = _kinds_or_verdict(kinds, "kinds that close /proc/PID/root")
    if isinstance(kinds, Verdict):
        return kinds
    if "mnt" not in kinds:
        return Verdict(
            False,
            f"with {kinds}: a root filesystem needs a new mnt namespace.",
            "keep 'mnt' in the list.",
        )
    from .. import rootfs
    from . import escape

    attempt = escape.attempt_proc_root(rootfs.build(), "chroot", "pid" in kinds)
    return verdict(
        not attempt.reached,
        f"with {kinds}: the host's processes are not in /proc inside.",
        f"with {kinds}: /proc/<host PID>/root still leads to the host's /.",
        "the fresh /proc shows the processes of the PID namespace it was mounted in.",
    )


@graded
def check_root_maps_to(uid_map, outside: int = 200000) -> Verdict:
    """05: a uid map under which root inside runs as *outside* on the host."""
    if uid_map is ...:
        return not_done("uid map")
    from .. import namespaces
    from ..errors import BadInput
    from .userns import host_uid

    try:
        with namespaces.spawn(["sleep", "30"], ["user"], uid_map=uid_map) as proc:
            found = host_uid(proc.pid)
    except BadInput as e:
        return Verdict(
            False,
            f"uid map {uid_map!r}: {e}",
            "write one line 'INSIDE OUTSIDE COUNT', e.g. '0 100000 65536'.",
        )
    except OSError as e:  # e.g. EINVAL from setresuid(0): uid 0 has no mapping inside
        return Verdict(
            False,
            f"uid map {uid_map!r}: the helper could not become root inside ({e}).",
            "the map must give the inside id 0 (root) an outside id: start the line with 0.",
        )
    return verdict(
        found == outside,
        f"uid map {uid_map!r}: root inside is uid {found} on the host.",
        f"uid map {uid_map!r}: root inside is uid {found} on the host, not {outside}.",
        "the first number is the id inside (root is 0), the second the id it is outside.",
    )


@graded
def check_nobody_kinds(kinds) -> Verdict:
    """05: the kinds with which the user nobody may set a hostname of its own."""
    if kinds is ...:
        return not_done("kinds for nobody")
    kinds = _kinds_or_verdict(kinds, "kinds for nobody")
    if isinstance(kinds, Verdict):
        return kinds
    from .userns import as_nobody

    result = as_nobody(
        "from labkit import namespaces as ns, errors\n"
        "try:\n"
        f"    print(ns.run(['hostname'], {kinds!r}, hostname='mine').stdout.strip())\n"
        "except errors.LabkitError as e:\n"
        "    print(e)\n"
    )
    said = (result.stdout.strip() or result.stderr.strip()).splitlines()[-1:] or [""]
    return verdict(
        said[0] == "mine",
        f"with {kinds}: nobody set the hostname 'mine' in its own namespace.",
        f"with {kinds}: nobody could not set a hostname ({said[0]}).",
        "without privilege, every other namespace must be owned by a user namespace that "
        "nobody creates first (and in which it is root); 'uts' is the one with the hostname.",
    )


@graded
def check_unmapped_owner(owner) -> Verdict:
    """05: the uid that ``stat`` inside a new user namespace shows for the host's root-owned "/"."""
    if owner is ...:
        return not_done("owner of / inside")
    from .. import namespaces

    found = int(namespaces.run(["stat", "-c", "%u", "/"], ["user"]).check().stdout)
    try:
        given = int(owner)
    except (TypeError, ValueError):
        return Verdict(False, f"owner of / inside: {owner!r} is not a uid.", "give a number.")
    return verdict(
        given == found,
        f"owner of / inside: uid {found}, as the kernel shows it.",
        f"owner of / inside: {given} is not what stat shows inside.",
        "host uid 0 has no mapping in '0 100000 65536'; the kernel shows unmapped owners as "
        "the overflow uid (/proc/sys/kernel/overflowuid).",
    )


# --- end of 03-05 -----------------------------------------------------------------------------
