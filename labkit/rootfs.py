"""A minimal root filesystem, built offline from the host's static busybox.

A container's root filesystem is only a directory: whatever is in it is all the container's
processes can see once ``pivot_root`` (or ``chroot``) has made it their ``/``. The smallest useful
one holds a single *statically linked* program, busybox, that is ``sh``, ``ls``, ``ps``,
``hostname`` and some 270 other commands at once: it picks the command from the name it was
started by (``argv[0]``), so each command is a symlink to it. A static binary needs no shared
libraries and no dynamic loader (``PT_INTERP``) from inside the directory, so nothing else has to
be copied in.

Read ``man 8 chroot``, ``man 5 elf`` (program headers) and ``busybox --help`` beside this file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from . import mountinfo
from . import sys as ksys
from .errors import BadInput, MissingFeature
from .state import state_dir

# Where Debian/Ubuntu's busybox-static installs the binary, in the order we look.
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")

# Bump when the layout below changes, so existing trees are rebuilt.
LAYOUT = 1

PT_INTERP = 3  # program header type: "load this dynamic loader first", from <elf.h>

_DIRS = {
    "proc": 0o555,
    "sys": 0o555,
    "dev": 0o755,
    "tmp": 0o1777,
    "root": 0o700,
    "etc": 0o755,
    "run": 0o755,
    "var": 0o755,
    "bin": 0o755,
    "sbin": 0o755,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
}

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnobody:x:65534:\n"


def default_dest() -> Path:
    """Where ``build()`` puts the root filesystem unless told otherwise (in the state dir)."""
    return state_dir() / "rootfs" / "busybox"


def is_noexec(path: str | Path) -> bool:
    """Whether the mount that holds *path* forbids running programs from it (``noexec``)."""
    return bool(os.statvfs(path).f_flag & os.ST_NOEXEC)


def exec_capable(directory: Path) -> None:
    """Make sure programs can be run from *directory*: mount a tmpfs there if they cannot.

    The state directory sits in /run, which many systems (the lab VM among them) mount
    ``noexec``: the kernel then refuses execve() of anything below it, a chroot's /bin/sh too.
    A tmpfs mounted without noexec lifts that for the root filesystems alone; it is below the
    state directory, so ``labkit cleanup`` unmounts it. nodev stays: /dev is mounted apart.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if is_noexec(directory) and str(directory) not in {m.point for m in mountinfo.mounts()}:
        ksys.mount("labkit-rootfs", str(directory), "tmpfs", ksys.MS_NODEV, "mode=0755")


def elf_interpreter(path: str | Path) -> str | None:
    """The dynamic loader an ELF executable asks for (its PT_INTERP), or None if it is static.

    Reads the ELF header and the program header table directly, the way the kernel's
    ``execve`` does before deciding whether to start a loader.
    """
    with open(path, "rb") as f:
        ident = f.read(16)
        if ident[:4] != b"\x7fELF":
            raise MissingFeature(f"{path} is not an ELF executable: install busybox-static.")
        is64, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
        # e_phoff, e_phentsize and e_phnum sit at different offsets in 32- and 64-bit headers.
        if is64:
            f.seek(32)
            (phoff,) = struct.unpack(order + "Q", f.read(8))
            f.seek(54)
        else:
            f.seek(28)
            (phoff,) = struct.unpack(order + "I", f.read(4))
            f.seek(42)
        phentsize, phnum = struct.unpack(order + "HH", f.read(4))
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            header = f.read(phentsize)
            (p_type,) = struct.unpack(order + "I", header[:4])
            if p_type != PT_INTERP:
                continue
            # p_offset and p_filesz: where the loader's path is stored in the file.
            if is64:
                offset, size = struct.unpack(order + "Q16xQ", header[8:40])
            else:
                offset, size = struct.unpack(order + "I8xI", header[4:20])
            f.seek(offset)
            return f.read(size).rstrip(b"\0").decode(errors="replace")
    return None


def find_busybox(candidates: tuple[str, ...] = BUSYBOX_PATHS) -> Path | None:
    """The first busybox binary among *candidates*, or None."""
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def static_busybox(busybox: str | Path | None = None) -> Path:
    """The host's busybox, checked to be static; one clear sentence if it is missing or dynamic."""
    found = find_busybox((str(busybox),) if busybox else BUSYBOX_PATHS)
    where = str(busybox) if busybox else " or ".join(BUSYBOX_PATHS)
    if found is None:
        raise MissingFeature(
            f"no busybox at {where}: install the static one with 'apt-get install busybox-static'."
        )
    loader = elf_interpreter(found)
    if loader is not None:
        raise MissingFeature(
            f"{found} is dynamically linked (it needs {loader}, which a minimal root filesystem "
            "does not have): install the static one with 'apt-get install busybox-static'."
        )
    return found


def _build_id(busybox: Path) -> str:
    # Same busybox and same layout -> same tree: what lets a rebuild be skipped.
    digest = hashlib.sha256(f"layout {LAYOUT}\n".encode())
    digest.update(busybox.read_bytes())
    return digest.hexdigest()[:16]


def _os_release(dest: Path) -> dict[str, str]:
    try:
        text = (dest / "etc" / "os-release").read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _check_replaceable(dest: Path) -> None:
    """Refuse to replace a directory that is neither empty nor a tree this module built."""
    if dest.is_dir() and any(dest.iterdir()) and _os_release(dest).get("ID") != "labkit-busybox":
        raise BadInput(
            f"{dest} already exists and is not a labkit busybox rootfs: "
            "give a new or empty directory."
        )
    if dest.exists() and not dest.is_dir():
        raise BadInput(f"{dest} exists and is not a directory: give a new or empty directory.")


def _applets(busybox: Path) -> list[str]:
    """Where each applet belongs (``bin/sh``, ``usr/sbin/chroot``...), as busybox itself says."""
    out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True)
    # Skip the binary itself, and `linuxrc`, an entry point for old initrds that lives in `/`.
    return [p for p in out.stdout.split() if "/" in p and p != "bin/busybox"]


def _version(busybox: Path) -> str:
    out = subprocess.run([str(busybox)], check=False, capture_output=True, text=True)
    # The first line reads "BusyBox v1.35.0 (Debian 1:1.35.0-4) multi-call binary."
    first = (out.stdout or out.stderr).split("\n", 1)[0]
    return first.split()[1].lstrip("v") if first.startswith("BusyBox v") else "unknown"


def _populate(tree: Path, busybox: Path, build_id: str) -> None:
    """Fill the empty directory *tree* with busybox, its applet links, and a few files in etc."""
    for name, mode in _DIRS.items():
        (tree / name).mkdir(exist_ok=True)
        os.chmod(tree / name, mode)  # chmod, not mkdir's mode: the umask must not weaken 1777
    shutil.copy2(busybox, tree / "bin" / "busybox")
    for applet in _applets(busybox):
        link = tree / applet
        link.parent.mkdir(parents=True, exist_ok=True)
        # Relative links (../../bin/busybox) resolve the same from the host and from inside.
        target = os.path.relpath(tree / "bin" / "busybox", link.parent)
        link.symlink_to(target)
    etc = tree / "etc"
    version = _version(busybox)
    (etc / "passwd").write_text(_PASSWD)
    (etc / "group").write_text(_GROUP)
    (etc / "hostname").write_text("labkit\n")
    (etc / "os-release").write_text(
        'NAME="labkit busybox rootfs"\n'
        "ID=labkit-busybox\n"
        f"VERSION_ID={version}\n"
        f'PRETTY_NAME="labkit busybox rootfs (BusyBox {version})"\n'
        f"BUILD_ID={build_id}\n"
    )


def build(dest: str | Path | None = None, *, busybox: str | Path | None = None) -> Path:
    """Build the busybox root filesystem at *dest* (default: in the state dir) and return it.

    Cheap when the same tree is already there. The tree is built in a temporary directory beside
    *dest* and renamed into place, so a failed build leaves nothing half-made.
    """
    binary = static_busybox(busybox)
    if dest is None:
        dest = default_dest()
        exec_capable(dest.parent)
    dest = Path(dest)
    build_id = _build_id(binary)
    if _os_release(dest).get("BUILD_ID") == build_id and (dest / "bin" / "sh").is_symlink():
        return dest
    _check_replaceable(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.building-", dir=dest.parent))
    old = None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; it becomes the container's "/"
        _populate(tmp, binary, build_id)
        if dest.exists():
            # rename() cannot replace a non-empty directory: move the stale tree aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.rename(dest, old / "tree")
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not dest.exists():
            os.rename(old / "tree", dest)  # put the previous tree back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def remove(dest: str | Path | None = None) -> None:
    """Remove a root filesystem built by ``build()``, and the tmpfs under it once it is empty."""
    dest = Path(dest) if dest is not None else default_dest()
    _check_replaceable(dest)
    shutil.rmtree(dest, ignore_errors=True)
    parent = dest.parent
    if dest == default_dest() and parent.is_dir() and not any(parent.iterdir()):
        if str(parent) in {m.point for m in mountinfo.mounts()}:
            ksys.umount2(str(parent), ksys.MNT_DETACH)
        parent.rmdir()
