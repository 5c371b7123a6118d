"""labkit's cgroups under a cgroup v2 delegation, the way the lab VM runs them (real kernel).

In the lab VM, systemd runs JupyterLab as a unit with ``Delegate=yes`` and
``DelegateSubgroup=server``: the unit's cgroup is marked ``trusted.delegate``, the server and
its kernels sit in the leaf ``server``, and cgroup v2's no-internal-processes rule refuses
controllers below ``server``. These tests build the same shape by hand in a real cgroup v2
kernel (scripts/test-v2 runs them there; this hybrid host skips them): a unit cgroup marked as
systemd marks it, a leaf holding a Python process, and labkit run from that process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labkit import cleanup
from labkit.cgroups import detect_mode, layout

from .conftest import wait_until

ROOT = Path("/sys/fs/cgroup")
REPO = str(Path(__file__).resolve().parents[1])

pytestmark = pytest.mark.skipif(
    detect_mode() != "v2", reason="needs a cgroup v2 kernel: scripts/test-v2 runs it there"
)


@pytest.fixture
def unit(state_dir):
    """A stand-in for a delegated systemd unit: ROOT/labkit-unit.service with a leaf `server`."""
    path = ROOT / f"labkit-unit-{os.getpid()}.service"
    # systemd enables the controllers for a delegated unit in its parents; the root does it here.
    available = (ROOT / "cgroup.controllers").read_text().split()
    wanted = [c for c in ("memory", "pids", "cpu") if c in available]
    (ROOT / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
    path.mkdir()
    (path / "server").mkdir()
    procs: list[subprocess.Popen] = []
    yield path, procs
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)
    cleanup.cleanup()
    cgroups = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for cgroup in [*cgroups, path]:
        assert wait_until(lambda c=cgroup: not (c / "cgroup.procs").read_text().strip(), 5)
        cgroup.rmdir()


def in_leaf(leaf: Path, code: str, procs: list, *args: str) -> subprocess.Popen:
    """Start Python *code* in cgroup *leaf* (as systemd starts a unit's processes there)."""
    script = 'echo $$ > "$1/cgroup.procs" || exit 125; shift; exec "$@"'
    python = [sys.executable, "-c", textwrap.dedent(code), *args]
    proc = subprocess.Popen(
        ["/bin/sh", "-c", script, "sh", str(leaf), *python],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    procs.append(proc)
    return proc


MAKE = """
    import json, sys
    from labkit.cgroups import Cgroup
    from labkit.errors import LabkitError
    try:
        box = Cgroup.create("deleg", memory="32M", pids=10)
    except LabkitError as e:
        print(json.dumps({"error": str(e)})); sys.exit(0)
    print(json.dumps({"dirs": [str(d) for d in box.dirs], "limits": box.limits()}), flush=True)
    if "keep" not in sys.argv[1:]:
        box.remove()
"""


def run_in_leaf(leaf: Path, procs: list, *args: str) -> dict:
    proc = in_leaf(leaf, MAKE, procs, *args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


def test_delegated_unit_gets_labkit_beside_the_leaf(unit):
    path, procs = unit
    os.setxattr(path, "trusted.delegate", b"1")
    found = run_in_leaf(path / "server", procs)
    assert found.get("error") is None, found
    assert found["dirs"] == [str(path / "labkit" / "labkit-deleg")]
    assert found["limits"]["memory.max"] == str(32 << 20)
    assert found["limits"]["pids.max"] == "10"
    # The controllers were enabled in the unit's cgroup (it holds no processes), never in server.
    assert {"memory", "pids"} <= set((path / "cgroup.subtree_control").read_text().split())
    assert (path / "server" / "cgroup.subtree_control").read_text().strip() == ""
    assert sorted(p.name for p in path.iterdir() if p.is_dir()) == ["server"]


def test_marked_subgroup_belongs_to_the_same_delegation(unit):
    path, procs = unit
    os.setxattr(path, "trusted.delegate", b"1")
    os.setxattr(path / "server", "trusted.delegate", b"1")
    found = run_in_leaf(path / "server", procs)
    assert found["dirs"] == [str(path / "labkit" / "labkit-deleg")]


def test_without_delegation_one_sentence_and_nothing_left(unit):
    path, procs = unit
    found = run_in_leaf(path / "server", procs)
    error = found["error"]
    assert "holds some" in error and "trusted.delegate" in error, error
    assert f"{path}/server/shell" in error
    assert sorted(p.name for p in path.iterdir() if p.is_dir()) == ["server"]
    assert (path / "server" / "cgroup.subtree_control").read_text().strip() == ""


def test_the_suggested_leaf_fix_works(unit):
    path, procs = unit
    # The sentence above says: mark the cgroup delegated and move the shell into a leaf below it.
    # (The cgroup above it passes the controllers down, as systemd's slice does for a scope.)
    (path / "cgroup.subtree_control").write_text("+memory +pids")
    os.setxattr(path / "server", "trusted.delegate", b"1")
    (path / "server" / "shell").mkdir()
    found = run_in_leaf(path / "server" / "shell", procs)
    assert found.get("error") is None, found
    assert found["dirs"] == [str(path / "server" / "labkit" / "labkit-deleg")]


def test_cleanup_from_another_cgroup_finds_the_delegated_cgroups(unit):
    path, procs = unit
    os.setxattr(path, "trusted.delegate", b"1")
    found = run_in_leaf(path / "server", procs, "keep")
    made = Path(found["dirs"][0])
    assert made.is_dir()
    # This test process sits elsewhere (the root cgroup), like an ssh login beside JupyterLab.
    assert any("labkit-deleg" in line for line in cleanup.leftovers())
    cleanup.cleanup()
    assert not made.exists() and not made.parent.exists()


def test_placement_is_named_for_doctor(unit):
    path, procs = unit
    os.setxattr(path, "trusted.delegate", b"1")
    code = """
        from labkit.cgroups import layout
        h = layout.detect().hierarchy("")
        print(h.placement, h.base_dir, flush=True)
    """
    proc = in_leaf(path / "server", code, procs)
    out, err = proc.communicate(timeout=120)
    assert out.split() == [layout.DELEGATED, str(path)], err
