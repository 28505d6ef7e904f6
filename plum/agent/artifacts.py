"""App artifacts on an agent: download, verify, cache, and extract them safely.

An app is a zip with `start.sh` and `meta.ini` at its root (API.md). `ArtifactStore.fetch`
downloads one over HTTP (the bearer token goes only to the controller's own origin), checks
its sha256 when one is given, and keeps it in the cache as `<sha256>.zip`, so a second
instance of the same version is not downloaded again. `extract_app` refuses what could
escape or flood the destination, by the checks the controller runs on an upload
(`plum.appzip`): absolute paths, `..`, links and other special files, encrypted or duplicate
entries, and more files or bytes than `ExtractLimits` allows (checked from the zip's headers
first, then counted while writing). `read_app` runs the same checks by the headers alone,
without writing anything.

Download and network errors are `Unavailable` (worth retrying); a wrong checksum or an
unsafe or malformed zip is `Invalid`; a too-large one is `TooLarge`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

from plum.appzip import (
    META_FILE,
    START_SCRIPT,
    AppMeta,
    ZipLimits,
    check_entries,
    decode_meta,
    open_zip,
    parse_meta,
    read_entry,
    read_meta,
)
from plum.errors import Invalid, TooLarge, Unavailable

MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
_CHUNK = 64 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ExtractLimits(ZipLimits):
    """`ZipLimits` by the agent's names, with the agent's defaults."""

    def __init__(self, max_files: int = 10_000, max_file_bytes: int = 512 * 1024 * 1024,
                 max_total_bytes: int = 1024 * 1024 * 1024):
        super().__init__(max_total_bytes=max_total_bytes, max_entry_bytes=max_file_bytes,
                         max_entries=max_files)


DEFAULT_LIMITS = ExtractLimits()


def read_meta_file(app_dir: Path) -> AppMeta:
    """The meta.ini of an extracted app; an empty `AppMeta` when it has none or it is bad."""
    try:
        return parse_meta(decode_meta((app_dir / META_FILE).read_bytes()))
    except (OSError, Invalid):
        return AppMeta()


# --- zip checks and extraction --------------------------------------------------------------


def read_app(zip_path: Path, *, limits: ZipLimits = DEFAULT_LIMITS) -> AppMeta:
    """Check a zip as `extract_app` would (by its headers) and return its meta.ini."""
    with open_zip(zip_path) as archive:
        return read_meta(archive, check_entries(archive, limits))


def extract_app(
    zip_path: Path,
    dest: Path,
    *,
    limits: ZipLimits = DEFAULT_LIMITS,
    reserved: frozenset[str] = frozenset(),
) -> AppMeta:
    """Extract into `dest` (which must hold none of the zip's names); `start.sh` made executable.

    `reserved` names top-level entries the app may not contain (the agent's own files).
    Blocking: run it in a thread.
    """
    with open_zip(zip_path) as archive:
        entries = check_entries(archive, limits, reserved)
        meta = read_meta(archive, entries)
        total = 0
        for info, parts in entries:
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = (info.external_attr >> 16) & 0o755 or 0o644
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(target, flags, mode | 0o600)
            except FileExistsError:
                raise Invalid(f"app has {info.filename!r} twice", field="artifact") from None
            with os.fdopen(fd, "wb") as out:
                total = read_entry(archive, info, limits, total, out)
    script = dest / START_SCRIPT
    if script.is_file():
        script.chmod(script.stat().st_mode | 0o111)
    return meta


# --- downloads ------------------------------------------------------------------------------


class ArtifactStore:
    """Downloads into `cache_dir`, one `<sha256>.zip` per distinct artifact."""

    def __init__(
        self,
        cache_dir: Path,
        session: aiohttp.ClientSession,
        *,
        controller_base: str,
        token: str | None = None,
        max_bytes: int = MAX_DOWNLOAD_BYTES,
    ):
        self.cache_dir = cache_dir
        self._session = session
        self._base = controller_base.rstrip("/") + "/"
        self._token = token
        self._max_bytes = max_bytes
        self._locks: dict[str, asyncio.Lock] = {}

    def resolve(self, url: str) -> str:
        """An artifact URL may be relative to the controller (`/artifacts/x.zip`)."""
        return urljoin(self._base, url)

    async def fetch(self, url: str, sha256: str = "") -> Path:
        """The cached zip for `url`, downloaded first unless `sha256` is already cached."""
        expected = sha256.strip().lower()
        if expected and not _SHA256.match(expected):
            raise Invalid(
                f"artifact sha256 is not 64 hex digits: {sha256!r}", field="artifactSha256"
            )
        url = self.resolve(url)
        if urlsplit(url).scheme not in ("http", "https"):
            raise Invalid(f"artifact URL must be http or https: {url}", field="artifactUrl")
        async with self._locks.setdefault(expected or url, asyncio.Lock()):
            if expected and (cached := self.cache_dir / f"{expected}.zip").is_file():
                return cached
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            return await self._download(url, expected)

    async def _download(self, url: str, expected: str) -> Path:
        fd, name = tempfile.mkstemp(dir=self.cache_dir, prefix=".download-", suffix=".zip")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest = await self._stream(url, out)
            if expected and digest != expected:
                raise Invalid(
                    f"artifact sha256 mismatch for {url}: expected {expected}, got {digest}",
                    field="artifactSha256",
                )
            final = self.cache_dir / f"{digest}.zip"
            tmp.replace(final)
            return final
        finally:
            tmp.unlink(missing_ok=True)

    async def _stream(self, url: str, out) -> str:
        digest = hashlib.sha256()
        size = 0
        try:
            async with self._session.get(url, headers=self._headers(url)) as response:
                if response.status != 200:
                    raise Unavailable(f"artifact download from {url} answered {response.status}")
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise TooLarge(f"artifact {url} is larger than {self._max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"artifact download from {url} failed: {exc!r}") from exc
        return digest.hexdigest()

    def _headers(self, url: str) -> dict[str, str]:
        if self._token and _origin(url) == _origin(self._base):
            return {"Authorization": f"Bearer {self._token}"}
        return {}


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc
