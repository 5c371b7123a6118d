"""The container's init child (labkit's ``runc init``): it runs the steps, then execs.

``lifecycle.create`` starts this file as a fresh, single-threaded Python (``python -I -S``),
puts it into the container's cgroup, and sends it the checked spec over the control pipe. This
child then runs ``steps.STEPS`` in order. Messages on the status pipe, in pairs with the
parent's answers:

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
import sys
import time

if __name__ == "__main__":
    # Run as a script: make the package importable without site-packages (-S keeps start-up fast).
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from labkit import _init
from labkit.container.spec import Spec
from labkit.container.steps import STEPS, Setup


def fail(setup: Setup, step: str, error: BaseException) -> None:
    """Send the failure, named by its step, to the parent (or to stderr once it has gone)."""
    if isinstance(error, OSError):
        message = error.strerror or str(error)
        if error.filename is not None:
            message = f"{message}: {os.fsdecode(error.filename)}"
    else:
        message = str(error) or type(error).__name__
    if setup.channel is not None:
        setup.channel.send(
            "error",
            step=step,
            type=type(error).__name__,
            errno=getattr(error, "errno", None) or 0,
            message=message,
        )
    else:
        os.write(2, f"labkit-runtime init: {step}: {message}\n".encode())
    os._exit(1 if setup.channel is not None else 127)


def receive_spec(channel: _init.Channel) -> Setup:
    """The checked spec and the plan from the parent, and what must be imported before pivot."""
    message = channel.receive()
    spec = Spec.from_dict(message["config"], checked=False)
    os.set_inheritable(message["fifo_fd"], False)  # the container's process must not get it
    setup = Setup(spec, channel, message["fifo_fd"], set(message["skip"]))
    if message["console_fd"] is not None:
        os.set_inheritable(message["console_fd"], False)
        setup.console_fd = message["console_fd"]
    if spec.linux.seccomp is not None:
        # Imported now: after pivot_root the library's files are out of reach.
        sys.path.extend(message["extra_paths"])
        import pyseccomp

        setup.seccomp = pyseccomp
    return setup


def main(status_fd: int, control_fd: int) -> None:
    channel = _init.Channel(status_fd, control_fd)
    os.set_inheritable(control_fd, False)
    try:
        setup = receive_spec(channel)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001  reported like a step's failure
        fail(Setup(None, channel, -1), "receive_spec", e)
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


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
