"""The container spec: config.json read into dataclasses and written back, and bad input refused.

A bad config.json must be refused in one sentence that names the key by its JSON path, before
anything is made: the autouse fixture checks that no cgroup, state or process is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import rootfs
from labkit.container import lifecycle, seccomp, spec
from labkit.container.spec import Spec, SpecError
from labkit.errors import BadInput, MissingFeature

RUNTIME = [sys.executable, "-m", "labkit.container.cli"]


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A busybox bundle whose config.json is the one `runc spec` writes."""
    subprocess.run(["runc", "spec", "--bundle", str(tmp_path)], check=True)
    rootfs.build(tmp_path / "rootfs")
    config = json.loads((tmp_path / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["true"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def write_config(bundle: Path, change) -> None:
    config = json.loads((bundle / "config.json").read_text())
    change(config)
    (bundle / "config.json").write_text(json.dumps(config))


def test_runc_spec_loads_and_writes_back_the_same_config(bundle):
    original = json.loads((bundle / "config.json").read_text())
    loaded = spec.load(bundle)
    assert loaded.process.no_new_privileges is True
    assert loaded.process.capabilities.bounding == [
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
    ]
    assert [m.destination for m in loaded.mounts][:2] == ["/proc", "/dev"]
    assert loaded.namespace("network") is not None and loaded.namespace("user") is None
    assert loaded.root.path == str(bundle / "rootfs")  # made absolute against the bundle
    written = loaded.to_dict()
    written["root"]["path"] = original["root"]["path"]
    written["process"]["terminal"] = False
    assert written == original


def test_a_spec_made_in_python_has_dockers_defaults_and_round_trips():
    s = Spec(spec.Process(["sh"]))
    assert len(s.process.capabilities.effective) == 14
    assert "CAP_SYS_ADMIN" not in s.process.capabilities.bounding
    assert "/proc/kcore" in s.linux.masked_paths and "/proc/sys" in s.linux.readonly_paths
    again = Spec.from_dict(json.loads(s.to_json()))
    assert again == s


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (lambda c: c["process"].update(args="sh"), "process.args", "must be a list"),
        (
            lambda c: c["process"]["user"].update(uid="root"),
            "process.user.uid",
            "must be an integer",
        ),
        (lambda c: c.update(apparmorProfile="x"), "apparmorProfile", "not supported"),
        (
            lambda c: c["process"]["capabilities"]["bounding"].append("CAP_FLY"),
            "process.capabilities.bounding[3]",
            "'CAP_FLY' is not a capability",
        ),
        (
            lambda c: c["linux"].update(resources={"memory": {"limit": "lots"}}),
            "linux.resources.memory.limit",
            "must be an integer",
        ),
        (
            lambda c: c["linux"].update(resources={"memory": {"limit": 1000}}),
            "linux.resources",
            "too small",
        ),
        (
            # runc spec lists 5 namespaces (6 with cgroup v2's cgroup namespace): replace the
            # last one, so the repeat is the 5th whatever the layout.
            lambda c: c["linux"]["namespaces"].__setitem__(slice(4, None), [{"type": "pid"}]),
            "linux.namespaces[4]",
            "repeats",
        ),
        (
            lambda c: c["linux"].update(sysctl={"vm.swappiness": "10"}),
            "linux.sysctl.vm.swappiness",
            "not a namespaced sysctl",
        ),
        (lambda c: c["process"].update(cwd="tmp"), "process.cwd", "absolute"),
        (lambda c: c["mounts"][0].pop("destination"), "mounts[0].destination", "is required"),
        (lambda c: c["root"].update(path="missing"), "root.path", "is not a directory"),
    ],
)
def test_a_bad_config_is_one_sentence_naming_its_key_and_nothing_is_made(
    bundle, state_dir, change, path, words
):
    write_config(bundle, change)
    with pytest.raises(SpecError) as caught:
        lifecycle.create("bad", bundle)
    message = str(caught.value)
    assert caught.value.path == path
    assert message.startswith(path + " ") and words in message, message
    assert message.count(". ") == 0 and message.endswith("."), message  # one sentence
    assert not (state_dir / "containers").exists()


def test_labkit_runtime_refuses_bad_input_in_one_line_with_runcs_status(bundle, state_dir):
    write_config(bundle, lambda c: c["process"]["capabilities"]["effective"].append("CAP_NOPE"))
    out = subprocess.run(
        [*RUNTIME, "create", "--bundle", str(bundle), "bad"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "process.capabilities.effective[3] 'CAP_NOPE' is not a capability" in lines[0]
    assert "level=error" in lines[0]
    (bundle / "config.json").write_text("{not json")
    log = bundle / "log.json"
    out = subprocess.run(
        [
            *RUNTIME,
            "--log",
            str(log),
            "--log-format",
            "json",
            "create",
            "--bundle",
            str(bundle),
            "bad",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and out.stderr == ""
    entry = json.loads(log.read_text())
    assert entry["level"] == "error" and "is not JSON" in entry["msg"]
    assert not (state_dir / "containers").exists()


def test_a_missing_bundle_is_one_sentence(tmp_path, state_dir):
    with pytest.raises(BadInput, match="config.json does not exist"):
        lifecycle.create("none", tmp_path / "nowhere")


SCHEMAS = Path("/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema")


def oci_validator(name: str):
    """A validator for one of the OCI runtime spec's own JSON schemas (Debian's package)."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    assert SCHEMAS.is_dir(), "scripts/setup test installs golang-github-opencontainers-specs-dev"
    registry = Registry().with_resources(
        (p.name, Resource.from_contents(json.loads(p.read_text()), DRAFT4))
        for p in SCHEMAS.glob("*.json")
    )
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft4Validator(schema, registry=registry)


def test_what_labkit_writes_is_valid_by_the_oci_schemas(bundle, state_dir):
    config = oci_validator("config-schema.json")
    s = Spec(spec.Process(["sh"]), hostname="box")
    s.linux.namespaces.append(spec.Namespace("user"))
    s.linux.uid_mappings = s.linux.gid_mappings = [spec.IdMapping(0, 100000, 65536)]
    s.linux.resources = spec.Resources(
        memory=spec.Memory(limit=64 << 20), cpu=spec.CPU(quota=50000, period=100000)
    )
    s.process.rlimits = [spec.Rlimit("RLIMIT_NOFILE", 1024, 1024)]
    s.linux.seccomp = spec.Seccomp(
        "SCMP_ACT_ALLOW", syscalls=[spec.SyscallRule(["mkdir"], "SCMP_ACT_ERRNO", 1)]
    )
    for document in (s.to_dict(), spec.load(bundle).to_dict()):
        errors = [e.message for e in config.iter_errors(document)]
        assert errors == []
    # The schema and labkit agree on what is wrong, too.
    assert list(config.iter_errors({**s.to_dict(), "hostname": 5}))
    with pytest.raises(SpecError, match="^hostname must be a string"):
        Spec.from_dict({**s.to_dict(), "hostname": 5})
    c = lifecycle.create("schema", bundle)
    try:
        assert [e.message for e in oci_validator("state-schema.json").iter_errors(c.state())] == []
    finally:
        lifecycle.delete("schema", force=True)


def test_seccomp_without_its_library_is_refused_in_one_sentence(bundle, state_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # as if it were not installed
    monkeypatch.setattr(seccomp, "_programs", {})  # and nothing compiled before in this process
    write_config(bundle, lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW"}))
    with pytest.raises(MissingFeature, match="^linux.seccomp needs the pyseccomp package"):
        lifecycle.create("nosec", bundle)
    assert not (state_dir / "containers").exists()


def test_labkit_runtime_is_a_console_script_with_runcs_commands():
    import importlib
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "scripts"
    ]
    module, _, name = scripts["labkit-runtime"].partition(":")
    entry = getattr(importlib.import_module(module), name)
    assert callable(entry)
    out = subprocess.run([*RUNTIME, "--help"], check=False, capture_output=True, text=True)
    for command in ("create", "start", "state", "kill", "delete", "run", "list"):
        assert command in out.stdout
