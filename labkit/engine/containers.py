"""The containers endpoints: labkit's container manager in the Engine API's words.

Each endpoint checks the request, calls ``labkit.container.manager`` and shapes the answer;
the manager does everything to the container itself. ``docker run IMG CMD`` is five requests:
create, attach (the hijacked connection that will carry the output), wait (its head goes out at
once: the CLI sends start only when it has it), start, and at the exit the wait's body with the
exit code.
"""

from __future__ import annotations

import os
import threading
import time

from ..container import manager
from . import streams, system
from .api import Reply, route
from .errors import BadRequest

_WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
_STATS_INTERVAL = 1.0  # seconds between streamed stats, as dockerd


def counts() -> dict[str, int]:
    """How many containers are in each state, for ``docker info``."""
    out: dict[str, int] = {}
    for c in manager.list_containers(all=True):
        out[c.status] = out.get(c.status, 0) + 1
    return out


def using_image(image_id: str) -> list[str]:
    """The ids of the containers made from *image_id* (an image in use is not removed)."""
    found = []
    for c in manager.list_containers(all=True):
        if c.summary().get("ImageID") == image_id:
            found.append(c.id)
    return found


def _tty(ref: str) -> bool:
    return bool((manager.get(ref).inspect().get("Config") or {}).get("Tty"))


# --- create, list, inspect -----------------------------------------------------------------


@route("POST", "/containers/create")
def create(request) -> Reply:
    body = request.json(required=True)
    host_config = body.pop("HostConfig", None) or {}
    body.pop("NetworkingConfig", None)
    if not isinstance(host_config, dict):
        raise BadRequest("HostConfig must be a JSON object.")
    if not isinstance(body.get("Image"), str) or not body["Image"]:
        raise BadRequest("the container config needs an Image: give the name of a loaded image.")
    container = manager.create(body, host_config, request.arg("name") or None)
    return Reply(201, {"Id": container.id, "Warnings": []})


@route("GET", "/containers/json")
def list_containers(request) -> Reply:
    found = manager.list_containers(all=request.flag("all"), filters=request.filters() or None)
    limit = request.int_arg("limit", -1, low=-1)
    if limit is not None and limit > 0:
        found = found[:limit]
    return Reply(200, [c.summary() for c in found])


@route("GET", "/containers/{id}/json")
def inspect(request, id: str) -> Reply:
    return Reply(200, manager.get(id).inspect())


# --- the life cycle ------------------------------------------------------------------------


def _start_message(error: Exception) -> str:
    # The docker CLI picks its exit status from these words: 127 "executable file not found",
    # 126 "permission denied", else 125.
    message = str(error)
    code = getattr(error, "exit_code", 125)
    if code == 127 and "executable file not found" not in message:
        message += " (executable file not found in $PATH)"
    elif code == 126 and "permission denied" not in message:
        message += " (permission denied)"
    return message


@route("POST", "/containers/{id}/start")
def start(request, id: str) -> Reply:
    if manager.get(id).status == "running":
        return Reply(304)
    try:
        manager.start(id)
    except manager.StartError as e:  # (an AutoRemove container is gone with it)
        raise BadRequest(_start_message(e)) from None
    return Reply(204)


@route("POST", "/containers/{id}/wait")
def wait(request, id: str) -> None:
    condition = request.arg("condition") or "not-running"
    if condition not in _WAIT_CONDITIONS:
        raise BadRequest(
            f"wait condition {condition[:40]!r} is not one of {', '.join(_WAIT_CONDITIONS)}."
        )
    container = manager.get(id)
    request.drain()
    # The head at once: docker run sends start only after it arrives.
    stream = request.stream(200, "application/json")
    result = {"StatusCode": None, "Error": None}
    done = threading.Event()

    def waiter() -> None:
        try:
            result.update(manager.wait(container.id, condition=condition))
        except Exception as e:  # noqa: BLE001  the container vanished: say so in the body
            result.update({"StatusCode": -1, "Error": {"Message": str(e)}})
        done.set()

    threading.Thread(target=waiter, name="wait", daemon=True).start()
    while not done.wait(0.5):
        if request.client_gone():
            return  # nobody to tell: the waiter thread ends with the container
    stream.json(result)
    stream.close()


@route("POST", "/containers/{id}/kill")
def kill(request, id: str) -> Reply:
    manager.kill(id, request.arg("signal") or "KILL")
    return Reply(204)


@route("POST", "/containers/{id}/stop")
def stop(request, id: str) -> Reply:
    if manager.get(id).status != "running":
        return Reply(304)
    manager.stop(id, timeout=request.int_arg("t", 10, low=-1, high=3600))
    return Reply(204)


@route("POST", "/containers/{id}/restart")
def restart(request, id: str) -> Reply:
    manager.restart(id, timeout=request.int_arg("t", 10, low=-1, high=3600))
    return Reply(204)


@route("DELETE", "/containers/{id}")
def delete(request, id: str) -> Reply:
    manager.remove(id, force=request.flag("force"))
    return Reply(204)


@route("POST", "/containers/{id}/resize")
def resize(request, id: str) -> Reply:
    height = request.int_arg("h", 0, high=10000)
    width = request.int_arg("w", 0, high=10000)
    manager.resize(id, height, width)
    return Reply(200)


@route("GET", "/containers/{id}/top")
def top(request, id: str) -> Reply:
    return Reply(200, manager.top(id))


# --- output: logs and attach ---------------------------------------------------------------


@route("GET", "/containers/{id}/logs")
def logs(request, id: str) -> None:
    stdout, stderr = request.flag("stdout"), request.flag("stderr")
    if not (stdout or stderr):
        raise BadRequest("You must choose at least one stream: stdout=1, stderr=1 or both.")
    tail = request.arg("tail") or "all"
    if tail != "all" and not tail.isdigit():
        raise BadRequest(f"tail={tail[:20]!r} is not a number of lines or 'all'.")
    timestamps = request.flag("timestamps")
    tty = _tty(id)
    entries = manager.logs(
        id,
        stdout=stdout,
        stderr=stderr,
        follow=request.flag("follow"),
        since=request.int_arg("since", 0),
        until=request.int_arg("until", 0),
        timestamps=timestamps,
        tail=tail,
    )
    stream = request.stream(200, streams.content_type(tty))
    wire = streams.encode(tty)
    for entry in entries:
        data = entry.time.encode() + b" " + entry.data if timestamps else entry.data
        stream.write(wire(entry.stream, data))
    stream.close()


@route("POST", "/containers/{id}/attach")
def attach(request, id: str) -> None:
    tty = _tty(id)
    want_stdin = request.flag("stdin")
    # Before start too (docker run -i): the manager connects stdin once the container runs.
    session = manager.attach(
        id,
        stdin=want_stdin,
        stdout=request.flag("stdout"),
        stderr=request.flag("stderr"),
        logs=request.flag("logs"),
        stream=request.flag("stream", True),
    )
    try:
        conn = request.hijack(streams.content_type(tty))
        if want_stdin:
            streams.pump_stdin(conn, session.write, session.close_stdin)
        else:
            streams.drain_input(conn)
        streams.send_output(conn, session.output(), tty)
        conn.close_write()
    finally:
        session.close()


# --- stats ---------------------------------------------------------------------------------


def _system_cpu_ns() -> int:
    """All CPUs' time since boot in nanoseconds (the first line of /proc/stat), as dockerd."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:8]
    return sum(int(x) for x in fields) * (10**9 // os.sysconf("SC_CLK_TCK"))


def _sample(container) -> dict:
    doc = manager.stats(container.id)
    cpu = doc.setdefault("cpu_stats", {})
    cpu.setdefault("system_cpu_usage", _system_cpu_ns())
    cpu.setdefault("online_cpus", os.cpu_count() or 1)
    doc.setdefault("read", time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()))
    doc.setdefault("name", container.name)
    doc.setdefault("id", container.id)
    doc.setdefault("networks", {})
    doc.setdefault("blkio_stats", {"io_service_bytes_recursive": None})
    doc.setdefault("pids_stats", {})
    # No memory limit: the host's memory is the limit, as dockerd reports it.
    doc.setdefault("memory_stats", {}).setdefault("limit", system.mem_total())
    doc.setdefault("num_procs", 0)
    return doc


def _with_previous(doc: dict, previous: dict | None) -> dict:
    doc["precpu_stats"] = (previous or {}).get("cpu_stats", {})
    doc["preread"] = (previous or {}).get("read", "0001-01-01T00:00:00Z")
    return doc


@route("GET", "/containers/{id}/stats")
def stats(request, id: str) -> Reply | None:
    container = manager.get(id)
    if not request.flag("stream", True):
        if request.flag("one-shot"):
            return Reply(200, _with_previous(_sample(container), None))
        first = _sample(container)  # two samples, a second apart, so CPU % can be computed
        time.sleep(_STATS_INTERVAL)
        return Reply(200, _with_previous(_sample(container), first))
    stream = request.stream(200, "application/json")
    previous = None
    while True:
        current = _sample(container)
        stream.json(_with_previous(current, previous))
        previous = current
        time.sleep(_STATS_INTERVAL)
        if manager.get(id).status != "running" or request.client_gone():
            break
    stream.close()
    return None
