"""Image archives: ``docker save`` tars and OCI image layouts, read as hostile input and written
so that the same image always gives the same bytes.

Two formats carry images between engines:

- ``docker save``: ``manifest.json`` lists each image's config and layer tars, in the legacy form
  (``<id>.json``, ``<id>/layer.tar``) or in Docker 25's, beside an OCI layout;
- an OCI image layout: ``oci-layout``, ``index.json`` (which may point to further indexes) and
  ``blobs/sha256/``, where every manifest, config and layer is named by its digest.

Either comes as a directory or a tar (plain or gzip). labkit imports as root, so everything an
archive says is checked before it is used: paths stay inside the archive, links between its
members are followed inside it and at most ``_MAX_LINKS`` times, JSON is bounded in size and
depth, indexes in depth and repetition, and every blob must hash to its name. Nothing reaches
the store before every image in the archive has been checked and applied in a scratch dir (the
store's ``Stage``); every refusal is one sentence that names the archive's member, escaped
(``errors.show``). The layers themselves are applied by ``labkit.layers``.

This module is loaded by what reads or writes an archive; a container's start only reads the
store (``labkit.images``) and never needs it.
"""

from __future__ import annotations

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

from . import images, layers
from .errors import BadInput, LabkitError, require_root, show

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_INDEX_TYPES = (MEDIA_INDEX, DOCKER_MANIFEST_LIST)
_MAX_JSON = 16 << 20  # a manifest or config bigger than this is not one
_CHUNK = 1 << 20
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

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
                [images.full_name(n) for n in tags],
            )
        )
    return found


def _platform_ok(descriptor: dict) -> bool:
    wanted = images.goarch()
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
            images.check_digest(layers.digest(data), desc["digest"], rel)
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
            f"the OCI layout holds no image for linux/{images.goarch()}: export it for this "
            "platform."
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
    try:
        return images.full_name(name)
    except BadInput:
        return None


def _find_images(src: _Source) -> list[_Found]:
    if src.exists("manifest.json"):
        return _docker_save(src)
    if src.exists("index.json") and src.exists("oci-layout"):
        return _oci_layout(src)
    raise BadInput(
        f"{show(str(src.path))} is neither a 'docker save' archive (no manifest.json) nor an OCI "
        "image layout (no oci-layout and index.json): give one of those."
    )


def _stage_image(src: _Source, stage: images.Stage, image: _Found, names: list[str]) -> None:
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
        images.check_digest(got, diff_id, f"{what} (uncompressed)")
    stage.images.append((image_id, names))


def import_image(
    source: str | os.PathLike,
    name: str | None = None,
    max_bytes: int | str | None = None,
    max_entries: int | str | None = None,
) -> list[images.Image]:
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
        name = images.full_name(name)
    src = None
    try:
        src = _Source(Path(source), bounds)
        found = _find_images(src)
        if name is not None and len(found) != 1:
            raise BadInput(
                f"the archive holds {len(found)} images, so one name cannot fit them: import "
                "without a name."
            )
        with images.Stage(bounds) as stage:
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


# --- writing archives -------------------------------------------------------------------------


def _descriptor(media: str, digest: str, size: int, **extra) -> dict:
    return {"mediaType": media, "digest": digest, "size": size, **extra}


def _archive_files(image: images.Image) -> list[tuple[str, Path | bytes]]:
    """The files of an OCI layout that also reads as a Docker 25 ``docker save`` archive."""
    config_data = images.blob_path(image.id).read_bytes()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": _descriptor(MEDIA_CONFIG, image.id, len(config_data)),
        "layers": [_descriptor(MEDIA_LAYER, d, s) for d, s in zip(image.diff_ids, image.sizes)],
    }
    manifest_data = json.dumps(manifest, sort_keys=True, indent=2).encode()
    manifest_digest = layers.digest(manifest_data)
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
        files[_blob_rel(d)] = images.blob_path(d)
    return sorted(files.items())


def export_image(ref: str, dest: str | os.PathLike) -> Path:
    """Write the image as an OCI layout (with a docker-save manifest.json): a tar if *dest* ends
    in ``.tar``, else a new directory. The same image always gives the same bytes.

    Everything is written below a temporary name made exclusively beside *dest* (``mkdtemp``,
    ``O_EXCL``: never through a link someone planted there), then renamed to *dest*.
    """
    image = images.get(ref)
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
