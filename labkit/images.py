"""Container images: a content-addressed store of layers, and the archives that carry them.

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

Archives: ``docker save`` (manifest.json, in its legacy form with ``<id>/layer.tar`` and in
Docker 25's form beside an OCI layout) and OCI image layouts (``oci-layout``, ``index.json``,
``blobs/sha256/``), as directories or tars. Nothing from an archive reaches the store before all
of it, every image it holds, has been checked and applied in ``images/tmp/``; every refusal is
one sentence that names the archive's member (escaped: see ``layers.show``).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import layers, overlay
from .errors import BadInput, LabkitError, require_root
from .layers import show
from .overlay import Overlay, live_overlays
from .state import check_name, state_dir

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_INDEX_TYPES = (MEDIA_INDEX, DOCKER_MANIFEST_LIST)
_MAX_JSON = 16 << 20  # a manifest or config bigger than this is not one
_CHUNK = 1 << 20
_NAME = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def _goarch() -> str:
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


def _blob_path(digest: str) -> Path:
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
    config = json.loads(_blob_path(image_id).read_bytes())
    diff_ids = list(config["rootfs"]["diff_ids"])
    sizes = [_blob_path(d).stat().st_size for d in diff_ids]
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


class _Stage:
    """A scratch dir in the store; its blobs and layers are renamed into place by ``install``."""

    def __init__(self, bounds: layers.Bounds | None = None) -> None:
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

    def __enter__(self) -> _Stage:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def add_json(self, data: bytes, expected: str | None = None, what: str = "blob") -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _check_digest(digest, expected, what)
        path = self._scratch("blob")
        path.write_bytes(data)
        self.blobs[digest] = path
        return digest

    def add_layer(self, stream: BinaryIO, expected: str | None, what: str) -> str:
        """Copy a layer (plain, gzip, xz or zstd) into an uncompressed blob, check it, apply it;
        its DiffID."""
        path = self._scratch("blob")
        with open(path, "xb") as out:
            digest, diff_id = layers.uncompress(stream, out, self.bounds, what)
        _check_digest(digest, expected, what)
        self.blobs[diff_id] = path
        if diff_id not in self.layers and not layer_dir(diff_id).is_dir():
            target = self._scratch("layer")
            target.mkdir()
            os.chmod(target, 0o755)  # it becomes a directory of the container's root
            layers.apply_layer(path, target, self.bounds)
            self.layers[diff_id] = target
        return diff_id

    def install(self) -> list[Image]:
        """Rename every staged blob and layer into the store, then name the images, all under
        the store's lock: two imports at once cannot lose each other's names."""
        with _store_lock():
            for digest, path in self.blobs.items():
                _rename_into(path, _blob_path(digest))
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


def _check_digest(actual: str, expected: str | None, what: str) -> None:
    if expected is not None and actual != expected:
        raise BadInput(
            f"{what} does not match its digest (named {expected[:19]}..., its content hashes to "
            f"{actual[:19]}...): the archive is corrupt or was tampered with; save it again."
        )


def _config_bytes(config: dict) -> bytes:
    # Sorted keys, no spaces: the same config always gives the same bytes, so the same id.
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


# --- reading archives -------------------------------------------------------------------------

_MAX_LINKS = 8  # hops through links between the outer archive's members, as ELOOP counts


class _Source:
    """A docker-save or OCI archive, as a directory or a tar: files opened by relative path."""

    def __init__(self, path: Path, bounds: layers.Bounds) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        if path.is_dir():
            return
        if not path.is_file():
            raise BadInput(
                f"{show(str(path))} does not exist: give a 'docker save' tar, an OCI layout "
                "directory or its tar."
            )
        with open(path, "rb") as f:
            kind = layers.compression(f.read(8))
        if kind not in (None, "gzip"):
            raise BadInput(
                f"{show(str(path))} is {kind}-compressed; labkit reads archives that are plain "
                f"or gzip tars: uncompress it first (e.g. with {kind} -d)."
            )
        try:
            self.tar = tarfile.open(path, "r:gz" if kind else "r:")
            # Legacy docker save links a repeated layer.tar to the first one: keep links too,
            # resolved by ``_member`` inside the archive only.
            self.members: dict[str, tarfile.TarInfo] = {}
            # A gzip archive can claim members far bigger than itself: cap what they add up to.
            claimed = layers.Bounds(bounds.max_bytes, bounds.max_entries)
            for m in self.tar:
                bounds.add_entry(f"the archive's member {show(m.name)}")
                if kind:
                    claimed.add_bytes(m.size, f"the archive's member {show(m.name)}")
                if m.isfile() or m.issym() or m.islnk():
                    self.members[layers.clean_name(m.name, "the archive holds the member")] = m
        except tarfile.TarError as e:
            raise BadInput(
                f"{show(str(path))} is not a tar archive ({show(str(e), 60, quote=False)}): give a "
                "'docker save' tar or an OCI layout."
            ) from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()

    def _rel(self, rel) -> str:
        if not isinstance(rel, str):
            raise BadInput(
                f"the archive's manifest names a file by {show(str(rel))}, which is not a path: "
                "the archive is corrupt."
            )
        try:
            return layers.clean_name(rel)
        except BadInput:
            raise BadInput(
                f"the archive's manifest names {show(rel)}, outside the archive: refusing it."
            ) from None

    def exists(self, rel: str) -> bool:
        rel = self._rel(rel)
        if self.tar is not None:
            return rel in self.members
        return (self.path / rel).is_file()

    def _member(self, rel: str) -> tarfile.TarInfo:
        """The regular file *rel* names, following links between members, inside the archive."""
        member = self.members[rel]
        for _ in range(_MAX_LINKS):
            if member.isfile():
                return member
            if member.issym():
                target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), member.linkname))
            else:
                target = member.linkname
            try:
                rel = layers.clean_name(target)
            except BadInput:
                raise BadInput(
                    f"the archive's {show(rel)} is a link out of the archive: refusing it."
                ) from None
            if rel not in self.members:
                raise BadInput(
                    f"the archive's {show(rel)} is a link to a file the archive does not hold: "
                    "the archive is incomplete."
                )
            member = self.members[rel]
        raise BadInput(
            f"the archive's {show(rel)} is a chain of more than {_MAX_LINKS} links, or a loop: "
            "the archive is corrupt."
        )

    def open(self, rel: str) -> BinaryIO:
        rel = self._rel(rel)
        if not self.exists(rel):
            raise BadInput(
                f"the archive's manifest names {show(rel)}, which the archive does not hold: "
                "the archive is incomplete; save the image again."
            )
        if self.tar is not None:
            return self.tar.extractfile(self._member(rel))  # type: ignore[return-value]
        real = os.path.realpath(self.path / rel)
        if not real.startswith(os.path.realpath(self.path) + os.sep):
            raise BadInput(
                f"the archive's {show(rel)} is a symlink out of the archive: refusing it."
            )
        return open(real, "rb")

    def read(self, rel: str) -> bytes:
        with self.open(rel) as f:
            data = f.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise BadInput(
                f"the archive's {show(rel)} is over {_MAX_JSON >> 20} MiB, too big for a "
                "manifest or config."
            )
        return data

    def read_json(self, rel: str, data: bytes | None = None, kind: type = dict):
        """The JSON document *rel*: a *kind* (an object, or a list), of bounded depth."""
        try:
            doc = json.loads(data if data is not None else self.read(rel))
        except RecursionError:
            doc = None  # nested past Python's recursion limit: too deep, said below
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            raise BadInput(
                f"the archive's {show(rel)} is not valid JSON: the archive is corrupt."
            ) from None
        if doc is None or _json_depth(doc) > _MAX_JSON_DEPTH:
            raise BadInput(
                f"the archive's {show(rel)} nests its JSON more than {_MAX_JSON_DEPTH} levels "
                "deep; a manifest or config needs a few: the archive is corrupt or hostile."
            )
        if not isinstance(doc, kind):
            raise BadInput(
                f"the archive's {show(rel)} is not a JSON "
                f"{'object' if kind is dict else 'list'}: the archive is corrupt."
            )
        return doc


_MAX_JSON_DEPTH = 32


def _json_depth(doc) -> int:
    """How deeply a parsed JSON document nests, counted without recursion."""
    deepest, todo = 0, [(doc, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            todo.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def _field(doc: dict, key: str, kind: type, where: str, default=None):
    """``doc[key]``, which must be a *kind*; a missing optional field gives *default*."""
    value = doc.get(key, default)
    if not isinstance(value, kind):
        raise BadInput(
            f"the archive's {show(where, quote=False)} has "
            f"{'no' if key not in doc else 'a malformed'} field "
            f"{key!r} (it must be a JSON {_JSON_KIND.get(kind, 'value')}): the archive is corrupt."
        )
    return value


_JSON_KIND = {dict: "object", list: "list", str: "string"}


@dataclass
class _Found:
    """One image an archive holds: where its config and layers are, and what they should hash to."""

    config: str
    config_digest: str | None
    layers: list[tuple[str, str | None]]  # (path in the archive, expected digest)
    names: list[str]


def _blob_rel(digest) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise BadInput(
            f"the archive names a blob by {show(str(digest))}, which is not a sha256 digest: "
            "refusing it."
        )
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _docker_save(src: _Source) -> list[_Found]:
    """manifest.json: [{"Config": ..., "RepoTags": [...], "Layers": [...]}], both Docker forms."""
    entries = src.read_json("manifest.json", kind=list)
    found = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise BadInput(
                "the archive's manifest.json is not a list of images: the archive is corrupt."
            )

        def expected(rel: str) -> str | None:
            # blobs/sha256/<hex> (Docker 25+) and legacy "<hex>.json" configs name their digest;
            # legacy "<id>/layer.tar" does not: its DiffID is checked against the config instead.
            m = re.fullmatch(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?", rel)
            return "sha256:" + m.group(1) if m else None

        config = _field(entry, "Config", str, "manifest.json")
        rels = _field(entry, "Layers", list, "manifest.json", [])
        tags = _field(entry, "RepoTags", list, "manifest.json", []) if entry.get("RepoTags") else []
        found.append(
            _Found(
                config,
                expected(config),
                [(rel, expected(rel) if isinstance(rel, str) else None) for rel in rels],
                [full_name(n) for n in tags],
            )
        )
    return found


def _platform_ok(descriptor: dict) -> bool:
    wanted = _goarch()
    plat = descriptor.get("platform")
    if not isinstance(plat, dict):
        return plat is None
    return plat.get("os") == "linux" and plat.get("architecture") == wanted


_MAX_INDEX_DEPTH = 8  # Docker writes one or two levels of index; a deeper one is no image


def _oci_layout(src: _Source) -> list[_Found]:
    """index.json -> (nested indexes) -> manifests -> config and layers, every blob checked.

    Each index and manifest is read once, however often it is listed (an index that repeats
    one manifest 16 times at each of 3 levels would otherwise be 4,096 imports), and nesting
    stops at _MAX_INDEX_DEPTH levels.
    """
    found: dict[str, _Found] = {}  # manifest digest -> image, in the order first met
    seen: set[str] = set()

    def walk_index(index: dict, where: str, names: list[str], depth: int) -> None:
        if depth > _MAX_INDEX_DEPTH:
            raise BadInput(
                f"the archive's {show(where)} nests indexes more than {_MAX_INDEX_DEPTH} levels "
                "deep, past labkit's limit (real images use one or two): re-export the image "
                "with a flat index.json."
            )
        for desc in _field(index, "manifests", list, where, []):
            if not isinstance(desc, dict):
                raise BadInput(
                    f"the archive's {show(where)} lists a manifest that is not an object: the "
                    "archive is corrupt."
                )
            if not _platform_ok(desc):
                continue
            rel = _blob_rel(desc.get("digest"))
            annotations = desc.get("annotations")
            name = _name_from_annotations(annotations if isinstance(annotations, dict) else {})
            here = names + ([name] if name else [])
            if desc["digest"] in found:  # the same manifest again: one image, more names
                found[desc["digest"]].names += here
                continue
            if desc["digest"] in seen:
                continue
            seen.add(desc["digest"])
            data = src.read(rel)
            _check_digest("sha256:" + hashlib.sha256(data).hexdigest(), desc["digest"], rel)
            doc = src.read_json(rel, data)
            if desc.get("mediaType") in _INDEX_TYPES or doc.get("mediaType") in _INDEX_TYPES:
                walk_index(doc, rel, here, depth + 1)
            else:
                config = _field(doc, "config", dict, rel).get("digest")
                layer_descs = []
                for d in _field(doc, "layers", list, rel, []):
                    digest = d.get("digest") if isinstance(d, dict) else d
                    layer_descs.append((_blob_rel(digest), digest))
                found[desc["digest"]] = _Found(_blob_rel(config), config, layer_descs, here)

    walk_index(src.read_json("index.json"), "index.json", [], 1)
    if not found:
        raise BadInput(
            f"the OCI layout holds no image for linux/{_goarch()}: export it for this platform."
        )
    for image in found.values():
        image.names = sorted(set(image.names))
    return list(found.values())


def _name_from_annotations(annotations: dict) -> str | None:
    # Docker writes "docker.io/library/busybox:latest"; a ref.name that is no name is skipped.
    name = annotations.get("io.containerd.image.name") or annotations.get(
        "org.opencontainers.image.ref.name"
    )
    if not isinstance(name, str) or not name:
        return None
    name = name.removeprefix("docker.io/").removeprefix("library/")
    return full_name(name) if _NAME.match(name) else None


def _find_images(src: _Source) -> list[_Found]:
    if src.exists("manifest.json"):
        return _docker_save(src)
    if src.exists("index.json") and src.exists("oci-layout"):
        return _oci_layout(src)
    raise BadInput(
        f"{show(str(src.path))} is neither a 'docker save' archive (no manifest.json) nor an OCI "
        "image layout (no oci-layout and index.json): give one of those."
    )


def _stage_image(src: _Source, stage: _Stage, image: _Found, names: list[str]) -> None:
    """Check one image's config and layers and stage them; nothing reaches the store yet."""
    config_data = src.read(image.config)
    where = f"config {image.config}"
    image_id = stage.add_json(config_data, image.config_digest, f"the {show(where, quote=False)}")
    config = src.read_json(image.config, config_data)
    rootfs = _field(config, "rootfs", dict, where)
    diff_ids = _field(rootfs, "diff_ids", list, where + " (rootfs)")
    if not all(isinstance(d, str) and _DIGEST.match(d) for d in diff_ids):
        raise BadInput(
            f"the {show(where, quote=False)} lists a rootfs.diff_id that is not a sha256 "
            "digest: the archive is corrupt."
        )
    if len(diff_ids) != len(image.layers):
        raise BadInput(
            f"the config lists {len(diff_ids)} layers but the manifest {len(image.layers)}: "
            "the archive is corrupt; save the image again."
        )
    for (rel, digest), diff_id in zip(image.layers, diff_ids):
        what = f"the layer {show(str(rel), quote=False)}"
        with src.open(rel) as stream:
            got = stage.add_layer(stream, digest, what)
        _check_digest(got, diff_id, f"{what} (uncompressed)")
    stage.images.append((image_id, names))


def import_image(
    source: str | os.PathLike,
    name: str | None = None,
    max_bytes: int | str | None = None,
    max_entries: int | str | None = None,
) -> list[Image]:
    """Import every image in a docker-save archive or OCI layout (dir or tar) into the store.

    *name* names the (single) imported image instead of the names in the archive. The whole
    archive is checked and applied in a scratch dir first, then installed at once: a refused
    archive leaves the store as it was. *max_bytes* and *max_entries* raise the bounds on what
    one import may unpack (default: ``LABKIT_IMAGE_MAX_BYTES``, ``LABKIT_IMAGE_MAX_ENTRIES``,
    else 1 GiB and 200,000 entries).
    """
    require_root("importing an image")
    bounds = layers.Bounds.from_env(max_bytes, max_entries)
    if name is not None:
        name = full_name(name)
    had_store = store_dir().is_dir()
    src = None
    try:
        src = _Source(Path(source), bounds)
        found = _find_images(src)
        if name is not None and len(found) != 1:
            raise BadInput(
                f"the archive holds {len(found)} images, so one name cannot fit them: import "
                "without a name."
            )
        with _Stage(bounds) as stage:
            for image in found:
                _stage_image(src, stage, image, [name] if name else image.names)
            return stage.install()
    except OSError as e:
        # The kernel's reason; never the scratch path, which is no use to the reader.
        raise LabkitError(
            f"importing {show(str(source))} failed: {e.strerror or type(e).__name__}; the store "
            "is as it was "
            "(if the disk is full, free space or set LABKIT_STATE_DIR to a bigger filesystem)."
        ) from None
    finally:
        if src is not None:
            src.close()
        if not had_store and not _repositories():
            _remove_empty_store()


# --- writing archives -------------------------------------------------------------------------


def _descriptor(media: str, digest: str, size: int, **extra) -> dict:
    return {"mediaType": media, "digest": digest, "size": size, **extra}


def _archive_files(image: Image) -> list[tuple[str, Path | bytes]]:
    """The files of an OCI layout that also reads as a Docker 25 ``docker save`` archive."""
    config_data = _blob_path(image.id).read_bytes()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": _descriptor(MEDIA_CONFIG, image.id, len(config_data)),
        "layers": [_descriptor(MEDIA_LAYER, d, s) for d, s in zip(image.diff_ids, image.sizes)],
    }
    manifest_data = json.dumps(manifest, sort_keys=True, indent=2).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_data).hexdigest()
    # One entry per name, so that a reader of index.json finds the names too.
    named = [
        _descriptor(
            MEDIA_MANIFEST,
            manifest_digest,
            len(manifest_data),
            annotations={
                "io.containerd.image.name": n,
                "org.opencontainers.image.ref.name": n.rsplit(":", 1)[1],
            },
        )
        for n in image.names
    ]
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": named or [_descriptor(MEDIA_MANIFEST, manifest_digest, len(manifest_data))],
    }
    docker = [
        {
            "Config": _blob_rel(image.id),
            "RepoTags": image.names,
            "Layers": [_blob_rel(d) for d in image.diff_ids],
        }
    ]
    files: dict[str, Path | bytes] = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": json.dumps(index, sort_keys=True, indent=2).encode(),
        "manifest.json": json.dumps(docker, sort_keys=True, indent=2).encode(),
        _blob_rel(image.id): config_data,
        _blob_rel(manifest_digest): manifest_data,
    }
    for d in image.diff_ids:
        files[_blob_rel(d)] = _blob_path(d)
    return sorted(files.items())


def export_image(ref: str, dest: str | os.PathLike) -> Path:
    """Write the image as an OCI layout (with a docker-save manifest.json): a tar if *dest* ends
    in ``.tar``, else a new directory. The same image always gives the same bytes.

    Everything is written below a temporary name made exclusively beside *dest* (``mkdtemp``,
    ``O_EXCL``: never through a link someone planted there), then renamed to *dest*.
    """
    image = get(ref)
    dest = Path(dest)
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise BadInput(
            f"{show(str(dest))} cannot be used ({e.strerror}): give a new path."
        ) from None
    is_tar = dest.suffix == ".tar"
    if st is not None and (is_tar or not stat.S_ISDIR(st.st_mode) or os.listdir(dest)):
        raise BadInput(
            f"{show(str(dest))} already exists: give a new path (NAME.tar for a tar, else a "
            "directory)."
        )
    if not dest.parent.is_dir():
        raise BadInput(
            f"{show(str(dest.parent))} is not a directory: give a path in an existing directory."
        )
    files = _archive_files(image)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if is_tar:
            with open(tmp / "archive.tar", "xb") as out:
                _write_archive_tar(files, out)
            os.chmod(tmp / "archive.tar", 0o644)
            os.rename(tmp / "archive.tar", dest)
            os.rmdir(tmp)
        else:
            for rel, content in files:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                with open(tmp / rel, "xb") as out:
                    if isinstance(content, bytes):
                        out.write(content)
                    else:
                        with open(content, "rb") as f:
                            shutil.copyfileobj(f, out, _CHUNK)
            os.chmod(tmp, 0o755)
            # rename(2) replaces an empty directory (or nothing) and never follows a link
            os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _write_archive_tar(files: list[tuple[str, Path | bytes]], out: BinaryIO) -> None:
    """A tar of *files*, sorted, with fixed times and owners: the same files give the same bytes."""
    dirs = sorted({str(p) for rel, _ in files for p in Path(rel).parents} - {"."})
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            archive.addfile(info)
        for rel, content in files:
            info = tarfile.TarInfo(rel)
            info.mode, info.mtime = 0o644, 0
            if isinstance(content, bytes):
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
            else:
                info.size = content.stat().st_size
                with open(content, "rb") as f:
                    archive.addfile(info, f)


# --- making images: the busybox base, and commit ---------------------------------------------


def _new_image(
    stage: _Stage, layer_tar: Path, parent: Image | None, comment: str, names: list[str]
) -> Image:
    with open(layer_tar, "rb") as f:
        diff_id = stage.add_layer(f, None, "the new layer")
    if parent is None:
        config = {
            "architecture": _goarch(),
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

    with _Stage() as stage:
        tree = rootfs.build(stage.dir / "rootfs")
        layers.write_layer_file(tree, stage.dir / "layer.tar")
        return _new_image(
            stage,
            stage.dir / "layer.tar",
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
    with _Stage() as stage:
        layers.write_layer_file(upperdir, stage.dir / "layer.tar")
        return _new_image(stage, stage.dir / "layer.tar", parent, comment, [full_name(name)])


def import_rootfs(
    source: str | os.PathLike, name: str | None = None, comment: str = "labkit: imported"
) -> Image:
    """A one-layer image from a root filesystem tar (plain, gzip, xz or zstd), as ``docker
    import`` makes one; checked and bounded like every layer."""
    require_root("importing a root filesystem")
    names = [full_name(name)] if name is not None else []
    had_store = store_dir().is_dir()
    try:
        with _Stage() as stage:
            return _new_image(stage, Path(source), None, comment, names)
    except OSError as e:
        raise LabkitError(
            f"importing {show(str(source))} failed: {e.strerror or type(e).__name__}; the store "
            "is as it was."
        ) from None
    finally:
        if not had_store and not _repositories():
            _remove_empty_store()


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
            still_used.update(json.loads(_blob_path(other).read_bytes())["rootfs"]["diff_ids"])
        for digest in [image.id, *image.diff_ids]:
            if digest in still_used or not _blob_path(digest).exists():
                continue
            _blob_path(digest).unlink()
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
