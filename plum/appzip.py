"""Checking an uploaded app zip before it is stored: nothing is extracted here.

A zip is accepted only when every entry is a plain file or directory with a relative path
that stays inside the archive (no absolute paths, drive letters or `..`; no symlinks or
other special files; no encrypted or duplicate entries), the entry count and the sizes stay
under the caps, and every file really decompresses to its declared size with a matching
CRC (so the declared sizes that the caps checked can be trusted). `start.sh` and `meta.ini`
must sit at the root; `meta.ini` holds `name=`, `version=` and `service=<name>:<protocol>:
<port>` lines. Every refusal is a `BadRequest` (HTTP 400) naming the problem.

Blocking (it reads the whole archive): call it in a thread.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from plum.agent.protocol import ServiceEndpoint
from plum.errors import BadRequest

START_SCRIPT = "start.sh"
META_FILE = "meta.ini"
META_MAX_BYTES = 64 * 1024
PROTOCOLS = ("http", "https", "grpc")
_CHUNK = 1024 * 1024

APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True, slots=True)
class ZipLimits:
    max_total_bytes: int
    max_entry_bytes: int
    max_entries: int


@dataclass(frozen=True, slots=True)
class AppMeta:
    name: str
    version: str
    services: list[ServiceEndpoint]


def refuse(message: str) -> BadRequest:
    return BadRequest(message, field="file")


def inspect_zip(path: Path, limits: ZipLimits) -> AppMeta:
    """The app's meta.ini, once the whole archive is known to be safe."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = _check_entries(infos, limits)
            for required in (START_SCRIPT, META_FILE):
                if required not in names:
                    raise refuse(f"the zip has no {required} at its root")
            for info in infos:
                if not info.is_dir():
                    _check_content(archive, info)
            return parse_meta(archive.read(META_FILE))
    except zipfile.BadZipFile as exc:
        raise refuse(f"not a valid zip archive: {exc}") from None
    except (zipfile.LargeZipFile, NotImplementedError, EOFError, zlib.error) as exc:
        raise refuse(f"unreadable zip archive: {exc}") from None


def _check_entries(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> set[str]:
    if len(infos) > limits.max_entries:
        raise refuse(f"the zip has {len(infos)} entries, over the cap of {limits.max_entries}")
    names: set[str] = set()
    total = 0
    for info in infos:
        name = _check_path(info.filename)
        _check_kind(info)
        if name in names:
            raise refuse(f"entry {info.filename!r} appears twice")
        names.add(name)
        if info.file_size > limits.max_entry_bytes:
            raise refuse(f"entry {info.filename!r} unpacks to {info.file_size} bytes, over the "
                         f"per-file cap of {limits.max_entry_bytes}")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise refuse(f"the zip unpacks to more than {limits.max_total_bytes} bytes (the cap)")
    return names


def _check_path(raw: str) -> str:
    """The entry's normalised name; refuses paths that could land outside the target."""
    name = raw.replace("\\", "/")
    if not name or "\x00" in name:
        raise refuse(f"entry {raw!r} has an empty or invalid name")
    if name.startswith("/") or _DRIVE.match(name):
        raise refuse(f"entry {raw!r} has an absolute path")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise refuse(f"entry {raw!r} has a '..' path component")
    return "/".join(p for p in parts if p not in ("", "."))


def _check_kind(info: zipfile.ZipInfo) -> None:
    if info.flag_bits & 0x1:
        raise refuse(f"entry {info.filename!r} is encrypted")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise refuse(f"entry {info.filename!r} is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise refuse(f"entry {info.filename!r} is not a regular file or directory")


def _check_content(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Decompress the entry (zipfile stops at the declared size and checks the CRC)."""
    size = 0
    with archive.open(info) as fh:
        while chunk := fh.read(_CHUNK):
            size += len(chunk)
    if size != info.file_size:
        raise refuse(f"entry {info.filename!r} is truncated")


def parse_meta(raw: bytes) -> AppMeta:
    if len(raw) > META_MAX_BYTES:
        raise refuse(f"{META_FILE} is over {META_MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise refuse(f"{META_FILE} is not UTF-8 text") from None
    values: dict[str, str] = {}
    services: list[tuple[str, str, int]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;" or (line[0] == "[" and line[-1] == "]"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise refuse(f"{META_FILE} line {number}: expected key=value")
        key, value = key.strip().lower(), value.strip().strip("\"'")
        if key == "service":
            service = _parse_service(value, number)
            if any((s, port) == (service[0], service[2]) for s, _, port in services):
                raise refuse(f"{META_FILE} line {number}: service {value!r} is listed twice")
            services.append(service)
        else:
            values.setdefault(key, value)
    name, version = values.get("name", ""), values.get("version", "")
    for key, value in (("name", name), ("version", version)):
        if not value:
            raise refuse(f"{META_FILE} has no {key}= line")
        if not APP_NAME.match(value):
            raise refuse(f"{META_FILE}: {key} {value!r} may hold only letters, digits and "
                         "._+- (at most 128)")
    return AppMeta(name, version, [
        ServiceEndpoint(service_name=s, protocol=p, port=port, version=version)
        for s, p, port in services
    ])


def _parse_service(value: str, number: int) -> tuple[str, str, int]:
    where = f"{META_FILE} line {number}"
    parts = [p.strip() for p in value.split(":")]
    if len(parts) != 3:
        raise refuse(f"{where}: expected service=<name>:<protocol>:<port>, got {value!r}")
    name, protocol, port = parts[0], parts[1].lower(), parts[2]
    if not SERVICE_NAME.match(name):
        raise refuse(f"{where}: bad service name {name!r}")
    if protocol not in PROTOCOLS:
        raise refuse(f"{where}: protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise refuse(f"{where}: port must be 1..65535, got {port!r}")
    return name, protocol, int(port)
