"""labkit's engine against the real dockerd (Debian's docker.io): an archive the real
`docker save` wrote loads into labkit and runs, and an archive labkit's engine saves loads into
dockerd with the configuration and layers dockerd itself would give it.

The dockerd is a private one (benchmarks/dockerd.py): its own socket, data, containerd and
cgroups in a temporary directory, no network changes; everything it made is gone afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile

import pytest

from benchmarks.dockerd import UNCONFINED, PrivateDockerd, unavailable
from labkit import images, rootfs
from labkit.lab.engine import UnixHTTPConnection

from .engine_env import engine  # noqa: F401  (a fixture)


def _ruleset() -> str | None:
    """The host's nftables ruleset (iptables-nft writes there too), or None without nft."""
    nft = shutil.which("nft")
    if nft is None:
        return None
    listed = subprocess.run([nft, "list", "ruleset"], capture_output=True, text=True, timeout=30)
    return listed.stdout


@pytest.fixture(scope="module")
def dockerd(engine):  # noqa: F811  (the engine first: its state dir)
    why = unavailable()
    if why:
        pytest.skip(f"no private dockerd to compare with: {why}")
    rules = _ruleset()
    daemon = PrivateDockerd()
    try:
        yield daemon.start()
    finally:
        daemon.stop()
    assert daemon.leftovers() == [], "the private dockerd left these behind"
    assert _ruleset() == rules, "dockerd changed the host's nftables/iptables rules"


def _inspect(client, name: str) -> dict:
    return json.loads(client.docker("image", "inspect", name, check=True).stdout)[0]


def test_an_archive_docker_save_wrote_loads_into_labkit_and_runs(engine, dockerd, tmp_path):
    # dockerd makes the image itself: `docker import` of the lessons' busybox root as a tar
    # written by GNU tar, so its layer, config and archive are all dockerd's own.
    tree = rootfs.build(tmp_path / "rootfs")
    subprocess.run(["tar", "-C", str(tree), "-cf", str(tmp_path / "root.tar"), "."], check=True)
    dockerd.docker(
        "import",
        "--change",
        'CMD ["/bin/sh"]',
        "--change",
        "ENV GREETING=from-dockerd",
        str(tmp_path / "root.tar"),
        "lab/from-dockerd:1",
    )
    saved = tmp_path / "saved.tar"
    dockerd.docker("save", "-o", str(saved), "lab/from-dockerd:1")
    with tarfile.open(saved) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == ["lab/from-dockerd:1"]

    loaded = engine.docker("load", "-i", str(saved), check=True)
    assert loaded.stdout.strip() == "Loaded image: lab/from-dockerd:1"
    theirs, ours = _inspect(dockerd, "lab/from-dockerd:1"), _inspect(engine, "lab/from-dockerd:1")
    assert ours["Id"] == theirs["Id"]  # the same config bytes: the same image id
    assert ours["RootFS"]["Layers"] == theirs["RootFS"]["Layers"]
    assert ours["Config"]["Cmd"] == theirs["Config"]["Cmd"] == ["/bin/sh"]
    assert ours["Config"] == theirs["Config"]  # every key, as dockerd's own image shows it
    assert "GREETING=from-dockerd" in ours["Config"]["Env"]

    # No network: the lab bridge the default would make is another test's subject.
    argv = [
        "run",
        "--rm",
        "--network",
        "none",
        "lab/from-dockerd:1",
        "sh",
        "-c",
        "echo hi $GREETING",
    ]
    ran = engine.docker(*argv)
    assert (ran.returncode, ran.stdout) == (0, "hi from-dockerd\n"), ran.stderr
    engine.docker("rmi", "lab/from-dockerd:1", check=True)
    assert images.list_images() == []


def test_an_image_labkit_saves_loads_into_dockerd_as_dockerd_expects(engine, dockerd, tmp_path):
    engine.docker("load", "-i", str(engine.archive), check=True)
    saved = tmp_path / "from-labkit.tar"
    engine.docker("save", "-o", str(saved), "busybox:latest", check=True)
    loaded = dockerd.docker("load", "-i", str(saved))
    assert loaded.stdout.strip() == "Loaded image: busybox:latest"

    ours, theirs = _inspect(engine, "busybox:latest"), _inspect(dockerd, "busybox:latest")
    image = images.get("busybox:latest")
    assert theirs["Id"] == ours["Id"] == image.id
    assert theirs["RootFS"] == {"Type": "layers", "Layers": image.diff_ids}
    written = image.config["config"]  # what labkit's archive says, read back by dockerd
    assert theirs["Config"]["Cmd"] == ours["Config"]["Cmd"] == written["Cmd"]
    assert theirs["Config"]["Env"] == ours["Config"]["Env"] == written["Env"]
    for key in ("Entrypoint", "WorkingDir", "User"):  # dockerd shows unset ones as null or ""
        assert (theirs["Config"][key] or None) == written.get(key), key
    assert (theirs["Os"], theirs["Architecture"]) == (ours["Os"], ours["Architecture"])
    # dockerd unpacked labkit's layer into a root it can run.
    ran = dockerd.docker(
        "run", *UNCONFINED, "--rm", "--network", "none", "busybox:latest", "echo", "hi"
    )
    assert ran.stdout == "hi\n"
    dockerd.docker("rmi", "busybox:latest")
    engine.docker("rmi", "busybox:latest", check=True)
    assert images.list_images() == []


def _image_json(sock, name: str) -> dict:
    """GET /images/NAME/json by hand, with the API version the docker CLI 20.10 speaks."""
    conn = UnixHTTPConnection(str(sock))
    try:
        conn.request("GET", f"/v1.41/images/{name}/json")
        answer = conn.getresponse()
        assert answer.status == 200
        return json.loads(answer.read())
    finally:
        conn.close()


def test_image_inspect_has_dockerds_keys_and_nulls_for_the_same_archive(engine, dockerd):
    engine.docker("load", "-i", str(engine.archive), check=True)
    dockerd.docker("load", "-i", str(engine.archive))
    ours = _image_json(engine.socket, "busybox:latest")
    theirs = _image_json(dockerd.socket, "busybox:latest")
    assert set(ours) == set(theirs)
    for part in ("Config", "ContainerConfig"):
        # Every key, unset ones as dockerd writes them: "Entrypoint": null, "Labels": null...
        assert ours[part] == theirs[part], part
    assert theirs["Config"]["Entrypoint"] is None  # (the archive sets none: a real null)
    for key in ("Id", "RepoTags", "Created", "Author", "Comment", "RootFS", "Os"):
        assert ours[key] == theirs[key], key
    dockerd.docker("rmi", "busybox:latest")
    engine.docker("rmi", "busybox:latest", check=True)
    assert images.list_images() == []
