"""Lesson 50-engine's glue: the lesson's engine driven by hand and by the real docker CLI, its
request log read back, the attach stream's frames, the layers of a docker run, the checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from labkit import cleanup, images
from labkit.engine import server, streams
from labkit.lab import engine as lab


@pytest.fixture(scope="module")
def state():
    if not os.path.exists(lab.DOCKER):
        pytest.skip("the docker CLI is missing: run 'sudo scripts/setup lab'")
    # A short private state dir: the containers' monitors bind unix sockets below it.
    base = Path(tempfile.mkdtemp(prefix="lk50", dir="/tmp"))
    saved = os.environ.get("LABKIT_STATE_DIR")
    os.environ["LABKIT_STATE_DIR"] = str(base / "s")
    try:
        yield base / "s"
    finally:
        cleanup.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        if saved is None:
            os.environ.pop("LABKIT_STATE_DIR", None)
        else:
            os.environ["LABKIT_STATE_DIR"] = saved


@pytest.fixture(scope="module")
def engine(state):
    e = lab.start_engine()
    try:
        # One run first: the manager's records directory is then there for every test's
        # before-and-after leftover check (finish removes it at the end).
        assert e.docker("run", "--rm", *lab.NO_NETWORK, lab.IMAGE, "true")[0] == 0
        yield e
    finally:
        e.stop()


def test_the_engine_runs_on_the_lessons_own_socket_and_answers_by_hand(engine, state):
    assert engine.socket == state / "lesson50" / "engine.sock" != server.default_socket()
    assert engine.request("GET", "/_ping") == (200, "OK")
    status, version = engine.request("GET", "/version")
    assert status == 200 and version["ApiVersion"] == server.API_VERSION
    curl = subprocess.run(
        [
            "curl",
            "-s",
            "--unix-socket",
            str(engine.socket),
            f"http://localhost/images/{lab.IMAGE}/json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert f'"{lab.IMAGE}:latest"' in curl.stdout
    assert [(pid, path) for pid, path in server.running()] == [
        (engine.proc.pid, str(engine.socket))
    ]


def test_docker_run_is_create_attach_wait_start_in_the_log(engine):
    mark = len(engine.log_lines())
    code, out = engine.docker(
        "run", "--rm", *lab.NO_NETWORK, lab.IMAGE, "sh", "-c", "echo hi from $$; exit 3"
    )
    assert (code, out) == (3, "hi from 1\n")
    logged = engine.requests_since(mark)
    routes = [(r.method, r.route.split("?")[0], r.status) for r in logged]
    assert routes == [
        ("HEAD", "/_ping", 200),
        ("POST", "/containers/create", 201),
        ("POST", "/containers/{id}/attach", 101),
        ("POST", "/containers/{id}/wait", 200),
        ("POST", "/containers/{id}/start", 204),
    ]
    attach, wait, start = logged[2:]
    # The streams end after start answered; wait's head went out before start came.
    assert attach.ended and wait.ended and wait.ended >= start.at - 0.002
    assert wait.at <= start.began + 0.002
    text = lab.requests_in_words(logged)
    assert "/v1." not in text and "(hijacked)" in text and "{id}" in text


def test_parse_log_matches_stream_ends_and_skips_other_lines():
    lines = [
        "12:00:00.100 labkit engine 0.1.0: API 1.44 on unix:///x (0600, root only)",
        "12:00:00.200 POST /v1.41/containers/" + "a" * 64 + "/wait 200 0.5ms (streaming)",
        "12:00:00.300 GET /_ping 200 0.1ms",
        "12:00:01.200   end of POST /v1.41/containers/" + "a" * 64 + "/wait after 1000.5ms",
        "12:00:01.300 error: something odd",
    ]
    near = time.mktime(time.strptime("2026-01-02 12:00:05", "%Y-%m-%d %H:%M:%S"))
    wait, ping = lab.parse_log(lines, near)
    assert wait.route == "/containers/{id}/wait" and wait.note == "streaming"
    assert wait.ended - wait.at == pytest.approx(1.0, abs=1e-6)
    assert wait.began == pytest.approx(wait.at - 0.0005)
    assert ping.route == "/_ping" and ping.ended is None and near - ping.at == pytest.approx(4.7)


def test_the_frames_decoded_by_hand_are_the_engines(engine):
    data = lab.attached_output(engine, "echo out; sleep 0.2; echo err >&2")
    frames, rest = streams.unframe(data)
    assert frames == [(1, b"out\n"), (2, b"err\n")] and rest == b""
    assert data[:8] == bytes([1, 0, 0, 0, 0, 0, 0, 4])
    assert lab.frames_in_words(data).splitlines()[1].startswith("02 00 00 00 00 00 00 04  stderr")
    assert lab.lesson_containers(engine) == []  # the container is removed


def test_the_layers_of_a_docker_run_add_up_to_its_time(engine):
    timing = lab.measure_layers(engine, runs=2)
    names = [n for n, _ in lab.LAYERS]
    for run in timing.runs:
        assert list(run.ms) == names and all(v >= 0 for v in run.ms.values())
        assert sum(run.ms.values()) == pytest.approx(run.total, abs=2.0)
        assert run.ms["the set-up steps (kernel work)"] > 0  # the runtime's own record
        assert run.ms["the docker CLI"] > 0 and run.ms["HTTP and the engine"] > 0
    assert timing.largest in names and str(timing.total) and "medians" in timing.summary()
    import matplotlib

    matplotlib.use("Agg")
    ax = lab.plot_layers(timing)
    assert ax.get_xlabel().endswith("(ms)") and timing.largest in ax.get_title()
    assert len(ax.get_legend().get_texts()) == len(names)
    assert lab.lesson_containers(engine) == []
    with pytest.raises(lab.BadInput):
        lab.measure_layers(engine, runs=50)


def test_the_checks_say_not_yet_fail_wrong_answers_and_pass_right_ones(engine):
    assert not lab.check_before_start(engine, ...).ok
    assert "replace the ..." in lab.check_before_start(engine, ...).message
    assert not lab.check_before_start(engine, "attach").ok
    assert lab.check_before_start(engine, "wait").ok
    assert not lab.check_stderr_header(engine, ...).ok
    assert not lab.check_stderr_header(engine, bytes([1, 0, 0, 0, 0, 0, 0, 5])).ok
    assert not lab.check_stderr_header(engine, 3.5).ok
    assert lab.check_stderr_header(engine, bytes([2, 0, 0, 0, 0, 0, 0, 5])).ok


def test_finish_removes_what_the_lesson_made_and_cleanup_stops_a_left_engine(engine, state):
    name = lab.PREFIX + "left"
    code, _ = engine.docker("run", "-d", *lab.NO_NETWORK, "--name", name, lab.IMAGE, "sleep", "60")
    assert code == 0 and len(lab.lesson_containers(engine)) == 1
    said = lab.finish(engine)
    assert said == "engine stopped: True | image removed: True | socket left: False"
    assert not lab.lesson_dir().exists() and lab.IMAGE + ":latest" not in {
        n for i in images.list_images() for n in i.names
    }
    assert cleanup.leftovers() == []
    # A lesson whose kernel died leaves its engine running: cleanup finds and stops it.
    again = lab.start_engine()
    assert cleanup.leftovers() != []
    assert f"engine: serving unix://{again.socket}" in cleanup.cleanup()
    assert again.proc.wait(timeout=15) == 0 and not again.socket.exists()
    assert server.running() == [] and cleanup.leftovers() == []
