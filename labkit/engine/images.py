"""The images endpoints: labkit's image store (labkit.images) in the Engine API's shapes.

``docker load`` uploads a ``docker save`` archive; it is spooled to a file, then imported with
every check labkit.images makes on an archive (digests, hostile tar members, size bounds), and
nothing reaches the store unless all of it passes. There is no registry here: a pull is answered
with a 404 that says to load the image instead.
"""

from __future__ import annotations

import calendar
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from .. import archives, images
from ..errors import BadInput, LabkitError
from ..layers import Bounds
from ..state import state_dir
from .api import Reply, route
from .errors import Conflict, NotFound, NotImplementedHere

_SLACK = 64 << 20  # an archive's tar headers and JSON on top of its layers


def find(ref: str) -> images.Image:
    """The image *ref* names, or Docker's 404 (the CLI pulls, or tries other object kinds)."""
    try:
        return images.get(ref)
    except BadInput:
        raise NotFound(f"No such image: {ref[:200]}") from None


def count() -> int:
    return len(images.list_images())


def _created(image: images.Image) -> int:
    """The image's creation time in Unix seconds: its config's, else when it was stored."""
    stamp = image.config.get("created")
    if isinstance(stamp, str) and len(stamp) >= 19:
        try:
            return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            pass
    try:
        return int(image.layer_dirs[0].stat().st_mtime) if image.layer_dirs else 0
    except OSError:
        return 0


def summary(image: images.Image) -> dict:
    """An ImageSummary: what ``docker images`` lists."""
    size = sum(image.sizes)
    return {
        "Id": image.id,
        "ParentId": "",
        "RepoTags": image.names,
        "RepoDigests": [],
        "Created": _created(image),
        "Size": size,
        "VirtualSize": size,
        "SharedSize": -1,
        "Labels": (image.config.get("config") or {}).get("Labels") or {},
        "Containers": -1,
    }


def _matches(image: images.Image, filters: dict[str, list[str]]) -> bool:
    import fnmatch

    for ref in filters.get("reference", []):
        pattern = ref if ":" in ref.rsplit("/", 1)[-1] else ref + ":*"
        if not any(fnmatch.fnmatchcase(n, pattern) for n in image.names):
            return False
    for value in filters.get("dangling", []):
        if (value.lower() in ("true", "1")) != (not image.names):
            return False
    return True


@route("GET", "/images/json")
def list_images(request) -> Reply:
    filters = request.filters()
    unknown = set(filters) - {"reference", "dangling"}
    if unknown:
        raise NotImplementedHere(
            f"the image filter {min(unknown)!r} is not supported here: use reference or dangling."
        )
    return Reply(200, [summary(i) for i in images.list_images() if _matches(i, filters)])


# What dockerd shows of an image's Config whatever the image sets: Go's container.Config
# without its omitempty fields, each unset one as Go writes its zero value ("", false; null for
# a list or a map). Measured against dockerd 20.10 with one archive loaded into both.
_CONFIG_SHOWN = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": None,
}
_NEVER = "0001-01-01T00:00:00Z"  # Go's zero time: what dockerd shows for an unset time


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _shown(config) -> dict:
    """An image's (container_)config as dockerd shows it: every key of _CONFIG_SHOWN."""
    return {**_CONFIG_SHOWN, **(config if isinstance(config, dict) else {})}


@route("GET", "/images/{name*}/json")
def inspect(request, name: str) -> Reply:
    image = find(name)
    created = image.config.get("created")
    size = sum(image.sizes)
    return Reply(
        200,
        {
            "Id": image.id,
            "RepoTags": image.names,
            "RepoDigests": [],
            "Parent": "",
            "Comment": _text(image.config.get("comment")),
            "Created": created if isinstance(created, str) and created else _NEVER,
            "Container": _text(image.config.get("container")),
            "ContainerConfig": _shown(image.config.get("container_config")),
            "DockerVersion": _text(image.config.get("docker_version")),
            "Author": _text(image.config.get("author")),
            "Config": _shown(image.config.get("config")),
            "Architecture": image.config.get("architecture", ""),
            "Os": image.config.get("os", "linux"),
            "Size": size,
            "VirtualSize": size,
            "GraphDriver": {
                "Name": "overlay",
                "Data": {"LowerDir": ":".join(str(d) for d in image.lowerdirs)},
            },
            "RootFS": {"Type": "layers", "Layers": image.diff_ids},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        },
    )


@contextlib.contextmanager
def _spooled(request, what: str):
    """The request's body in a file of its own (removed afterwards), within the import bound."""
    base = state_dir()
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="engine-upload-", dir=base))
    try:
        path = tmp / what
        with open(path, "xb") as out:
            request.body_to(out, Bounds.from_env().max_bytes + _SLACK)
        yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stream_error(stream, message: str) -> None:
    # docker load and pull report failure inside a 200 stream: the head went out already.
    stream.json({"errorDetail": {"message": message}, "error": message})


@route("POST", "/images/load")
def load(request) -> None:
    with _spooled(request, "archive.tar") as path:
        stream = request.stream(200, "application/json")
        try:
            loaded = archives.import_image(path)
        except LabkitError as e:
            _stream_error(stream, str(e))
        else:
            for image in loaded:
                for n in image.names or []:
                    stream.json({"stream": f"Loaded image: {n}\n"})
                if not image.names:
                    stream.json({"stream": f"Loaded image ID: {image.id}\n"})
        stream.close()


def _one_image(names: list[str]) -> images.Image:
    found = {}
    for n in names:
        image = find(n)
        found[image.id] = image
    if len(found) != 1:
        raise NotImplementedHere(
            "labkit's engine saves one image per archive: run docker save once per image."
        )
    return next(iter(found.values()))


def _send_archive(request, image: images.Image) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="engine-save-", dir=state_dir()))
    try:
        path = archives.export_image(image.id, tmp / "image.tar")
        stream = request.stream(200, "application/x-tar")
        with open(path, "rb") as f:
            while data := f.read(1 << 20):
                stream.write(data)
        stream.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@route("GET", "/images/get")
def save_many(request) -> None:
    names = request.args("names")
    if not names:
        raise BadInput("docker save needs at least one image: give names=IMAGE.")
    _send_archive(request, _one_image(names))


@route("GET", "/images/{name*}/get")
def save(request, name: str) -> None:
    _send_archive(request, find(name))


@route("POST", "/images/{name*}/tag")
def tag(request, name: str) -> Reply:
    repo = request.arg("repo")
    if not repo:
        raise BadInput("docker tag needs a repository: give repo=NAME (and tag=TAG).")
    target = f"{repo}:{request.arg('tag')}" if request.arg("tag") else repo
    images.tag(find(name).id, target)
    return Reply(201)


def _users(image: images.Image) -> list[str]:
    from . import containers

    return containers.using_image(image.id)


@route("DELETE", "/images/{name*}")
def delete(request, name: str) -> Reply:
    image = find(name)
    force = request.flag("force")
    by_name = name.removeprefix("sha256:") not in image.id
    if by_name and len(image.names) > 1:
        gone = images.full_name(name)
        images.untag(gone)
        return Reply(200, [{"Untagged": gone}])
    if len(image.names) > 1 and not force:
        raise Conflict(
            f"conflict: unable to delete {name[:80]} (must be forced): the image has "
            f"{len(image.names)} names; remove them one by one, or use -f."
        )
    users = _users(image)
    if users:
        raise Conflict(
            f"conflict: unable to delete {name[:80]}: container {users[0][:12]} uses it; "
            "remove the container first (docker rm -f)."
        )
    removed = images.remove(image.id)
    return Reply(200, [{"Untagged": n} for n in image.names] + [{"Deleted": d} for d in removed])


@route("POST", "/images/create")
def create(request) -> Reply | None:
    source = request.arg("fromSrc")
    if request.arg("fromImage") is not None and source is None:
        wanted = request.arg("fromImage", "")[:200]
        if request.arg("tag"):
            wanted += ":" + request.arg("tag", "")[:128]
        raise NotFound(
            f"no registry here: labkit's engine cannot pull {wanted}; load the image with "
            "docker load -i FILE.tar (an archive from docker save or labkit image export)."
        )
    if source != "-":
        raise NotImplementedHere(
            "labkit's engine imports a root filesystem only from the request's body "
            "(docker import FILE, or - for stdin): it fetches nothing from URLs."
        )
    if request.args("changes"):
        raise NotImplementedHere("docker import --change is not supported by labkit's engine.")
    repo = request.arg("repo")
    name = None
    if repo:
        name = f"{repo}:{request.arg('tag')}" if request.arg("tag") else repo
        images.full_name(name)  # refuse a bad name before the upload is read
    comment = (request.arg("message") or "labkit: imported")[:200]
    with _spooled(request, "rootfs.tar") as path:
        stream = request.stream(200, "application/json")
        try:
            image = images.import_rootfs(path, name, comment)
        except LabkitError as e:
            _stream_error(stream, str(e))
        else:
            stream.json({"status": image.id})
        stream.close()
    return None
