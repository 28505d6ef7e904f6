"""App zips: the one set of checks, for the controller's upload and the agent's extraction.

An entry is accepted only when it is a plain file or directory with a relative path that
stays inside the archive (no absolute paths, drive letters or `..`; a backslash counts as a
separator; no symlinks or other special files; no encrypted or duplicate entries) and the
entry count and the sizes stay under `ZipLimits`. Reading an entry (`read_entry`) counts the
real bytes and lets zipfile check the CRC, so sizes that the headers lie about are caught.
`meta.ini` holds `name=`, `version=` and `service=<name>:<protocol>:<port>` lines.

`inspect_zip` is the controller's upload check: nothing is extracted, `start.sh` and
`meta.ini` must sit at the root, meta.ini must name the app, every file must decompress
cleanly, and every refusal is a `BadRequest` (HTTP 400) naming the problem. The agent
(`plum.agent.artifacts`) runs the same entry and meta.ini checks while extracting; there a
refusal is `Invalid`, or `TooLarge` past a cap.

Blocking (it reads the whole archive): call it in a thread.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from plum.agent.protocol import ServiceEndpoint
from plum.errors import BadRequest, Invalid, TooLarge

START_SCRIPT = "start.sh"
META_FILE = "meta.ini"
META_MAX_BYTES = 64 * 1024
PROTOCOLS = ("http", "https", "grpc")
_CHUNK = 1024 * 1024

APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_DRIVE = re.compile(r"^[A-Za-z]:")

Entry = tuple[zipfile.ZipInfo, tuple[str, ...]]  # an entry and its normalised path parts


@dataclass(frozen=True, slots=True)
class ZipLimits:
    max_total_bytes: int
    max_entry_bytes: int
    max_entries: int


@dataclass(frozen=True, slots=True)
class AppMeta:
    """What an app's meta.ini says (name and version empty when it has none)."""

    name: str = ""
    version: str = ""
    services: tuple[ServiceEndpoint, ...] = ()


def refuse(message: str) -> BadRequest:
    return BadRequest(message, field="file")


def _unsafe(message: str) -> Invalid:
    return Invalid(message, field="artifact")


# --- the controller's upload check -----------------------------------------------------------


def inspect_zip(path: Path, limits: ZipLimits) -> AppMeta:
    """The app's meta.ini, once the whole archive is known to be safe."""
    try:
        with open_zip(path) as archive:
            entries = check_entries(archive, limits)
            names = {parts for _, parts in entries}
            for required in (START_SCRIPT, META_FILE):
                if (required,) not in names:
                    raise refuse(f"the zip has no {required} at its root")
            total = 0
            for info, _ in entries:
                if not info.is_dir():
                    total = read_entry(archive, info, limits, total)
            meta = read_meta(archive, entries)
    except (Invalid, TooLarge) as exc:
        raise refuse(exc.message) from None
    for key, value in (("name", meta.name), ("version", meta.version)):
        if not value:
            raise refuse(f"{META_FILE} has no {key}= line")
        if not APP_NAME.match(value):
            raise refuse(f"{META_FILE}: {key} {value!r} may hold only letters, digits and "
                         "._+- (at most 128)")
    return meta


# --- the checks both sides run ---------------------------------------------------------------


def open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
        raise _unsafe(f"not a valid zip archive: {exc}") from None


def check_entries(
    archive: zipfile.ZipFile, limits: ZipLimits, reserved: frozenset[str] = frozenset()
) -> list[Entry]:
    """Every entry checked by its headers; `reserved` names what may not sit at the root.

    Entries whose path is empty (`./`) are left out of the list.
    """
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise TooLarge(f"the zip has {len(infos)} entries, over the cap of {limits.max_entries}")
    entries: list[Entry] = []
    seen: set[tuple[str, ...]] = set()
    total = 0
    for info in infos:
        parts = _safe_parts(info.filename)
        _check_kind(info)
        if parts and parts[0] in reserved:
            raise _unsafe(f"the app may not contain {parts[0]!r} at its root")
        if parts in seen:
            raise _unsafe(f"entry {info.filename!r} appears twice")
        seen.add(parts)
        if info.file_size > limits.max_entry_bytes:
            cap = limits.max_entry_bytes
            raise TooLarge(f"entry {info.filename!r} unpacks to {info.file_size} bytes, over the "
                           f"per-file cap of {cap} (it must be no larger than {cap} bytes)")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise _too_large_total(limits)
        if parts:
            entries.append((info, parts))
    return entries


def _safe_parts(raw: str) -> tuple[str, ...]:
    """The entry's path parts; refuses paths that could land outside the target."""
    name = raw.replace("\\", "/")
    if not name or "\x00" in name:
        raise _unsafe(f"unsafe path {raw!r}: an empty or invalid name")
    if name.startswith("/") or _DRIVE.match(name):
        raise _unsafe(f"unsafe path {raw!r}: an absolute path")
    parts = name.split("/")
    if ".." in parts:
        raise _unsafe(f"unsafe path {raw!r}: a '..' path component leaves the app directory")
    return tuple(p for p in parts if p not in ("", "."))


def _check_kind(info: zipfile.ZipInfo) -> None:
    if info.flag_bits & 0x1:
        raise _unsafe(f"entry {info.filename!r} is encrypted")
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no type recorded, a file or directory
    if kind == stat.S_IFLNK:
        raise _unsafe(f"entry {info.filename!r} is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _unsafe(f"entry {info.filename!r} is not a regular file or directory")


def _too_large_total(limits: ZipLimits) -> TooLarge:
    return TooLarge(f"the zip unpacks to more than {limits.max_total_bytes} bytes "
                    "(the cap of all files unpacked)")


def read_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ZipLimits, total: int,
    out: BinaryIO | None = None,
) -> int:
    """Decompress one file (into `out`, if given), counting real bytes against the entry's
    declared size and `total` against the cap; zipfile checks the CRC. The new total."""
    size = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                total += len(chunk)
                if size > info.file_size:
                    raise TooLarge(f"entry {info.filename!r} is larger than declared")
                if total > limits.max_total_bytes:
                    raise _too_large_total(limits)
                if out is not None:
                    out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            zlib.error) as exc:
        raise _unsafe(f"entry {info.filename!r} is corrupt: {exc}") from None
    if size != info.file_size:
        raise _unsafe(f"entry {info.filename!r} is truncated")
    return total


# --- meta.ini --------------------------------------------------------------------------------


def read_meta(archive: zipfile.ZipFile, entries: list[Entry]) -> AppMeta:
    """The zip's root meta.ini; an empty `AppMeta` when it has none."""
    for info, parts in entries:
        if parts == (META_FILE,) and not info.is_dir():
            if info.file_size > META_MAX_BYTES:
                raise _bad_meta(f"{META_FILE} is over {META_MAX_BYTES} bytes")
            return parse_meta(decode_meta(archive.read(info)))
    return AppMeta()


def decode_meta(raw: bytes) -> str:
    if len(raw) > META_MAX_BYTES:
        raise _bad_meta(f"{META_FILE} is over {META_MAX_BYTES} bytes")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _bad_meta(f"{META_FILE} is not UTF-8 text") from None


def parse_meta(text: str) -> AppMeta:
    """`name=`, `version=` and `service=` lines; comments, `[sections]` and other keys are
    skipped. The first `name=` and `version=` count."""
    values: dict[str, str] = {}
    services: list[ServiceEndpoint] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;" or (line[0] == "[" and line[-1] == "]"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise _bad_meta(f"{META_FILE} line {number}: expected key=value")
        key, value = key.strip().lower(), value.strip().strip("\"'")
        if key == "service":
            service = _parse_service(value, number)
            if any((s.service_name, s.port) == (service.service_name, service.port)
                   for s in services):
                raise _bad_meta(f"{META_FILE} line {number}: service {value!r} is listed twice")
            services.append(service)
        else:
            values.setdefault(key, value)
    return AppMeta(values.get("name", ""), values.get("version", ""), tuple(services))


def _parse_service(value: str, number: int) -> ServiceEndpoint:
    where = f"{META_FILE} line {number}"
    parts = [p.strip() for p in value.split(":")]
    if len(parts) != 3:
        raise _bad_meta(f"{where}: expected service=<name>:<protocol>:<port>, got {value!r}")
    name, protocol, port = parts[0], parts[1].lower(), parts[2]
    if not SERVICE_NAME.match(name):
        raise _bad_meta(f"{where}: bad service name {name!r}")
    if protocol not in PROTOCOLS:
        raise _bad_meta(
            f"{where}: protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if not port.isdigit():
        raise _bad_meta(f"{where}: port must be a number 1..65535, got {port!r}")
    if not 1 <= int(port) <= 65535:
        raise _bad_meta(f"{where}: port {port} is out of range (1..65535)")
    return ServiceEndpoint(service_name=name, protocol=protocol, port=int(port))


def _bad_meta(message: str) -> Invalid:
    return Invalid(message, field=META_FILE)
