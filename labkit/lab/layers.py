"""Helpers for the union-mount and image lessons (20, 21): experiments, plots and checks.

The experiments measure what the kernel does (the time of a first write that copies a file up,
the disk blocks that roots made from one image use); the ``draw_...`` functions plot them; the
``check_...`` functions grade the exercises by looking at the real mounts and files.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .. import images, layers, overlay
from ..state import state_dir
from .checks import Verdict, graded, not_done, verdict

# --- where a lesson keeps its files -------------------------------------------------------


def lesson_dir(name: str) -> Path:
    """A fresh directory for one lesson's files below the state dir (``labkit cleanup`` finds
    it)."""
    path = state_dir() / "lessons" / name
    remove_lesson_dir(name)
    path.mkdir(parents=True)
    return path


def remove_lesson_dir(name: str) -> None:
    """Unmount every overlay below the lesson's directory, then delete it."""
    path = state_dir() / "lessons" / name
    for live in overlay.live_overlays():
        if live.merged.startswith(str(path.resolve()) + "/"):
            overlay.unmount(live.merged)
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.parent.rmdir()  # the last lesson out turns off the light
    except OSError:
        pass


# --- the picture of a layer stack ---------------------------------------------------------


def _entries(root: Path, rel: str = "") -> list[str]:
    found = []
    for entry in sorted(
        os.scandir(root / rel) if (root / rel).is_dir() else [], key=lambda e: e.name
    ):
        path = f"{rel}{entry.name}"
        found.append(path)
        if entry.is_dir(follow_symlinks=False) and not overlay.is_whiteout(
            entry.stat(follow_symlinks=False)
        ):
            found.extend(_entries(root, path + "/"))
    return found


def cell(root: Path | None, rel: str) -> str:
    """What one layer holds at *rel*: 'file', 'dir', 'opaque dir', 'whiteout', 'symlink' or ''."""
    if root is None:
        return ""
    path = root / rel
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return ""
    if overlay.is_whiteout(st):
        return "whiteout"
    if stat.S_ISDIR(st.st_mode):
        return "opaque dir" if overlay.is_opaque(path) else "dir"
    return "symlink" if stat.S_ISLNK(st.st_mode) else "file"


def stack_table(ov: overlay.Overlay) -> tuple[list[str], list[str], list[list[str]]]:
    """(columns bottom to top, paths, cells): each layer's view of each path, and the merged one."""
    # Columns say both the directory and the kernel's index ("lower 0" is the leftmost: the top).
    layers_ = [
        (f"{d.name[:12]} (lower {i})", d) for i, d in reversed(list(enumerate(ov.lowerdirs)))
    ]
    if ov.upperdir is not None:
        layers_.append(("upper", ov.upperdir))
    paths = sorted({p for _name, d in layers_ for p in _entries(d)})
    rows = []
    for rel in paths:
        row = [cell(d, rel) for _name, d in layers_]
        source = ov.layer_of(rel)
        row.append(f"from {source}" if source else "")
        rows.append(row)
    return [name for name, _d in layers_] + ["merged"], paths, rows


_COLOURS = {
    "file": "#a6c8e8",
    "dir": "#dddddd",
    "symlink": "#c9e3c1",
    "whiteout": "#444444",
    "opaque dir": "#e8a6a6",
    "": "#ffffff",
}


def draw_stack(ov: overlay.Overlay, ax=None):
    """The layers side by side, bottom layer left: what each holds, and where merged reads from."""
    import matplotlib.pyplot as plt

    columns, paths, rows = stack_table(ov)
    if ax is None:
        _fig, ax = plt.subplots(figsize=(1.9 * len(columns) + 1.5, 0.38 * len(paths) + 1.2))
    for i, row in enumerate(rows):
        for j, what in enumerate(row):
            colour = "#fff3c4" if j == len(row) - 1 and what else _COLOURS.get(what, "#ffffff")
            ax.add_patch(plt.Rectangle((j, i), 0.95, 0.9, color=colour))
            ax.text(
                j + 0.47,
                i + 0.45,
                what,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if what == "whiteout" else "black",
            )
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(paths), 0)
    ax.set_xticks([j + 0.47 for j in range(len(columns))], columns)
    ax.set_yticks([i + 0.45 for i in range(len(paths))], ["/" + p for p in paths])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title("the layer stack: lower layers left, upper, then what the merged view shows")
    return ax


# --- copy-up: what the first write costs ----------------------------------------------------


@dataclass
class CopyUp:
    """One measurement: appending one byte to a lower file of *size* bytes, twice."""

    size: int
    first_write: float  # seconds: the kernel copies the whole file up first
    second_write: float  # seconds: the file is in the upper dir already


def measure_copy_up(sizes_mib: list[int], where: Path) -> list[CopyUp]:
    """For each size, mount a fresh overlay over one file of that size and time two appends."""
    results = []
    for size_mib in sizes_mib:
        run = where / f"copy-up-{size_mib}"
        shutil.rmtree(run, ignore_errors=True)
        lower, upper, work, merged = (run / d for d in ("lower", "upper", "work", "merged"))
        for d in (lower, upper, work, merged):
            d.mkdir(parents=True)
        with open(lower / "big", "wb") as f:
            f.write(os.urandom(1 << 20) * size_mib)
        with overlay.Overlay([lower], upper, work, merged) as ov:
            times = []
            for _ in range(2):
                start = time.perf_counter()
                fd = os.open(ov.merged / "big", os.O_WRONLY | os.O_APPEND)
                os.write(fd, b"x")
                os.fsync(fd)
                os.close(fd)
                times.append(time.perf_counter() - start)
        shutil.rmtree(run)
        results.append(CopyUp(size_mib << 20, times[0], times[1]))
    return results


def draw_copy_up(results: list[CopyUp], ax=None):
    """Time of the first and second one-byte write against the size of the lower file."""
    import matplotlib.pyplot as plt

    if ax is None:
        _fig, ax = plt.subplots(figsize=(6, 3.5))
    sizes = [r.size / (1 << 20) for r in results]
    ax.plot(sizes, [r.first_write * 1000 for r in results], "o-", label="first write (copy-up)")
    ax.plot(sizes, [r.second_write * 1000 for r in results], "s-", label="second write")
    ax.set_xlabel("size of the lower file (MiB)")
    ax.set_ylabel("time of a 1-byte append (ms)")
    ax.set_title("copy-up copies the whole file, however small the write")
    ax.legend()
    return ax


# --- sharing: the disk that roots made from one image use -----------------------------------


def disk_usage(paths: list[Path]) -> int:
    """Bytes of disk blocks under *paths*, each inode counted once (as ``du`` does)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in paths:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames + [""]:
                st = os.lstat(os.path.join(dirpath, name) if name else dirpath)
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


@dataclass
class Sharing:
    """Disk used by *roots* overlay roots on one image, against a full copy for each."""

    roots: int
    shared: int  # bytes: the image's layers once, plus every root's upper dir
    copies: int  # bytes: what a copy of the image per container would take


def measure_sharing(image: images.Image, counts: list[int]) -> list[Sharing]:
    """Mount 1, 2, ... overlay roots on *image* and add up the disk they really use."""
    layer_bytes = disk_usage(image.layer_dirs)
    results = []
    for n in counts:
        names = [f"share-{i}" for i in range(n)]
        roots = [images.mount_root(image.id, name) for name in names]
        try:
            shared = layer_bytes + disk_usage([r.upperdir for r in roots])
        finally:
            for name in names:
                images.unmount_root(name)
        results.append(Sharing(n, shared, n * layer_bytes))
    return results


def draw_sharing(results: list[Sharing], ax=None):
    """Bars: disk used by n roots sharing the layers, against n full copies."""
    import matplotlib.pyplot as plt

    if ax is None:
        _fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(len(results))
    ax.bar(
        [x - 0.2 for x in xs],
        [r.shared / 2**20 for r in results],
        0.4,
        label="overlay roots (shared layers)",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [r.copies / 2**20 for r in results],
        0.4,
        label="a full copy per root",
    )
    ax.set_xticks(list(xs), [f"{r.roots} root{'s' if r.roots > 1 else ''}" for r in results])
    ax.set_ylabel("disk used (MiB)")
    ax.set_title("roots on one image share its layers")
    ax.legend()
    return ax


# --- checks for the exercises ---------------------------------------------------------------


@graded
def check_whiteout_path(answer, ov: overlay.Overlay) -> Verdict:
    """20: the path, in the upper dir, of the whiteout that hides a deleted lower file."""
    if answer is ...:
        return not_done("whiteout path")
    path = Path(answer)
    if ov.upperdir is None or ov.upperdir not in path.parents:
        return Verdict(
            False,
            f"whiteout path: {path} is not inside the upper dir {ov.upperdir}.",
            "a deletion is recorded where every change goes: in ov.upperdir.",
        )
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Verdict(
            False,
            f"whiteout path: there is nothing at {path}.",
            "delete the file through ov.merged first, then look in ov.upperdir.",
        )
    return verdict(
        overlay.is_whiteout(st),
        f"whiteout path: {path.relative_to(ov.upperdir)} is a character device 0/0, a whiteout.",
        f"whiteout path: {path.relative_to(ov.upperdir)} is there but is no whiteout.",
        "pick the entry whose name is the deleted file's: os.lstat shows a character device 0/0.",
    )


@graded
def check_layer_order(answer, lowers: dict[str, Path], path: str, wanted: str) -> Verdict:
    """20: a list of lowerdirs (top first) whose merged view reads *wanted* from *path*."""
    if answer is ...:
        return not_done("layer order")
    try:
        order = [Path(p) for p in answer]
    except TypeError:
        return Verdict(
            False,
            f"layer order: expected a list of directories, found {answer!r}.",
            "write a list, top layer first, e.g. [lower2, lower1].",
        )
    if sorted(map(str, order)) != sorted(map(str, lowers.values())):
        return Verdict(
            False,
            "layer order: use each of the lower dirs exactly once.",
            f"the lower dirs are {', '.join(lowers)}.",
        )
    scratch = lesson_dir("check-layer-order")
    (scratch / "merged").mkdir()
    try:
        with overlay.Overlay(order, merged=scratch / "merged") as ov:
            seen = (ov.merged / path).read_text().strip()
    finally:
        remove_lesson_dir("check-layer-order")
    return verdict(
        seen == wanted,
        f"layer order: the merged {path} reads {seen!r}.",
        f"layer order: the merged {path} reads {seen!r}, not {wanted!r}.",
        "the leftmost lowerdir is the top layer: the one whose file wins.",
    )


@graded
def check_chain_id(answer, image: images.Image) -> Verdict:
    """21: the ChainID of the image's first two layers, computed by hand."""
    if answer is ...:
        return not_done("chain id")
    if len(image.diff_ids) < 2:
        return Verdict(False, "chain id: the image has one layer; use the committed image.")
    right = layers.chain_ids(image.diff_ids)[1]
    given = str(answer).strip()
    hint = 'hash the text f"{diff_ids[0]} {diff_ids[1]}" with sha256 and put "sha256:" in front.'
    if given == right.split(":", 1)[1]:
        hint = 'right hash: now put "sha256:" in front of it.'
    return verdict(
        given == right,
        f"chain id: {right[:19]}... is the ChainID of layers 0 and 1.",
        f"chain id: {given[:19]}... is not it.",
        hint,
    )


@graded
def check_commit(
    answer, base: str = "busybox:latest", path: str = "hello.txt", text: str = "hello"
) -> Verdict:
    """21: an image committed on *base* whose top layer adds /hello.txt saying hello."""
    if answer is ...:
        return not_done("commit")
    if not isinstance(answer, images.Image):
        return Verdict(
            False,
            "commit: expected the Image that images.commit returns, "
            f"found {type(answer).__name__}.",
            "assign the result of images.commit(root.upperdir, 'busybox', 'lab/hello:1').",
        )
    parent = images.get(base)
    if answer.diff_ids[:-1] != parent.diff_ids:
        return Verdict(
            False,
            f"commit: the image is not {base} plus one layer.",
            f"commit the upper dir of a root made from {base}.",
        )
    top = Path(images.layer_dir(answer.diff_ids[-1])) / path
    found = top.read_text().strip() if top.is_file() else None
    return verdict(
        found == text,
        f"commit: the new top layer holds /{path} ({text!r}); "
        f"the {len(parent.diff_ids)} layer(s) below are {base}'s, shared.",
        "commit: the new top layer has "
        f"{'no /' + path if found is None else f'/{path} saying {found!r}'}.",
        f"write {text!r} to root.merged / {path!r} before you commit.",
    )


def blob_matches_name(path: Path) -> bool:
    """Content addressing: does the blob's sha256 equal its file name?"""
    return layers.digest_file(path) == "sha256:" + path.name
