"""Timing contenders side by side: one loop for every benchmark that compares start-up times.

Each contender is a callable that does the whole operation once. They run in turn, interleaved
(A B C, then C A B ...), so that a change in the machine's load hits them all alike, after one
warm-up run each (page cache, a fork server started on first use). Each round takes them in a
new order: what one leaves running behind it (dockerd tearing a container down after the
docker client has returned) would otherwise always slow the same next one. The table gives
medians and 90th percentiles, and each median as a ratio of the reference's: the ratios are
what matter, absolute times depend on the machine.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections.abc import Callable


def side_by_side(
    contenders: dict[str, Callable[[], object]], runs: int, pause: float = 0.0
) -> dict[str, list[float]]:
    """Seconds taken by each contender, *runs* times each, interleaved.

    *pause*: seconds of quiet before each run, as between commands a person types. Some of the
    kernel's state stays warm for milliseconds after a run (cgroup moves: see
    ``labkit.sys.clone_into_cgroup``), and would otherwise flatter whichever runs next.
    """
    for start in contenders.values():
        start()  # warm-up, not counted
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders)
    shuffle = random.Random(runs).shuffle  # the same orders for the same number of runs
    for _ in range(runs):
        shuffle(order)
        for name in order:
            time.sleep(pause)
            t0 = time.perf_counter()
            contenders[name]()
            samples[name].append(time.perf_counter() - t0)
    return samples


def report(title: str, samples: dict[str, list[float]], reference: str) -> None:
    """Print the table: median, p90, and the median's ratio to *reference*'s."""
    base = statistics.median(samples[reference])
    width = max(len(name) for name in samples) + 2
    print(title)
    print(f"{'':{width}}{'median':>10}{'p90':>10}{'vs ' + reference:>{len(reference) + 6}}")
    for name, values in samples.items():
        med = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]
        ratio = f"{med / base:.2f}x"
        print(f"{name:{width}}{med * 1e3:>8.1f}ms{p90 * 1e3:>8.1f}ms{ratio:>{len(reference) + 6}}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"python {sys.version.split()[0]} ({sys.executable}), kernel {os.uname().release}, "
        f"load average {load}"
    )
