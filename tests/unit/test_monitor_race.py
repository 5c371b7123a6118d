"""A container's state read while its monitor records the exit and ends.

The reader checks the monitor's PID only when the record says "running". The monitor may write
its last state (exited, its code) and end between the reader's read and that check. Seen in the
lab VM: a `docker run ... true` whose wait answered 255, as if the monitor had been killed.
Here the interleaving is made exact: the check itself plays the monitor's last moment. The whole
path, with real monitors, is tested as root in tests/test_manager.py and tests/test_engine*.py.
"""

from __future__ import annotations

import pytest

from labkit.container import manager

RUNNING = {
    "Status": "running",
    "Running": True,
    "Pid": 4242,
    "PidStart": 11,
    "MonitorPid": 4243,
    "MonitorStart": 12,
    "StartedAt": "2026-12-02T00:00:00.000000000Z",
}


@pytest.fixture
def container(tmp_path):
    record = {"Id": "ab" * 32, "Name": "/lkb-race"}
    manager.write_json(tmp_path / "config.json", record)
    manager.write_json(tmp_path / "state.json", RUNNING)
    return manager.Container(record["Id"], tmp_path, record)


def test_an_exit_recorded_during_the_check_is_the_exit_shown(container, monkeypatch):
    def monitor_finishes_now(pid):
        exited = dict(RUNNING, Status="exited", Running=False, Pid=0, ExitCode=3, MonitorPid=None)
        manager.write_json(container.dir / "state.json", exited)
        return None  # and it has ended

    monkeypatch.setattr(manager, "proc_start_time", monitor_finishes_now)
    state = container.state()
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("exited", 3, "")
    manager.write_json(container.dir / "state.json", RUNNING)  # again, for a waiter this time
    assert manager.wait(container, "not-running", timeout=1) == {"StatusCode": 3, "Error": None}


def test_an_exit_recorded_just_after_the_check_leaves_the_record_running(container, monkeypatch):
    # The check finds the monitor alive; it records the exit and ends at once after. The
    # reader shows the record it read (running, true when read), not a killed monitor.
    calls = []

    def alive_then_finishes(pid):
        calls.append(pid)
        if len(calls) == 1:
            return RUNNING["MonitorStart"]
        exited = dict(RUNNING, Status="exited", Running=False, Pid=0, ExitCode=3, MonitorPid=None)
        manager.write_json(container.dir / "state.json", exited)
        return None

    monkeypatch.setattr(manager, "proc_start_time", alive_then_finishes)
    state = container.state()
    assert (state["Status"], state["Error"]) == ("running", "")
    state = container.state()  # and the next read has the exit
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("exited", 3, "")


def test_a_monitor_killed_while_its_container_ran_is_told(container, monkeypatch):
    monkeypatch.setattr(manager, "proc_start_time", lambda pid: None)  # nothing runs any more
    state = container.state()
    assert (state["Status"], state["ExitCode"]) == ("exited", 255)
    assert "monitor was killed" in state["Error"]
    # and a wait says so, as dockerd's wait carries the State's Error: the CLI prints it
    answer = manager.wait(container, "not-running", timeout=1)
    assert answer["StatusCode"] == 255 and "monitor was killed" in answer["Error"]["Message"]


def test_a_live_monitor_leaves_the_record_as_it_is(container, monkeypatch):
    starts = {RUNNING["MonitorPid"]: RUNNING["MonitorStart"], RUNNING["Pid"]: RUNNING["PidStart"]}
    monkeypatch.setattr(manager, "proc_start_time", starts.get)
    state = container.state()
    assert (state["Status"], state["Pid"], state["Error"]) == ("running", 4242, "")
