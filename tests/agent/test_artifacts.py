"""App artifacts: safe extraction (real zips), meta.ini, and downloads over real HTTP."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import aiohttp
import pytest

from plum.agent.artifacts import (
    AppMeta,
    ArtifactStore,
    ExtractLimits,
    extract_app,
    parse_meta,
    read_app,
)
from plum.agent.protocol import ServiceEndpoint
from plum.errors import Invalid, TooLarge, Unavailable
from tests.agent.apps import app_zip, artifact_server, make_zip

pytestmark = pytest.mark.timeout(30)


def write(tmp_path: Path, data: bytes, name: str = "app.zip") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- extraction ---------------------------------------------------------------------------


def test_extracts_files_and_makes_start_sh_executable(tmp_path: Path):
    data = app_zip("echo hi", services=("web:http:8080",), **{"lib/util.py": "x = 1\n"})
    dest = tmp_path / "out"
    dest.mkdir()
    meta = extract_app(write(tmp_path, data), dest)
    assert meta == AppMeta(
        "demo-meta", "0.9", (ServiceEndpoint(service_name="web", protocol="http", port=8080),)
    )
    assert (dest / "lib" / "util.py").read_text() == "x = 1\n"
    assert (dest / "start.sh").stat().st_mode & stat.S_IXUSR
    assert not (dest / "lib" / "util.py").stat().st_mode & stat.S_IXUSR


def test_zip_without_unix_modes_extracts(tmp_path: Path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("start.sh", "echo hi\n")
        archive.writestr("sub/", "")
    dest = tmp_path / "out"
    dest.mkdir()
    extract_app(write(tmp_path, buffer.getvalue()), dest)
    assert (dest / "sub").is_dir()
    assert (dest / "start.sh").stat().st_mode & stat.S_IXUSR


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("/etc/evil", "absolute"),
        ("../evil", "leaves the app directory"),
        ("a/../../evil", "leaves the app directory"),
        ("C:/evil", "absolute"),
        ("a\\..\\evil", "unsafe path"),
    ],
)
def test_unsafe_paths_are_refused(tmp_path: Path, name: str, reason: str):
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(Invalid, match=reason):
        extract_app(write(tmp_path, make_zip({"start.sh": "", name: "boom"})), dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_symlinks_are_refused(tmp_path: Path):
    dest = tmp_path / "out"
    dest.mkdir()
    data = make_zip({"start.sh": ""}, links={"passwd": "/etc/passwd"})
    with pytest.raises(Invalid, match="symbolic link"):
        extract_app(write(tmp_path, data), dest)
    with pytest.raises(Invalid, match="symbolic link"):
        read_app(write(tmp_path, data))
    assert list(dest.iterdir()) == []


def test_special_files_and_encrypted_entries_are_refused(tmp_path: Path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("fifo")
        info.external_attr = (stat.S_IFIFO | 0o644) << 16
        archive.writestr(info, "")
    with pytest.raises(Invalid, match="not a regular file"):
        read_app(write(tmp_path, buffer.getvalue()))
    data = bytearray(make_zip({"secret": "x"}))
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1  # the "encrypted" bit of the entry's general purpose flags
    with pytest.raises(Invalid, match="encrypted"):
        read_app(write(tmp_path, bytes(data)))


def test_size_and_count_caps(tmp_path: Path):
    dest = tmp_path / "out"
    dest.mkdir()
    files = {"start.sh": "", "a": "x" * 600, "b": "y" * 600}
    path = write(tmp_path, make_zip(files))
    with pytest.raises(TooLarge, match="entries"):
        extract_app(path, dest, limits=ExtractLimits(max_files=2))
    with pytest.raises(TooLarge, match="larger than 500 bytes"):
        extract_app(path, dest, limits=ExtractLimits(max_file_bytes=500))
    with pytest.raises(TooLarge, match="unpacked"):
        extract_app(path, dest, limits=ExtractLimits(max_total_bytes=1000))
    # a zip bomb: tiny compressed, huge unpacked, refused from its headers before any write
    bomb = write(tmp_path, make_zip({"start.sh": "", "zeros": b"\0" * 5_000_000}), "bomb.zip")
    assert bomb.stat().st_size < 100_000
    with pytest.raises(TooLarge):
        extract_app(bomb, dest, limits=ExtractLimits(max_total_bytes=1_000_000))
    assert list(dest.iterdir()) == []


def test_reserved_and_duplicate_names_are_refused(tmp_path: Path):
    dest = tmp_path / "out"
    dest.mkdir()
    data = make_zip({"start.sh": "", "instance.json": "{}"})
    with pytest.raises(Invalid, match="instance.json"):
        extract_app(write(tmp_path, data), dest, reserved=frozenset({"instance.json"}))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("start.sh", "one")
        archive.writestr("start.sh", "two")
    with pytest.raises(Invalid, match="twice"):
        extract_app(write(tmp_path, buffer.getvalue(), "dup.zip"), dest)


def test_not_a_zip_is_invalid(tmp_path: Path):
    with pytest.raises(Invalid, match="not a valid zip"):
        read_app(write(tmp_path, b"hello"))


def test_read_app_checks_without_writing(tmp_path: Path):
    path = write(tmp_path, app_zip("true"))
    assert read_app(path).name == "demo-meta"
    assert sorted(os.listdir(tmp_path)) == ["app.zip"]


def test_parse_meta():
    text = "# comment\n[app]\nname = web\nversion=2.1\nservice=api:grpc:9000\nother=x\n"
    assert parse_meta(text) == AppMeta(
        "web", "2.1", (ServiceEndpoint(service_name="api", protocol="grpc", port=9000),)
    )
    with pytest.raises(Invalid, match="line 1"):
        parse_meta("service=api:grpc\n")
    with pytest.raises(Invalid, match="out of range"):
        parse_meta("service=api:grpc:70000\n")


# --- downloads ----------------------------------------------------------------------------


async def test_fetch_verifies_and_caches_by_sha256(tmp_path: Path):
    data = app_zip("true")
    async with artifact_server() as server, aiohttp.ClientSession() as session:
        url, digest = server.add("app.zip", data)
        store = ArtifactStore(
            tmp_path / "cache", session, controller_base=server.base, token="s3cret"
        )
        path = await store.fetch(url, digest.upper())
        assert path == tmp_path / "cache" / f"{digest}.zip"
        assert path.read_bytes() == data
        assert await store.fetch(url, digest) == path
        assert len(server.requests) == 1  # the second came from the cache
        assert server.requests[0][1]["Authorization"] == "Bearer s3cret"
        # without a sha256 it downloads again, and files the zip under the computed one
        assert await store.fetch(url) == path
        assert len(server.requests) == 2


async def test_fetch_relative_url_goes_to_the_controller(tmp_path: Path):
    async with artifact_server() as server, aiohttp.ClientSession() as session:
        _, digest = server.add("app.zip", app_zip("true"))
        store = ArtifactStore(tmp_path, session, controller_base=server.base + "/")
        assert (await store.fetch("/artifacts/app.zip", digest)).name == f"{digest}.zip"


async def test_token_is_only_sent_to_the_controller(tmp_path: Path):
    async with (
        artifact_server() as controller,
        artifact_server() as elsewhere,
        aiohttp.ClientSession() as session,
    ):
        url, digest = elsewhere.add("app.zip", app_zip("true"))
        store = ArtifactStore(tmp_path, session, controller_base=controller.base, token="s3cret")
        await store.fetch(url, digest)
        assert "Authorization" not in elsewhere.requests[0][1]


async def test_sha256_mismatch_leaves_nothing_in_the_cache(tmp_path: Path):
    async with artifact_server() as server, aiohttp.ClientSession() as session:
        url, digest = server.add("app.zip", app_zip("true"))
        store = ArtifactStore(tmp_path / "cache", session, controller_base=server.base)
        with pytest.raises(Invalid, match=f"sha256 mismatch.*expected {'0' * 64}, got {digest}"):
            await store.fetch(url, "0" * 64)
        assert list((tmp_path / "cache").iterdir()) == []
        with pytest.raises(Invalid, match="64 hex digits"):
            await store.fetch(url, "abc")


async def test_download_errors_are_unavailable(tmp_path: Path):
    async with artifact_server() as server, aiohttp.ClientSession() as session:
        store = ArtifactStore(tmp_path, session, controller_base=server.base)
        with pytest.raises(Unavailable, match="404"):
            await store.fetch(f"{server.base}/artifacts/missing.zip")
        base = server.base
    async with aiohttp.ClientSession() as session:
        store = ArtifactStore(tmp_path, session, controller_base=base)
        with pytest.raises(Unavailable, match="failed"):
            await store.fetch(f"{base}/artifacts/gone.zip")  # the server is closed
        with pytest.raises(Invalid, match="http or https"):
            await store.fetch("file:///etc/passwd")


async def test_download_size_cap(tmp_path: Path):
    data = app_zip("true", **{"big": os.urandom(200_000).hex()})
    async with artifact_server() as server, aiohttp.ClientSession() as session:
        url, digest = server.add("app.zip", data)
        store = ArtifactStore(tmp_path, session, controller_base=server.base, max_bytes=100_000)
        with pytest.raises(TooLarge):
            await store.fetch(url, digest)
        assert [p for p in tmp_path.iterdir() if p.is_file()] == []
