"""Building app zips and uploading them, for tests."""

from __future__ import annotations

import io
import stat
import zipfile

import aiohttp

START = "#!/bin/sh\nexec python3 -m http.server \"$PORT\"\n"
META = "# the app\nname=web\nversion=1.0.0\nservice=web:http:8080\n"


def make_zip(files: dict[str, str | bytes], *, links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buf.getvalue()


def app_zip(meta: str = META, **more: str | bytes) -> bytes:
    return make_zip({"start.sh": START, "meta.ini": meta, **more})


async def upload(client, data: bytes, field: str = "file"):
    form = aiohttp.FormData()
    form.add_field(field, data, filename="app.zip", content_type="application/zip")
    return await client.post("/v1/apps/upload", data=form)
