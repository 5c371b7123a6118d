"""Container images: a content-addressed store of layers, and the archives that carry them.

An image is a *config* (a JSON document: command, environment, and ``rootfs.diff_ids``, the
DiffIDs of its layers, bottom first) plus those layers. Everything is named by the sha256 of its
content, so two images that share a layer store it once, and a blob whose bytes do not hash to
its name is refused. The image's id is the digest of its config.

The store lives below labkit's state dir, so ``labkit cleanup`` finds it::

    images/blobs/sha256/<hex>   configs and layer tars (uncompressed), named by their digest
    images/layers/<hex>/        each layer applied once (whiteouts converted): an overlay lowerdir
    images/repositories.json    {image id: [names]}
    images/roots/<name>/        upper, work and merged dirs of overlay roots made from images
    images/tmp/                 imports in progress, renamed into place only when complete

Archives: ``docker save`` (manifest.json, in its legacy form with ``<id>/layer.tar`` and in
Docker 25's form beside an OCI layout) and OCI image layouts (``oci-layout``, ``index.json``,
``blobs/sha256/``), as directories or tars. Nothing from an archive reaches the store before all
of it has been checked.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import platform
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import layers, overlay
from .errors import BadInput, require_root
from .overlay import Overlay, live_overlays
from .state import check_name, state_dir

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_INDEX_TYPES = (MEDIA_INDEX, DOCKER_MANIFEST_LIST)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"
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
    """``busybox`` -> ``busybox:latest``; refuse what cannot be an image name."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInput(
            f"{name!r} is not an image name: use lower-case letters, digits and '._/-', "
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
        return f"{self.short_id}  {names}  ({count} layer{'' if count == 1 else 's'}, {sum(self.sizes)} bytes)"

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
    """The image a name (``busybox``, ``busybox:latest``) or an id (or its first 12+ hex) refers to."""
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

    def __init__(self) -> None:
        tmp = _make_store() / "tmp"
        tmp.mkdir(exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(dir=tmp))
        self.blobs: dict[str, Path] = {}
        self.layers: dict[str, Path] = {}
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
        """Copy a layer (plain or gzip) into an uncompressed blob, check it, apply it; its DiffID."""
        path = self._scratch("blob")
        digest, diff_id = _copy_layer(stream, path, what)
        _check_digest(digest, expected, what)
        self.blobs[diff_id] = path
        if diff_id not in self.layers and not layer_dir(diff_id).is_dir():
            target = self._scratch("layer")
            target.mkdir()
            os.chmod(target, 0o755)  # it becomes a directory of the container's root
            layers.apply_layer(path, target)
            self.layers[diff_id] = target
        return diff_id

    def install(self, image_id: str, names: list[str]) -> Image:
        """Rename the staged blobs and layers into the store, then name the image."""
        for digest, path in self.blobs.items():
            _rename_into(path, _blob_path(digest))
        for diff_id, path in self.layers.items():
            _rename_into(path, layer_dir(diff_id))
        repos = _repositories()
        for other in repos.values():  # a name moves to the new image
            other[:] = [n for n in other if n not in names]
        repos[image_id] = sorted(set(repos.get(image_id, [])) | set(names))
        _write_repositories(repos)
        return _load(image_id, repos[image_id])


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


def _copy_layer(stream: BinaryIO, dest: Path, what: str) -> tuple[str, str]:
    """Copy a layer to *dest* uncompressed; return (digest of the bytes read, DiffID)."""
    first = stream.read(_CHUNK)
    if first.startswith(_ZSTD_MAGIC):
        raise BadInput(
            f"{what} is zstd-compressed, which labkit cannot read: save the image with gzip or no compression."
        )
    inflate = zlib.decompressobj(wbits=31) if first.startswith(_GZIP_MAGIC) else None
    diff_hash = hashlib.sha256()
    # An uncompressed layer's digest is its DiffID: hash it once (hashing is most of the cost).
    read_hash = hashlib.sha256() if inflate else diff_hash
    with open(dest, "wb") as out:
        chunk = first
        while chunk:
            if inflate:
                read_hash.update(chunk)
                try:
                    chunk = inflate.decompress(chunk)
                except zlib.error as e:
                    raise BadInput(
                        f"{what} is not valid gzip ({e}): the archive is corrupt; save it again."
                    ) from None
            diff_hash.update(chunk)
            out.write(chunk)
            chunk = stream.read(_CHUNK)
        if inflate:
            rest = inflate.flush()
            diff_hash.update(rest)
            out.write(rest)
    return "sha256:" + read_hash.hexdigest(), "sha256:" + diff_hash.hexdigest()


def _config_bytes(config: dict) -> bytes:
    # Sorted keys, no spaces: the same config always gives the same bytes, so the same id.
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


# --- reading archives -------------------------------------------------------------------------


class _Source:
    """A docker-save or OCI archive, as a directory or a tar: files opened by relative path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        if path.is_dir():
            return
        if not path.is_file():
            raise BadInput(
                f"{path} does not exist: give a 'docker save' tar, an OCI layout directory or its tar."
            )
        try:
            self.tar = tarfile.open(path, "r:*")
            # Legacy docker save links a repeated layer.tar to the first one: keep links too
            # (tarfile follows them by name, inside the archive only).
            self.members = {
                layers._clean_name(m.name): m
                for m in self.tar.getmembers()
                if m.isfile() or m.issym() or m.islnk()
            }
        except tarfile.TarError as e:
            raise BadInput(
                f"{path} is not a tar archive ({e}): give a 'docker save' tar or an OCI layout."
            ) from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()

    def _rel(self, rel: str) -> str:
        try:
            return layers._clean_name(rel)
        except BadInput:
            raise BadInput(
                f"the archive's manifest names {rel!r}, outside the archive: refusing it."
            ) from None

    def exists(self, rel: str) -> bool:
        rel = self._rel(rel)
        if self.tar is not None:
            return rel in self.members
        return (self.path / rel).is_file()

    def open(self, rel: str) -> BinaryIO:
        rel = self._rel(rel)
        if not self.exists(rel):
            raise BadInput(
                f"the archive's manifest names {rel}, which the archive does not hold: "
                "the archive is incomplete; save the image again."
            )
        if self.tar is not None:
            try:
                return self.tar.extractfile(self.members[rel])  # type: ignore[return-value]
            except KeyError:
                raise BadInput(
                    f"the archive's {rel} is a link to a file the archive does not hold: the archive is incomplete."
                ) from None
        real = os.path.realpath(self.path / rel)
        if not real.startswith(os.path.realpath(self.path) + os.sep):
            raise BadInput(f"the archive's {rel} is a symlink out of the archive: refusing it.")
        return open(real, "rb")

    def read(self, rel: str) -> bytes:
        with self.open(rel) as f:
            data = f.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise BadInput(
                f"the archive's {rel} is over {_MAX_JSON >> 20} MiB, too big for a manifest or config."
            )
        return data

    def read_json(self, rel: str, data: bytes | None = None):
        try:
            return json.loads(data if data is not None else self.read(rel))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadInput(
                f"the archive's {rel} is not valid JSON: the archive is corrupt."
            ) from None


@dataclass
class _Found:
    """One image an archive holds: where its config and layers are, and what they should hash to."""

    config: str
    config_digest: str | None
    layers: list[tuple[str, str | None]]  # (path in the archive, expected digest)
    names: list[str]


def _blob_rel(digest: str) -> str:
    if not _DIGEST.match(str(digest)):
        raise BadInput(
            f"the archive names a blob by {digest!r}, which is not a sha256 digest: refusing it."
        )
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _docker_save(src: _Source) -> list[_Found]:
    """manifest.json: [{"Config": ..., "RepoTags": [...], "Layers": [...]}], both Docker forms."""
    entries = src.read_json("manifest.json")
    if not isinstance(entries, list):
        raise BadInput(
            "the archive's manifest.json is not a list of images: the archive is corrupt."
        )
    found = []
    for entry in entries:

        def expected(rel: str) -> str | None:
            # blobs/sha256/<hex> (Docker 25+) and legacy "<hex>.json" configs name their digest;
            # legacy "<id>/layer.tar" does not: its DiffID is checked against the config instead.
            m = re.fullmatch(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?", rel)
            return "sha256:" + m.group(1) if m else None

        config = entry.get("Config", "")
        found.append(
            _Found(
                config,
                expected(config),
                [(rel, expected(rel)) for rel in entry.get("Layers", [])],
                [full_name(n) for n in entry.get("RepoTags") or []],
            )
        )
    return found


def _platform_ok(descriptor: dict) -> bool:
    wanted = _GOARCH.get(platform.machine(), platform.machine())
    plat = descriptor.get("platform")
    return plat is None or (plat.get("os") == "linux" and plat.get("architecture") == wanted)


def _oci_layout(src: _Source) -> list[_Found]:
    """index.json -> (nested indexes) -> manifests -> config and layers, every blob checked."""
    found = []

    def walk_index(index: dict, names: list[str]) -> None:
        for desc in index.get("manifests", []):
            if not _platform_ok(desc):
                continue
            name = _name_from_annotations(desc.get("annotations") or {})
            here = names + ([name] if name else [])
            rel = _blob_rel(desc.get("digest"))
            data = src.read(rel)
            _check_digest("sha256:" + hashlib.sha256(data).hexdigest(), desc["digest"], rel)
            doc = src.read_json(rel, data)
            if desc.get("mediaType") in _INDEX_TYPES or doc.get("mediaType") in _INDEX_TYPES:
                walk_index(doc, here)
            else:
                config = doc["config"]["digest"]
                layer_descs = [(_blob_rel(d["digest"]), d["digest"]) for d in doc.get("layers", [])]
                found.append(_Found(_blob_rel(config), config, layer_descs, here))

    walk_index(src.read_json("index.json"), [])
    if not found:
        raise BadInput(
            f"the OCI layout holds no image for linux/{_GOARCH.get(platform.machine())}: export it for this platform."
        )
    return found


def _name_from_annotations(annotations: dict) -> str | None:
    # Docker writes "docker.io/library/busybox:latest"; a ref.name that is no name is skipped.
    name = annotations.get("io.containerd.image.name") or annotations.get(
        "org.opencontainers.image.ref.name"
    )
    if not name:
        return None
    name = name.removeprefix("docker.io/").removeprefix("library/")
    return full_name(name) if _NAME.match(name) else None


def _find_images(src: _Source) -> list[_Found]:
    try:
        if src.exists("manifest.json"):
            return _docker_save(src)
        if src.exists("index.json") and src.exists("oci-layout"):
            return _oci_layout(src)
    except (KeyError, TypeError, AttributeError) as e:
        raise BadInput(
            f"the archive's manifests are malformed (missing or wrong field {e}): the archive is corrupt."
        ) from None
    raise BadInput(
        f"{src.path} is neither a 'docker save' archive (no manifest.json) nor an OCI image "
        "layout (no oci-layout and index.json): give one of those."
    )


def import_image(source: str | os.PathLike, name: str | None = None) -> list[Image]:
    """Import every image in a docker-save archive or OCI layout (dir or tar) into the store.

    *name* names the (single) imported image instead of the names in the archive. Everything is
    checked and applied in a scratch dir first; a refused archive leaves the store as it was.
    """
    require_root("importing an image")
    src = _Source(Path(source))
    try:
        found = _find_images(src)
        if name is not None and len(found) != 1:
            raise BadInput(
                f"the archive holds {len(found)} images, so one name cannot fit them: import without a name."
            )
        imported = []
        for image in found:
            with _Stage() as stage:
                config_data = src.read(image.config)
                image_id = stage.add_json(
                    config_data, image.config_digest, f"the config {image.config}"
                )
                config = src.read_json(image.config, config_data)
                diff_ids = (
                    (config.get("rootfs") or {}).get("diff_ids")
                    if isinstance(config, dict)
                    else None
                )
                if not isinstance(diff_ids, list) or not all(
                    _DIGEST.match(str(d)) for d in diff_ids
                ):
                    raise BadInput(
                        f"the config {image.config} has no valid rootfs.diff_ids: the archive is corrupt."
                    )
                if len(diff_ids) != len(image.layers):
                    raise BadInput(
                        f"the config lists {len(diff_ids)} layers but the manifest {len(image.layers)}: "
                        "the archive is corrupt; save the image again."
                    )
                for (rel, digest), diff_id in zip(image.layers, diff_ids):
                    with src.open(rel) as stream:
                        got = stage.add_layer(stream, digest, f"the layer {rel}")
                    _check_digest(got, diff_id, f"the layer {rel} (uncompressed)")
                names = [full_name(name)] if name else image.names
                imported.append(stage.install(image_id, names))
        return imported
    finally:
        src.close()


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
    in ``.tar``, else a new directory. The same image always gives the same bytes."""
    image = get(ref)
    dest = Path(dest)
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise BadInput(
            f"{dest} already exists: give a new path (NAME.tar for a tar, else a directory)."
        )
    files = _archive_files(image)
    tmp = dest.with_name(f".{dest.name}.exporting")
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    try:
        if dest.suffix == ".tar":
            _write_archive_tar(files, tmp)
        else:
            for rel, content in files:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    (tmp / rel).write_bytes(content)
                else:
                    shutil.copyfile(content, tmp / rel)
            if dest.is_dir():
                dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    return dest


def _write_archive_tar(files: list[tuple[str, Path | bytes]], path: Path) -> None:
    """A tar of *files*, sorted, with fixed times and owners: the same files give the same bytes."""
    dirs = sorted({str(p) for rel, _ in files for p in Path(rel).parents} - {"."})
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
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
            "architecture": _GOARCH.get(platform.machine(), platform.machine()),
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
    image_id = stage.add_json(_config_bytes(config))
    return stage.install(image_id, names)


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
            f"the upper dir {upperdir} does not exist: give the upperdir of a root made from {base}."
        )
    with _Stage() as stage:
        layers.write_layer_file(upperdir, stage.dir / "layer.tar")
        return _new_image(stage, stage.dir / "layer.tar", parent, comment, [full_name(name)])


def remove(ref: str) -> list[str]:
    """Remove an image and the blobs and layers no other image uses; return what was removed."""
    require_root("removing an image")
    image = get(ref)
    dirs = {str(d.resolve()) for d in image.layer_dirs}
    for live in live_overlays():
        if dirs & set(live.lowerdirs):
            raise BadInput(
                f"the image {ref} is in use by the overlay mounted at {live.merged}: unmount it first."
            )
    repos = _repositories()
    del repos[image.id]
    _write_repositories(repos)
    still_used = set(repos)
    for other in repos:
        still_used.update(json.loads(_blob_path(other).read_bytes())["rootfs"]["diff_ids"])
    removed = []
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
            f"a root named {name!r} exists already: unmount_root({name!r}) first, or pick another name."
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
