"""Wiring a "container" into a bridge: labkit (pyroute2) against the same steps with ip(8).

Each run makes a network namespace, plugs it into a bridge (veth pair, bridge port, address,
lo and eth0 up, default route) and deletes it again, first with labkit.network, then with the
iproute2 commands that do the same. Both run side by side on the same machine; the ratio is
what to compare. Then, for scale: ping round trip and TCP throughput across the bridge, measured
inside the namespaces.

    sudo .venv/bin/python benchmarks/network.py [--runs 30]

What labkit pays for: pyroute2 opens an rtnetlink socket inside a namespace from a short-lived
forked child (setns, then pass the socket back), and labkit checks every input first; ip(8)
is a small C program per step.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit import network, traffic

BRIDGE = "lkbench0"


def labkit_once(br: network.Bridge) -> None:
    network.netns_add("labkit-bench")
    network.connect(br, "labkit-bench", f"{br.subnet[2]}/{br.subnet.prefixlen}")
    network.netns_delete("labkit-bench")


def iproute2_once(br: network.Bridge) -> None:
    ns = "labkit-bench"
    steps = [
        f"ip netns add {ns}",
        f"ip link add lkbench type veth peer name eth0 netns {ns}",
        f"ip link set lkbench master {BRIDGE} up",
        f"ip -n {ns} addr add {br.subnet[2]}/{br.subnet.prefixlen} dev eth0",
        f"ip -n {ns} link set lo up",
        f"ip -n {ns} link set eth0 up",
        f"ip -n {ns} route add default via {br.gateway}",
        f"ip -n {ns} link del eth0",
        f"ip netns del {ns}",
    ]
    for step in steps:
        subprocess.run(step.split(), check=True, timeout=10)


def timed(fn, br: network.Bridge, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(br)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    br = network.bridge_add(BRIDGE)
    try:
        labkit_once(br)  # warm up imports and caches
        ours = timed(labkit_once, br, args.runs)
        theirs = timed(iproute2_once, br, args.runs)
        lk, ip = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
        print(f"plug a namespace into a bridge and remove it ({args.runs} runs, medians):")
        print(f"  labkit.network  {lk:7.1f} ms")
        print(f"  ip(8) commands  {ip:7.1f} ms")
        print(f"  ratio           {lk / ip:7.2f}x")

        for name in ("labkit-bencha", "labkit-benchb"):
            network.netns_add(name)
        a = network.connect(br, "labkit-bencha")
        b = network.connect(br, "labkit-benchb")
        address = str(b.address.ip)
        print(
            f"round trip a -> b (busybox ping x10): {traffic.latency(a.netns, address, 10):.3f} ms"
        )
        print(
            "TCP a -> b, 2 s:                      "
            f"{traffic.throughput(a.netns, b.netns, address, 2.0)}"
        )
        traffic.shape(b.host_ifname, rate_mbit=100)
        limited = traffic.throughput(a.netns, b.netns, address, 2.0)
        print(
            f"TCP a -> b, tbf 100 Mbit/s, 2 s:      {limited}"
            f" ({limited.mbit_per_s / 100:.0%} of the rate)"
        )
    finally:
        for name in ("labkit-bench", "labkit-bencha", "labkit-benchb"):
            if name in network.netns_list():
                network.netns_delete(name)
        network.bridge_delete(BRIDGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
