"""App artifacts on an agent: download, verify, cache, and extract them safely.

An app is a zip with `start.sh` and `meta.ini` at its root (API.md). `ArtifactStore.fetch`
downloads one over HTTP (the bearer token goes only to the controller's own origin), checks
its sha256 when one is given, and keeps it in the cache as `<sha256>.zip`, so a second
instance of the same version is not downloaded again. `extract_app` refuses what could
escape or flood the destination: absolute paths, `..`, links and other special files,
encrypted entries, and more files or bytes than `ExtractLimits` allows (counted while
writing, not taken from the zip's own headers). `read_app` runs the same checks without
writing anything, for validating an upload.

Download and network errors are `Unavailable` (worth retrying); a wrong checksum or an
unsafe or malformed zip is `Invalid`; a too-large one is `TooLarge`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit

import aiohttp

from plum.agent.protocol import ServiceEndpoint
from plum.errors import Invalid, TooLarge, Unavailable

START_SCRIPT = "start.sh"
META_FILE = "meta.ini"
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
_CHUNK = 64 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ExtractLimits:
    max_files: int = 10_000
    max_file_bytes: int = 512 * 1024 * 1024
    max_total_bytes: int = 1024 * 1024 * 1024


DEFAULT_LIMITS = ExtractLimits()

@dataclass(frozen=True)
class AppMeta:
    """What an app's meta.ini says (every field empty when it has none)."""

    name: str = ""
    version: str = ""
    services: tuple[ServiceEndpoint, ...] = ()


# --- meta.ini ------------------------------------------------------------------------------


def parse_meta(text: str) -> AppMeta:
    """`name=`, `version=` and `service=<name>:<protocol>:<port>` lines; others are ignored."""
    fields: dict[str, str] = {}
    services: list[ServiceEndpoint] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key == "service":
            services.append(_parse_service(value, number))
        elif key in ("name", "version"):
            fields[key] = value
    return AppMeta(fields.get("name", ""), fields.get("version", ""), tuple(services))


def _parse_service(value: str, number: int) -> ServiceEndpoint:
    parts = value.split(":")
    if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].isdigit():
        raise Invalid(
            f"meta.ini line {number}: service must be <name>:<protocol>:<port>, got {value!r}",
            field="meta.ini",
        )
    port = int(parts[2])
    if not 0 < port < 65536:
        raise Invalid(f"meta.ini line {number}: port {port} is out of range", field="meta.ini")
    return ServiceEndpoint(service_name=parts[0], protocol=parts[1], port=port)


def read_meta_file(app_dir: Path) -> AppMeta:
    """The meta.ini of an extracted app; an empty `AppMeta` when it has none or it is bad."""
    try:
        return parse_meta((app_dir / META_FILE).read_text(errors="replace"))
    except (OSError, Invalid):
        return AppMeta()


# --- zip checks and extraction --------------------------------------------------------------


def read_app(zip_path: Path, *, limits: ExtractLimits = DEFAULT_LIMITS) -> AppMeta:
    """Check a zip as `extract_app` would (by its headers) and return its meta.ini."""
    with _open_zip(zip_path) as archive:
        entries = _checked_entries(archive, limits, frozenset())
        return _meta_of(archive, entries)


def extract_app(
    zip_path: Path,
    dest: Path,
    *,
    limits: ExtractLimits = DEFAULT_LIMITS,
    reserved: frozenset[str] = frozenset(),
) -> AppMeta:
    """Extract into `dest` (which must hold none of the zip's names); `start.sh` made executable.

    `reserved` names top-level entries the app may not contain (the agent's own files).
    Blocking: run it in a thread.
    """
    with _open_zip(zip_path) as archive:
        entries = _checked_entries(archive, limits, reserved)
        meta = _meta_of(archive, entries)
        total = 0
        for info, parts in entries:
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            total = _write_entry(archive, info, target, limits, total)
    script = dest / START_SCRIPT
    if script.is_file():
        script.chmod(script.stat().st_mode | 0o111)
    return meta


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise Invalid(f"artifact is not a valid zip: {exc}", field="artifact") from None


def _checked_entries(
    archive: zipfile.ZipFile, limits: ExtractLimits, reserved: frozenset[str]
) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise TooLarge(f"app has {len(infos)} entries, more than {limits.max_files}")
    entries = []
    declared = 0
    for info in infos:
        parts = _safe_parts(info.filename)
        _check_kind(info)
        if parts and parts[0] in reserved:
            raise Invalid(f"app may not contain {parts[0]!r} at its root", field="artifact")
        if info.file_size > limits.max_file_bytes:
            raise TooLarge(
                f"app entry {info.filename!r} is larger than {limits.max_file_bytes} bytes"
            )
        declared += info.file_size
        if declared > limits.max_total_bytes:
            raise TooLarge(f"app is larger than {limits.max_total_bytes} bytes unpacked")
        if parts:
            entries.append((info, parts))
    return entries


def _safe_parts(name: str) -> tuple[str, ...]:
    if "\0" in name or "\\" in name:
        raise Invalid(f"unsafe path in app: {name!r}", field="artifact")
    path = PurePosixPath(name)
    if path.is_absolute() or _DRIVE.match(name):
        raise Invalid(f"unsafe path in app: {name!r} is absolute", field="artifact")
    if ".." in path.parts:
        raise Invalid(f"unsafe path in app: {name!r} leaves the app directory", field="artifact")
    return path.parts


def _check_kind(info: zipfile.ZipInfo) -> None:
    if info.flag_bits & 0x1:
        raise Invalid(f"app entry {info.filename!r} is encrypted", field="artifact")
    mode = info.external_attr >> 16
    if info.create_system != 3 or stat.S_IFMT(mode) == 0:
        return  # no file type recorded: a file, or a directory when the name ends in /
    if stat.S_ISLNK(mode):
        raise Invalid(f"app entry {info.filename!r} is a symbolic link", field="artifact")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise Invalid(f"app entry {info.filename!r} is not a regular file", field="artifact")


def _meta_of(archive: zipfile.ZipFile, entries: list) -> AppMeta:
    for info, parts in entries:
        if parts == (META_FILE,) and not info.is_dir():
            with archive.open(info) as stream:
                return parse_meta(stream.read(64 * 1024).decode(errors="replace"))
    return AppMeta()


def _write_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limits: ExtractLimits,
    total: int,
) -> int:
    """Copy one file, counting real bytes against the limits; returns the new total."""
    mode = (info.external_attr >> 16) & 0o755 or 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, mode | 0o600)
    except FileExistsError:
        raise Invalid(f"app has {info.filename!r} twice", field="artifact") from None
    written = 0
    try:
        with archive.open(info) as stream, os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                written += len(chunk)
                total += len(chunk)
                if written > limits.max_file_bytes:
                    raise TooLarge(f"app entry {info.filename!r} is larger than declared")
                if total > limits.max_total_bytes:
                    raise TooLarge(f"app is larger than {limits.max_total_bytes} bytes unpacked")
                out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise Invalid(f"app entry {info.filename!r} is corrupt: {exc}", field="artifact") from None
    return total


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
