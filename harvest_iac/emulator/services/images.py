"""Images: get-or-create by recipe, build streaming, from_id, delete, and named (published) images.

An image's identity is its recipe: the `Image` proto the client sends (Dockerfile commands,
context files, base image ids, secrets, ...) plus the image builder version, within one
environment; its parent's id is part of it, so the cache key covers the recipe chain. The
same recipe gives the same (built) image at once. A new recipe on a parent image, or a
Dockerfile's (or registry image's) steps after its FROM, is built by the runtime's builder
(`runtime.images`) while ImageJoinStreaming streams the build log; a failed step fails the
build (and the next lookup of the recipe builds again). Modal's own bases (`debian_slim`,
`micromamba`: the global namespace) are the host's userland and are "built" at once.

Layers live in the layer cache (`runtime.images.LayerCache`) under their chain key: the
recipe with its bases' chain keys for their ids and the digest of its context files for the
context mount's id, so the same chain built in another environment, or by another local Modal
sharing `HARVEST_LAYER_CACHE`, is not built again; `<data dir>/layers/<image id>` links an
image to its layer. `force_build` makes a fresh image (new id) whose layer is built again
(its key is salted with the id); later lookups of the recipe get the newest image.

Snapshot images (a sandbox's filesystem captured into a directory) are registered by the
sandbox service with `register_snapshot_image`, with their lifetime (`ttl`): an expired image
is gone (NOT_FOUND), as is one deleted with ImageDelete; `image_fs_dir` finds the directory an
image (or its nearest snapshot ancestor) starts from.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from harvest_iac.emulator.base import IMAGE_BUILDER_VERSION, Ctx, Service, streaming
from harvest_iac.emulator.runtime import images as builder
from harvest_iac.emulator.runtime.rootfs import diff_base
from harvest_iac.emulator.services.mounts import mount_files
from harvest_iac.emulator.store import new_id

if TYPE_CHECKING:
    from harvest_iac.emulator.server import Emulator

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL,
    recipe_key TEXT,
    definition BLOB,
    builder_version TEXT NOT NULL,
    python_version TEXT NOT NULL DEFAULT '',
    workdir TEXT NOT NULL DEFAULT '',
    parent_ids TEXT NOT NULL DEFAULT '',
    fs_dir TEXT,
    status INTEGER NOT NULL,
    build_log TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_recipe ON images (env_id, recipe_key, created_at);
CREATE TABLE IF NOT EXISTS image_tags (
    env_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    image_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    revision INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (env_id, tag)
);
CREATE TABLE IF NOT EXISTS image_expiry (image_id TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS image_tag_revisions (
    env_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    revision INTEGER NOT NULL,
    image_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (env_id, tag, revision)
);
"""

SUCCESS = api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
FAILURE = api_pb2.GenericResult.GENERIC_STATUS_FAILURE
PENDING = api_pb2.GenericResult.GENERIC_STATUS_UNSPECIFIED
_PYTHON_FROM = re.compile(r"^\s*FROM\s+\S*python:(\d+\.\d+(?:\.\d+)?)", re.IGNORECASE)
_WORKDIR = re.compile(r"^\s*WORKDIR\s+(\S+)", re.IGNORECASE)
_IMAGE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


#: A snapshot's lifetime when the client names none (`ttl_seconds` 0), as Modal's since 1.5.0;
#: a negative `ttl_seconds` (the client's `ttl=None`) keeps it for ever.
DEFAULT_SNAPSHOT_TTL_S = 30 * 24 * 3600


# -- the interface other services use ---------------------------------------------------
def register_snapshot_image(emu: Emulator, env_id: str, fs_dir: Path, *, ttl_seconds: int = -1,
                            parent_id: str = "") -> str:
    """Register an image whose filesystem is the directory `fs_dir` (a sandbox snapshot), kept
    `ttl_seconds` (0: Modal's default; negative: for ever), after which it is gone.

    Returns the new image id; the image is built (ready) at once. Joins the caller's
    transaction when there is one."""
    image_id = new_id("im")
    now = time.time()
    ttl = DEFAULT_SNAPSHOT_TTL_S if ttl_seconds == 0 else ttl_seconds
    with emu.store.tx():
        emu.store.run(
            "INSERT INTO images (id, env_id, recipe_key, definition, builder_version, fs_dir,"
            " parent_ids, status, build_log, created_at) VALUES (?, ?, NULL, NULL, ?, ?, ?, ?, ?, ?)",
            image_id, env_id, IMAGE_BUILDER_VERSION, str(Path(fs_dir).resolve()), parent_id, SUCCESS,
            "Snapshot of a sandbox filesystem\n", now,
        )
        if ttl > 0:
            emu.store.run("INSERT INTO image_expiry (image_id, expires_at) VALUES (?, ?)", image_id, now + ttl)
    return image_id


def image_row(emu: Emulator, image_id: str) -> Any:
    """An image's row, or None when it does not exist, was deleted or has expired (an expired
    image is deleted on the way)."""
    row = emu.store.one("SELECT * FROM images WHERE id = ?", image_id)
    if row is None:
        return None
    expiry = emu.store.one("SELECT expires_at FROM image_expiry WHERE image_id = ?", image_id)
    if expiry is not None and expiry["expires_at"] <= time.time():
        delete_image(emu, image_id)
        return None
    return row


def delete_image(emu: Emulator, image_id: str) -> bool:
    """Delete one image (not the layers it is built on; images built on it keep their own
    ids); a snapshot's files go with it, once no other image uses them. Names published for
    it stop resolving. False when there was none."""
    with emu.store.tx():
        row = emu.store.one("SELECT fs_dir FROM images WHERE id = ?", image_id)
        if row is None:
            return False
        emu.store.run("DELETE FROM images WHERE id = ?", image_id)
        emu.store.run("DELETE FROM image_expiry WHERE image_id = ?", image_id)
        emu.store.run("DELETE FROM image_tags WHERE image_id = ?", image_id)
        shared = row["fs_dir"] and emu.store.one("SELECT 1 FROM images WHERE fs_dir = ?", row["fs_dir"])
    snapshots = (emu.data_dir / "snapshots").resolve()
    if row["fs_dir"] and not shared and snapshots in Path(row["fs_dir"]).parents:
        shutil.rmtree(row["fs_dir"], ignore_errors=True)
    return True


def image_fs_dir(emu: Emulator, image_id: str) -> Path | None:
    """The directory a container of this image starts from: its own snapshot directory, or
    its nearest snapshot ancestor's (base images), else None for ordinary images."""
    seen: set[str] = set()
    todo = [image_id]
    while todo:
        current = todo.pop(0)
        if current in seen:
            continue
        seen.add(current)
        row = image_row(emu, current)
        if row is None:
            continue
        if row["fs_dir"]:
            return Path(row["fs_dir"])
        todo.extend(p for p in str(row["parent_ids"]).split(",") if p)
    return None


def layer_dir(emu: Emulator, image_id: str) -> Path:
    """The image's layer: a link to it in the layer cache (none when the image has no files)."""
    return emu.data_dir / "layers" / image_id


def layers_for(emu: Emulator, image_id: str) -> tuple[list[Path], dict[str, str], str]:
    """What a container of this image is made of: its layer folders (bottom first), env
    and workdir, from the image and its parents."""
    chain = []
    current = image_id
    while current:
        row = emu.store.one("SELECT id, definition, parent_ids, fs_dir FROM images WHERE id = ?", current)
        if row is None:
            break
        chain.append(row)
        current = str(row["parent_ids"]).split(",")[0]
    layers: list[Path] = []
    env: dict[str, str] = {}
    workdir = "/"
    for row in reversed(chain):
        if row["fs_dir"]:
            snapshot = Path(row["fs_dir"])
            base = diff_base(snapshot)  # a snapshot taken as a difference names its layers
            layers = [*(layers if base is None else base), snapshot]
            continue
        commands = list(api_pb2.Image.FromString(row["definition"]).dockerfile_commands)
        env, workdir = builder.config(commands, env, workdir)
        if layer_dir(emu, row["id"]).is_dir():
            layers.append(layer_dir(emu, row["id"]))
    return layers, env, workdir


def image_exists(emu: Emulator, image_id: str) -> bool:
    """Whether an image id is known (any environment), not deleted nor expired."""
    return image_row(emu, image_id) is not None


# -- helpers --------------------------------------------------------------------------------
def _recipe_key(image: api_pb2.Image, builder_version: str) -> str:
    body = image.SerializeToString(deterministic=True)
    return hashlib.sha256(builder_version.encode() + b"\0" + body).hexdigest()


def _derive(image: api_pb2.Image, parents: list[Any]) -> tuple[str, str]:
    """Python version and workdir of an image: from its own commands, else its bases'."""
    python_version = next((str(p["python_version"]) for p in parents if p["python_version"]), "")
    workdir = next((str(p["workdir"]) for p in parents if p["workdir"]), "")
    for cmd in image.dockerfile_commands:
        m = _PYTHON_FROM.match(cmd)
        if m:
            python_version = m.group(1)
        w = _WORKDIR.match(cmd)
        if w:
            workdir = w.group(1)
    return python_version, workdir


def chain_key(emu: Emulator, image: api_pb2.Image, builder_version: str, salt: str = "") -> str:
    """What an image's layer is made of, whatever its id and environment: its recipe, with its
    bases' chain keys for their ids and its context files' digest for its context mount id."""
    recipe = api_pb2.Image()
    recipe.CopyFrom(image)
    for base in recipe.base_images:
        base.image_id = _image_chain_key(emu, base.image_id)
    if recipe.context_mount_id:
        files = sorted((str(f["filename"]), str(f["sha256_hex"]), int(f["mode"]))
                       for f in mount_files(emu, recipe.context_mount_id))
        recipe.context_mount_id = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    head = f"{builder_version}\0{salt}\0".encode()
    return hashlib.sha256(head + recipe.SerializeToString(deterministic=True)).hexdigest()


def _image_chain_key(emu: Emulator, image_id: str) -> str:
    link = layer_dir(emu, image_id)
    if link.is_symlink():
        return link.readlink().name  # the key its layer was built under (salted when forced)
    row = emu.store.one("SELECT definition, builder_version FROM images WHERE id = ?", image_id)
    if row is None or row["definition"] is None:
        return image_id  # a snapshot: its own
    return chain_key(emu, api_pb2.Image.FromString(row["definition"]), str(row["builder_version"]))


def _link_layer(link: Path, layer: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(layer, target_is_directory=True)


def _needs_build(image: api_pb2.Image, namespace: int) -> bool:
    """An image on a parent (`FROM base`), or a workspace image (a Dockerfile's, a registry
    image's) with steps after its FROM; not Modal's own bases, whose steps the host's
    userland stands in for."""
    if image.base_images:
        return not builder.is_base(image.dockerfile_commands)
    return namespace != api_pb2.DEPLOYMENT_NAMESPACE_GLOBAL and builder.has_steps(image.dockerfile_commands)


def _metadata(row: Any) -> api_pb2.ImageMetadata:
    python_version = str(row["python_version"])
    return api_pb2.ImageMetadata(
        python_version_info=f"Python {python_version}" if python_version else "",
        workdir=str(row["workdir"]) or "/",
        image_builder_version=str(row["builder_version"]),
    )


def _build_log(image: api_pb2.Image, image_id: str) -> str:
    lines = [f"Building image {image_id}", ""]
    lines += [f"=> Step {i}: {cmd}" for i, cmd in enumerate(image.dockerfile_commands)]
    lines += ["Built (local Modal: no real build was run)", ""]
    return "\n".join(lines)


def split_image_tag(tag: str, fallback_env: str) -> tuple[str, str]:
    """'[env/]name[:tag]' -> (environment name, 'name:tag'); the tag defaults to latest."""
    if tag.count("/") > 1:
        raise GRPCError(Status.INVALID_ARGUMENT, f"Invalid image name '{tag}'")
    env, _, name_tag = tag.rpartition("/")
    name, _, version = name_tag.partition(":")
    version = version or "latest"
    if not _IMAGE_NAME.match(name) or not _IMAGE_NAME.match(version):
        raise GRPCError(Status.INVALID_ARGUMENT, f"Invalid image name '{tag}'")
    return env or fallback_env, f"{name}:{version}"


@dataclass
class Progress:
    """A build's log lines so far, and its result once it has one."""

    lines: list[str] = field(default_factory=list)
    result: api_pb2.GenericResult | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def log(self, text: str) -> None:
        self.lines.extend(text.splitlines(keepends=True))
        self._pulse()

    def finish(self, result: api_pb2.GenericResult) -> None:
        self.result = result
        self._pulse()

    def _pulse(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def follow(self, start: int) -> Any:
        """Yield (entry number, line) from line `start` on, until the build has a result."""
        i = start
        while True:
            waiter = self.changed
            while i < len(self.lines):
                i += 1
                yield i, self.lines[i - 1]
            if self.result is not None:
                return
            await waiter.wait()


def _failure(row: Any) -> str:
    if row["status"] != FAILURE:
        return ""
    lines = str(row["build_log"]).strip().splitlines()
    return lines[-1] if lines else "The image build failed"


class ImageService(Service):
    """ImageGetOrCreate, ImageJoinStreaming, ImageFromId and named images."""

    schema = SCHEMA

    def __init__(self, emu: Emulator) -> None:
        super().__init__(emu)
        self.builds: dict[str, Progress] = {}
        self.layer_cache = builder.LayerCache.of(emu.data_dir)
        emu.environment_delete_hooks.append(self._drop_environment)

    def _drop_environment(self, env_id: str) -> None:
        self.store.run("DELETE FROM image_tags WHERE env_id = ?", env_id)
        self.store.run("DELETE FROM image_tag_revisions WHERE env_id = ?", env_id)
        self.store.run("DELETE FROM image_expiry WHERE image_id IN (SELECT id FROM images WHERE env_id = ?)",
                       env_id)
        self.store.run("DELETE FROM images WHERE env_id = ?", env_id)

    def _env_for_app(self, app_id: str) -> str:
        row = self.store.one("SELECT env_id FROM apps WHERE id = ?", app_id) if app_id else None
        return str(row["env_id"]) if row else self.emu.environment_id("")

    def _row(self, image_id: str) -> Any:
        row = image_row(self.emu, image_id)
        if row is None:
            raise GRPCError(Status.NOT_FOUND, f"Image '{image_id}' not found")
        return row

    def ImageGetOrCreate(
        self, req: api_pb2.ImageGetOrCreateRequest, ctx: Ctx
    ) -> api_pb2.ImageGetOrCreateResponse:
        env_id = self._env_for_app(req.app_id)
        builder_version = req.builder_version or IMAGE_BUILDER_VERSION
        key = _recipe_key(req.image, builder_version)
        if not req.force_build:
            row = self.store.one(
                "SELECT * FROM images WHERE env_id = ? AND recipe_key = ? AND status = ?"
                " ORDER BY created_at DESC LIMIT 1", env_id, key, SUCCESS,
            )
            if row is not None:
                return api_pb2.ImageGetOrCreateResponse(
                    image_id=row["id"], result=api_pb2.GenericResult(status=SUCCESS),
                    metadata=_metadata(row),
                )
        parent_ids = [b.image_id for b in req.image.base_images if b.image_id]
        parents = [self._row(pid) for pid in parent_ids]
        python_version, workdir = _derive(req.image, parents)
        image_id = new_id("im")
        status = PENDING if _needs_build(req.image, req.namespace) else SUCCESS
        self.store.run(
            "INSERT INTO images (id, env_id, recipe_key, definition, builder_version,"
            " python_version, workdir, parent_ids, status, build_log, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            image_id, env_id, key, req.image.SerializeToString(), builder_version, python_version,
            workdir, ",".join(parent_ids), status, _build_log(req.image, image_id), time.time(),
        )
        row = self._row(image_id)
        if status == PENDING:
            self._start_build(image_id, req.image, forced=req.force_build)
            return api_pb2.ImageGetOrCreateResponse(image_id=image_id)
        return api_pb2.ImageGetOrCreateResponse(
            image_id=image_id, result=api_pb2.GenericResult(status=SUCCESS), metadata=_metadata(row)
        )

    def _start_build(self, image_id: str, image: api_pb2.Image, *, forced: bool = False) -> Progress:
        progress = self.builds[image_id] = Progress()
        self.emu.spawn(self._build(image_id, image, progress, forced))
        return progress

    async def _build(self, image_id: str, image: api_pb2.Image, progress: Progress, forced: bool) -> None:
        row = self._row(image_id)
        parent = str(row["parent_ids"]).split(",")[0]
        layers, env, workdir = layers_for(self.emu, parent) if parent else ([], {}, "/")
        progress.log(f"Building image {image_id}\n\n")
        status, exception = SUCCESS, ""
        context = None
        try:
            key = chain_key(self.emu, image, str(row["builder_version"]), image_id if forced else "")
            context = await asyncio.to_thread(self._context, image_id, image)
            layer = await builder.Build(
                self.emu.launcher, self.layer_cache, key, self.layer_cache.work_dir(image_id),
                layers, env, workdir, builder.parse(image.dockerfile_commands), context, progress.log,
            ).run()
            if layer is not None:
                _link_layer(layer_dir(self.emu, image_id), layer)
            progress.log("Built.\n")
        except builder.BuildError as exc:
            status, exception = FAILURE, str(exc)
            progress.log(f"{exc}\n")
        except Exception as exc:  # noqa: BLE001 - any failure fails the build, with its reason
            status, exception = FAILURE, f"{type(exc).__name__}: {exc}"
            progress.log(f"{exception}\n")
        finally:
            if context is not None:
                shutil.rmtree(context, ignore_errors=True)
        with self.store.tx():
            self.store.run("UPDATE images SET status = ?, build_log = ? WHERE id = ?",
                           status, "".join(progress.lines), image_id)
        progress.finish(api_pb2.GenericResult(status=status, exception=exception))  # type: ignore[arg-type]

    def _context(self, image_id: str, image: api_pb2.Image) -> Path | None:
        """The build context: the files of the image's context mount and context files."""
        if not image.context_mount_id and not image.context_files:
            return None
        context = self.emu.data_dir / "builds" / f"{image_id}.context"
        context.mkdir(parents=True, exist_ok=True)
        if image.context_mount_id:
            for entry in mount_files(self.emu, image.context_mount_id):
                dest = builder.resolve_in_root(context, str(entry["filename"]))
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(self.store.get_bytes(str(entry["sha256_hex"])))
                dest.chmod(int(entry["mode"]) & 0o777 or 0o644)
        for item in image.context_files:
            dest = builder.resolve_in_root(context, item.filename)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(item.data)
        return context

    @streaming
    async def ImageJoinStreaming(self, stream: Any, ctx: Ctx) -> None:
        req: api_pb2.ImageJoinStreamingRequest = await stream.recv_message()
        row = self._row(req.image_id)
        progress = self.builds.get(req.image_id)
        if progress is None and row["status"] == PENDING:  # its build was cut off (a restart)
            progress = self._start_build(req.image_id, api_pb2.Image.FromString(row["definition"]))
        if progress is None:
            progress = Progress(lines=str(row["build_log"]).splitlines(keepends=True))
            progress.finish(api_pb2.GenericResult(status=row["status"], exception=_failure(row)))
            if not req.include_logs_for_finished:
                progress.lines = []
        start = int(req.last_entry_id or 0)
        async for i, line in progress.follow(start):
            await stream.send_message(api_pb2.ImageJoinStreamingResponse(
                task_logs=[api_pb2.TaskLogs(data=line, file_descriptor=api_pb2.FILE_DESCRIPTOR_STDOUT,
                                            timestamp=time.time())],
                entry_id=str(i),
            ))
        assert progress.result is not None
        await stream.send_message(api_pb2.ImageJoinStreamingResponse(
            result=progress.result, metadata=_metadata(self._row(req.image_id)), eof=True,
        ))

    def ImageFromId(self, req: api_pb2.ImageFromIdRequest, ctx: Ctx) -> api_pb2.ImageFromIdResponse:
        row = self._row(req.image_id)
        return api_pb2.ImageFromIdResponse(image_id=row["id"], metadata=_metadata(row))

    def ImageDelete(self, req: api_pb2.ImageDeleteRequest, ctx: Ctx) -> empty_pb2.Empty:
        """Delete one image (see `delete_image`); one unknown, deleted or expired is NOT_FOUND."""
        if image_row(self.emu, req.image_id) is None or not delete_image(self.emu, req.image_id):
            raise GRPCError(Status.NOT_FOUND, f"Image '{req.image_id}' not found")
        return empty_pb2.Empty()

    # -- named images ------------------------------------------------------------------
    def _tag_target(self, tag: str, environment_name: str) -> tuple[str, str]:
        env_name, name_tag = split_image_tag(tag, environment_name)
        return self.emu.environment_id(env_name), name_tag

    def ImagePublish(
        self, req: api_pb2.ImagePublishRequest, ctx: Ctx
    ) -> api_pb2.ImagePublishResponse:
        row = self._row(req.image_id)
        if row["status"] != SUCCESS:
            raise GRPCError(Status.FAILED_PRECONDITION, f"Image '{req.image_id}' is not built")
        env_id, name_tag = self._tag_target(req.tag, req.environment_name)
        now = time.time()
        self.store.run(
            "INSERT INTO image_tags (env_id, tag, image_id, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (env_id, tag) DO UPDATE SET"
            " image_id = excluded.image_id, updated_at = excluded.updated_at,"
            " revision = revision + 1",
            env_id, name_tag, req.image_id, now, now,
        )
        tag_row = self.store.one(
            "SELECT revision FROM image_tags WHERE env_id = ? AND tag = ?", env_id, name_tag
        )
        assert tag_row is not None
        self.store.run(
            "INSERT INTO image_tag_revisions (env_id, tag, revision, image_id, created_at)"
            " VALUES (?, ?, ?, ?, ?)", env_id, name_tag, tag_row["revision"], req.image_id, now,
        )
        return api_pb2.ImagePublishResponse()

    def ImageTagRevisions(
        self, req: api_pb2.ImageTagRevisionsRequest, ctx: Ctx
    ) -> api_pb2.ImageTagRevisionsResponse:
        env_id, name_tag = self._tag_target(req.tag, req.environment_name)
        limit = req.max_objects or 100
        offset = int(req.page_token or 0)
        rows = self.store.all(
            "SELECT * FROM image_tag_revisions WHERE env_id = ? AND tag = ?"
            " ORDER BY revision DESC LIMIT ? OFFSET ?", env_id, name_tag, limit + 1, offset,
        )
        env_row = self.store.one("SELECT name FROM environments WHERE id = ?", env_id)
        return api_pb2.ImageTagRevisionsResponse(
            items=[
                api_pb2.ImageTagRevisionsItem(
                    image_id=r["image_id"], revision_id=f"{name_tag}#{r['revision']}",
                    created_at=r["created_at"], published_by="local",
                )
                for r in rows[:limit]
            ],
            next_page_token=str(offset + limit) if len(rows) > limit else "",
            tag=name_tag,
            environment_name=str(env_row["name"]) if env_row else "",
        )

    def ImageGetByTag(
        self, req: api_pb2.ImageGetByTagRequest, ctx: Ctx
    ) -> api_pb2.ImageGetByTagResponse:
        env_id, name_tag = self._tag_target(req.tag, req.environment_name)
        row = self.store.one(
            "SELECT image_id FROM image_tags WHERE env_id = ? AND tag = ?", env_id, name_tag
        )
        if row is None or image_row(self.emu, row["image_id"]) is None:
            raise GRPCError(Status.NOT_FOUND, f"Image '{req.tag}' not found")
        return api_pb2.ImageGetByTagResponse(image_id=row["image_id"])

    def ImageListTags(
        self, req: api_pb2.ImageListTagsRequest, ctx: Ctx
    ) -> api_pb2.ImageListTagsResponse:
        env_id = self.emu.environment_id(req.environment_name)
        env_row = self.store.one("SELECT name FROM environments WHERE id = ?", env_id)
        sql = "SELECT * FROM image_tags WHERE env_id = ? AND tag LIKE ? ESCAPE '\\'"
        args: list[Any] = [env_id, _like_prefix(req.tag_prefix)]
        if req.image_id:
            sql += " AND image_id = ?"
            args.append(req.image_id)
        limit = req.max_objects or 100
        offset = int(req.page_token or 0)
        rows = self.store.all(sql + " ORDER BY tag LIMIT ? OFFSET ?", *args, limit + 1, offset)
        return api_pb2.ImageListTagsResponse(
            items=[
                api_pb2.ImageListTagsItem(
                    tag=r["tag"], image_id=r["image_id"], revision_id=f"{r['tag']}#{r['revision']}",
                    created_at=r["created_at"], updated_at=r["updated_at"],
                    last_published_by="local",
                )
                for r in rows[:limit]
            ],
            next_page_token=str(offset + limit) if len(rows) > limit else "",
            environment_name=str(env_row["name"]) if env_row else "",
        )

    def ImageNameDelete(
        self, req: api_pb2.ImageNameDeleteRequest, ctx: Ctx
    ) -> empty_pb2.Empty:
        env_id, name_tag = self._tag_target(req.tag, "")
        cur = self.store.run("DELETE FROM image_tags WHERE env_id = ? AND tag = ?", env_id, name_tag)
        self.store.run(
            "DELETE FROM image_tag_revisions WHERE env_id = ? AND tag = ?", env_id, name_tag
        )
        if cur.rowcount == 0:
            raise GRPCError(Status.NOT_FOUND, f"Image '{req.tag}' not found")
        return empty_pb2.Empty()


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
