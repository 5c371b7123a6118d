"""labkit's engine, part 1: the server, the system endpoints and images, driven by the real
docker CLI (Debian's docker.io) and docker-py, and by raw HTTP for what clients never send."""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import socket
import stat
import subprocess
import sys
import tarfile

import docker
import pytest

from labkit import images

from .engine_env import engine  # noqa: F401  (a fixture)


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) * 1024


def test_docker_version_and_info_describe_the_engine_and_the_host(engine):
    version = engine.docker("version", "--format", "{{json .Server}}", check=True)
    server = json.loads(version.stdout)
    assert server["ApiVersion"] == "1.44" and server["KernelVersion"] == platform.release()
    assert [c["Name"] for c in server["Components"]][0] == "Engine"
    info = json.loads(engine.docker("info", "--format", "{{json .}}", check=True).stdout)
    assert info["NCPU"] == os.cpu_count() and info["MemTotal"] == _mem_total()
    assert info["OSType"] == "linux" and info["DockerRootDir"] == str(engine.state)
    assert info["CgroupDriver"] == "cgroupfs" and info["CgroupVersion"] in ("1", "2")
    # The CLI negotiated down to its own API version (20.10 speaks 1.41) and every request was
    # logged with its method, path and status.
    assert "GET /v1.41/version 200" in engine.log()
    assert "HEAD /_ping 200" in engine.log()


def test_ping_answers_head_and_get_with_the_headers_clients_read(engine):
    status, headers, body = engine.request("HEAD", "/_ping")
    assert status == 200 and body == b"" and headers["Content-Length"] == "0"
    assert headers["Api-Version"] == "1.44" and headers["Ostype"] == "linux"
    assert headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    for path in ("/_ping", "/v1.24/_ping", "/v1.50/_ping"):
        status, _, body = engine.request("GET", path)
        assert (status, body) == (200, b"OK")
    status, _, body = engine.request("GET", "/v1.99/version")
    assert status == 400 and "1.24 to 1.50" in json.loads(body)["message"]


def test_anything_unknown_gets_dockers_error_json(engine):
    for method, path, expected in [
        ("GET", "/no/such/thing", 404),
        ("GET", "/v1.41/networks", 501),
        ("GET", "/v1.41/networks/nope", 404),
        ("POST", "/volumes/create", 501),
        ("DELETE", "/version", 405),
        ("GET", "/containers/does-not-exist/json", 404),
        ("GET", "/images/does-not-exist/json", 404),
    ]:
        status, headers, body = engine.request(method, path)
        assert status == expected, (method, path, body)
        assert headers["Content-Type"] == "application/json"
        message = json.loads(body)["message"]
        assert message.endswith(".") or message.startswith("No such"), message


def test_the_socket_is_for_root_only(engine):
    st = os.stat(engine.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0


def _raw(engine, data: bytes, read_all: bool = True) -> bytes:
    """Send bytes as they are (what no client library would) and read the answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(str(engine.socket))
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            if not read_all and b"\r\n\r\n" in out:
                break
        return out


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_hostile_requests_get_an_error_and_the_engine_keeps_serving(engine):
    create = "/v1.41/containers/create"
    cases = {
        "malformed JSON": (
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n"
            b'Connection: close\r\n\r\n{"Image":' % create.encode(),
            400,
        ),
        "not an object": (
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n[]" % create.encode(),
            400,
        ),
        "a body over the bound": (
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (create.encode(), 50 << 20),
            413,
        ),
        "a bad Content-Length": (
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" % create.encode(),
            400,
        ),
        "too many headers": (b"GET /_ping HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
        "a header line too long": (
            b"GET /_ping HTTP/1.1\r\nX-A: " + b"a" * 70000 + b"\r\n\r\n",
            431,
        ),
        "a request line too long": (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
        "garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n", 400),
        "malformed chunks": (
            b"POST /images/load HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
    }
    for name, (data, expected) in cases.items():
        answer = _raw(engine, data)
        assert _status(answer) == expected, (name, answer[:300])
        body = answer.split(b"\r\n\r\n", 1)[1]
        assert json.loads(body.strip() or b"{}").get("message"), (name, answer[:300])
    # A client that connects and goes away at once, and one that stops mid-request.
    for data in (b"", b"POST /images/load HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc"):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(engine.socket))
            s.sendall(data)
    assert engine.request("GET", "/_ping")[0] == 200
    assert engine.docker("version", check=True).returncode == 0


def test_docker_load_images_tag_save_rmi_round_trip(engine, tmp_path):
    result = engine.docker("load", "-i", str(engine.archive), check=True)
    assert result.stdout.strip() == "Loaded image: busybox:latest"
    image = images.get("busybox")
    listed = engine.docker(
        "images", "--no-trunc", "--format", "{{.Repository}} {{.Tag}} {{.ID}}", check=True
    )
    assert listed.stdout.split() == ["busybox", "latest", image.id]
    inspected = json.loads(engine.docker("image", "inspect", "busybox", check=True).stdout)
    assert inspected[0]["Id"] == image.id and inspected[0]["RootFS"]["Layers"] == image.diff_ids
    engine.docker("tag", "busybox", "lab/box:1", check=True)
    assert sorted(images.get(image.id).names) == ["busybox:latest", "lab/box:1"]
    saved = tmp_path / "saved.tar"
    engine.docker("save", "-o", str(saved), "lab/box:1", check=True)
    with tarfile.open(saved) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert sorted(manifest[0]["RepoTags"]) == ["busybox:latest", "lab/box:1"]
    assert engine.docker("rmi", "lab/box:1", check=True).stdout.strip() == "Untagged: lab/box:1"
    removed = engine.docker("rmi", "busybox", check=True).stdout
    assert "Untagged: busybox:latest" in removed and f"Deleted: {image.id}" in removed
    assert engine.docker("images", "-q", check=True).stdout == ""
    with open(saved, "rb") as f:  # the saved archive loads again, from stdin this time
        again = subprocess.run(
            ["/usr/bin/docker", "load"],
            stdin=f,
            env=engine.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert again.returncode == 0 and "Loaded image: lab/box:1" in again.stdout
    assert images.get("lab/box:1").id == image.id
    engine.docker("rmi", "-f", image.id, check=True)
    assert images.list_images() == []


def test_a_hostile_archive_is_refused_and_the_store_is_left_as_it_was(engine, tmp_path):
    evil = tmp_path / "evil.tar"
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("../../etc/evil")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    manifest = [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["layer.tar"]}]
    with tarfile.open(evil, "w") as tar:
        for name, data in [
            ("layer.tar", layer.getvalue()),
            ("c.json", config),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = engine.docker("load", "-i", str(evil))
    assert result.returncode != 0 and "../../etc/evil" in result.stderr, result
    assert images.list_images() == []
    assert engine.request("GET", "/_ping")[0] == 200


def test_docker_import_makes_a_one_layer_image_from_a_root_filesystem(engine, tmp_path):
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w:gz") as tar:
        data = b"hello from an imported root\n"
        info = tarfile.TarInfo("etc/greeting")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    result = engine.docker("import", str(rootfs), "lab/imported:1", check=True)
    image = images.get("lab/imported:1")
    assert result.stdout.strip() == image.id and len(image.diff_ids) == 1
    assert (image.layer_dirs[0] / "etc" / "greeting").read_bytes() == data
    engine.docker("rmi", "lab/imported:1", check=True)
    assert images.list_images() == []


def test_a_pull_says_there_is_no_registry_and_how_to_load(engine):
    result = engine.docker("pull", "alpine")
    assert result.returncode == 1
    assert "no registry here" in result.stderr and "docker load" in result.stderr


def test_docker_py_sees_the_engine_and_loads_images(engine):
    client = docker.DockerClient(base_url=f"unix://{engine.socket}", timeout=60)
    try:
        assert client.version()["ApiVersion"] == "1.44"
        assert client.ping() is True
        (image,) = client.images.load(engine.archive.read_bytes())
        assert image.tags == ["busybox:latest"] and image.id == images.get("busybox").id
        assert [i.id for i in client.images.list()] == [image.id]
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("no-such-image")
        client.images.remove(image.id)
        assert client.images.list() == []
    finally:
        client.close()


def test_a_second_engine_on_the_same_socket_is_refused(engine):
    other = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "engine", "--socket", str(engine.socket)],
        env=engine.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert other.returncode == 2 and "an engine already serves" in other.stderr
    assert "Traceback" not in other.stderr
    assert engine.request("GET", "/_ping")[0] == 200


def test_tcp_is_refused_anywhere_but_loopback(engine, tmp_path):
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "labkit.cli",
            "engine",
            "--socket",
            str(tmp_path / "e.sock"),
            "--tcp",
            "0.0.0.0:2375",
        ],
        env=engine.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert other.returncode == 2 and "only on 127.0.0.1" in other.stderr
    assert not (tmp_path / "e.sock").exists()
