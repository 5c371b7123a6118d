"""Hostile image archives against the real kernel: every attack class of issue 8.

Each archive is built here, in code. Each test proves that a canary directory outside the store
is exactly as it was (type, mode, owner, size, link count, content and overlay xattr of every
path in it) and, for a refused archive, that the store is as it was too. Layer-level attacks run
twice: with Python's tarfile filter as the extra line it is, and without it (a Python that has
none, or whose filter has a hole like CVE-2025-4517), so labkit's own walk is shown to hold alone.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from labkit import archives, cli, images, layers
from labkit.errors import BadInput

from .test_images import BASE, TOP, archive_files, config_for, sha, store_snapshot, write_archive

ROOT = Path(__file__).resolve().parents[1]

# --- the canary: a directory outside the store that no archive may touch ----------------------


def snapshot(root: Path) -> list[tuple]:
    """Every path below *root* (and root): type, mode, owner, size, links, content, xattrs."""
    rows = []
    for path in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        else:
            content = None
        xattrs = sorted(
            (k, os.getxattr(path, k, follow_symlinks=False))
            for k in os.listxattr(path, follow_symlinks=False)
        )
        rows.append(
            (
                str(path.relative_to(root)),
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_nlink,
                st.st_ino,
                content,
                xattrs,
            )
        )
    return rows


class Canary:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.secret = root / "secret"
        self.dir = root / "dir"
        root.mkdir(parents=True)
        self.secret.write_text("the host's secret\n")
        os.chmod(self.secret, 0o640)
        self.dir.mkdir()
        (self.dir / "keep").write_text("keep me\n")
        os.symlink("secret", root / "link")
        self.before = snapshot(root.parent)

    def unchanged(self) -> bool:
        return snapshot(self.root.parent) == self.before


@pytest.fixture
def canary(tmp_path):
    c = Canary(tmp_path / "outside" / "canary")
    yield c
    assert c.unchanged(), "an archive changed the host outside the store"


@pytest.fixture
def store(state_dir, tmp_path):
    """A store holding one image already (base:1), so "left as it was" means something."""
    archives.import_image(
        write_archive(archive_files("legacy", [BASE], "base:1"), tmp_path / "b.tar")
    )
    return images.store_dir()


@pytest.fixture(params=["with tarfile's filter", "without it"])
def filter_line(request, monkeypatch):
    """Run a test with Python's extraction filter as an extra line, and with no filter at all."""
    if request.param == "without it":
        monkeypatch.setattr(layers, "_filter_probe", lambda *a: None)
    return request.param


# --- building archives ------------------------------------------------------------------------


def entry(name, kind="file", data=b"", link="", mode=None, uid=0, gid=0, mtime=0):
    info = tarfile.TarInfo(name)
    info.type = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "chr": tarfile.CHRTYPE,
    }[kind]
    info.linkname, info.uid, info.gid, info.mtime = link, uid, gid, mtime
    info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    data = data.encode() if isinstance(data, str) else data
    info.size = len(data) if kind == "file" else 0
    return info, data


def tar_of(*entries, fmt=tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def image_archive(path: Path, blobs: list[bytes], name: str = "hostile:1", diff_ids=None) -> Path:
    """A legacy docker-save archive whose config lists the layers' DiffIDs (or *diff_ids*)."""
    ids = diff_ids or [sha(b) for b in blobs]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": ids}}).encode()
    return write_archive(archive_files("legacy", blobs, name, config=config), path)


def refused(source: Path, **kwargs) -> str:
    """Import *source*, expect one sentence, and check the store is as it was; the sentence."""
    before = store_snapshot()
    with pytest.raises(BadInput) as e:
        archives.import_image(source, **kwargs)
    message = str(e.value)
    assert "\n" not in message and "\x1b" not in message, message
    assert len(message) < 420, message
    assert str(images.store_dir()) not in message and "/tmp" not in message, message
    assert store_snapshot() == before
    assert os.listdir(images.store_dir() / "tmp") == []
    return message


def apply_refused(blob: bytes, dest: Path) -> str:
    dest.mkdir(parents=True, exist_ok=True)
    with pytest.raises(BadInput) as e:
        layers.apply_layer(io.BytesIO(blob), dest)
    message = str(e.value)
    assert "\n" not in message and str(dest) not in message, message
    return message


# --- CVE-2025-4517: a symlink chain and a path near PATH_MAX --------------------------------


def cve_2025_4517(dest_len: int, *tail: tuple) -> bytes:
    """The attack on tarfile's filter (gh-135034), built for a destination of *dest_len* chars.

    Sixteen directories with long names, each reachable through a one-letter symlink, make a
    short path (a/b/.../p) whose expansion is just under PATH_MAX. A symlink below it climbs
    back up; realpath cannot expand it (the expanded path passes PATH_MAX, lstat fails, and
    realpath, not strict, takes it for a plain name), so the filter thinks ``escape`` stays
    inside. The kernel follows it: ``escape`` is the destination's parent. *tail* entries then
    go through ``escape``.
    """
    steps = "abcdefghijklmnop"
    component = "d" * ((os.pathconf("/", "PC_PATH_MAX") - dest_len - 1) // (len(steps) + 1))
    items, path = [], ""
    for letter in steps:
        items.append(entry(f"{path}{component}", "dir"))
        items.append(entry(f"{path}{letter}", "symlink", link=component))
        path += component + "/"
    long_link = "/".join(steps) + "/" + "l" * 254
    items.append(entry(long_link, "symlink", link="/".join([".."] * len(steps))))
    items.append(entry("escape", "symlink", link=long_link + "/.."))
    return tar_of(*items, *tail)


def _python_has_the_hole() -> bool:
    fixed = {(3, 11): 13, (3, 12): 11, (3, 13): 4}
    v = sys.version_info
    return v[:2] in fixed and v[2] < fixed[v[:2]]


def test_the_cve_archive_is_real_pythons_own_filter_lets_it_out_here(tmp_path):
    """Not labkit: show that the archive below defeats tarfile's data filter on this Python."""
    box = tmp_path / "box"
    dest = box / "dest"
    dest.mkdir(parents=True)
    blob = cve_2025_4517(len(str(dest)), entry("escape/pwned", data="written outside\n"))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        if _python_has_the_hole():
            tar.extractall(dest, filter="data")
            assert (box / "pwned").read_text() == "written outside\n"  # outside dest
        else:
            with pytest.raises(tarfile.FilterError):
                tar.extractall(dest, filter="data")
            assert not (box / "pwned").exists()


def test_labkit_refuses_the_cve_archive(canary, filter_line):
    # The layer is applied into canary/layer: the attack aims at canary/secret next door.
    dest = canary.root / "layer"  # made after the canary's snapshot, removed before the check
    dest.mkdir()
    blob = cve_2025_4517(
        len(str(dest)),
        entry("flaglink", "hardlink", link="escape/secret"),  # the host file's inode ...
        entry("flaglink", data="overwritten\n"),  # ... written through
        entry("escape/pwned", data="new file outside\n"),
    )
    message = apply_refused(blob, dest)
    assert "runs through the symlink 'a'" in message
    for path in dest.rglob("*"):  # nothing written through any link
        assert not path.is_file() or path.stat().st_size == 0
    shutil.rmtree(dest)
    assert canary.unchanged()


def test_an_image_with_the_cve_layer_is_refused(store, canary, filter_line, tmp_path):
    # Aimed at the scratch dir labkit extracts into: <store>/tmp/tmpXXXXXXXX/layer-2.
    dest_len = len(str(images.store_dir() / "tmp" / "tmpXXXXXXXX" / "layer-2"))
    blob = cve_2025_4517(dest_len, entry("escape/pwned", data="x"))
    message = refused(image_archive(tmp_path / "cve.tar", [blob]))
    assert "runs through the symlink" in message


# --- links, whiteouts and opaque dirs that lead outside --------------------------------------


def _attacks(c: Canary) -> dict[str, list]:
    out, d = str(c.root), str(c.dir)
    return {
        "file through a symlink": [entry("esc", "symlink", link=out), entry("esc/pwned", data="x")],
        "overwrite through a symlink": [
            entry("esc", "symlink", link=out),
            entry("esc/secret", data="overwritten\n"),
        ],
        "symlink through a symlink": [
            entry("esc", "symlink", link=out),
            entry("esc/secret", "symlink", link="/etc/shadow"),
        ],
        "dir through a symlink": [entry("esc", "symlink", link=out), entry("esc/new", "dir")],
        "hard link to a host file": [
            entry("esc", "symlink", link=out),
            entry("hl", "hardlink", link="esc/secret"),
        ],
        "hard link to a symlink": [
            entry("s", "symlink", link=str(c.secret)),
            entry("hl", "hardlink", link="s"),
        ],
        "hard link to a directory": [entry("d", "dir"), entry("hl", "hardlink", link="d")],
        "hard link to a later file": [entry("hl", "hardlink", link="f"), entry("f", data="x")],
        "whiteout through a symlink": [
            entry("esc", "symlink", link=out),
            entry("esc/.wh.secret"),
        ],
        "whiteout of a host dir": [entry("esc", "symlink", link=out), entry("esc/.wh.dir")],
        "whiteout making dirs outside": [
            entry("esc", "symlink", link=out),
            entry("esc/new/deeper/.wh.x"),
        ],
        "opaque dir through a symlink": [
            entry("esc", "symlink", link=d),
            entry("esc/.wh..wh..opq"),
        ],
        "a file as a directory": [entry("f", data="x"), entry("f/g", data="y")],
        "a directory replaced by a file": [entry("d", "dir"), entry("d", data="x")],
        "a whiteout with content": [entry(".wh.gone", data="not empty")],
    }


def _attack_names() -> list[str]:
    fake = Canary.__new__(Canary)
    fake.root = fake.secret = fake.dir = Path("/x")
    return list(_attacks(fake))


@pytest.mark.parametrize("case", _attack_names())
def test_a_layer_cannot_reach_outside(canary, filter_line, tmp_path, case):
    dest = tmp_path / "store-like" / "layer"
    message = apply_refused(tar_of(*_attacks(canary)[case]), dest)
    assert "refusing it" in message or "corrupt" in message


@pytest.mark.parametrize("what", ["file", "whiteout", "opaque"])
def test_a_symlink_already_below_the_destination_is_not_followed(
    canary, filter_line, tmp_path, what
):
    dest = tmp_path / "upper"
    dest.mkdir()
    os.symlink(canary.root, dest / "pre")  # e.g. an upper dir a container wrote into
    member = {"file": "pre/secret", "whiteout": "pre/.wh.secret", "opaque": "pre/.wh..wh..opq"}
    message = apply_refused(tar_of(entry(member[what], data="x" if what == "file" else "")), dest)
    assert "runs through the symlink 'pre'" in message


def test_a_later_entry_replaces_an_earlier_link_instead_of_writing_through_it(
    canary, filter_line, tmp_path
):
    dest = tmp_path / "layer"
    dest.mkdir()
    blob = tar_of(
        entry("f", data="first\n"),
        entry("f", "symlink", link=str(canary.secret)),
        entry("f", data="second\n"),  # as tar does: a new file, never the link's target
        entry("hl", "hardlink", link="f"),
    )
    if filter_line == "without it":
        layers.apply_layer(io.BytesIO(blob), dest)
        assert not (dest / "f").is_symlink() and (dest / "f").read_text() == "second\n"
        assert os.stat(dest / "hl").st_ino == os.stat(dest / "f").st_ino
    else:  # tarfile's filter, resolving f, sees the link's target outside: stricter still
        assert "would be written outside the layer" in apply_refused(blob, dest)


def test_a_whiteout_of_a_directory_of_the_same_layer_removes_it_inside_only(canary, tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    blob = tar_of(
        entry("a/b/f1", data="1"),
        entry("a/keep", "symlink", link=str(canary.secret)),
        entry(".wh.a"),  # deletes a/ (and the link in it, not what the link points to)
        entry("c/f2", data="2"),
    )
    layers.apply_layer(io.BytesIO(blob), dest)
    assert stat.S_ISCHR(os.lstat(dest / "a").st_mode)
    assert (dest / "c" / "f2").read_text() == "2"


def test_the_layer_tree_matches_gnu_tar(tmp_path):
    """Owners, modes (setuid too), links, long names and times as GNU tar extracts them."""
    long = "deep/" + "/".join(["x" * 120] * 3) + "/file"
    blob = tar_of(
        entry("bin", "dir", mode=0o755, mtime=1000),
        entry("bin/su", data="#!\n", mode=0o4755, uid=0, gid=0, mtime=2000),
        entry("home/user", "dir", mode=0o700, uid=1000, gid=1000, mtime=3000),
        entry("home/user/notes", data="n\n", mode=0o600, uid=1000, gid=1000, mtime=4000),
        entry("bin/sh", "symlink", link="/bin/busybox", uid=0, gid=0),
        entry("bin/rel", "symlink", link="../home/user/notes", uid=5, gid=6),
        entry("bin/hard", "hardlink", link="bin/su"),
        entry("implicit/parent/file", data="p\n", mtime=5000),
        entry(long, data="long\n", mtime=6000),
        entry("empty", data="", mode=0o2750, gid=50, mtime=7000),
    )
    ours, gnu = tmp_path / "labkit", tmp_path / "gnu"
    ours.mkdir()
    gnu.mkdir()
    layers.apply_layer(io.BytesIO(blob), ours)
    (tmp_path / "layer.tar").write_bytes(blob)
    subprocess.run(
        ["tar", "--numeric-owner", "-xpf", str(tmp_path / "layer.tar"), "-C", str(gnu)],
        check=True,
        timeout=30,
    )

    def tree(root: Path) -> list[tuple]:
        rows, inodes = [], {}
        for path in sorted(root.rglob("*")):
            st = os.lstat(path)
            rows.append(
                (
                    str(path.relative_to(root)),
                    stat.S_IFMT(st.st_mode),
                    stat.S_IMODE(st.st_mode),
                    st.st_uid,
                    st.st_gid,
                    os.readlink(path) if path.is_symlink() else None,
                    path.read_bytes() if stat.S_ISREG(st.st_mode) else None,
                    # GNU tar leaves a directory it re-enters with the time of extraction
                    int(st.st_mtime) if stat.S_ISREG(st.st_mode) else None,
                    inodes.setdefault(st.st_ino, len(inodes)),  # which names share an inode
                )
            )
        return rows

    assert tree(ours) == tree(gnu)


# --- every refusal is one sentence ------------------------------------------------------------


def test_names_from_the_archive_are_escaped_and_shortened(store, tmp_path, capsys):
    forged = "evil\n\x1b[32mlabkit: all good\x1b[0m"
    message = refused(image_archive(tmp_path / "a.tar", [tar_of(entry(forged, "chr"))]))
    assert "\\n" in message and "\\x1b" in message
    message = refused(image_archive(tmp_path / "b.tar", [tar_of(entry("n" * 4000, "chr"))]))
    assert "..." in message
    # The command prints the same sentence on one line and exits 2, with no traceback.
    path = image_archive(tmp_path / "c.tar", [tar_of(entry(forged, "chr"))])
    assert cli.main(["image", "import", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("labkit: ") and "Traceback" not in err


def _nested_index(depth: int) -> dict[str, bytes]:
    """An OCI layout whose index nests *depth* indexes above one real image."""
    files = archive_files("oci", [BASE])
    top = json.loads(files["index.json"])
    for _ in range(depth):
        data = json.dumps(top).encode()
        files["blobs/sha256/" + sha(data).split(":")[1]] = data
        desc = {"mediaType": archives.MEDIA_INDEX, "digest": sha(data), "size": len(data)}
        top = {"schemaVersion": 2, "mediaType": archives.MEDIA_INDEX, "manifests": [desc]}
    files["index.json"] = json.dumps(top).encode()
    return files


def _fan_out(fan: int, levels: int) -> dict[str, bytes]:
    """An OCI layout whose every index lists the next one *fan* times, *levels* deep."""
    files = archive_files("oci", [BASE])
    top = json.loads(files["index.json"])
    top["manifests"] *= fan
    for _ in range(levels - 1):
        data = json.dumps(top).encode()
        files["blobs/sha256/" + sha(data).split(":")[1]] = data
        desc = {"mediaType": archives.MEDIA_INDEX, "digest": sha(data), "size": len(data)}
        top = {"schemaVersion": 2, "manifests": [desc] * fan}
    files["index.json"] = json.dumps(top).encode()
    return files


def test_an_index_that_repeats_one_manifest_imports_it_once(state_dir, tmp_path, monkeypatch):
    reads = []
    real_read = archives._Source.read
    monkeypatch.setattr(
        archives._Source, "read", lambda s, rel: reads.append(rel) or real_read(s, rel)
    )
    path = write_archive(_fan_out(16, 3), tmp_path / "fan.tar")
    (image,) = archives.import_image(path)
    assert image.names == ["test/app:1"]
    assert len(reads) <= 5, reads  # 2 indexes, 1 manifest, 1 config (+ index.json): not 4,096


def _malformed(case: str, tmp_path: Path) -> Path:
    if case == "index nested 1,500 deep":
        return write_archive(_nested_index(1500), tmp_path / "deep")
    if case == "JSON nested 100,000 deep":
        files = archive_files("oci", [BASE])
        files["index.json"] = b"[" * 100_000 + b"]" * 100_000
        return write_archive(files, tmp_path / "deep")
    if case == "manifest.json nested 100,000 deep":
        files = archive_files("legacy", [BASE])
        files["manifest.json"] = b'[{"Config": ' * 50_000 + b"1" + b"}]" * 50_000
        return write_archive(files, tmp_path / "deep.tar")
    if case == "rootfs as a string":
        config = json.dumps({"rootfs": "layers"}).encode()
        return write_archive(archive_files("legacy", [BASE], config=config), tmp_path / "r.tar")
    if case == "diff_ids as a number":
        config = json.dumps({"rootfs": {"diff_ids": 7}}).encode()
        return write_archive(archive_files("legacy", [BASE], config=config), tmp_path / "r.tar")
    if case == "manifest entry as a string":
        files = archive_files("legacy", [BASE])
        files["manifest.json"] = b'["not an object"]'
        return write_archive(files, tmp_path / "m.tar")
    if case == "layers as an object":
        files = archive_files("legacy", [BASE])
        manifest = json.loads(files["manifest.json"])
        manifest[0]["Layers"] = {"a": 1}
        files["manifest.json"] = json.dumps(manifest).encode()
        return write_archive(files, tmp_path / "m.tar")
    if case == "a symlink loop among the archive's members":
        files = archive_files("legacy", [BASE])
        layer = next(rel for rel in files if rel.endswith("layer.tar"))
        path = tmp_path / "loop.tar"
        with tarfile.open(path, "w") as tar:
            for rel, data in files.items():
                info = tarfile.TarInfo(rel)
                if rel == layer:  # layer.tar -> other/layer.tar -> layer.tar -> ...
                    info.type, info.linkname = tarfile.SYMTYPE, "../other/layer.tar"
                    tar.addfile(info)
                    other = tarfile.TarInfo("other/layer.tar")
                    other.type, other.linkname = tarfile.SYMTYPE, f"../{layer}"
                    tar.addfile(other)
                    continue
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path
    raise AssertionError(case)


MALFORMED = [
    ("index nested 1,500 deep", "more than 8 levels"),
    ("JSON nested 100,000 deep", "nests its JSON"),
    ("manifest.json nested 100,000 deep", "nests its JSON"),
    ("rootfs as a string", "'rootfs'"),
    ("diff_ids as a number", "'diff_ids'"),
    ("manifest entry as a string", "not a list of images"),
    ("layers as an object", "'Layers'"),
    ("a symlink loop among the archive's members", "a loop"),
]


@pytest.mark.parametrize("case, words", MALFORMED)
def test_a_malformed_archive_is_one_sentence_not_a_traceback(store, tmp_path, case, words):
    assert words in refused(_malformed(case, tmp_path))


# --- bounds -----------------------------------------------------------------------------------


def _bomb(expanded_gib: int = 10) -> bytes:
    """A gzip layer of about 1 MB per GiB that expands to a tar of one file of *expanded_gib*
    GiB: gzip members back to back (valid gzip), each 64 MiB of zeros."""
    header = tarfile.TarInfo("zeros")
    header.size = expanded_gib << 30
    member = gzip.compress(bytes(64 << 20), compresslevel=9, mtime=0)
    return gzip.compress(header.tobuf(tarfile.GNU_FORMAT), mtime=0) + member * (16 * expanded_gib)


def test_a_gzip_bomb_stops_at_the_size_bound_with_little_memory(state_dir, tmp_path, canary):
    bomb = _bomb(10)
    assert len(bomb) < 12 << 20
    path = image_archive(tmp_path / "bomb.tar", [bomb], diff_ids=[sha(b"never reached")])
    code = textwrap.dedent(
        """
        import resource, sys
        from labkit import archives
        from labkit.errors import BadInput
        try:
            archives.import_image(sys.argv[1])
        except BadInput as e:
            print(e)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), LABKIT_STATE_DIR=str(state_dir))
    env.pop("LABKIT_IMAGE_MAX_BYTES", None)
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    message, peak_kib = out.stdout.splitlines()
    assert "past 1 GiB uncompressed" in message and "LABKIT_IMAGE_MAX_BYTES=2G" in message
    assert int(peak_kib) < 256 << 10, f"peak memory {int(peak_kib) >> 10} MiB"
    assert time.monotonic() - start < 120
    assert not (state_dir / "images").exists()  # a refused first import leaves no store


def test_the_bounds_are_settable_and_named(store, tmp_path, monkeypatch):
    path = image_archive(tmp_path / "a.tar", [BASE, TOP], name="bounded:1")
    monkeypatch.setenv("LABKIT_IMAGE_MAX_ENTRIES", "5")
    message = refused(path)
    assert "5 tar entries" in message and "LABKIT_IMAGE_MAX_ENTRIES=10" in message
    monkeypatch.setenv("LABKIT_IMAGE_MAX_BYTES", "8K")
    message = refused(path, max_entries=1000)
    assert "past 8 KiB uncompressed" in message and "LABKIT_IMAGE_MAX_BYTES=16K" in message
    monkeypatch.setenv("LABKIT_IMAGE_MAX_BYTES", "a lot")
    assert "LABKIT_IMAGE_MAX_BYTES 'a lot' is not a positive number" in refused(path)
    (image,) = archives.import_image(path, max_bytes="1M", max_entries=1000)
    assert image.names == ["bounded:1"]


def test_the_import_command_takes_the_bounds(store, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LABKIT_IMAGE_MAX_BYTES", raising=False)
    path = image_archive(tmp_path / "a.tar", [BASE, TOP], name="bounded:1")
    assert cli.main(["image", "import", str(path), "--max-bytes", "4K"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "past 4 KiB uncompressed" in err
    assert cli.main(["image", "import", str(path), "--max-bytes", "1M", "--max-entries", "99"]) == 0
    assert "bounded:1" in capsys.readouterr().out


def test_a_gzip_archive_cannot_claim_more_than_the_size_bound(store, tmp_path, monkeypatch):
    files = archive_files("legacy", [BASE], "padded:1")
    files["padding"] = bytes(2 << 20)  # 2 MiB of zeros: a few KiB of gzip
    path = tmp_path / "padded.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert path.stat().st_size < 64 << 10
    monkeypatch.setenv("LABKIT_IMAGE_MAX_BYTES", "1M")
    assert "the archive's member 'padding' takes the import past 1 MiB" in refused(path)


def test_an_impossible_time_is_one_sentence(store, tmp_path):
    blob = tar_of(entry("f", data="x", mtime=10**20))
    assert "holds an impossible value" in refused(image_archive(tmp_path / "t.tar", [blob]))


# --- compression: xz and zstd read, bzip2 refused for what it is -----------------------------


def test_xz_and_zstd_layers_import(state_dir, tmp_path):
    zstandard = pytest.importorskip("zstandard")
    blobs = [lzma.compress(BASE), zstandard.ZstdCompressor().compress(TOP)]
    files = archive_files("oci", blobs, config=config_for([BASE, TOP]))
    path = write_archive(files, tmp_path / "xz-zstd")
    (image,) = archives.import_image(path)
    assert image.diff_ids == [sha(BASE), sha(TOP)]


def test_unsupported_compression_is_named(store, tmp_path, monkeypatch):
    message = refused(image_archive(tmp_path / "a.tar", [bz2.compress(BASE)], diff_ids=[sha(BASE)]))
    assert "bzip2-compressed; not supported" in message
    monkeypatch.setattr(layers, "_zstandard", lambda: None)  # a host without the package
    blob = b"\x28\xb5\x2f\xfd" + bytes(64)
    message = refused(image_archive(tmp_path / "b.tar", [blob], diff_ids=[sha(BASE)]))
    assert "zstd-compressed; not supported" in message and "pip install zstandard" in message


def test_a_truncated_gzip_layer_is_named(store, tmp_path):
    blob = gzip.compress(BASE)[:-100]
    message = refused(image_archive(tmp_path / "t.tar", [blob], diff_ids=[sha(BASE)]))
    assert "is not valid gzip" in message and "truncated" in message


# --- all or nothing ---------------------------------------------------------------------------


def test_an_archive_whose_second_image_is_refused_installs_neither(store, canary, tmp_path):
    evil = tar_of(entry("esc", "symlink", link=str(canary.root)), entry("esc/pwned"))
    files, manifest = {}, []
    for i, (name, layer) in enumerate((("good:1", TOP), ("evil:1", evil))):
        config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}).encode()
        config_rel = sha(config).split(":")[1] + ".json"
        files[config_rel], files[f"{i}/layer.tar"] = config, layer
        manifest.append({"Config": config_rel, "RepoTags": [name], "Layers": [f"{i}/layer.tar"]})
    files["manifest.json"] = json.dumps(manifest).encode()
    assert "runs through the symlink 'esc'" in refused(write_archive(files, tmp_path / "two.tar"))
    assert [n for im in images.list_images() for n in im.names] == ["base:1"]


def test_concurrent_imports_lose_no_name(store, tmp_path):
    count = 6
    for who in "ab":
        for i in range(count):
            config = json.dumps(
                {"rootfs": {"type": "layers", "diff_ids": [sha(BASE)]}, "who": f"{who}{i}"}
            ).encode()
            write_archive(
                archive_files("legacy", [BASE], f"race/{who}:{i}", config=config),
                tmp_path / f"{who}{i}.tar",
            )
    # Each child reads the names file slowly, so without the lock both would read the same
    # names, and the second write would drop the first one's new name.
    code = textwrap.dedent(
        """
        import sys, time
        from labkit import archives, images
        read = images._repositories
        images._repositories = lambda: (read(), time.sleep(0.05))[0]
        for path in sys.argv[1:]:
            archives.import_image(path)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *(str(tmp_path / f"{who}{i}.tar") for i in range(count))],
            env=env,
        )
        for who in "ab"
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    names = {n for im in images.list_images() for n in im.names}
    assert names == {"base:1"} | {f"race/{w}:{i}" for w in "ab" for i in range(count)}


# --- export writes only where asked ----------------------------------------------------------


@pytest.mark.parametrize("dest_name", ["out.tar", "outdir"])
def test_export_does_not_write_through_a_planted_link(store, canary, tmp_path, dest_name):
    target = tmp_path / "exports"
    target.mkdir()
    # Links planted at the temporary names an exporter might pick (the old one among them).
    for planted in (f".{dest_name}.exporting", f".{dest_name}.tmp", f"{dest_name}.new"):
        os.symlink(canary.dir if dest_name == "outdir" else canary.secret, target / planted)
    canary.before = snapshot(canary.root.parent)
    dest = archives.export_image("base:1", target / dest_name)
    assert not dest.is_symlink()
    assert dest.is_file() if dest_name == "out.tar" else (dest / "index.json").is_file()
    assert sorted(p.name for p in target.iterdir() if p.is_symlink()) == sorted(
        [f".{dest_name}.exporting", f".{dest_name}.tmp", f"{dest_name}.new"]
    )
    assert len(list(target.iterdir())) == 4  # the export and the planted links: no leftovers


def test_export_refuses_a_destination_that_is_a_link(store, canary, tmp_path):
    empty = canary.root.parent / "empty"
    empty.mkdir()
    canary.before = snapshot(canary.root.parent)
    for dest, link_to in (("to-dir", empty), ("dangling.tar", tmp_path / "nowhere")):
        os.symlink(link_to, tmp_path / dest)
        with pytest.raises(BadInput, match="already exists"):
            archives.export_image("base:1", tmp_path / dest)
    assert list(empty.iterdir()) == []
