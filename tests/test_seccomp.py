"""Docker's default seccomp profile: read from its data file, checked, resolved for a container.

These tests read and resolve the profile (no kernel involved); the filter the kernel runs is
tested against runc in test_container_runc.py (unshare, mount and keyctl refused, a pipeline
still working) and in test_container.py.
"""

from __future__ import annotations

import json

import pytest

from labkit.container import capabilities, seccomp
from labkit.container.seccomp import ProfileError
from labkit.container.spec import Process, Spec, SpecError

DOCKER = list(capabilities.DOCKER_DEFAULT)
NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


def allowed(sc) -> set[str]:
    """The calls a resolved profile allows whatever their arguments."""
    return {n for r in sc.syscalls if r.action == "SCMP_ACT_ALLOW" and not r.args for n in r.names}


def rules_for(sc, name: str) -> list:
    return [r for r in sc.syscalls if name in r.names]


def test_dockers_profile_allows_a_list_and_refuses_the_rest_with_eperm():
    sc = seccomp.resolve(seccomp.load_profile(), DOCKER, machine="x86_64", kernel=(6, 1))
    assert (sc.default_action, sc.default_errno_ret) == ("SCMP_ACT_ERRNO", 1)  # EPERM
    assert sc.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert {"read", "write", "execve", "pipe2", "wait4", "arch_prctl", "chroot"} <= allowed(sc)
    refused = {"mount", "umount2", "unshare", "setns", "keyctl", "add_key", "bpf", "reboot",
               "init_module", "kexec_load", "open_by_handle_at", "acct"}  # fmt: skip
    assert not refused & {n for r in sc.syscalls for n in r.names}
    # clone only without namespace flags: (flags & NAMESPACE_FLAGS) == 0; clone3 says ENOSYS
    # (its flags are in memory, out of a filter's reach), so the C library falls back to clone.
    (clone,) = rules_for(sc, "clone")
    assert [(a.index, a.value, a.op, a.value_two) for a in clone.args] == [
        (0, NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0)
    ]
    (clone3,) = rules_for(sc, "clone3")
    assert (clone3.action, clone3.errno_ret) == ("SCMP_ACT_ERRNO", 38)
    # personality only for the harmless personas (a persona can turn off address randomisation).
    assert sorted(r.args[0].value for r in rules_for(sc, "personality")) == [
        0, 8, 0x20000, 0x20008, 0xFFFFFFFF]  # fmt: skip


def test_cap_sys_admin_brings_mount_unshare_setns_and_a_free_clone():
    sc = seccomp.resolve(seccomp.load_profile(), [*DOCKER, "CAP_SYS_ADMIN"], "x86_64", (6, 1))
    assert {"mount", "umount2", "unshare", "setns", "clone", "clone3"} <= allowed(sc)
    assert all(not r.args for r in rules_for(sc, "clone"))
    assert all(r.action == "SCMP_ACT_ALLOW" for r in rules_for(sc, "clone3"))


def test_rules_follow_the_architecture_and_the_kernel():
    arm = seccomp.resolve(seccomp.load_profile(), DOCKER, machine="aarch64", kernel=(6, 1))
    assert arm.architectures == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "set_tls" in allowed(arm) and "arch_prctl" not in allowed(arm)
    # ptrace is allowed from kernel 4.8 on (before, it could get around a seccomp filter).
    old = seccomp.resolve(seccomp.load_profile(), DOCKER, machine="x86_64", kernel=(4, 7))
    new = seccomp.resolve(seccomp.load_profile(), DOCKER, machine="x86_64", kernel=(4, 8))
    assert "ptrace" not in allowed(old) and "ptrace" in allowed(new)


def test_a_spec_gets_its_own_copy_of_the_rules():
    a, b = Spec(Process(["sh"])), Spec(Process(["sh"]))
    a.linux.seccomp.syscalls[0].names.append("keyctl")
    assert "keyctl" not in b.linux.seccomp.syscalls[0].names


def test_the_data_file_is_dockers_format_and_says_where_it_comes_from():
    data = json.loads(seccomp.DEFAULT_PROFILE.read_text())
    assert set(data) == {"comment", "defaultAction", "defaultErrnoRet", "archMap", "syscalls"}
    assert "moby/moby profiles/seccomp/default.json" in data["comment"]
    keys = {k for r in data["syscalls"] for k in r}
    assert keys <= {"names", "action", "args", "errnoRet", "includes", "excludes", "comment"}


HOSTILE = [
    ([], "the file must be a JSON object."),
    ({"syscalls": []}, "defaultAction is required."),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "defaultAction \"SCMP_ACT_NOTIFY\" is not one"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}, "listenerPath is not a key"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "syscalls must be a list"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "read", "action":
      "SCMP_ACT_ALLOW"}]}, "syscalls[0].names must be a list"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["../x"], "action":
      "SCMP_ACT_ALLOW"}]}, "syscalls[0].names[0] must be a system call's name"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "read", "names": ["read"],
      "action": "SCMP_ACT_ALLOW"}]}, "needs either names"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action":
      "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]},
     "args[0].index must be an integer from 0 to 5."),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action":
      "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]},
     "args[0].value must be an integer from 0"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action":
      "SCMP_ACT_ALLOW", "args": [{"index": True, "value": 0, "op": "SCMP_CMP_EQ"}]}]},
     "args[0].index must be an integer"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action":
      "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_EVERYTHING"]}}]},
     "includes.caps[0] \"CAP_EVERYTHING\" is not one"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action":
      "SCMP_ACT_ALLOW", "excludes": {"minKernel": "new"}}]}, "minKernel must be a kernel"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 99999}, "defaultErrnoRet must be"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"], "archMap": []},
     "architectures and archMap exclude each other"),
]  # fmt: skip


@pytest.mark.parametrize(("profile", "message"), HOSTILE)
def test_a_hostile_profile_gets_one_sentence_naming_the_key(profile, message):
    with pytest.raises(ProfileError) as e:
        seccomp.parse_profile(profile)
    text = str(e.value)
    assert text.startswith("seccomp profile: ") and message in text
    assert text.endswith(".") and "\n" not in text


def test_a_profile_file_too_big_or_not_json_or_too_deep_is_refused(tmp_path):
    cases = {
        "big.json": b" " * (seccomp.MAX_PROFILE_BYTES + 1),
        "text.json": b"defaultAction: allow",
        "deep.json": b"[" * 100000 + b"]" * 100000,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ProfileError, match=r"^seccomp profile: .*\.$"):
            seccomp.load_profile(tmp_path / name)
    with pytest.raises(ValueError, match="^cannot read the seccomp profile"):
        seccomp.load_profile(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda sc: sc.update(architectures=["SCMP_ARCH_Z80"]), "linux.seccomp.architectures[0]"),
        (lambda sc: sc["syscalls"][0].update(names=["rm -rf"]), "linux.seccomp.syscalls[0].names"),
        (lambda sc: sc["syscalls"][0].update(names=[]), "linux.seccomp.syscalls[0].names"),
        (lambda sc: sc["syscalls"][1].update(errnoRet=70000), "linux.seccomp.syscalls[1].errnoRet"),
    ],
)
def test_config_json_seccomp_is_checked_as_hostile_too(edit, key):
    config = Spec(Process(["sh"])).to_dict()
    edit(config["linux"]["seccomp"])
    with pytest.raises(SpecError) as e:
        Spec.from_dict(config)
    assert e.value.path == key
