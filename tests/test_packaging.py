"""The project's frame stays true: dependencies in step, the README's commands real, set-up
re-runnable."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name_and_spec(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(.*)$", requirement)
    assert match, requirement
    return match.group(1).lower(), match.group(2).replace(" ", "")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    conda = {}
    dependencies = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    for line in dependencies.splitlines():
        line = line.split("#")[0].rstrip()
        item = re.match(r"^(?:  |      )- ([A-Za-z0-9_.-]+)(.*)$", line)
        if item and item.group(1) not in ("pip", "python", "-e"):
            name, spec = _name_and_spec(item.group(1) + item.group(2))
            conda[name] = spec
    assert conda == dict(_name_and_spec(r) for r in wanted)
    python = re.search(r"^  - python(.*)$", (ROOT / "environment.yml").read_text(), re.M)
    assert python and python.group(1).strip() == project["requires-python"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"\| `(sudo scripts/\w+)` \|", readme)
    assert commands == ["sudo scripts/lab", "sudo scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec scripts/test" in ci and "exec sudo scripts/test" in ci


def test_scripts_are_valid_bash():
    for script in ["scripts/setup", "scripts/lab", "scripts/test", ".ci/run"]:
        result = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_setup_is_idempotent():
    # scripts/test ran it already: a second run must find everything in place and change nothing.
    stamp = ROOT / ".venv" / ".labkit-installed"
    before = stamp.read_text()
    result = subprocess.run(
        [str(ROOT / "scripts" / "setup"), "test"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stdout, result.stdout
    assert result.stdout.strip().startswith("setup: ready (test)")
    assert stamp.read_text() == before


def test_setup_refuses_an_unknown_purpose():
    result = subprocess.run(
        [str(ROOT / "scripts" / "setup"), "tset"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown purpose 'tset': use 'lab' or 'test'" in result.stderr


def test_every_notebook_is_in_the_readme_course_map_in_order():
    readme = (ROOT / "README.md").read_text()
    listed = re.findall(r"\]\(notebooks/([\w-]+\.ipynb)\)", readme)
    on_disk = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert listed == on_disk


def test_notebooks_are_stored_with_outputs():
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        unrun = [
            i
            for i, c in enumerate(cells)
            if c["cell_type"] == "code" and c.get("execution_count") is None
        ]
        assert not unrun, f"{nb.name}: code cells {unrun} are stored without outputs"
