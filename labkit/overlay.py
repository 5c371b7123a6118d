"""Union mounts with overlayfs: read-only layers stacked under one writable layer.

An overlay mount shows the union of several directories at one mount point ("merged"):

    mount -t overlay overlay -o lowerdir=TOP:...:BOTTOM,upperdir=UPPER,workdir=WORK MERGED

Reads come from the topmost layer that has the name. Every change lands in the upper dir:
the first write to a lower file copies it up whole (copy-up); deleting a lower file leaves a
*whiteout* in the upper dir (a character device 0/0); replacing a lower directory makes the new
one *opaque* (xattr ``trusted.overlay.opaque=y``), so nothing below it shows through. The lower
dirs are never changed. Without an upper dir the mount is read-only.

Read ``Documentation/filesystems/overlayfs.rst`` in the kernel sources beside this file.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import mountinfo
from . import sys as ksys
from .errors import BadInput, require_root
from .state import check_name, state_dir

OPAQUE_XATTR = "trusted.overlay.opaque"

# The kernel copies the whole option string into one page.
_MAX_OPTIONS = 4095


# --- what the kernel writes into an upper dir ------------------------------------------------


def is_whiteout(st: os.stat_result) -> bool:
    """A whiteout is how overlayfs records a deletion: a character device with number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def make_whiteout(path: str | os.PathLike) -> None:
    """Ask the kernel for a 0/0 character device at *path*: "this name is deleted"."""
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def is_opaque(path: str | os.PathLike) -> bool:
    """Is *path* a directory that hides everything below it (``trusted.overlay.opaque=y``)?"""
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def make_opaque(path: str | os.PathLike) -> None:
    """Mark the directory *path* opaque, as overlayfs does when a lower directory is replaced."""
    os.setxattr(path, OPAQUE_XATTR, b"y", follow_symlinks=False)


# --- the live mounts, from the kernel's own table --------------------------------------------


class LiveOverlay(NamedTuple):
    """One overlay mount the kernel has now, as /proc/self/mountinfo shows it."""

    merged: str
    lowerdirs: list[str]
    upperdir: str | None
    workdir: str | None


def live_overlays() -> list[LiveOverlay]:
    """Every overlay mount in this mount namespace, with its layers."""
    return [
        LiveOverlay(
            merged=m.point,
            lowerdirs=[d for d in (m.super_option("lowerdir") or "").split(":") if d],
            upperdir=m.super_option("upperdir"),
            workdir=m.super_option("workdir"),
        )
        for m in mountinfo.mounts()
        if m.fstype == "overlay"
    ]


# --- one overlay mount ------------------------------------------------------------------------


@dataclass
class Overlay:
    """An overlay mount: *lowerdirs* listed top first, an optional upper and work dir, a target.

    Use it as a context manager (``with Overlay([...], upper, work, merged) as ov:``) or call
    ``mount()`` and ``unmount()`` yourself.
    """

    lowerdirs: list[Path]
    upperdir: Path | None = None
    workdir: Path | None = None
    merged: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.lowerdirs, (str, os.PathLike)):
            self.lowerdirs = [self.lowerdirs]
        # Canonical paths, so they compare equal to what the kernel shows in mountinfo.
        self.lowerdirs = [Path(d).resolve() for d in self.lowerdirs]
        self.upperdir = Path(self.upperdir).resolve() if self.upperdir else None
        self.workdir = Path(self.workdir).resolve() if self.workdir else None
        self.merged = Path(self.merged).resolve() if self.merged else None

    @property
    def read_only(self) -> bool:
        return self.upperdir is None

    def options(self) -> str:
        """The option string handed to mount(2):
        ``lowerdir=TOP:...:BOTTOM,upperdir=..,workdir=..``."""
        opts = "lowerdir=" + ":".join(str(d) for d in self.lowerdirs)
        if self.upperdir is not None:
            opts += f",upperdir={self.upperdir},workdir={self.workdir}"
        return opts

    def check(self) -> None:
        """Refuse, with one sentence each, every combination the kernel would reject or regret."""
        _check_overlay(self)

    def mount(self) -> Overlay:
        """Ask the kernel to mount the union of the layers at ``merged``."""
        require_root("mounting an overlay")
        self.check()
        ksys.mount("overlay", str(self.merged), "overlay", 0, self.options())
        return self

    def unmount(self) -> None:
        """Ask the kernel to detach the overlay (lazily if a process still uses it)."""
        unmount(self.merged)

    @property
    def mounted(self) -> bool:
        return any(o.merged == str(self.merged) for o in live_overlays())

    def layer_of(self, relpath: str) -> str:
        """Which layer the merged view takes *relpath* from: 'upper', 'lower 0' (top), ... or ''."""
        layers = ([("upper", self.upperdir)] if self.upperdir else []) + [
            (f"lower {i}", d) for i, d in enumerate(self.lowerdirs)
        ]
        for name, root in layers:
            path = root / relpath
            hides_below = False
            for parent in reversed(_parents_within(root, path)):  # top-down
                try:
                    st = os.lstat(parent)
                except (FileNotFoundError, NotADirectoryError):
                    break
                if is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                    return ""  # a parent was deleted or replaced in this layer
                hides_below = hides_below or is_opaque(parent)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                if hides_below:
                    return ""  # an opaque parent hides everything further down
                continue
            return "" if is_whiteout(st) else name
        return ""

    def __enter__(self) -> Overlay:
        return self.mount()

    def __exit__(self, *exc) -> None:
        self.unmount()


def unmount(merged: str | os.PathLike) -> None:
    """Detach the overlay mounted at *merged*, if there is one (MNT_DETACH: lazily if busy)."""
    merged = str(Path(merged).resolve())
    if any(o.merged == merged for o in live_overlays()):
        ksys.umount2(merged, ksys.MNT_DETACH)


def _parents_within(root: Path, path: Path) -> list[Path]:
    parents = []
    for parent in path.parents:
        if parent == root or root not in parent.parents:
            break
        parents.append(parent)
    return parents


def _check_overlay(ov: Overlay) -> None:
    if ov.merged is None:
        raise BadInput("an overlay needs a merged dir to mount on: pass merged=DIR.")
    if not ov.lowerdirs:
        raise BadInput(
            "an overlay needs at least one lowerdir: pass a list of directories, top first."
        )
    if ov.read_only and len(ov.lowerdirs) < 2:
        raise BadInput(
            "a read-only overlay (no upperdir) needs at least two lowerdirs: "
            "add a lower, or an upperdir and workdir."
        )
    if (ov.upperdir is None) != (ov.workdir is None):
        raise BadInput(
            "upperdir and workdir go together: give both (for a writable overlay) or neither."
        )
    named = [("lowerdir", d) for d in ov.lowerdirs] + [("merged dir", ov.merged)]
    if ov.upperdir is not None:
        named += [("upperdir", ov.upperdir), ("workdir", ov.workdir)]
    for what, path in named:
        if not path.is_dir():
            raise BadInput(
                f"the {what} {path} does not exist (or is not a directory): create it first."
            )
        if any(c in str(path) for c in ":,\\"):
            raise BadInput(
                f"the {what} {path} contains ':', ',' or '\\', "
                "which the overlay options cannot carry: rename it."
            )
    if len(ov.options()) > _MAX_OPTIONS:
        raise BadInput(
            f"the overlay options are {len(ov.options())} bytes, over the kernel's one-page "
            "limit: use fewer or shorter lowerdirs."
        )
    if mountinfo.is_mount_point(ov.merged):
        raise BadInput(
            f"{ov.merged} is already a mount point: unmount it first, or mount somewhere else."
        )
    if ov.upperdir is not None:
        _check_upper_and_work(ov.upperdir, ov.workdir)


def _check_upper_and_work(upper: Path, work: Path) -> None:
    if upper == work:
        raise BadInput(
            "the workdir must be a different directory from the upperdir: "
            "use two sibling directories."
        )
    if os.stat(upper).st_dev != os.stat(work).st_dev:
        raise BadInput(
            f"the workdir {work} is on another filesystem than the upperdir {upper}: "
            "the kernel renames files from one to the other, so put both on the same filesystem."
        )
    # After an unmount the kernel leaves its own empty work/ (and index/) behind: those may stay.
    extra = sorted(set(os.listdir(work)) - {"work", "index"})
    if extra:
        raise BadInput(
            f"the workdir {work} is not empty (it holds {extra[0]!r}): give an empty directory."
        )
    for live in live_overlays():
        for what, path in (("upperdir", upper), ("workdir", work)):
            if str(path) in (live.upperdir, live.workdir):
                raise BadInput(
                    f"the {what} {path} is in use by the overlay mounted at {live.merged}: "
                    "unmount that one first, or give this mount its own upperdir and workdir."
                )


# --- a place for overlay mounts below the state dir ---------------------------------------


def workspace(name: str) -> tuple[Path, Path, Path]:
    """Fresh (upperdir, workdir, merged) below ``state_dir()/overlays/NAME``, for
    ``labkit cleanup``."""
    check_name(name, "overlay name")
    root = state_dir() / "overlays" / name
    dirs = tuple(root / d for d in ("upper", "work", "merged"))
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dirs  # type: ignore[return-value]


# --- the diff of an upper dir -----------------------------------------------------------------


class Change(NamedTuple):
    """One entry of an upper dir, read as a change to the layers below it."""

    path: str  # relative to the layer root, e.g. "etc/hostname"
    kind: str  # "added", "modified", "deleted" (a whiteout) or "opaque" (replaced directory)

    def __str__(self) -> str:
        return f"{self.kind:<8} /{self.path}"


def diff(upperdir: str | os.PathLike, lowerdirs: list | tuple = ()) -> list[Change]:
    """What the upper dir changes in the layers below it, sorted by path.

    A directory that was only copied up to hold a changed file is not a change itself.
    """
    upper = Path(upperdir)
    lowers = [Path(d) for d in lowerdirs]
    changes: list[Change] = []

    def in_lower(rel: str) -> bool:
        return any(os.path.lexists(d / rel) for d in lowers)

    for dirpath, dirnames, filenames in os.walk(upper):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(upper))
            st = os.lstat(path)
            if is_whiteout(st):
                changes.append(Change(rel, "deleted"))
            elif stat.S_ISDIR(st.st_mode):
                if is_opaque(path):
                    changes.append(Change(rel, "opaque"))
                elif not in_lower(rel):
                    changes.append(Change(rel, "added"))
            else:
                changes.append(Change(rel, "modified" if in_lower(rel) else "added"))
    return sorted(changes, key=lambda c: c.path)
