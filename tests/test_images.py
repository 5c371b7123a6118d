"""Layers and images against the real kernel: whiteouts, every archive form, round trips, attacks.

Every archive here is built in code by the helpers below; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from labkit import archives, cli, images, layers, overlay
from labkit.errors import BadInput

# --- building archives in code ----------------------------------------------------------------


def layer_tar(*entries) -> bytes:
    """A layer tar from (name, kind, payload) entries; kind: file dir symlink hardlink chr blk
    fifo."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            data = None
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
            else:
                info.type = {
                    "dir": tarfile.DIRTYPE,
                    "symlink": tarfile.SYMTYPE,
                    "hardlink": tarfile.LNKTYPE,
                    "chr": tarfile.CHRTYPE,
                    "blk": tarfile.BLKTYPE,
                    "fifo": tarfile.FIFOTYPE,
                }[kind]
                if kind in ("symlink", "hardlink"):
                    info.linkname = payload
                if kind in ("chr", "blk"):
                    info.devmajor, info.devminor = 1, 3
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


BASE = layer_tar(
    ("etc", "dir", None),
    ("etc/hostname", "file", "base\n"),
    ("etc/gone", "file", "to be deleted\n"),
    ("data", "dir", None),
    ("data/old-1", "file", "old\n"),
    ("data/old-2", "file", "old\n"),
    ("bin", "dir", None),
    ("bin/tool", "file", "#!/bin/sh\n"),
    ("bin/alias", "symlink", "/bin/tool"),
    ("bin/hard", "hardlink", "bin/tool"),
)
TOP = layer_tar(
    ("etc", "dir", None),
    ("etc/.wh.gone", "file", ""),
    ("etc/hostname", "file", "top\n"),
    ("data", "dir", None),
    ("data/.wh..wh..opq", "file", ""),
    ("data/new", "file", "new\n"),
)


def config_for(layer_blobs: list[bytes]) -> bytes:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": [
                sha(gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b) for b in layer_blobs
            ],
        },
    }
    return json.dumps(config).encode()


def archive_files(
    form: str, layer_blobs: list[bytes], name: str = "test/app:1", config: bytes | None = None
) -> dict[str, bytes]:
    """The files of an image archive: form is legacy, docker25 or oci."""
    config = config if config is not None else config_for(layer_blobs)
    files: dict[str, bytes] = {}
    if form == "legacy":
        layer_paths = []
        for i, blob in enumerate(layer_blobs):
            layer_paths.append(f"{i:064x}/layer.tar")
            files[layer_paths[-1]] = blob
        config_path = sha(config).split(":")[1] + ".json"
        files[config_path] = config
        files["manifest.json"] = json.dumps(
            [{"Config": config_path, "RepoTags": [name], "Layers": layer_paths}]
        ).encode()
        return files

    def blob(data: bytes) -> str:
        return "blobs/sha256/" + sha(data).split(":")[1]

    media = "application/vnd.oci.image.layer.v1.tar"
    manifest = {
        "schemaVersion": 2,
        "mediaType": archives.MEDIA_MANIFEST,
        "config": {"mediaType": archives.MEDIA_CONFIG, "digest": sha(config), "size": len(config)},
        "layers": [
            {
                "mediaType": media + ("+gzip" if b[:2] == b"\x1f\x8b" else ""),
                "digest": sha(b),
                "size": len(b),
            }
            for b in layer_blobs
        ],
    }
    manifest_data = json.dumps(manifest).encode()
    files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    files["index.json"] = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": archives.MEDIA_MANIFEST,
                    "digest": sha(manifest_data),
                    "size": len(manifest_data),
                    "annotations": {"io.containerd.image.name": "docker.io/" + name},
                }
            ],
        }
    ).encode()
    for data in [config, manifest_data, *layer_blobs]:
        files[blob(data)] = data
    if form == "docker25":
        files["manifest.json"] = json.dumps(
            [{"Config": blob(config), "RepoTags": [name], "Layers": [blob(b) for b in layer_blobs]}]
        ).encode()
    return files


def write_archive(files: dict[str, bytes], path: Path) -> Path:
    """As a tar if *path* ends in .tar, else as a directory."""
    if path.suffix == ".tar":
        with tarfile.open(path, "w") as tar:
            for rel, data in files.items():
                info = tarfile.TarInfo(rel)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        for rel, data in files.items():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_bytes(data)
    return path


def store_snapshot() -> list[tuple[str, int]]:
    root = images.store_dir()
    return sorted(
        (str(p.relative_to(root)), p.lstat().st_size)
        for p in root.rglob("*")
        if p.relative_to(root).parts[0] != "tmp" and not p.is_dir()
    )


@pytest.fixture
def store(state_dir, tmp_path):
    """A store holding one image already, so "left as it was" means something."""
    archives.import_image(
        write_archive(archive_files("legacy", [BASE], "base:1"), tmp_path / "base.tar")
    )
    return images.store_dir()


# --- layers -----------------------------------------------------------------------------------


def test_chain_ids_follow_the_oci_definition():
    d = [sha(b"a"), sha(b"b"), sha(b"c")]
    chain = layers.chain_ids(d)
    assert chain[0] == d[0]
    assert chain[1] == sha(f"{d[0]} {d[1]}".encode())
    assert chain[2] == sha(f"{chain[1]} {d[2]}".encode())


def test_applying_a_layer_converts_oci_whiteouts_to_overlay_ones(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    layers.apply_layer(io.BytesIO(TOP), dest)
    st = os.lstat(dest / "etc" / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert overlay.is_opaque(dest / "data")
    assert not (dest / "etc" / ".wh.gone").exists()
    assert sorted(os.listdir(dest / "data")) == ["new"]


def test_applied_layers_stack_in_an_overlay(state_dir, tmp_path):
    base, top = state_dir / "base", state_dir / "top"
    for d, tar in ((base, BASE), (top, TOP)):
        d.mkdir(parents=True)
        layers.apply_layer(io.BytesIO(tar), d)
    assert os.readlink(base / "bin" / "alias") == "/bin/tool"
    assert os.stat(base / "bin" / "hard").st_ino == os.stat(base / "bin" / "tool").st_ino
    merged = state_dir / "merged"
    merged.mkdir()
    with overlay.Overlay([top, base], merged=merged) as ov:
        assert (ov.merged / "etc" / "hostname").read_text() == "top\n"
        assert not (ov.merged / "etc" / "gone").exists()
        assert sorted(os.listdir(ov.merged / "data")) == ["new"]
        assert (ov.merged / "bin" / "tool").exists()


def test_writing_a_layer_converts_back_and_is_deterministic(tmp_path):
    upper = tmp_path / "upper"
    (upper / "dir").mkdir(parents=True)
    (upper / "dir" / "file").write_text("x\n")
    overlay.make_opaque(upper / "dir")
    overlay.make_whiteout(upper / "gone")
    first = io.BytesIO()
    layers.write_layer(upper, first)
    os.utime(upper / "dir" / "file", (1, 1))  # a new mtime must not change the layer's bytes
    second = io.BytesIO()
    layers.write_layer(upper, second)
    assert first.getvalue() == second.getvalue()
    with tarfile.open(fileobj=io.BytesIO(first.getvalue())) as tar:
        names = tar.getnames()
        assert names == ["dir", "dir/.wh..wh..opq", "dir/file", ".wh.gone"]
        assert all(m.mtime == 0 and m.uname == "" for m in tar.getmembers())
    again = tmp_path / "again"
    again.mkdir()
    layers.apply_layer(io.BytesIO(first.getvalue()), again)
    assert overlay.diff(again) == overlay.diff(upper)


def test_writing_a_layer_refuses_a_device_node(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with pytest.raises(BadInput, match="device node"):
        layers.write_layer(root, io.BytesIO())


# --- importing every form ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "form, suffix",
    [("legacy", ".tar"), ("docker25", ".tar"), ("oci", ""), ("oci", ".tar"), ("gzip", "")],
)
def test_import_reads_docker_save_and_oci_layouts(state_dir, tmp_path, form, suffix):
    blobs = (
        [BASE, TOP]
        if form != "gzip"
        else [gzip.compress(BASE, mtime=0), gzip.compress(TOP, mtime=0)]
    )
    path = write_archive(
        archive_files("oci" if form == "gzip" else form, blobs), tmp_path / f"archive{suffix}"
    )
    (image,) = archives.import_image(path)
    assert image.names == ["test/app:1"]
    assert image.diff_ids == [sha(BASE), sha(TOP)]
    assert image.id == sha(config_for(blobs))
    assert images.get("test/app:1").id == image.id == images.get(image.short_id).id
    ov = images.mount_root("test/app:1", "c1")
    try:
        assert (ov.merged / "etc" / "hostname").read_text() == "top\n"
        assert not (ov.merged / "etc" / "gone").exists()
        assert os.listdir(ov.merged / "data") == ["new"]
    finally:
        images.unmount_root("c1")


def test_a_legacy_archive_with_a_linked_repeated_layer_imports(state_dir, tmp_path):
    files = archive_files("legacy", [BASE, BASE, TOP])
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            if rel.startswith(f"{1:064x}/"):
                info.type, info.linkname = tarfile.SYMTYPE, f"../{0:064x}/layer.tar"
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (image,) = archives.import_image(path, name="twice")
    assert image.diff_ids == [sha(BASE), sha(BASE), sha(TOP)] and image.names == ["twice:latest"]
    for diff_id in set(image.diff_ids):  # each blob holds its own layer
        assert layers.digest_file(images.blob_path(diff_id)) == diff_id


def test_a_docker_save_archive_as_docker_writes_it_imports(state_dir, tmp_path):
    """The legacy layout as Docker 20.10's `docker save` writes it: directory entries, a
    directory per layer with VERSION, json and layer.tar, a repeated layer as a symlink to the
    first, <config>.json, manifest.json and repositories. GNU tar unpacks the same archive into
    a directory, which imports as the same image."""
    config = config_for([BASE, BASE, TOP])
    ids = [hashlib.sha256(f"layer {i}".encode()).hexdigest() for i in range(3)]
    config_rel = sha(config).split(":")[1] + ".json"
    manifest = [{"Config": config_rel, "RepoTags": ["test/app:1"], "Layers": []}]
    path = tmp_path / "saved.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:

        def add(name, data=None, kind=tarfile.REGTYPE, link=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = (
                kind,
                link,
                0o755 if kind == tarfile.DIRTYPE else 0o644,
            )
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for i, (layer_id, blob) in enumerate(zip(ids, [BASE, BASE, TOP])):
            add(layer_id, kind=tarfile.DIRTYPE)
            add(f"{layer_id}/VERSION", b"1.0")
            add(f"{layer_id}/json", json.dumps({"id": layer_id}).encode())
            if i == 1:  # the same layer again: Docker links it to the first copy
                add(f"{layer_id}/layer.tar", kind=tarfile.SYMTYPE, link=f"../{ids[0]}/layer.tar")
            else:
                add(f"{layer_id}/layer.tar", blob)
            manifest[0]["Layers"].append(f"{layer_id}/layer.tar")
        add(config_rel, config)
        add("manifest.json", json.dumps(manifest).encode())
        add("repositories", json.dumps({"test/app": {"1": ids[2]}}).encode())
    (image,) = archives.import_image(path)
    assert image.names == ["test/app:1"] and image.id == sha(config)
    assert image.diff_ids == [sha(BASE), sha(BASE), sha(TOP)]
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xf", str(path), "-C", str(unpacked)], check=True, timeout=30)
    (again,) = archives.import_image(unpacked, name="test/again:1")
    assert again.id == image.id and again.diff_ids == image.diff_ids


def test_round_trip_import_export_import_keeps_every_digest(state_dir, tmp_path):
    (first,) = archives.import_image(
        write_archive(archive_files("legacy", [BASE, TOP]), tmp_path / "in.tar")
    )
    out1 = archives.export_image("test/app:1", tmp_path / "out1.tar")
    images.remove("test/app:1")
    assert images.list_images() == []
    (second,) = archives.import_image(out1)
    assert (second.id, second.diff_ids, second.chain_ids, second.names) == (
        first.id,
        first.diff_ids,
        first.chain_ids,
        first.names,
    )
    out2 = archives.export_image("test/app:1", tmp_path / "out2.tar")
    assert out1.read_bytes() == out2.read_bytes()
    # The export is also a plain OCI layout: without manifest.json it imports the same.
    layout = tmp_path / "layout"
    archives.export_image(second.id, layout)
    (layout / "manifest.json").unlink()
    images.remove(second.id)
    (third,) = archives.import_image(layout)
    assert (third.id, third.chain_ids) == (first.id, first.chain_ids)


# --- hostile archives -------------------------------------------------------------------------


def _hostile_layers(tmp_path: Path) -> dict[str, bytes]:
    outside = str(tmp_path / "escaped")
    return {
        "absolute path": layer_tar((outside, "file", "x")),
        "dot-dot": layer_tar(("../" * 30 + outside.lstrip("/"), "file", "x")),
        "symlink out": layer_tar(("link", "symlink", "../../../../etc/passwd")),
        "hard link out": layer_tar(("hl", "hardlink", "../escaped")),
        "hard link absolute": layer_tar(("hl", "hardlink", "/etc/passwd")),
        "through a symlink": layer_tar(
            ("esc", "symlink", str(tmp_path)), ("esc/escaped", "file", "x")
        ),
        "char device": layer_tar(("dev/null", "chr", None)),
        "block device": layer_tar(("dev/sda", "blk", None)),
        "fifo": layer_tar(("pipe", "fifo", None)),
        "bad whiteout": layer_tar((".wh..", "file", "")),
        "hard link to nothing": layer_tar(("hl", "hardlink", "nothing")),
        "zstd": b"\x28\xb5\x2f\xfd" + b"\0" * 64,
        "not a tar": b"hello, this is not a tar archive at all" * 40,
    }


HOSTILE = [
    "absolute path",
    "dot-dot",
    "symlink out",
    "hard link out",
    "hard link absolute",
    "through a symlink",
    "char device",
    "block device",
    "fifo",
    "bad whiteout",
    "hard link to nothing",
    "zstd",
    "not a tar",
]


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_layer_is_refused_and_the_store_is_left_as_it_was(store, tmp_path, case):
    before = store_snapshot()
    blob = _hostile_layers(tmp_path)[case]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [sha(blob)]}}).encode()
    path = write_archive(archive_files("legacy", [blob], config=config), tmp_path / "evil.tar")
    with pytest.raises(BadInput) as e:
        archives.import_image(path)
    assert len(str(e.value).splitlines()) == 1
    assert store_snapshot() == before
    assert os.listdir(store / "tmp") == []
    assert not (tmp_path / "escaped").exists()


def _tamper(files: dict[str, bytes], case: str) -> dict[str, bytes]:
    if case in ("blob content does not match its digest", "diff_id does not match the layer"):
        rel = next(r for r, d in files.items() if d == TOP)
        files[rel] = TOP.replace(b"top\n", b"bad\n")
    elif case == "manifest names a missing blob":
        del files[next(r for r, d in files.items() if d == TOP)]
    elif case == "manifest names a path outside":
        manifest = json.loads(files["manifest.json"])
        manifest[0]["Layers"][0] = "../../../etc/passwd"
        files["manifest.json"] = json.dumps(manifest).encode()
    elif case == "config does not match its digest":
        rel = next(r for r in files if r.endswith(".json") and r != "manifest.json")
        files[rel] = files[rel].replace(b'"amd64"', b'"arm64"')
    elif case == "malformed index":
        files["index.json"] = b'{"manifests": [{"digest": 42}]}'
    elif case == "index lists only another platform":
        index = json.loads(files["index.json"])
        index["manifests"][0]["platform"] = {"os": "linux", "architecture": "no-such-arch"}
        files["index.json"] = json.dumps(index).encode()
    elif case == "neither format":
        files = {"hello.txt": b"hi"}
    return files


TAMPERED = [
    ("oci", "blob content does not match its digest", "does not match its digest"),
    ("legacy", "diff_id does not match the layer", "does not match its digest"),
    ("oci", "manifest names a missing blob", "does not hold"),
    ("legacy", "manifest names a missing blob", "does not hold"),
    ("legacy", "manifest names a path outside", "outside the archive"),
    ("legacy", "config does not match its digest", "does not match its digest"),
    ("oci", "malformed index", "not a sha256 digest"),
    ("oci", "neither format", "neither"),
    ("oci", "index lists only another platform", f"no image for linux/{images.goarch()}:"),
]


@pytest.mark.parametrize("form, case, words", TAMPERED)
def test_a_tampered_archive_is_refused_and_the_store_is_left_as_it_was(
    store, tmp_path, form, case, words
):
    before = store_snapshot()
    files = _tamper(archive_files(form, [BASE, TOP]), case)
    path = write_archive(files, tmp_path / "evil")
    with pytest.raises(BadInput, match=words):
        archives.import_image(path)
    assert store_snapshot() == before
    assert os.listdir(store / "tmp") == []


def test_a_missing_archive_is_refused(state_dir, tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        archives.import_image(tmp_path / "nope.tar")


# --- roots, sharing, commit, remove -----------------------------------------------------------


def test_two_roots_on_one_image_share_its_layers(store):
    a = images.mount_root("base:1", "a")
    b = images.mount_root("base:1", "b")
    try:
        assert a.lowerdirs == b.lowerdirs == images.get("base:1").lowerdirs
        (a.merged / "etc" / "hostname").write_text("only in a\n")
        assert (b.merged / "etc" / "hostname").read_text() == "base\n"
        assert len(os.listdir(store / "layers")) == 1
        with pytest.raises(BadInput, match="exists already"):
            images.mount_root("base:1", "a")
    finally:
        images.unmount_root("a")
        images.unmount_root("b")
    assert not (images.roots_dir() / "a").exists()


def test_commit_adds_one_layer_with_the_changes(store):
    base = images.get("base:1")
    ov = images.mount_root("base:1", "c")
    try:
        (ov.merged / "etc" / "hostname").write_text("committed\n")
        os.unlink(ov.merged / "etc" / "gone")
        new = images.commit(ov.upperdir, "base:1", "base:2")
        again = images.commit(ov.upperdir, "base:1", "base:3")
    finally:
        images.unmount_root("c")
    assert new.diff_ids[:-1] == base.diff_ids and len(new.diff_ids) == 2
    assert again.id == new.id  # the same change gives the same image
    with tarfile.open(images.blob_path(new.diff_ids[-1])) as tar:
        assert sorted(tar.getnames()) == ["etc", "etc/.wh.gone", "etc/hostname"]
    ov = images.mount_root("base:2", "d")
    try:
        assert (ov.merged / "etc" / "hostname").read_text() == "committed\n"
        assert not (ov.merged / "etc" / "gone").exists()
    finally:
        images.unmount_root("d")


def test_remove_refuses_an_image_in_use_and_keeps_shared_layers(store):
    (top,) = archives.import_image(
        write_archive(archive_files("legacy", [BASE, TOP], "two:1"), store.parent / "two.tar")
    )
    images.mount_root("two:1", "busy")
    try:
        with pytest.raises(BadInput, match="in use"):
            images.remove("two:1")
    finally:
        images.unmount_root("busy")
    removed = images.remove("two:1")
    assert set(removed) == {top.id, sha(TOP)}
    assert images.layer_dir(sha(BASE)).is_dir() and not images.layer_dir(sha(TOP)).exists()
    assert [im.names for im in images.list_images()] == [["base:1"]]


def test_busybox_image_is_built_offline_and_runs_as_a_root(state_dir):
    image = images.busybox_image()
    assert image.names == ["busybox:latest"] and len(image.diff_ids) == 1
    assert images.busybox_image().id == image.id  # built again: the same bytes
    ov = images.mount_root("busybox", "bb")
    try:
        assert os.readlink(ov.merged / "bin" / "sh").endswith("busybox")
        assert (ov.merged / "bin" / "busybox").stat().st_size > 100_000
    finally:
        images.unmount_root("bb")


# --- the command line ------------------------------------------------------------------------


def test_the_image_commands(store, tmp_path, capsys):
    assert cli.main(["image", "list"]) == 0
    assert "base:1" in capsys.readouterr().out
    assert cli.main(["image", "inspect", "base"]) == 2  # base:latest does not exist
    assert "no image 'base'" in capsys.readouterr().err
    assert cli.main(["image", "inspect", "base:1"]) == 0
    out = capsys.readouterr().out
    assert "chain sha256:" in out and sha(BASE)[:19] in out
    assert cli.main(["image", "export", "base:1", str(tmp_path / "x.tar")]) == 0
    assert (tmp_path / "x.tar").is_file()
    assert cli.main(["image", "remove", "base:1"]) == 0
    assert "removed" in capsys.readouterr().out
    assert cli.main(["image", "import", str(tmp_path / "x.tar"), "--name", "again:2"]) == 0
    assert "again:2" in capsys.readouterr().out
    assert cli.main(["image", "mount", "again:2", "m"]) == 0
    merged = Path(capsys.readouterr().out.strip())
    assert (merged / "etc" / "hostname").read_text() == "base\n"
    assert cli.main(["image", "unmount", "m"]) == 0
    assert cli.main(["image", "import", str(tmp_path / "missing.tar")]) == 2


# --- the lesson's checks and experiments (labkit.lab.layers) ----------------------------------


def test_check_chain_id(store):
    from labkit.lab import layers as lab

    (image,) = archives.import_image(
        write_archive(archive_files("legacy", [BASE, TOP], "two:1"), store.parent / "two.tar")
    )
    right = (
        "sha256:" + hashlib.sha256(f"{image.diff_ids[0]} {image.diff_ids[1]}".encode()).hexdigest()
    )
    assert "replace the ..." in str(lab.check_chain_id(..., image))
    assert lab.check_chain_id(right, image).ok
    bare = lab.check_chain_id(right.split(":")[1], image)
    assert not bare.ok and '"sha256:" in front' in bare.hint
    assert not lab.check_chain_id(image.diff_ids[1], image).ok
    assert not lab.check_chain_id(right, images.get("base:1")).ok  # one layer: no ChainID of two


def test_check_commit(store):
    from labkit.lab import layers as lab

    assert "replace the ..." in str(lab.check_commit(..., base="base:1"))
    assert not lab.check_commit("base:1", base="base:1").ok
    ov = images.mount_root("base:1", "hello")
    try:
        (ov.merged / "other.txt").write_text("hello\n")
        wrong = images.commit(ov.upperdir, "base:1", "wrong:1")
        (ov.merged / "hello.txt").write_text("hello\n")
        right = images.commit(ov.upperdir, "base:1", "hello:1")
    finally:
        images.unmount_root("hello")
    assert lab.check_commit(right, base="base:1").ok
    assert not lab.check_commit(wrong, base="base:1").ok
    assert not lab.check_commit(right, base="wrong:1").ok  # not wrong:1 plus one layer


def test_roots_share_disk(store):
    from labkit.lab import layers as lab

    one, three = lab.measure_sharing(images.get("base:1"), [1, 3])
    assert three.copies == 3 * one.copies
    assert three.shared < 2 * one.shared < three.copies
    assert all(lab.blob_matches_name(p) for p in (store / "blobs" / "sha256").iterdir())
    assert not any(o.merged.startswith(str(store)) for o in overlay.live_overlays())


def test_removing_the_last_image_removes_the_store(store, state_dir):
    images.remove("base:1")
    assert not (state_dir / "images").exists()
