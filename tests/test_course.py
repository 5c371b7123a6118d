"""The classroom kit: student copies blank the solutions, and progress reads the checks' reports.

The blanking is tested on small notebooks made here; progress runs real notebooks in real
kernels, and for every lesson with exercises the student copy's checks must all come out
"not yet" and the instructor's all "done".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import course
from labkit.lab import checks

from .test_vm import provision

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if course.BEGIN in p.read_text())


def _nb(*cells: tuple[str, str]) -> dict:
    """A notebook of (cell_type, source) pairs, code cells with an output and a count."""
    made = []
    for i, (kind, source) in enumerate(cells):
        cell = {"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": source}
        if kind == "code":
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "✅ solved\n"}]
            cell["execution_count"] = 7
        made.append(cell)
    return {
        "cells": made,
        "metadata": {"widgets": {"state": {}}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _write(path: Path, nb: dict) -> Path:
    path.write_text(json.dumps(nb))
    return path


# --- blanking -------------------------------------------------------------------------------


def test_an_assignment_becomes_a_blank_and_the_check_stays():
    source = '# BEGIN SOLUTION\nlimit = "48M"\n# END SOLUTION\ncheck_survivor_limit(limit)'
    assert course.blank_source(source) == "limit = ...\ncheck_survivor_limit(limit)"


def test_every_other_line_of_a_block_is_dropped():
    source = (
        "import os\n"
        "# BEGIN SOLUTION\n"
        "# read it from the kernel\n"
        "with open('/proc/sys/kernel/osrelease') as f:\n"
        "    text = f.read()\n"
        "kernel = text.strip()\n"
        "print(kernel)\n"
        "a, b = 1, 2\n"
        "weight: int = 400\n"
        "x = y = 3\n"
        "# END SOLUTION\n"
        "check(kernel)\n"
    )
    assert course.blank_source(source) == (
        "import os\nkernel = ...\na, b = ..., ...\nweight = ...\nx = ...\ny = ...\ncheck(kernel)\n"
    )


def test_a_block_without_an_assignment_becomes_an_ellipsis_at_its_indent():
    source = "def f():\n    # BEGIN SOLUTION\n    return 42\n    # END SOLUTION\n"
    assert course.blank_source(source) == "def f():\n    ...\n"


def test_two_blocks_in_one_cell_and_a_cell_without_markers():
    source = (
        "# BEGIN SOLUTION\na = 1\n# END SOLUTION\nb = a\n# BEGIN SOLUTION\nc = 2\n# END SOLUTION"
    )
    assert course.blank_source(source) == "a = ...\nb = a\nc = ..."
    assert course.blank_source("print('no exercise here')") == "print('no exercise here')"


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("# BEGIN SOLUTION\na = 1\n", "never closed"),
        ("a = 1\n# END SOLUTION\n", "without a"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\na = 1\n# END SOLUTION\n", "again before"),
        ("# BEGIN SOLUTION\na = (1\n# END SOLUTION\n", "not valid Python"),
    ],
)
def test_broken_markers_are_named_in_one_sentence(source, words):
    with pytest.raises(course.CourseError, match=words) as e:
        course.blank_source(source, "03-pid.ipynb, cell 4")
    assert str(e.value).startswith("03-pid.ipynb, cell 4: ") and "\n" not in str(e.value)


def test_a_student_copy_has_no_solutions_outputs_or_widget_state(tmp_path):
    source = tmp_path / "teacher"
    source.mkdir()
    solution = '# BEGIN SOLUTION\nsig = "SIGKILL"\n# END SOLUTION\ncheck_pid1_signal(sig)'
    _write(source / "03-pid.ipynb", _nb(("markdown", "# PID 1"), ("code", solution)))
    _write(source / "00-welcome.ipynb", _nb(("code", "print('hello')")))
    written = course.write_student_copies(tmp_path / "class", source)
    assert [p.name for p in written] == ["00-welcome.ipynb", "03-pid.ipynb"]
    copy = json.loads((tmp_path / "class" / "03-pid.ipynb").read_text())
    assert copy["cells"][0] == {
        "cell_type": "markdown",
        "id": "cell-0",
        "metadata": {},
        "source": "# PID 1",
    }
    code = copy["cells"][1]
    assert code["source"] == "sig = ...\ncheck_pid1_signal(sig)"
    assert code["outputs"] == [] and code["execution_count"] is None
    assert "widgets" not in copy["metadata"]
    assert "SIGKILL" not in (tmp_path / "class" / "03-pid.ipynb").read_text()
    other = json.loads((tmp_path / "class" / "00-welcome.ipynb").read_text())
    assert other["cells"][0]["outputs"] == []  # no lesson hands out the instructor's run
    # The instructor's notebooks are left as they were.
    assert "SIGKILL" in (source / "03-pid.ipynb").read_text()


def test_student_copies_refuse_bad_input_and_write_nothing(tmp_path):
    source = tmp_path / "teacher"
    source.mkdir()
    _write(source / "01-good.ipynb", _nb(("code", "x = 1")))
    (source / "02-bad.ipynb").write_text("{not json")
    with pytest.raises(course.CourseError, match="02-bad.ipynb: not a readable notebook"):
        course.write_student_copies(tmp_path / "class", source)
    assert not (tmp_path / "class").exists()  # every notebook is checked before any is written
    with pytest.raises(course.CourseError, match="another directory"):
        course.write_student_copies(source, source)
    with pytest.raises(course.CourseError, match="no such notebook or directory"):
        course.write_student_copies(tmp_path / "class", tmp_path / "missing")


def test_the_cli_says_one_sentence_for_a_missing_directory(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "labkit.cli",
            "course",
            "student",
            str(tmp_path / "c"),
            "--source",
            str(tmp_path / "nowhere"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "no such notebook or directory" in result.stderr


# --- the reporting API ----------------------------------------------------------------------


def test_a_graded_check_reports_done_not_yet_and_error():
    release = Path("/proc/sys/kernel/osrelease").read_text().strip()
    checks.check_kernel_release(...)
    assert checks.reports()["kernel_release"]["status"] == "not yet"
    checks.check_kernel_release(release)
    assert checks.reports()["kernel_release"]["status"] == "done"
    with pytest.raises(TypeError):
        checks.check_differing_kinds(1, 2)  # a call the check cannot take
    assert checks.reports()["differing_kinds"]["status"] == "error"


def test_every_exercise_check_of_the_lessons_reports():
    """Every check_...() in labkit.lab that returns a Verdict is graded (so progress sees it)."""
    import importlib
    import inspect
    import pkgutil

    import labkit.lab

    ungraded = []
    for info in pkgutil.iter_modules(labkit.lab.__path__):
        module = importlib.import_module(f"labkit.lab.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            returns = inspect.signature(fn).return_annotation
            is_exercise = name.startswith("check_") and returns in ("Verdict", checks.Verdict)
            if is_exercise and getattr(fn, "exercise", None) != name.removeprefix("check_"):
                ungraded.append(f"{module.__name__}.{name}")
    assert not ungraded, f"add @graded to {ungraded}"
    assert len(checks.all_graded()) >= 20


# --- progress -------------------------------------------------------------------------------


def test_progress_tells_done_not_yet_and_error_apart(tmp_path):
    nb = _nb(
        ("code", "from labkit.lab.checks import check_kernel_release, check_cgroup_layout"),
        (
            "code",
            "kernel = open('/proc/sys/kernel/osrelease').read().strip()\n"
            + "check_kernel_release(kernel)",
        ),
        ("code", "layout = ...\ncheck_cgroup_layout(layout)"),
        ("code", "raise RuntimeError('a student typo')\ncheck_all_but_net(mine)"),
        ("code", "from labkit.lab.checks import check_pid_kinds\ncheck_pid_kinds(['bogus'])"),
    )
    path = _write(tmp_path / "05-try.ipynb", nb)
    got = {o.exercise: o for o in course.progress([tmp_path], timeout=60)}
    assert {k: o.status for k, o in got.items()} == {
        "kernel_release": "done",
        "cgroup_layout": "not yet",
        "all_but_net": "error",  # its cell raised before the check ran
        "pid_kinds": "not yet",  # a bad answer is a verdict, not an error
    }
    assert got["all_but_net"].message.startswith("its check never ran")
    assert all(o.notebook == "05-try.ipynb" and o.path == str(path) for o in got.values())


def test_progress_bounds_a_cell_that_hangs(tmp_path):
    nb = _nb(
        ("code", "import time\ntime.sleep(120)"),
        ("code", "from labkit.lab.checks import check_kernel_release\ncheck_kernel_release(...)"),
    )
    _write(tmp_path / "hang.ipynb", nb)
    [outcome] = course.progress([tmp_path / "hang.ipynb"], timeout=3)
    assert outcome.status == "error" and "did not run to its end" in outcome.message


def test_progress_json_from_the_command_line(tmp_path):
    _write(
        tmp_path / "00-x.ipynb",
        _nb(
            (
                "code",
                "from labkit.lab.checks import check_kernel_release\ncheck_kernel_release(...)",
            )
        ),
    )
    result = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "course", "progress", "--json", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["notebook"], row["exercise"], row["status"]) == (
        "00-x.ipynb",
        "kernel_release",
        "not yet",
    )
    assert row["host"]


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_student_copies_fail_every_check_and_the_instructors_pass(lesson, tmp_path):
    teacher = {o.exercise: o.status for o in course.progress([lesson])}
    marked = sum(
        c["cell_type"] == "code" and course.BEGIN in "".join(c["source"])
        for c in json.loads(lesson.read_text())["cells"]
    )
    assert teacher and len(teacher) >= marked, "an exercise cell calls no graded check"
    assert set(teacher.values()) == {"done"}, teacher
    (tmp_path / lesson.name).write_text(
        json.dumps(course.student_notebook(json.loads(lesson.read_text()), lesson.name))
    )
    student = {o.exercise: o.status for o in course.progress([tmp_path / lesson.name])}
    assert student == dict.fromkeys(teacher, "not yet")


# --- the lab VM serving student copies, and the cloud VMs' user-data ------------------------


@pytest.fixture
def fake_systemctl(tmp_path) -> Path:
    """A bin directory whose systemctl/journalctl only record that they were called (as in
    tests/test_vm.py: provision-vm leaves systemd alone in a scratch root)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("systemctl", "journalctl"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "$SYSTEMCTL_LOG"\n')
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_provisioning_serves_student_copies_and_keeps_the_students_work(tmp_path, fake_systemctl):
    root = tmp_path / "root"
    env = {
        "LABKIT_CLASS_DIR": "/home/lab/class",
        "LABKIT_LISTEN": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }  # this tree's labkit writes the copies
    done = provision(root, fake_systemctl, "--no-setup", env=env)
    assert done.returncode == 0, done.stderr
    unit = (root / "etc/systemd/system/jupyterlab.service").read_text().splitlines()
    wanted = "Environment=LABKIT_IP=127.0.0.1 LABKIT_PORT=8888 LABKIT_NOTEBOOKS=/home/lab/class"
    assert wanted in unit
    copy = root / "home/lab/class" / LESSONS[0].name
    assert course.BEGIN not in copy.read_text()
    copy.write_text(copy.read_text().replace("...", "'my answer'", 1))  # a student's work
    # `vagrant up` again, without the settings
    again = provision(root, fake_systemctl, "--no-setup", env={"PYTHONPATH": str(ROOT)})
    assert again.returncode == 0, again.stderr
    assert "'my answer'" in copy.read_text()
    assert (
        wanted.replace("127.0.0.1", "0.0.0.0")
        in (root / "etc/systemd/system/jupyterlab.service").read_text().splitlines()
    )  # the class directory is remembered


def test_a_relative_class_dir_is_refused(tmp_path, fake_systemctl):
    done = provision(
        tmp_path / "root", fake_systemctl, "--no-setup", env={"LABKIT_CLASS_DIR": "class"}
    )
    assert done.returncode == 2 and "not an absolute path" in done.stderr
    assert not (tmp_path / "root" / "etc/systemd").exists()


def test_the_cloud_user_data_clones_the_repository_and_runs_provision_vm():
    import yaml

    path = ROOT / "scripts" / "cloud-init.yaml"
    text = path.read_text()
    assert text.startswith("#cloud-config\n")  # cloud-init ignores user-data without it
    data = yaml.safe_load(text)
    [script] = [f for f in data["write_files"] if f["path"] == "/usr/local/sbin/labkit-provision"]
    result = subprocess.run(
        ["bash", "-n"],
        input=script["content"],
        text=True,
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "scripts/provision-vm" in script["content"]
    assert "LABKIT_LISTEN=127.0.0.1" in script["content"]  # students come in through ssh -L
    assert data["runcmd"] == [["bash", "/usr/local/sbin/labkit-provision"]]


def test_progress_without_root_says_so_in_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setattr(course.os, "geteuid", lambda: 1000)
    with pytest.raises(course.CourseError, match="need root: run it with sudo"):
        course.progress([tmp_path])
