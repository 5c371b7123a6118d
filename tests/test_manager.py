"""The container manager as the engine calls it, without the engine: what dockerd does for a
container around the runtime (the log driver in the record, AutoRemove after a failed start,
stdin attached before start)."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from labkit import cleanup, images
from labkit.container import manager
from labkit.errors import BadInput

from .conftest import wait_until


@pytest.fixture
def store(monkeypatch):
    """A private, short state directory (the monitors bind unix sockets below it), with
    busybox:latest in its image store."""
    path = Path(tempfile.mkdtemp(prefix="lkm", dir="/run"))
    monkeypatch.setenv("LABKIT_STATE_DIR", str(path / "s"))
    images.busybox_image("busybox:latest")
    yield path / "s"
    cleanup.cleanup()
    shutil.rmtree(path)


def test_the_record_names_the_json_file_log_driver_and_refuses_others(store):
    # The docker CLI sends an empty Type; dockerd answers with the driver it uses.
    c = manager.create(
        {"Image": "busybox", "Cmd": ["true"]}, {"LogConfig": {"Type": "", "Config": {}}}
    )
    assert c.inspect()["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {}}
    plain = manager.create({"Image": "busybox", "Cmd": ["true"]})
    assert plain.inspect()["HostConfig"]["LogConfig"]["Type"] == "json-file"
    for log_config, words in [
        ({"Type": "syslog"}, "'syslog' is not available"),
        ({"Type": "json-file", "Config": {"max-size": "1m"}}, "no options"),
    ]:
        with pytest.raises(BadInput, match=words):
            manager.create({"Image": "busybox", "Cmd": ["true"]}, {"LogConfig": log_config})
    assert {x.id for x in manager.list_containers(all=True)} == {c.id, plain.id}
    manager.remove(c)
    manager.remove(plain)


def test_an_auto_remove_container_that_cannot_start_is_removed_by_start(store):
    c = manager.create({"Image": "busybox", "Cmd": ["no-such-command"]}, {"AutoRemove": True})
    with pytest.raises(manager.StartError) as failed:
        manager.start(c.id)
    assert failed.value.exit_code == 127
    with pytest.raises(manager.NotFound):
        manager.get(c.id)
    # Without AutoRemove it stays, created, as with dockerd.
    kept = manager.create({"Image": "busybox", "Cmd": ["no-such-command"]})
    with pytest.raises(manager.StartError):
        manager.start(kept.id)
    assert manager.get(kept.id).status == "created"
    manager.remove(kept.id)


def test_stdin_attached_before_start_reaches_the_container(store):
    config = {"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True, "StdinOnce": True}
    c = manager.create(config)
    session = manager.attach(c.id, stdin=True)  # created: stdin connects at the start
    sent = threading.Event()

    def feed() -> None:
        session.write(b"before the start\n")  # waits for the start (bounded)
        session.close_stdin()
        sent.set()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    assert not sent.wait(0.3)  # nothing to write to yet: the write waits
    started = manager.start(c.id)
    feeder.join(timeout=30)
    assert sent.is_set()
    out = b"".join(e.data for e in session.output())
    assert out == b"before the start\n"
    assert manager.wait(started, timeout=30)["StatusCode"] == 0
    session.close()
    manager.remove(c.id)


def test_stdin_of_a_container_that_ran_and_exited_is_a_broken_pipe(store):
    c = manager.create({"Image": "busybox", "Cmd": ["true"], "OpenStdin": True})
    session = manager.attach(c.id, stdin=True)
    manager.wait(manager.start(c.id), timeout=30)
    with pytest.raises(BrokenPipeError, match="not running"):
        session.write(b"too late\n")
    session.close()
    manager.remove(c.id)


def test_an_attach_made_before_start_keeps_the_output_of_an_auto_removed_container(store):
    # labkit run --rm: the container may exit and be removed, log and all, before we read.
    c = manager.create({"Image": "busybox", "Cmd": ["echo", "said"]}, {"AutoRemove": True})
    session = manager.attach(c, logs=True)
    manager.start(c)
    assert wait_until(lambda: not c.dir.exists(), 30), "AutoRemove did not remove the record"
    assert [(e.stream, e.data) for e in session.output()] == [("stdout", b"said\n")]
    assert manager.wait(c, "removed", timeout=30)["StatusCode"] == 0  # on start's pipe
    session.close()


def test_the_records_directory_goes_with_the_last_container(store):
    managed = manager.records_dir()
    c = manager.create({"Image": "busybox", "Cmd": ["true"]})
    assert managed.is_dir()
    manager.remove(c.id)
    assert not managed.exists()  # its lock went with it
    # A --rm container's exit is kept for the wait by id (the engine's), which takes it.
    script = ["sh", "-c", "sleep 0.3; exit 3"]
    c = manager.create({"Image": "busybox", "Cmd": script}, {"AutoRemove": True})
    manager.start(c.id)
    assert manager.wait(c.id, condition="removed", timeout=30)["StatusCode"] == 3
    assert not managed.exists()
    # The starter's own wait (`labkit run --rm`'s, on the monitor's pipe) has the exit too.
    c = manager.create({"Image": "busybox", "Cmd": ["true"]}, {"AutoRemove": True})
    assert manager.wait(manager.start(c.id), condition="removed", timeout=30)["StatusCode"] == 0
    assert not managed.exists()
    # Nobody waits: the exit is kept (a minute) until an engine stops and drops it.
    c = manager.create({"Image": "busybox", "Cmd": ["true"]}, {"AutoRemove": True})
    manager.start(c.id)
    assert wait_until(lambda: not (managed / c.id).exists(), 30)  # the monitor removes it
    assert {p.name for p in managed.iterdir()} <= {".exits", ".lock"}
    assert [p.name for p in (managed / ".exits").iterdir()] == [c.id]
    manager.tidy_records()
    assert not managed.exists()


def test_cleanup_removes_a_records_directory_left_with_only_its_lock(store):
    manager.records_dir().mkdir(parents=True)
    (manager.records_dir() / ".lock").touch()
    assert f"file: {manager.records_dir()}" in cleanup.leftovers()
    cleanup.cleanup()
    assert not manager.records_dir().exists()


def test_the_lock_holds_while_the_last_one_out_removes_the_directory(store):
    # Threads that create and remove at once: each create finds the lock (and the directory)
    # it needs though another removes both as its last container goes.
    errors = []

    def churn() -> None:
        try:
            for _ in range(5):
                manager.remove(manager.create({"Image": "busybox", "Cmd": ["true"]}).id)
        except Exception as e:  # noqa: BLE001  reported below
            errors.append(e)

    threads = [threading.Thread(target=churn) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and manager.list_containers(all=True) == []
    assert not manager.records_dir().exists()


def test_a_failed_start_says_why_in_the_state_and_ends_an_attach_made_before(store, monkeypatch):
    monkeypatch.setattr(manager, "START_TIMEOUT", 3600.0)  # a write that waited would hang
    c = manager.create({"Image": "busybox", "Cmd": ["no-such-command"], "OpenStdin": True})
    session = manager.attach(c.id, stdin=True)  # as docker run -i: before the start
    with pytest.raises(manager.StartError):
        manager.start(c.id)
    state = manager.get(c.id).state()
    assert (state["Status"], state["ExitCode"]) == ("created", 127)
    assert "no-such-command" in state["Error"]
    out = []
    reader = threading.Thread(target=lambda: out.extend(session.output()), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive() and out == []  # no output will come: the attach ends
    refused = []

    def write() -> None:
        try:
            session.write(b"for nobody\n")
        except BrokenPipeError as e:
            refused.append(e)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(timeout=10)
    assert not writer.is_alive() and len(refused) == 1  # no wait for a start that failed
    session.close()
    manager.remove(c.id)
