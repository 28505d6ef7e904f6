"""Apps: uploaded zips and container images that deployments run.

An upload is streamed to a temporary file in `<data_dir>/artifacts/` (hashed on the way,
bounded by the upload cap), checked by `plum.appzip` in a thread, then renamed to
`<sha256>.zip` and recorded. A refused upload leaves nothing behind. The files are served
at `/artifacts/<sha256>.zip` for agents to fetch; identical content is one file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Annotated

import msgspec

from plum.appzip import APP_NAME, AppMeta, ZipLimits, inspect_zip
from plum.clock import Clock
from plum.engine.deployments import App, AppKind, PortMapping
from plum.engine.model import Model
from plum.errors import BadRequest, Invalid, NotFound, TooLarge
from plum.ids import new_id
from plum.logging import get_logger
from plum.store.base import AppRepo, Page

log = get_logger(__name__)

ARTIFACT_FILE = re.compile(r"^([0-9a-f]{64})\.zip$")
_ARTIFACT_URL = re.compile(r"(?:^|/)artifacts/([0-9a-f]{64})\.zip$")
_PARTIAL = ".part"

AppName = Annotated[str, msgspec.Meta(pattern=APP_NAME.pattern)]
ImageRepository = Annotated[
    str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[a-z0-9][a-z0-9._/:-]*$")
]
ImageTag = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
]


class NewImageApp(Model, frozen=True, forbid_unknown_fields=False):
    """`POST /v1/apps/create-image`: an app that runs a container image."""

    name: AppName
    version: AppName
    image_repository: ImageRepository
    image_tag: ImageTag
    port_mappings: list[PortMapping] = []


class AppService:
    def __init__(
        self,
        store: AppRepo,
        clock: Clock,
        *,
        artifacts_dir: Path,
        limits: ZipLimits,
        max_upload_bytes: int,
    ):
        self._store = store
        self._clock = clock
        self._dir = artifacts_dir
        self._limits = limits
        self._max_upload = max_upload_bytes
        # Serialises "rename into place + record" against deletes, so that a failed
        # duplicate never removes a file another app uses.
        self._files = asyncio.Lock()

    def prepare(self) -> None:
        """Create the artifacts directory and drop uploads a crash left half-written."""
        self._dir.mkdir(parents=True, exist_ok=True)
        for leftover in self._dir.glob(f"*{_PARTIAL}"):
            leftover.unlink(missing_ok=True)

    # -- uploads
    async def upload(self, chunks: AsyncIterable[bytes]) -> App:
        partial = self._dir / f".upload-{new_id()}{_PARTIAL}"
        try:
            sha256, size = await self._receive(chunks, partial)
            meta = await asyncio.to_thread(inspect_zip, partial, self._limits)
            return await self._record(partial, sha256, size, meta)
        finally:
            partial.unlink(missing_ok=True)

    async def _receive(self, chunks: AsyncIterable[bytes], path: Path) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        with path.open("wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > self._max_upload:
                    raise TooLarge(f"the upload is over {self._max_upload} bytes", field="file")
                digest.update(chunk)
                fh.write(chunk)
            fh.flush()
            await asyncio.to_thread(os.fsync, fh.fileno())
        if size == 0:
            raise BadRequest("the uploaded file is empty", field="file")
        return digest.hexdigest(), size

    async def _record(self, partial: Path, sha256: str, size: int, meta: AppMeta) -> App:
        # Each service is registered under the app's version.
        app = App(
            artifact_id=new_id(), name=meta.name, version=meta.version, kind=AppKind.ZIP,
            url=f"/artifacts/{sha256}.zip", sha256=sha256, size_bytes=size,
            services=[msgspec.structs.replace(s, version=meta.version) for s in meta.services],
            created_at=round(self._clock.now(), 3),
        )
        final = self._dir / f"{sha256}.zip"
        async with self._files:
            existed = final.exists()  # same hash, same bytes: keep the file there is
            if not existed:
                os.replace(partial, final)
            try:
                await self._store.insert_app(app)
            except Exception:
                if not existed:
                    final.unlink(missing_ok=True)
                raise
        log.info("app_uploaded", artifact_id=app.artifact_id, name=app.name,
                 version=app.version, sha256=sha256, size_bytes=size)
        return app

    async def create_image(self, body: NewImageApp) -> App:
        app = App(
            artifact_id=new_id(), name=body.name, version=body.version, kind=AppKind.IMAGE,
            image_repository=body.image_repository, image_tag=body.image_tag,
            port_mappings=body.port_mappings, created_at=round(self._clock.now(), 3),
        )
        await self._store.insert_app(app)
        log.info("app_image_created", artifact_id=app.artifact_id, name=app.name,
                 version=app.version, image=app.image)
        return app

    # -- reading, deleting
    async def get(self, artifact_id: str) -> App:
        return await self._store.get_app(artifact_id)

    async def list(self, *, limit: int = 100, offset: int = 0) -> Page[App]:
        return await self._store.list_apps(limit=limit, offset=offset)

    async def delete(self, artifact_id: str) -> None:
        async with self._files:
            app = await self._store.delete_app(artifact_id)
            if app.sha256 and await self._store.get_app_by_sha256(app.sha256) is None:
                (self._dir / f"{app.sha256}.zip").unlink(missing_ok=True)
        log.info("app_deleted", artifact_id=artifact_id, name=app.name, version=app.version)

    def artifact_path(self, file_name: str) -> Path:
        """The stored zip named `<sha256>.zip`; `NotFound` for any other name."""
        path = self._dir / file_name
        if not ARTIFACT_FILE.match(file_name) or not path.is_file():
            raise NotFound(f"artifact {file_name!r} not found", field="file")
        return path

    async def resolve(self, artifact_id: str, artifact_url: str, *, field: str) -> App | None:
        """The app a deployment entry names, by id or by its `/artifacts/...` URL; `None`
        for a zip outside Plum (an absolute http(s) URL)."""
        if artifact_id:
            try:
                return await self._store.get_app(artifact_id)
            except NotFound:
                raise Invalid(f"{field}.artifactId: app {artifact_id!r} not found",
                              field=f"{field}.artifactId") from None
        if not artifact_url:
            raise Invalid(f"{field}: give artifactId or artifactUrl", field=field)
        if match := _ARTIFACT_URL.search(artifact_url):
            app = await self._store.get_app_by_sha256(match.group(1))
            if app is not None:
                return app
        if artifact_url.startswith(("http://", "https://")):
            return None
        raise Invalid(f"{field}.artifactUrl: no uploaded app at {artifact_url!r}",
                      field=f"{field}.artifactUrl")
