"""Plots and diagrams for the namespaces lessons, drawn from what the kernel reports.

Each ``draw_...`` function takes the data (namespace inode numbers from ``/proc/PID/ns``, kernel
releases, object counts) and draws on a matplotlib Axes, a new one unless *ax* is given, and
returns it. The data-only helpers beside them (``label_namespaces``, ``parse_release``) can be
used without drawing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap

from .. import namespaces

# The first namespace seen in each kind (usually the host's) is grey; each further one a colour.
PALETTE = ["#dddddd", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3"]


def _new_axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    if ax is None:
        _fig, ax = plt.subplots(figsize=size)
    return ax


# --- which processes share which namespaces ------------------------------------------------------


def label_namespaces(ids: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, str]]:
    """Name the namespaces of each kind A, B, C... in order of first appearance.

    *ids* is ``{process name: namespaces.ns_ids(pid)}``. Two processes get the same letter for a
    kind exactly when their inode numbers for it are equal: when they share that namespace.
    """
    letters: dict[str, dict[int, str]] = {kind: {} for kind in namespaces.KINDS}
    labels: dict[str, dict[str, str]] = {}
    for name, row in ids.items():
        labels[name] = {}
        for kind in namespaces.KINDS:
            seen = letters[kind]
            labels[name][kind] = seen.setdefault(row[kind], chr(ord("A") + len(seen)))
    return labels


def draw_sharing(ids: Mapping[str, Mapping[str, int]], ax: Axes | None = None) -> Axes:
    """A processes x kinds grid: the same letter (and colour) in a column is the same namespace."""
    labels = label_namespaces(ids)
    kinds = list(namespaces.KINDS)
    rows = list(labels)
    index = [[ord(labels[r][k]) - ord("A") for k in kinds] for r in rows]
    colours = [PALETTE[i % len(PALETTE)] for i in range(1 + max(map(max, index)))]
    ax = _new_axes(ax, (1.1 * len(kinds) + 2, 0.6 * len(rows) + 1.2))
    ax.imshow(
        index, cmap=ListedColormap(colours), vmin=0, vmax=max(len(colours) - 1, 1), aspect="auto"
    )
    for i, row in enumerate(rows):
        for j, kind in enumerate(kinds):
            ax.text(j, i, labels[row][kind], ha="center", va="center")
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_yticks(range(len(rows)), rows)
    ax.xaxis.tick_top()
    # White lines between the cells, drawn on the minor ticks that sit between the major ones.
    ax.set_xticks([x - 0.5 for x in range(len(kinds) + 1)], minor=True)
    ax.set_yticks([y - 0.5 for y in range(len(rows) + 1)], minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    ax.set_title("Same letter in a column: the same namespace", pad=24)
    return ax


def sharing_matrix(processes: Mapping[str, int | str], ax: Axes | None = None) -> Axes:
    """Read /proc/PID/ns of each process (``{name: pid}``) and draw which namespaces they share."""
    return draw_sharing({name: namespaces.ns_ids(pid) for name, pid in processes.items()}, ax)


# --- when the kernel learnt each feature ---------------------------------------------------------


def parse_release(release: str) -> tuple[int, ...]:
    """ "2.6.19" -> (2, 6, 19): kernel releases compare as tuples of numbers."""
    return tuple(int(part) for part in release.split("."))


def draw_feature_timeline(
    features: Sequence[tuple[tuple[int, ...], str]],
    running: tuple[int, ...],
    ax: Axes | None = None,
) -> Axes:
    """One dot per feature at the kernel release that brought it; a line at the running kernel.

    Features the running kernel has are green, the others red.
    """
    features = sorted(features)
    releases = sorted({release for release, _ in features} | {tuple(running)})
    where = {release: x for x, release in enumerate(releases)}
    ax = _new_axes(ax, (9, 0.35 * len(features) + 1.5))
    for y, (release, name) in enumerate(features):
        has = release <= tuple(running)
        ax.plot(where[release], y, "o", color="#55a868" if has else "#c44e52")
        right_half = where[release] > len(releases) / 2  # label towards the middle: no overlap
        ax.text(
            where[release] + (-0.15 if right_half else 0.15),
            y,
            name,
            va="center",
            ha="right" if right_half else "left",
            fontsize=9,
        )
    ax.axvline(where[tuple(running)], color="#4c72b0", linestyle="--")
    ax.text(
        where[tuple(running)] - 0.1, 0, "this kernel", color="#4c72b0", ha="right", va="center"
    )  # bottom right: the oldest features sit at the far left
    ax.set_xticks(range(len(releases)), [".".join(map(str, r)) for r in releases], rotation=45)
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(releases) - 0.5)
    ax.set_ylim(-0.7, len(features))
    ax.set_xlabel("kernel release (in order, not to scale)")
    ax.set_title("What the lessons use, and the kernel release that brought it")
    return ax


# --- what each namespace sees ---------------------------------------------------------------------


def draw_visible_counts(
    steps: Sequence[int],
    counts: Mapping[str, Sequence[int]],
    ax: Axes | None = None,
    what: str = "objects",
) -> Axes:
    """Grouped bars: for each step, how many *what* each viewer (host, a namespace...) sees."""
    ax = _new_axes(ax, (7, 3.5))
    width = 0.8 / max(len(counts), 1)
    for i, (viewer, values) in enumerate(counts.items()):
        offsets = [x + (i - (len(counts) - 1) / 2) * width for x in range(len(steps))]
        bars = ax.bar(
            offsets,
            values,
            width,
            label=viewer,
            color=PALETTE[i % len(PALETTE)],
            edgecolor="#555555",
        )
        ax.bar_label(bars, fontsize=8)  # a 0 is a bar too small to see: write the numbers
    ax.set_xticks(range(len(steps)), [str(s) for s in steps])
    ax.set_ylabel(f"{what} visible")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    return ax
