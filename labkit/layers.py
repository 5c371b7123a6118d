"""Image layers: tar archives of one filesystem change, applied to and read from overlay dirs.

An image layer is a tar of what one step changed: files added or modified, and deletions. Tar has
no way to say "deleted", so the OCI image spec marks a deletion with an empty file named
``.wh.NAME`` and a directory that hides everything below it with ``DIR/.wh..wh..opq``. overlayfs
says the same two things differently (a 0/0 character device, the xattr
``trusted.overlay.opaque=y``), so applying a layer into a directory that will be an overlay
lowerdir converts one form into the other, and writing a layer from an upper dir converts back
(containerd does exactly this).

A layer is named by its *DiffID*, the sha256 of the uncompressed tar. A tar is also the classic
way to attack whoever extracts it, so every entry is checked before anything is written: see
``check_member``. Python's ``tarfile.data_filter`` runs as a second line of defence.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO

from .errors import BadInput
from .overlay import is_opaque, is_whiteout, make_opaque, make_whiteout

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

_CHUNK = 1 << 20


def digest_file(path: str | os.PathLike) -> str:
    """The content address of a file: ``sha256:<hex>``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI ChainIDs of a layer stack: one id per prefix of the stack, bottom first.

    ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
    Two images that share their bottom layers share those ChainIDs.
    """
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            text = f"{chain[-1]} {diff_id}".encode()
            chain.append("sha256:" + hashlib.sha256(text).hexdigest())
    return chain


# --- reading a layer: checks, then apply ------------------------------------------------------


def _clean_name(name: str) -> str:
    """The entry's path relative to the layer root ("./etc/" -> "etc"), or a BadInput."""
    if name.startswith("/"):
        raise BadInput(
            f"the layer holds an absolute path {name!r}: layer entries must be relative to the "
            "layer root; rebuild the archive with relative names."
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(
            f"the layer holds the path {name!r}, which climbs out of the layer with '..': "
            "refusing it; rebuild the archive without '..' in names."
        )
    return "/".join(parts)


def _inside(rel_target: str) -> bool:
    """Does a path, read relative to the layer root, stay inside it (lexically)?"""
    norm = posixpath.normpath(rel_target)
    return not norm.startswith("/") and norm != ".." and not norm.startswith("../")


def check_member(member: tarfile.TarInfo) -> str:
    """Refuse an entry that could write outside the layer or create a device; return its path."""
    rel = _clean_name(member.name)
    if member.ischr() or member.isblk() or member.isfifo():
        kind = (
            "character device" if member.ischr() else "block device" if member.isblk() else "fifo"
        )
        raise BadInput(
            f"the layer holds a {kind} {member.name!r}: labkit refuses device nodes in image "
            "layers (a container gets its /dev from the runtime); remove it from the image."
        )
    if member.issym():
        target = member.linkname
        # An absolute target is read from the container's root, which is the layer root here.
        resolved = (
            target.lstrip("/")
            if target.startswith("/")
            else posixpath.join(posixpath.dirname(rel), target)
        )
        if not target or not _inside(resolved):
            raise BadInput(
                f"the layer holds a symlink {member.name!r} -> {target!r} that points outside the "
                "layer: refusing it; links must stay inside the image's root."
            )
    if member.islnk():
        if member.linkname.startswith("/") or not _inside(member.linkname):
            raise BadInput(
                f"the layer holds a hard link {member.name!r} -> {member.linkname!r} that points "
                "outside the layer: refusing it; hard links must name a file in the same layer."
            )
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise BadInput(
            f"the layer holds {member.name!r} of an unknown tar type {member.type!r}: refusing it."
        )
    return rel


def _within(dest: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == dest or real.startswith(dest + os.sep)


class _LayerFilter:
    """A tarfile extraction filter: check each entry, set whiteouts aside, extract the rest as-is."""

    def __init__(self) -> None:
        self.whiteouts: list[str] = []  # "dir/name" to delete
        self.opaque: list[str] = []  # "dir" to mark opaque

    def __call__(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        rel = check_member(member)
        if not rel:
            return None  # the layer root itself ("./"): the target dir already exists
        parent, base = posixpath.split(rel)
        if base == OPAQUE_MARKER:
            self.opaque.append(parent)
            return None
        if base.startswith(WHITEOUT_PREFIX):
            name = base[len(WHITEOUT_PREFIX) :]
            if name in ("", ".", ".."):
                raise BadInput(
                    f"the layer holds the malformed whiteout {member.name!r}: refusing it."
                )
            self.whiteouts.append(posixpath.join(parent, name))
            return None
        # The stdlib's own check sees what we cannot see from the name alone: a symlink already
        # extracted into the path (a/ -> /etc, then a/passwd). Its rewritten copy is only a probe;
        # the entry is extracted unchanged, because owners and modes are part of the image.
        probe = member.replace(name=rel, deep=False)
        if member.issym():
            probe = member.replace(name=rel, linkname="placeholder", deep=False)
        try:
            tarfile.data_filter(probe, dest)
        except tarfile.FilterError as e:
            raise BadInput(
                f"the layer entry {member.name!r} would be written outside the layer ({e}): refusing it."
            ) from None
        return member.replace(name=rel, deep=False)


def apply_layer(tar: str | os.PathLike | BinaryIO, dest: str | os.PathLike) -> None:
    """Extract the layer tar into the directory *dest*, OCI whiteouts becoming overlay ones.

    *dest* is a lowerdir-to-be (or an upper dir). Refuses hostile entries with a BadInput; the
    caller extracts into a fresh directory and throws it away on error.
    """
    dest = os.path.realpath(dest)
    layer_filter = _LayerFilter()
    try:
        if isinstance(tar, (str, os.PathLike)):
            archive = tarfile.open(tar, "r:*")
        else:
            archive = tarfile.open(fileobj=tar, mode="r|*")
        with archive:
            archive.copybufsize = _CHUNK  # tarfile copies in 16 KiB pieces unless told otherwise
            archive.errorlevel = 2  # an entry that cannot be extracted fails the layer, not a warning
            # numeric_owner: the ids in the layer are the container's, not names on this host.
            archive.extractall(dest, filter=layer_filter, numeric_owner=True)
    except tarfile.ReadError:
        raise BadInput(
            "the layer is not a readable tar archive: give an uncompressed or gzip tar."
        ) from None
    except (tarfile.TarError, KeyError) as e:
        # e.g. a hard link to a name the layer never had
        raise BadInput(f"the layer cannot be applied ({e}): the archive is corrupt.") from None
    for rel in layer_filter.opaque:
        path = os.path.join(dest, rel)
        os.makedirs(path, mode=0o755, exist_ok=True)
        if not _within(dest, path):
            raise BadInput(
                f"the layer's opaque marker in {rel!r} points outside the layer: refusing it."
            )
        make_opaque(path)
    for rel in layer_filter.whiteouts:
        path = os.path.join(dest, rel)
        parent = os.path.dirname(path)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        if not _within(dest, parent):
            raise BadInput(
                f"the layer's whiteout for {rel!r} points outside the layer: refusing it."
            )
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        make_whiteout(path)


# --- writing a layer: a deterministic tar of a directory ------------------------------------


def _base_info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    # Fixed names and times make the same content give the same bytes, hence the same digest.
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _whiteout_info(rel: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mode, info.mtime, info.uname, info.gname = 0o644, 0, "", ""
    return info


def write_layer(root: str | os.PathLike, out: BinaryIO) -> None:
    """Write the directory *root* (a rootfs, or an overlay upper dir) as a layer tar to *out*.

    Entries are sorted and carry fixed times, so equal trees give byte-equal tars. Overlay
    whiteouts become ``.wh.NAME`` files and opaque directories get a ``.wh..wh..opq`` entry.
    """
    root = Path(root)
    seen: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) -> first name: hard links
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for path in _depth_first(root):
            _add_entry(archive, path, path.relative_to(root).as_posix(), seen)


def _add_entry(archive: tarfile.TarFile, path: Path, rel: str, seen: dict) -> None:
    st = os.lstat(path)
    if is_whiteout(st):
        archive.addfile(
            _whiteout_info(posixpath.join(posixpath.dirname(rel), WHITEOUT_PREFIX + path.name))
        )
        return
    info = _base_info(rel, st)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
        if is_opaque(path):
            archive.addfile(_whiteout_info(f"{rel}/{OPAQUE_MARKER}"))
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        archive.addfile(info)
    elif stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in seen:  # a second name for the same inode: a hard link
            info.type, info.linkname = tarfile.LNKTYPE, seen[key]
            archive.addfile(info)
            return
        seen[key] = rel
        info.size = st.st_size
        with open(path, "rb") as f:
            archive.addfile(info, f)
    elif not stat.S_ISSOCK(st.st_mode):  # a socket is a live endpoint, not content: skip it
        raise BadInput(
            f"{path} is a device node or fifo: a layer cannot carry it (labkit refuses them on "
            "import); delete it before writing the layer."
        )


def _depth_first(directory: Path):
    """Every path below *directory*, sorted, each directory followed by its contents (as tar does)."""
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        yield Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _depth_first(Path(entry.path))


def write_layer_file(root: str | os.PathLike, dest: str | os.PathLike) -> str:
    """Write *root* as a layer tar to the file *dest*; return its DiffID."""
    with open(dest, "wb") as out:
        write_layer(root, out)
    return digest_file(dest)
