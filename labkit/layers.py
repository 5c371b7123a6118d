"""Image layers: tar archives of one filesystem change, applied to and read from overlay dirs.

An image layer is a tar of what one step changed: files added or modified, and deletions. Tar has
no way to say "deleted", so the OCI image spec marks a deletion with an empty file named
``.wh.NAME`` and a directory that hides everything below it with ``DIR/.wh..wh..opq``. overlayfs
says the same two things differently (a 0/0 character device, the xattr
``trusted.overlay.opaque=y``), so applying a layer into a directory that will be an overlay
lowerdir converts one form into the other, and writing a layer from an upper dir converts back
(containerd does exactly this).

A layer is named by its *DiffID*, the sha256 of the uncompressed tar. A tar is also the classic
way to attack whoever extracts it, and labkit extracts as root, so containment rests on no single
check, and none of them on ``realpath`` of names the archive itself created:

1. the names alone (``check_member``): no absolute path, no ``..``, no device node, no symlink
   pointing out of the layer, no name longer than Linux allows;
2. Python's ``tarfile.data_filter`` where it exists (3.11.4+), an extra line only: its realpath
   check is what CVE-2025-4517 defeats;
3. the walk (``_Tree``): every path is opened from the layer root one component at a time with
   ``openat(O_DIRECTORY|O_NOFOLLOW)``, so a path through any symlink, made by this layer or
   already below the destination, is refused; files are created ``O_CREAT|O_EXCL|O_NOFOLLOW``,
   hard links may only name a regular file this layer made earlier, and whiteouts and opaque
   markers go through the same walk before anything is made.

Layer blobs are decompressed (gzip, xz, zstd) at most 1 MiB per step, and one import's bytes and
entries are capped (``Bounds``), because a 10 MB gzip can hold 10 GiB.
"""

from __future__ import annotations

import errno
import hashlib
import lzma
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import BadInput, show
from .overlay import OPAQUE_XATTR, is_opaque, is_whiteout

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

_CHUNK = 1 << 20


def digest(data: bytes) -> str:
    """The content address of *data*: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


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
            chain.append(digest(text))
    return chain


# --- bounds: what one import may unpack -------------------------------------------------------

# A small gzip can hold gigabytes and a small tar millions of entries, so one import (all the
# layers of every image in an archive) is capped. The store keeps each layer twice (its tar and
# the applied directory), so 1 GiB of layers is 2 GiB of disk: room on the 2 GiB lab VM's disk,
# and memory is not the limit, because nothing is ever decompressed whole.
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_MAX_ENTRIES = 200_000
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _setting(env: str, given: int | str | None, default: int) -> int:
    value = given if given is not None else os.environ.get(env) or default
    match = _SIZE.match(str(value)) if not isinstance(value, bool) else None
    if match is None or int(match.group(1)) == 0:
        raise BadInput(
            f"{env} {show(str(value))} is not a positive number: write a count, or bytes with "
            "an optional K, M, G or T (e.g. 2G)."
        )
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _size(n: int, unit: str = " {}iB") -> str:
    """1073741824 -> "1 GiB" (or "1G" with unit="{}", as the settings are written)."""
    for letter, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit.format(letter)}"
    return f"{n} bytes" if unit != "{}" else str(n)


@dataclass
class Bounds:
    """How much one import may unpack, summed over its layers: bytes of layer tars, tar entries.

    Defaults: 1 GiB and 200,000 entries; the environment (``LABKIT_IMAGE_MAX_BYTES=4G``,
    ``LABKIT_IMAGE_MAX_ENTRIES=500000``) or arguments raise them.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES
    bytes: int = 0
    entries: int = 0

    @classmethod
    def from_env(cls, max_bytes: int | str | None = None, max_entries: int | str | None = None):
        return cls(
            _setting("LABKIT_IMAGE_MAX_BYTES", max_bytes, DEFAULT_MAX_BYTES),
            _setting("LABKIT_IMAGE_MAX_ENTRIES", max_entries, DEFAULT_MAX_ENTRIES),
        )

    def add_bytes(self, n: int, what: str) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise BadInput(
                f"{what} takes the import past {_size(self.max_bytes)} uncompressed, labkit's "
                "limit for one import (a small gzip can hold gigabytes): if the image really is "
                f"that big, raise it with LABKIT_IMAGE_MAX_BYTES={_size(2 * self.max_bytes, '{}')}"
                " or 'labkit image import --max-bytes'."
            )

    def add_entry(self, what: str) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise BadInput(
                f"{what} takes the import past {self.max_entries:,} tar entries, labkit's limit "
                "for one import: if the image really holds that many files, raise it with "
                f"LABKIT_IMAGE_MAX_ENTRIES={2 * self.max_entries} or 'labkit image import "
                "--max-entries'."
            )


# --- decompressing a layer blob, a bounded piece at a time ------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MEMLIMIT = 256 << 20  # xz's default -9 needs 65 MiB; a header asking for more is refused
_ZSTD_WINDOW = 128 << 20  # zstd's own default limit for a frame's window


def compression(first: bytes) -> str | None:
    """The compression a blob starts with: "gzip", "xz", "zstd", "bzip2", or None (a plain tar)."""
    for kind, magic in (
        ("gzip", _GZIP_MAGIC),
        ("xz", _XZ_MAGIC),
        ("zstd", _ZSTD_MAGIC),
        ("bzip2", _BZIP2_MAGIC),
    ):
        if first.startswith(magic):
            return kind
    return None


def _inflate(chunks: Iterator[bytes], new: Callable) -> Iterator[bytes]:
    """Decompress *chunks* with zlib or lzma objects, never more than _CHUNK bytes per call.

    A bomb of 10 MB that expands to 10 GiB thus never holds more than one piece in memory.
    gzip and xz allow several streams back to back (zeros may pad the end), so a stream that
    ends is followed by a new decompressor for whatever comes next.
    """
    d = new()
    for data in chunks:
        while True:
            if d.eof:
                if not data.strip(b"\0"):
                    break
                d = new()
            out = d.decompress(data, _CHUNK)
            if out:
                yield out
            # zlib hands back the input it did not use; lzma keeps it and wants b"" next
            data = d.unused_data if d.eof else getattr(d, "unconsumed_tail", b"")
            if not data and (d.eof or len(out) < _CHUNK):
                break
    if not d.eof:
        raise EOFError("the compressed stream ends early")


def _read_all(stream: BinaryIO, first: bytes, sha) -> Iterator[bytes]:
    chunk = first
    while chunk:
        sha.update(chunk)
        yield chunk
        chunk = stream.read(_CHUNK)


class _HashedReader:
    """A stream whose bytes are hashed as a decompressor reads them (the blob's digest)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.pending = chunks, b""

    def read(self, size: int = _CHUNK) -> bytes:
        if not self.pending:
            self.pending = next(self.chunks, b"")
        size = size if size >= 0 else len(self.pending)
        data, self.pending = self.pending[:size], self.pending[size:]
        return data


def _zstandard():
    """The zstandard package for OCI's tar+zstd layers, or None where it is not installed.

    Imported at the first zstd layer, not with labkit: it takes 2 ms of every ``labkit run``.
    """
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def _uncompressed(kind: str | None, raw: Iterator[bytes]) -> Iterator[bytes]:
    if kind is None:
        return raw
    if kind == "gzip":
        return _inflate(raw, lambda: zlib.decompressobj(wbits=31))
    if kind == "xz":
        return _inflate(raw, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ, _XZ_MEMLIMIT))
    zstandard = _zstandard()
    if kind == "zstd" and zstandard is not None:
        reader = zstandard.ZstdDecompressor(max_window_size=_ZSTD_WINDOW).stream_reader(
            _HashedReader(raw), read_size=_CHUNK, read_across_frames=True
        )
        return iter(lambda: reader.read(_CHUNK), b"")
    raise BadInput(
        f"{kind}-compressed; not supported: labkit reads layers that are plain tars or "
        "compressed with gzip, xz" + (" or zstd" if zstandard else "") + "; save the image with "
        "one of those" + ("." if zstandard else " (or pip install zstandard for zstd).")
    )


def _zstd_errors(kind: str | None) -> tuple:
    zstandard = _zstandard() if kind == "zstd" else None
    return (zstandard.ZstdError,) if zstandard is not None else ()


def uncompress(stream: BinaryIO, out: BinaryIO, bounds: Bounds, what: str) -> tuple[str, str]:
    """Copy a layer blob from *stream* to *out* uncompressed; return (blob digest, DiffID).

    Reads 1 MiB at a time and writes at most 1 MiB per decompression step, counting every
    uncompressed byte against *bounds* before it is written.
    """
    first = stream.read(_CHUNK)
    kind = compression(first)
    diff_hash = hashlib.sha256()
    # A plain layer's digest is its DiffID: hash it once (hashing is most of the cost).
    blob_hash = hashlib.sha256() if kind else diff_hash
    try:
        pieces = _uncompressed(kind, _read_all(stream, first, blob_hash))
    except BadInput as e:
        raise BadInput(f"{what} is {e}") from None
    try:
        for piece in pieces:
            bounds.add_bytes(len(piece), what)
            if kind:
                diff_hash.update(piece)
            out.write(piece)
    except (zlib.error, lzma.LZMAError, EOFError, *_zstd_errors(kind)) as e:
        raise BadInput(
            f"{what} is not valid {kind} ({show(str(e), 60, quote=False)}): the archive is "
            "corrupt or truncated; save it again."
        ) from None
    return "sha256:" + blob_hash.hexdigest(), "sha256:" + diff_hash.hexdigest()


# --- reading a layer: checks, then apply ------------------------------------------------------

_PATH_MAX = 4095  # bytes in a Linux path, without its final NUL
_NAME_MAX = 255  # bytes in one component


def clean_name(name: str, what: str = "the layer holds the path") -> str:
    """The entry's path relative to the layer root ("./etc/" -> "etc"), or a BadInput."""
    if "\0" in name:
        raise BadInput(f"{what} {show(name)}, which holds a NUL byte: no file can have that name.")
    if name.startswith("/"):
        raise BadInput(
            f"{what} {show(name)}, which is absolute: layer entries must be relative to the "
            "layer root; rebuild the archive with relative names."
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(
            f"{what} {show(name)}, which climbs out of the layer with '..': refusing it; "
            "rebuild the archive without '..' in names."
        )
    rel = "/".join(parts)
    encoded = os.fsencode(rel)
    if len(encoded) > _PATH_MAX or any(len(os.fsencode(p)) > _NAME_MAX for p in parts):
        raise BadInput(
            f"{what} {show(name)}, longer than Linux allows ({_PATH_MAX} bytes a path, "
            f"{_NAME_MAX} a name): refusing it."
        )
    return rel


def _inside(rel_target: str) -> bool:
    """Does a path, read relative to the layer root, stay inside it (lexically)?"""
    norm = posixpath.normpath(rel_target)
    return not norm.startswith("/") and norm != ".." and not norm.startswith("../")


def check_member(member: tarfile.TarInfo) -> str:
    """Refuse an entry that could write outside the layer or create a device; return its path.

    The first line of defence, from the names alone; ``_Extract`` then walks the real tree.
    """
    rel = clean_name(member.name)
    if member.ischr() or member.isblk() or member.isfifo():
        kind = (
            "character device" if member.ischr() else "block device" if member.isblk() else "fifo"
        )
        raise BadInput(
            f"the layer holds a {kind} {show(member.name)}: labkit refuses device nodes in image "
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
        if not target or "\0" in target or not _inside(resolved):
            raise BadInput(
                f"the layer holds a symlink {show(member.name)} -> {show(target)} that points "
                "outside the layer: refusing it; links must stay inside the image's root."
            )
    if member.islnk():
        clean_name(member.linkname, f"the layer's hard link {show(member.name)} names")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise BadInput(
            f"the layer holds {show(member.name)} of an unknown tar type {member.type!r}: "
            "refusing it."
        )
    if member.issparse():
        raise BadInput(
            f"the layer holds the sparse file {show(member.name)}: labkit does not unpack sparse "
            "files (a small tar could make a huge one); rebuild the layer without --sparse."
        )
    if not (0 <= member.uid < 1 << 32 and 0 <= member.gid < 1 << 32):
        raise BadInput(
            f"the layer entry {show(member.name)} has the impossible owner "
            f"{member.uid}:{member.gid}: the archive is corrupt."
        )
    return rel


def _filter_probe(member: tarfile.TarInfo, rel: str, dest: str) -> None:
    """Python's own extraction filter (3.11.4+), as one more line, never the only one: it is
    the check CVE-2025-4517 defeats. Its rewritten copy is only a probe; owners and modes are
    part of the image, so the entry is extracted as the archive has it."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:
        return
    # It refuses absolute symlinks, which images use (/bin/sh -> /bin/busybox): checked above.
    if member.issym():
        probe = member.replace(name=rel, linkname="placeholder", deep=False)
    elif member.islnk():
        probe = member.replace(name=rel, linkname=clean_name(member.linkname), deep=False)
    else:
        probe = member.replace(name=rel, deep=False)
    try:
        data_filter(probe, dest)
    except tarfile.FilterError as e:
        raise BadInput(
            f"the layer entry {show(member.name)} would be written outside the layer "
            f"({type(e).__name__}): refusing it."
        ) from None


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_DIRS = 64  # directory fds kept open while a layer is applied
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Tree:
    """The layer's directory, reached only through directory fds.

    Every path is walked from the layer root one component at a time with
    ``openat(O_DIRECTORY|O_NOFOLLOW)``, so a component that is a symlink (made by this layer, or
    already below the destination) fails the walk instead of leading anywhere: no name, however
    long and however many links it runs through, can reach outside.
    """

    def __init__(self, dest: str) -> None:
        self.root = os.open(dest, _O_DIR)
        # Directories already walked to, by path: entries come back to them. A directory is
        # only ever removed by a whiteout, which calls forget().
        self._dirs: dict[str, int] = {}

    def close(self) -> None:
        self.forget()
        os.close(self.root)

    def forget(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def parent(self, rel: str, name: str) -> tuple[int, str]:
        """An fd of *rel*'s parent directory (made if missing, as tar does), and *rel*'s base."""
        head, _, base = rel.rpartition("/")
        if not head:
            return self.root, base
        fd = self._dirs.get(head)
        if fd is None:
            if len(self._dirs) >= _OPEN_DIRS:
                self.forget()
            fd = self._dirs[head] = self.walk(head, name)
        return fd, base

    def walk(self, rel: str, name: str, create: bool = True) -> int:
        """A new fd of the directory *rel*; the caller closes it."""
        fd = os.dup(self.root)
        done = []
        try:
            for part in rel.split("/") if rel else []:
                done.append(part)
                try:
                    next_fd = os.open(part, _O_DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise BadInput(
                            f"the layer entry {show(name)} needs {show('/'.join(done))}, which "
                            "the layer does not hold: the archive is corrupt."
                        ) from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, _O_DIR, dir_fd=fd)
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    what = "symlink" if _is_link(part, fd) else "file, not a directory,"
                    raise BadInput(
                        f"the layer entry {show(name)} runs through the {what} "
                        f"{show('/'.join(done))}: a layer may not write through a link (it could "
                        "lead outside the layer); refusing it."
                    ) from None
                os.close(fd)
                fd = next_fd
            return fd
        except BaseException:
            os.close(fd)
            raise


def _is_link(name: str, dir_fd: int) -> bool:
    return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)


class _Extract:
    """Apply one layer's entries, in order, below the directory *dest*."""

    def __init__(self, dest: str, bounds: Bounds, blob: int | None) -> None:
        self.dest, self.bounds, self.blob = dest, bounds, blob  # blob: the tar's fd, if a file
        self.tree = _Tree(dest)
        self.files: set[str] = set()  # regular files this layer made: the only hard link targets
        self.dirs: list[tuple[str, int]] = []  # (path, mtime): set last, children change it

    def add(self, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        self.bounds.add_entry(f"the layer entry {show(member.name)}")
        rel = check_member(member)
        if not rel:
            return  # the layer root itself ("./"): the target dir already exists
        head, _, base = rel.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(member, rel, head, base)
            return
        fd, base = self.tree.parent(rel, member.name)
        _filter_probe(member, rel, self.dest)
        if member.isdir():
            self._mkdir(fd, base, rel, member)
        elif member.isreg():
            self._replace(fd, base, rel, member)
            self._write(fd, base, member, archive)
            self.files.add(rel)
        elif member.issym():
            self._replace(fd, base, rel, member)
            os.symlink(member.linkname, base, dir_fd=fd)
            os.chown(base, member.uid, member.gid, dir_fd=fd, follow_symlinks=False)
        else:
            self._hardlink(fd, base, rel, member)

    def _whiteout(self, member: tarfile.TarInfo, rel: str, head: str, base: str) -> None:
        """``.wh.NAME`` deletes NAME of the layers below; ``.wh..wh..opq`` hides all of them.

        Checked whole before anything is made: then the walk, which refuses links, makes the
        parent directories inside the layer only.
        """
        if not member.isreg() or member.size:
            raise BadInput(
                f"the layer's whiteout {show(member.name)} is not an empty file: refusing it."
            )
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            if base != OPAQUE_MARKER:
                return  # other .wh..wh. names are aufs bookkeeping, skipped as Docker does
            fd = self.tree.walk(head, member.name)
            try:
                _filter_probe(member, rel, self.dest)
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            return
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            raise BadInput(
                f"the layer holds the malformed whiteout {show(member.name)}: refusing it."
            )
        fd, _ = self.tree.parent(rel, member.name)
        _filter_probe(member, rel, self.dest)
        gone = posixpath.join(head, name)
        self._replace(fd, name, gone, member, whiteout=True)
        # The overlay form of a deletion: a 0/0 character device (see overlay.make_whiteout).
        os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=fd)
        self.tree.forget()  # NAME may have been a directory with open fds below it

    def _replace(self, fd: int, base: str, rel: str, member, whiteout: bool = False) -> None:
        """A later entry replaces an earlier one of the same name, as tar does; never a dir."""
        try:
            st = os.stat(base, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        self.files.discard(rel)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(base, dir_fd=fd)
        elif whiteout:
            shutil.rmtree(base, dir_fd=fd)  # fd-based: it never follows a link either
            self.files = {f for f in self.files if not f.startswith(rel + "/")}
        else:
            raise BadInput(
                f"the layer entry {show(member.name)} replaces a directory of the same name: "
                "refusing it; a layer holds each path once."
            )

    def _mkdir(self, fd: int, base: str, rel: str, member: tarfile.TarInfo) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=fd)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(base, dir_fd=fd, follow_symlinks=False).st_mode):
                self._replace(fd, base, rel, member)
                os.mkdir(base, 0o700, dir_fd=fd)
        new = os.open(base, _O_DIR, dir_fd=fd)
        try:
            self._own(new, member)
        finally:
            os.close(new)
        self.dirs.append((rel, member.mtime))

    def _write(self, fd: int, base: str, member, archive: tarfile.TarFile) -> None:
        # O_EXCL|O_NOFOLLOW: a new file, never an old one nor a link's target; 0600 until chmod.
        out = os.open(base, _O_NEW, 0o600, dir_fd=fd)
        try:
            if self.blob is not None:
                self._send(out, member)
            else:
                with open(out, "wb", closefd=False) as f:
                    shutil.copyfileobj(archive.extractfile(member), f, _CHUNK)
            self._own(out, member)
            os.utime(out, (member.mtime, member.mtime))
        finally:
            os.close(out)

    def _send(self, out: int, member: tarfile.TarInfo) -> None:
        # The kernel copies from the layer blob to the new file: no pass through Python.
        offset, left = member.offset_data, member.size
        while left:
            sent = os.sendfile(out, self.blob, offset, min(left, 1 << 30))
            if not sent:
                raise BadInput(
                    f"the layer ends inside the file {show(member.name)}: the archive is "
                    "truncated; save it again."
                )
            offset, left = offset + sent, left - sent

    @staticmethod
    def _own(fd: int, member: tarfile.TarInfo) -> None:
        os.fchown(fd, member.uid, member.gid)  # first: chown clears setuid bits
        os.fchmod(fd, member.mode & 0o7777)

    def _hardlink(self, fd: int, base: str, rel: str, member: tarfile.TarInfo) -> None:
        target = clean_name(member.linkname)
        if target not in self.files:
            raise BadInput(
                f"the layer's hard link {show(member.name)} -> {show(member.linkname)} names no "
                "regular file this layer made before it: refusing it; a hard link must point to "
                "an earlier file of the same layer."
            )
        head, _, target_base = target.rpartition("/")
        src = self.tree.walk(head, member.name, create=False)
        try:
            st = os.stat(target_base, dir_fd=src, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise BadInput(
                    f"the layer's hard link {show(member.name)} -> {show(member.linkname)} names "
                    "something that is no longer a regular file: refusing it."
                )
            self._replace(fd, base, rel, member)
            os.link(target_base, base, src_dir_fd=src, dst_dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(src)
        self.files.add(rel)

    def finish(self) -> None:
        # Directory times last: every entry below a directory changed its mtime.
        for rel, mtime in reversed(self.dirs):
            fd = self.tree.walk(rel, rel, create=False)
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


def apply_layer(
    tar: str | os.PathLike | BinaryIO, dest: str | os.PathLike, bounds: Bounds | None = None
) -> None:
    """Extract the uncompressed layer tar into the directory *dest*, OCI whiteouts becoming
    overlay ones, counting entries against *bounds*.

    *dest* is a lowerdir-to-be (or an upper dir). Every entry is checked by name
    (``check_member``), then by Python's filter where it has one, then created by walking from
    *dest* with directory fds that refuse links, with ``O_CREAT|O_EXCL|O_NOFOLLOW``: a gap in
    one check is caught by the next. Refuses hostile entries with a BadInput; the caller
    extracts into a fresh directory and throws it away on error.
    """
    bounds = bounds if bounds is not None else Bounds.from_env()
    dest = os.path.realpath(dest)
    name = "?"
    try:
        if isinstance(tar, (str, os.PathLike)):
            archive = tarfile.open(tar, "r:")
        else:
            archive = tarfile.open(fileobj=tar, mode="r:")
        with archive:
            from_file = isinstance(tar, (str, os.PathLike))
            extract = _Extract(dest, bounds, archive.fileobj.fileno() if from_file else None)
            try:
                while (member := archive.next()) is not None:
                    name = member.name
                    # tarfile keeps every header it read; a layer of a million entries must not
                    archive.members.clear()
                    extract.add(member, archive)
                extract.finish()
            finally:
                extract.tree.close()
    except BadInput:
        raise
    except (OverflowError, ValueError) as e:  # e.g. a time or an id no syscall can take
        raise BadInput(
            f"the layer entry {show(name)} holds an impossible value "
            f"({show(str(e), 60, quote=False)}): the archive is corrupt."
        ) from None
    except tarfile.ReadError as e:
        where = f" after the entry {show(name)}" if name != "?" else ""
        raise BadInput(
            f"the layer is not a readable tar archive{where} ({show(str(e), 60, quote=False)}): "
            "give a tar, uncompressed or compressed with gzip, xz or zstd."
        ) from None
    except tarfile.TarError as e:
        raise BadInput(
            f"the layer cannot be applied ({show(str(e), 60, quote=False)}): the archive is "
            "corrupt."
        ) from None
    except OSError as e:
        # The kernel's reason, without the path: that is a scratch dir, no use to the reader.
        raise BadInput(
            f"the layer entry {show(name)} cannot be written ({e.strerror}): the archive is "
            "corrupt, or the store's filesystem is full."
        ) from None


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
    """Every path below *directory*, sorted, each directory followed by its contents (as tar
    does)."""
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        yield Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _depth_first(Path(entry.path))


def write_layer_file(root: str | os.PathLike, dest: str | os.PathLike) -> str:
    """Write *root* as a layer tar to the file *dest*; return its DiffID."""
    with open(dest, "wb") as out:
        write_layer(root, out)
    return digest_file(dest)
