"""Benchmark: importing an image with a 100 MiB layer, against extracting the same tar with GNU tar.

labkit's import copies the layer into its store while hashing it (the DiffID), checks every
entry, and extracts it into the layer's directory; GNU tar only extracts. Both run side by side
in one run, on the same file, with a warm page cache; the ratio is what to compare across
machines and changes.

Usage (as root): .venv/bin/python benchmarks/image_import.py [--size-mib 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FILE_SIZE = 512 << 10  # 512 KiB per file: a layer of many mid-sized files, like a /usr


def make_layer(path: Path, size_mib: int) -> int:
    """A layer tar of *size_mib* MiB of incompressible files in a few directories, and its file
    count."""
    rng = random.Random(42)
    count = (size_mib << 20) // FILE_SIZE
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in range(10):
            info = tarfile.TarInfo(f"usr/lib/dir{d}")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for i in range(count):
            data = rng.randbytes(FILE_SIZE)
            info = tarfile.TarInfo(f"usr/lib/dir{i % 10}/file{i}.bin")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return count


def make_archive(layer: Path, dest: Path) -> None:
    """A legacy ``docker save`` archive around the layer."""
    h = hashlib.sha256()
    with open(layer, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h.hexdigest()]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": ["bench:1"], "Layers": ["l0/layer.tar"]}]
    ).encode()
    with tarfile.open(dest, "w") as tar:
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(layer, "l0/layer.tar")


def time_labkit(archive: Path) -> float:
    from labkit import archives, images

    start = time.perf_counter()
    archives.import_image(archive)
    elapsed = time.perf_counter() - start
    images.remove("bench:1")
    return elapsed


def time_gnu_tar(layer: Path, work: Path) -> float:
    dest = work / "gnu-tar-out"
    dest.mkdir()
    start = time.perf_counter()
    subprocess.run(["tar", "-xf", str(layer), "-C", str(dest)], check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(dest)
    return elapsed


def time_gnu_tar_and_sha256sum(layer: Path, work: Path) -> float:
    """The same work as labkit's import done by C tools: hash the layer, then extract it."""
    start = time.perf_counter()
    subprocess.run(["sha256sum", str(layer)], check=True, capture_output=True)
    return time.perf_counter() - start + time_gnu_tar(layer, work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("image_import: importing an image needs root: run it with sudo.", file=sys.stderr)
        return 1
    if shutil.which("tar") is None:
        print("image_import: GNU tar is missing: apt-get install tar.", file=sys.stderr)
        return 1

    # A private state dir on the same filesystem as /run/labkit, removed at the end.
    state = Path(tempfile.mkdtemp(prefix="labkit-bench-", dir="/run"))
    os.environ["LABKIT_STATE_DIR"] = str(state)
    try:
        layer, archive = state / "layer.tar", state / "image.tar"
        files = make_layer(layer, args.size_mib)
        make_archive(layer, archive)
        time_labkit(archive), time_gnu_tar(layer, state)  # warm the page cache for both
        labkit_runs, tar_runs, tar_hash_runs = [], [], []
        for _ in range(args.runs):  # interleaved, so a noisy moment hits all of them
            labkit_runs.append(time_labkit(archive))
            tar_runs.append(time_gnu_tar(layer, state))
            tar_hash_runs.append(time_gnu_tar_and_sha256sum(layer, state))
    finally:
        from labkit import cleanup

        cleanup.cleanup()
        shutil.rmtree(state, ignore_errors=True)

    lab, gnu = statistics.median(labkit_runs), statistics.median(tar_runs)
    print(f"import of a {args.size_mib} MiB layer ({files} files), median of {args.runs} runs:")
    print(
        f"  labkit archives.import_image  {lab:6.3f} s  ({args.size_mib / lab:6.0f} MiB/s)"
        "  copy + sha256 + checks + extract"
    )
    print(
        f"  GNU tar -xf                 {gnu:6.3f} s  ({args.size_mib / gnu:6.0f} MiB/s)"
        "  extract only"
    )
    hashed = statistics.median(tar_hash_runs)
    print(
        f"  sha256sum + GNU tar -xf     {hashed:6.3f} s  ({args.size_mib / hashed:6.0f} MiB/s)"
        "  the same work in C"
    )
    print(
        f"  ratio labkit / GNU tar      {lab / gnu:6.2f}x"
        f"   (labkit / sha256sum + tar: {lab / hashed:.2f}x)"
    )
    print(
        "repeat: .venv/bin/python benchmarks/image_import.py"
        f" --size-mib {args.size_mib} --runs {args.runs}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
