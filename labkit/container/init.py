"""The container's init child (labkit's ``runc init``): it runs the steps, then execs.

``lifecycle.create`` has the fork server (``labkit/forkserver.py``) fork this child into the
container's cgroup (its cgroup2 half) and sends it, over the control pipe, the checked spec and
the seccomp filter that libseccomp compiled from it while it was checked. This
child moves itself into the v1 hierarchies, then runs ``steps.STEPS`` in order. Messages on the
status pipe (``labkit/channel.py``), in pairs with the parent's answers:

    child                               parent
    -----------------------------------------------------------------------
    "userns_ready"             -->      writes uid_map and gid_map
                               <--      "maps_written"
    "pid" (of PID 1, after the fork) -->  records it
    "created" (all set up)     -->      writes the state, `create` returns
    "error" (step, type, message) -->   undoes everything, raises ContainerError

After "created" the child blocks on the exec FIFO until ``start``, then execs the process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..cgroups.base import write
from ..channel import Channel
from .spec import Spec
from .steps import STEPS, Setup


def fail(setup: Setup, step: str, error: BaseException) -> None:
    """Send the failure, named by its step, to the parent (or to stderr once it has gone)."""
    if setup.channel is not None:
        setup.channel.fail(step, error)  # exits
    message = str(error) or type(error).__name__
    os.write(2, f"labkit-runtime init: {step}: {message}\n".encode())
    os._exit(127)


def join_cgroup(tasks: list[str]) -> None:
    """join_cgroup's second half: move into the container's cgroup in each v1 hierarchy.

    The parent had us born in its cgroup2 directory; here we write 0 ("the writer itself") to
    each v1 ``tasks`` file. We have one thread, so that moves the whole process, and without
    the kernel's grace period that the parent's write of our PID to cgroup.procs would cost.
    """
    for path in tasks:
        write(Path(path), "0")


def receive_spec(channel: Channel, message: dict, fds: list[int]) -> Setup:
    """The checked spec, the plan and the compiled seccomp filter from the parent.

    fds: the exec FIFO's O_PATH handle, then the console socket if there is one.
    """
    spec = Spec.from_dict(message["config"], checked=False)
    setup = Setup(spec, channel, fds[0], set(message["skip"]), seccomp=message["seccomp"])
    if len(fds) > 1:
        setup.console_fd = fds[1]
    return setup


def _or_fail(channel: Channel, step: str, call):
    """*call*'s result; any failure (not only OSError) goes to the parent, named *step*."""
    try:
        return call()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001  reported like a step's failure
        channel.fail(step, e)  # exits


def main(channel: Channel, fds: list[int]) -> None:
    message = _or_fail(channel, "receive_spec", channel.receive)
    began = time.perf_counter()
    # Before anything else, so that all the init does is counted.
    _or_fail(channel, "join_cgroup", lambda: join_cgroup(message["join"]))
    joined = time.perf_counter() - began
    setup = _or_fail(channel, "receive_spec", lambda: receive_spec(channel, message, fds))
    if message["join"]:
        setup.times["join_cgroup"] = joined
    for step in STEPS:
        if step.run is None or step.name in setup.skip:
            continue
        began = time.perf_counter()
        try:
            step.run(setup)
        except SystemExit:
            raise
        except BaseException as e:  # noqa: BLE001  any failure, not only the kernel's, is named
            fail(setup, step.name, e)
        # load_seccomp has two places in the table: its time is the sum.
        setup.times[step.name] = setup.times.get(step.name, 0.0) + time.perf_counter() - began
