"""How well cgroup limits hold, and what labkit's sampler costs: measured side by side in one run.

    sudo .venv/bin/python benchmarks/cgroups.py [--window 2.0]

- CPU quota: busy workers (two shell loops, enough for a whole CPU) under a quota of q CPUs,
  q = 0.2 .. 1.0; the share they got over a *window*, from the kernel's own usage counter, as a
  ratio to q (target: within 5%).
- CPU weights: two groups pinned to CPU 0 with weights 100 and 300, one busy loop each; their
  shares of what both got (target: within 10% of 25% and 75%).
- Memory: an allocator under a limit of M: OOM-killed, peak at most M, the kill counted.
- The sampler: the CPU time its own thread used per second of sampling at 20 to 500 Hz (as a
  share of one CPU), and the cost of one sample against one ``Cgroup.stats()``.
Absolute figures depend on the machine and on what else runs on it; run it on a quiet host.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit.cgroups import Cgroup  # noqa: E402
from labkit.cgroups.sampler import Sampler  # noqa: E402
from labkit.cgroups.units import format_size  # noqa: E402
from labkit.lab import cgroups as lab  # noqa: E402

MiB = 1 << 20


def share_over(boxes: list[Cgroup], window: float) -> list[float]:
    """CPUs each group used over *window* seconds of wall time (kernel usage counters)."""
    before, t0 = [b.stats().cpu_usage_us for b in boxes], time.monotonic()
    time.sleep(window)
    after, t1 = [b.stats().cpu_usage_us for b in boxes], time.monotonic()
    return [(a - b) / 1e6 / (t1 - t0) for a, b in zip(after, before)]


def quota(window: float) -> None:
    print(f"CPU quota: 2 busy workers, share over a {window:g} s window (target within 5% of q)")
    for q in (0.2, 0.4, 0.6, 0.8, 1.0):
        box = Cgroup.create(f"bench-quota-{os.getpid()}", cpus=q)
        procs = lab.busy_workers(box, 2)
        try:
            time.sleep(0.3)  # let the workers start and the first periods pass
            got = share_over([box], window)[0]
        finally:
            box.remove()
            for p in procs:
                p.wait(timeout=5)
        print(
            f"  q={q:.1f}: got {got:.3f} CPUs, ratio {got / q:.3f} "
            f"({'within' if abs(got / q - 1) <= 0.05 else 'OUTSIDE'} 5%)"
        )


def weights(window: float) -> None:
    print(f"CPU weights 100:300 on CPU 0, over a {window:g} s window (target 25%/75% within 10%)")
    boxes = []
    procs = []
    try:
        for w in (100, 300):
            boxes.append(Cgroup.create(f"bench-w{w}-{os.getpid()}", weight=w, cpuset="0"))
            procs += lab.busy_workers(boxes[-1], 1)
        time.sleep(0.3)
        used = share_over(boxes, window)
    finally:
        for b in boxes:
            b.remove()
        for p in procs:
            p.wait(timeout=5)
    total = sum(used)
    low, high = used[0] / total, used[1] / total
    ok = abs(low - 0.25) <= 0.025 and abs(high - 0.75) <= 0.075
    verdict = "within" if ok else "OUTSIDE"
    print(f"  shares {low:.1%} : {high:.1%} of {total:.2f} CPUs ({verdict} 10%)")


def memory() -> None:
    print(
        "Memory limit M: an allocator (2 MiB per 20 ms, up to 2M): OOM-killed, peak <= M, "
        "kill counted"
    )
    for mib in (32, 64, 128):
        run = lab.memory_experiment(f"{mib}M", total_mib=2 * mib)
        print(
            f"  M={mib} MiB: OOM-killed {lab.yes(run.oom_killed)}, peak {format_size(run.peak)} "
            f"(<= M: {lab.yes(run.peak <= mib * MiB)}), OOM kills counted {run.oom_kills}"
        )


def sampler_cost(window: float) -> None:
    print(f"Sampler: its own thread's CPU time while sampling a busy group for {window:g} s")
    box = Cgroup.create(f"bench-sampler-{os.getpid()}", cpus=0.5)
    procs = lab.busy_workers(box, 1)
    try:
        for hz in (20, 50, 100, 200, 500):
            sampler = Sampler(box, hz=hz, max_seconds=window).start()
            sampler.wait(window + 5)
            s = sampler.series
            took = s.t[-1] if s.t else window
            print(
                f"  {hz:4d} Hz: {len(s):5d} samples ({len(s) / took:6.1f}/s), "
                f"{s.sampler_cpu_s / took:.2%} of one CPU, "
                f"{s.sampler_cpu_s / max(1, len(s)) * 1e6:.0f} µs CPU per sample"
            )
        runs = 500
        t0 = time.thread_time()
        for _ in range(runs):
            box.stats()
        stats_us = (time.thread_time() - t0) / runs * 1e6
        print(f"  one Cgroup.stats() (open, read, close every file): {stats_us:.0f} µs CPU")
    finally:
        box.remove()
        for p in procs:
            p.wait(timeout=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=2.0, help="seconds per measurement")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/cgroups.py makes cgroups: run it as root.", file=sys.stderr)
        return 2
    print(
        f"cgroup layout: {Cgroup('probe').layout.mode}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    quota(args.window)
    weights(args.window)
    memory()
    sampler_cost(args.window)
    print("repeat: sudo .venv/bin/python benchmarks/cgroups.py --window", args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
