"""Container images: a content-addressed store of layers, and an image as a container's root.

An image is a *config* (a JSON document: command, environment, and ``rootfs.diff_ids``, the
DiffIDs of its layers, bottom first) plus those layers. Everything is named by the sha256 of its
content, so two images that share a layer store it once, and a blob whose bytes do not hash to
its name is refused. The image's id is the digest of its config.

The store lives below labkit's state dir, so ``labkit cleanup`` finds it::

    images/blobs/sha256/<hex>   configs and layer tars (uncompressed), named by their digest
    images/layers/<hex>/        each layer applied once (whiteouts converted): an overlay lowerdir
    images/repositories.json    {image id: [names]}, replaced whole, under a lock:
    images/repositories.lock    flock(2) by whoever changes the names
    images/roots/<name>/        upper, work and merged dirs of overlay roots made from images
    images/tmp/                 imports in progress, renamed into place only when complete

Images come into the store through a ``Stage``: built aside in ``images/tmp/``, checked, then
renamed into place at once, so a refused import leaves the store as it was. ``labkit.archives``
reads and writes the archives that carry images between engines (``docker save``, OCI image
layouts); ``labkit.layers`` applies and writes the layer tars.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from . import overlay
from .errors import BadInput, LabkitError, require_root, show
from .overlay import Overlay, live_overlays
from .state import check_name, state_dir

if TYPE_CHECKING:
    from . import layers

_NAME = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")
_GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def goarch() -> str:
    """This machine's architecture in Go's (and so OCI's) words: uname's x86_64 is amd64."""
    machine = os.uname().machine
    return _GOARCH.get(machine, machine)


# --- where things are ------------------------------------------------------------------------


def store_dir() -> Path:
    """The image store, below the state dir."""
    return state_dir() / "images"


def _make_store() -> Path:
    # Only root may enter the store: layers keep their setuid bits and their owners.
    root = store_dir()
    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
    return root


def blob_path(digest: str) -> Path:
    return store_dir() / "blobs" / "sha256" / digest.split(":", 1)[1]


def layer_dir(diff_id: str) -> Path:
    """The directory a layer was applied into: use it as an overlay lowerdir."""
    return store_dir() / "layers" / diff_id.split(":", 1)[1]


def _repositories() -> dict[str, list[str]]:
    path = store_dir() / "repositories.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _write_repositories(repos: dict[str, list[str]]) -> None:
    # Write a new file and rename it over the old one: a reader sees one or the other, never half.
    path = _make_store() / "repositories.json"
    tmp = path.with_suffix(".json.new")
    tmp.write_text(json.dumps(repos, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def full_name(name: str) -> str:
    """``busybox`` -> ``busybox:latest``; refuse what cannot be an image name.

    Docker Hub's long form (``docker.io/library/busybox``, what ``docker tag`` sends) is kept
    short, as the docker CLI shows it."""
    if isinstance(name, str):
        name = name.removeprefix("docker.io/").removeprefix("library/")
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInput(
            f"{show(str(name))} is not an image name: use lower-case letters, digits and '._/-', "
            "optionally with ':TAG' (e.g. busybox:latest)."
        )
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


# --- images as the store knows them -----------------------------------------------------------


@dataclass
class Image:
    """One image in the store: its id (the config's digest), names, config and layers."""

    id: str
    names: list[str]
    config: dict
    diff_ids: list[str]  # bottom layer first
    sizes: list[int]  # bytes of each layer tar

    @property
    def chain_ids(self) -> list[str]:
        from . import layers

        return layers.chain_ids(self.diff_ids)

    @property
    def layer_dirs(self) -> list[Path]:
        """The applied layers, bottom first."""
        return [layer_dir(d) for d in self.diff_ids]

    @property
    def lowerdirs(self) -> list[Path]:
        """The applied layers in overlay order: top first."""
        return self.layer_dirs[::-1]

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    def __str__(self) -> str:
        names = ", ".join(self.names) or "<none>"
        count = len(self.diff_ids)
        counted = f"{count} layer{'' if count == 1 else 's'}"
        return f"{self.short_id}  {names}  ({counted}, {sum(self.sizes)} bytes)"

    def describe(self) -> str:
        """Id, names, command and each layer's DiffID, ChainID and size, bottom layer first."""
        command = (self.config.get("config") or {}).get("Cmd") or []
        lines = [
            f"id       {self.id}",
            f"names    {', '.join(self.names) or '<none>'}",
            f"command  {' '.join(command)}",
            "layers   (bottom first; digests shortened)",
        ]
        for i, (diff, chain, size) in enumerate(zip(self.diff_ids, self.chain_ids, self.sizes)):
            lines.append(f"  {i}  diff {diff[:19]}  chain {chain[:19]}  {size} bytes")
        return "\n".join(lines)


def _load(image_id: str, names: list[str]) -> Image:
    config = json.loads(blob_path(image_id).read_bytes())
    diff_ids = list(config["rootfs"]["diff_ids"])
    sizes = [blob_path(d).stat().st_size for d in diff_ids]
    return Image(image_id, sorted(names), config, diff_ids, sizes)


def list_images() -> list[Image]:
    """Every image in the store, sorted by name."""
    images = [_load(i, names) for i, names in _repositories().items()]
    return sorted(images, key=lambda im: (im.names or ["~"], im.id))


def get(ref: str) -> Image:
    """The image a name (``busybox``, ``busybox:latest``) or an id (or its first 12+ hex) refers
    to."""
    repos = _repositories()
    hexpart = ref.removeprefix("sha256:")
    if re.fullmatch(r"[0-9a-f]{12,64}", hexpart):
        found = [i for i in repos if i.split(":", 1)[1].startswith(hexpart)]
        if len(found) == 1:
            return _load(found[0], repos[found[0]])
    if _NAME.match(ref):
        name = full_name(ref)
        for image_id, names in repos.items():
            if name in names:
                return _load(image_id, names)
    raise BadInput(
        f"there is no image {ref!r} in the store: see 'labkit image list', or import one."
    )


# --- staging: build everything aside, then rename it into the store ------------------------
# What writes to the store hashes and unpacks (labkit.layers, with hashlib and tarfile): those
# modules are imported by the functions that do it, so that a container's start, which only reads
# the store, does not spend milliseconds loading them.


class Stage:
    """A scratch dir in the store; its blobs and layers are renamed into place by ``install``."""

    def __init__(self, bounds: layers.Bounds | None = None) -> None:
        import tempfile

        from . import layers

        self.made_store = not store_dir().is_dir()
        tmp = _make_store() / "tmp"
        tmp.mkdir(exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(dir=tmp))
        self.bounds = bounds if bounds is not None else layers.Bounds.from_env()
        self.blobs: dict[str, Path] = {}
        self.layers: dict[str, Path] = {}
        self.images: list[tuple[str, list[str]]] = []  # (image id, names) to install
        self._count = 0

    def _scratch(self, kind: str) -> Path:
        self._count += 1
        return self.dir / f"{kind}-{self._count}"

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.made_store and not _repositories():  # it made the store and put nothing in it
            _remove_empty_store()

    def add_json(self, data: bytes, expected: str | None = None, what: str = "blob") -> str:
        from . import layers

        digest = layers.digest(data)
        check_digest(digest, expected, what)
        path = self._scratch("blob")
        path.write_bytes(data)
        self.blobs[digest] = path
        return digest

    def add_layer(self, stream: BinaryIO, expected: str | None, what: str) -> str:
        """Copy a layer (plain, gzip, xz or zstd) into an uncompressed blob, check it, apply it;
        its DiffID."""
        from . import layers

        path = self._scratch("blob")
        with open(path, "xb") as out:
            digest, diff_id = layers.uncompress(stream, out, self.bounds, what)
        check_digest(digest, expected, what)
        self.blobs[diff_id] = path
        if diff_id not in self.layers and not layer_dir(diff_id).is_dir():
            target = self._scratch("layer")
            target.mkdir()
            os.chmod(target, 0o755)  # it becomes a directory of the container's root
            layers.apply_layer(path, target, self.bounds)
            self.layers[diff_id] = target
        return diff_id

    def write_layer(self, root: str | os.PathLike) -> Path:
        """A layer tar, in the scratch dir, of the tree *root* (an upper dir's whiteouts become
        the image spec's ``.wh.`` files)."""
        from . import layers

        path = self._scratch("layer.tar")
        layers.write_layer_file(root, path)
        return path

    def install(self) -> list[Image]:
        """Rename every staged blob and layer into the store, then name the images, all under
        the store's lock: two imports at once cannot lose each other's names."""
        with _store_lock():
            for digest, path in self.blobs.items():
                _rename_into(path, blob_path(digest))
            for diff_id, path in self.layers.items():
                _rename_into(path, layer_dir(diff_id))
            repos = _repositories()
            for image_id, names in self.images:
                for other in repos.values():  # a name moves to the new image
                    other[:] = [n for n in other if n not in names]
                repos[image_id] = sorted(set(repos.get(image_id, [])) | set(names))
            _write_repositories(repos)
        return [_load(image_id, repos[image_id]) for image_id, _ in self.images]


@contextlib.contextmanager
def _store_lock():
    """Hold the store's lock (flock on ``images/repositories.lock``) for a read-modify-write of
    the names file."""
    fd = os.open(
        _make_store() / "repositories.lock",
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last fd of the open file releases the lock


def _rename_into(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dest)
    except OSError:
        if not dest.exists():  # already there is fine: same digest, same content
            raise


def check_digest(actual: str, expected: str | None, what: str) -> None:
    if expected is not None and actual != expected:
        raise BadInput(
            f"{what} does not match its digest (named {expected[:19]}..., its content hashes to "
            f"{actual[:19]}...): the archive is corrupt or was tampered with; save it again."
        )


def _config_bytes(config: dict) -> bytes:
    # Sorted keys, no spaces: the same config always gives the same bytes, so the same id.
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


# --- making images: the busybox base, and commit ---------------------------------------------


def _new_image(
    stage: Stage, layer_tar: Path, parent: Image | None, comment: str, names: list[str]
) -> Image:
    with open(layer_tar, "rb") as f:
        diff_id = stage.add_layer(f, None, "the new layer")
    if parent is None:
        config = {
            "architecture": goarch(),
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        }
    else:
        config = copy.deepcopy(parent.config)
    config["rootfs"]["diff_ids"].append(diff_id)
    # No timestamp: the same change on the same image gives the same image id.
    config.setdefault("history", []).append({"created_by": comment})
    stage.images.append((stage.add_json(_config_bytes(config)), names))
    return stage.install()[0]


def busybox_image(name: str = "busybox:latest") -> Image:
    """Build a one-layer image from the host's busybox-static (offline) and store it as *name*."""
    require_root("building the busybox image")
    from . import rootfs

    with Stage() as stage:
        tree = rootfs.build(stage.dir / "rootfs")
        return _new_image(
            stage,
            stage.write_layer(tree),
            None,
            "labkit: busybox-static from the host",
            [full_name(name)],
        )


def commit(
    upperdir: str | os.PathLike, base: str, name: str, comment: str = "labkit commit"
) -> Image:
    """A new image: *base* plus one layer holding the changes in an overlay upper dir."""
    require_root("committing an image")
    parent = get(base)
    if not Path(upperdir).is_dir():
        raise BadInput(
            f"the upper dir {upperdir} does not exist: give the upperdir of a root made from "
            f"{base}."
        )
    with Stage() as stage:
        return _new_image(stage, stage.write_layer(upperdir), parent, comment, [full_name(name)])


def import_rootfs(
    source: str | os.PathLike, name: str | None = None, comment: str = "labkit: imported"
) -> Image:
    """A one-layer image from a root filesystem tar (plain, gzip, xz or zstd), as ``docker
    import`` makes one; checked and bounded like every layer."""
    require_root("importing a root filesystem")
    names = [full_name(name)] if name is not None else []
    try:
        with Stage() as stage:
            return _new_image(stage, Path(source), None, comment, names)
    except OSError as e:
        raise LabkitError(
            f"importing {show(str(source))} failed: {e.strerror or type(e).__name__}; the store "
            "is as it was."
        ) from None


def tag(ref: str, name: str) -> Image:
    """Give an image one more name, as ``docker tag`` does (a name another image had moves)."""
    require_root("tagging an image")
    image = get(ref)
    name = full_name(name)
    with _store_lock():
        repos = _repositories()
        for other in repos.values():
            other[:] = [n for n in other if n != name]
        repos[image.id] = sorted(set(repos[image.id]) | {name})
        _write_repositories(repos)
    return get(image.id)


def untag(name: str) -> Image:
    """Take one name off its image; the image and its other names stay."""
    require_root("untagging an image")
    name = full_name(name)
    image = get(name)
    with _store_lock():
        repos = _repositories()
        repos[image.id] = [n for n in repos[image.id] if n != name]
        _write_repositories(repos)
    return get(image.id)


def remove(ref: str) -> list[str]:
    """Remove an image and the blobs and layers no other image uses; return what was removed."""
    require_root("removing an image")
    image = get(ref)
    dirs = {str(d.resolve()) for d in image.layer_dirs}
    for live in live_overlays():
        if dirs & set(live.lowerdirs):
            raise BadInput(
                f"the image {ref} is in use by the overlay mounted at {live.merged}: unmount it "
                "first."
            )
    removed = []
    with _store_lock():
        repos = _repositories()
        repos.pop(image.id, None)
        _write_repositories(repos)
        still_used = set(repos)
        for other in repos:
            still_used.update(json.loads(blob_path(other).read_bytes())["rootfs"]["diff_ids"])
        for digest in [image.id, *image.diff_ids]:
            if digest in still_used or not blob_path(digest).exists():
                continue
            blob_path(digest).unlink()
            shutil.rmtree(layer_dir(digest), ignore_errors=True)
            removed.append(digest)
        if not repos:
            _remove_empty_store()
    return removed


def _remove_empty_store() -> None:
    """With its last image gone, the store itself goes, unless a root or an import is under way."""
    root = store_dir()
    busy = [d for d in (root / "roots", root / "tmp") if d.is_dir() and any(d.iterdir())]
    if not busy:
        shutil.rmtree(root, ignore_errors=True)


# --- an image as a container's root filesystem ------------------------------------------------


def roots_dir() -> Path:
    return store_dir() / "roots"


def mount_root(ref: str, name: str) -> Overlay:
    """Mount an overlay root for a container: the image's layers below a fresh upper dir.

    The layers stay shared and untouched; everything the container writes lands in
    ``roots/NAME/upper``.
    """
    image = get(ref)
    root = roots_dir() / check_name(name, "root name")
    if root.exists():
        raise BadInput(
            f"a root named {name!r} exists already: unmount_root({name!r}) first, or pick "
            "another name."
        )
    try:
        for d in ("upper", "work", "merged"):
            (root / d).mkdir(parents=True)
        os.chmod(root / "upper", 0o755)
        (root / "image").write_text(image.id + "\n")
        return Overlay(image.lowerdirs, root / "upper", root / "work", root / "merged").mount()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def unmount_root(name: str) -> None:
    """Unmount an overlay root and delete its upper dir (commit it first to keep the changes)."""
    root = roots_dir() / check_name(name, "root name")
    overlay.unmount(root / "merged")
    shutil.rmtree(root, ignore_errors=True)
