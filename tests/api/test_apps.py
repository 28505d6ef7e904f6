"""`/v1/apps`: zip uploads checked before anything is stored, images, artifact downloads."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zipfile

import aiohttp
import pytest

from tests.support.appzips import META, START, app_zip, make_zip, upload

pytestmark = pytest.mark.timeout(20)

def stored_files(tmp_path) -> list[str]:
    return sorted(os.listdir(tmp_path / "data" / "artifacts"))


async def assert_nothing_stored(client, tmp_path) -> None:
    listing = await client.get("/v1/apps")
    assert await listing.json() == []
    assert stored_files(tmp_path) == []


async def test_upload_stores_the_zip_under_its_hash(api, tmp_path, clock):
    data = app_zip()
    sha = hashlib.sha256(data).hexdigest()
    response = await upload(api, data)
    assert response.status == 201, await response.text()
    app = await response.json()
    assert app == {
        "artifactId": app["artifactId"],
        "name": "web",
        "version": "1.0.0",
        "kind": "zip",
        "url": f"/artifacts/{sha}.zip",
        "sha256": sha,
        "sizeBytes": len(data),
        "services": [{"serviceName": "web", "protocol": "http", "port": 8080,
                      "version": "1.0.0"}],
        "imageRepository": "",
        "imageTag": "",
        "portMappings": [],
        "createdAt": clock.now(),
    }
    assert len(app["artifactId"]) == 32
    assert stored_files(tmp_path) == [f"{sha}.zip"]
    assert await (await api.get(f"/v1/apps/{app['artifactId']}")).json() == app
    listing = await api.get("/v1/apps")
    assert listing.headers["X-Total-Count"] == "1"
    assert await listing.json() == [app]


async def test_artifacts_are_served_by_hash_name_only(api):
    data = app_zip()
    app = await (await upload(api, data)).json()
    download = await api.get(app["url"])
    assert download.status == 200
    assert download.headers["Content-Type"] == "application/zip"
    assert await download.read() == data
    for path in ("/artifacts/" + "0" * 64 + ".zip", "/artifacts/plum.db", "/artifacts/",
                 "/artifacts/" + app["sha256"], "/artifacts/x/" + app["sha256"] + ".zip"):
        response = await api.get(path)
        assert response.status == 404, path
        assert (await response.json())["error"]["code"] == "not_found"


def _symlink_zip() -> bytes:
    return make_zip({"start.sh": START, "meta.ini": META}, links={"data": "/etc/passwd"})


BAD_ZIPS = {
    "zip slip": (app_zip(**{"../evil.sh": "x"}), "'..' path component"),
    "nested zip slip": (app_zip(**{"lib/../../evil.sh": "x"}), "'..' path component"),
    "backslash zip slip": (app_zip(**{"..\\evil.sh": "x"}), "'..' path component"),
    "absolute path": (app_zip(**{"/etc/cron.d/evil": "x"}), "absolute path"),
    "drive letter": (app_zip(**{"C:/evil.sh": "x"}), "absolute path"),
    "symlink": (_symlink_zip(), "symbolic link"),
    "no start.sh": (make_zip({"meta.ini": META}), "no start.sh"),
    "start.sh not at the root": (make_zip({"app/start.sh": START, "meta.ini": META}),
                                 "no start.sh"),
    "no meta.ini": (make_zip({"start.sh": START}), "no meta.ini"),
    "no name": (app_zip("version=1.0\n"), "no name="),
    "no version": (app_zip("name=web\n"), "no version="),
    "bad name": (app_zip("name=../web\nversion=1\n"), "name '../web'"),
    "bad service protocol": (app_zip(META + "service=db:tcp:5432\n"), "protocol"),
    "bad service port": (app_zip(META + "service=db:grpc:99999\n"), "port"),
    "not key=value": (app_zip(META + "garbage\n"), "expected key=value"),
    "not a zip": (b"PK\x03\x04 certainly not a zip", "not a valid zip archive"),
}


@pytest.mark.parametrize("data, problem", BAD_ZIPS.values(), ids=BAD_ZIPS.keys())
async def test_unsafe_or_incomplete_zips_are_refused_and_nothing_is_stored(
    api, tmp_path, data, problem
):
    response = await upload(api, data)
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "invalid"
    assert error["field"] == "file"
    assert problem in error["message"]
    await assert_nothing_stored(api, tmp_path)


async def test_size_and_entry_caps(make_client, tmp_path):
    client, _ = await make_client(PLUM_APP_MAX_ENTRY_MB="1", PLUM_APP_MAX_UNCOMPRESSED_MB="2",
                                  PLUM_APP_MAX_ENTRIES="5")
    mib = 1024 * 1024
    cases = [
        (app_zip(big=b"\0" * (mib + 1)), "over the per-file cap of 1048576"),
        (app_zip(a=b"\0" * 900_000, b=b"\0" * 900_000, c=b"\0" * 900_000),
         "unpacks to more than 2097152 bytes"),
        (app_zip(a="1", b="2", c="3", d="4"), "6 entries, over the cap of 5"),
    ]
    for data, problem in cases:
        response = await upload(client, data)
        assert response.status == 400, await response.text()
        assert problem in (await response.json())["error"]["message"]
    await assert_nothing_stored(client, tmp_path)


async def test_declared_sizes_that_lie_are_caught(api, tmp_path):
    """A header claiming 10 bytes for a 100 kB file (to slip past the caps) fails the CRC."""
    data = bytearray(app_zip(payload=b"x" * 100_000))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("payload")
    struct.pack_into("<I", data, info.header_offset + 22, 10)  # local header
    central = data.find(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(b"payload")] != b"payload":
        central = data.find(b"PK\x01\x02", central + 1)
    struct.pack_into("<I", data, central + 24, 10)  # its central directory record
    response = await upload(api, bytes(data))
    assert response.status == 400, await response.text()
    assert "CRC" in (await response.json())["error"]["message"]
    await assert_nothing_stored(api, tmp_path)


async def test_upload_over_the_body_cap_is_413(make_client, tmp_path):
    client, _ = await make_client(PLUM_MAX_BODY_MB="1")
    response = await upload(client, app_zip(noise=os.urandom(1_200_000)))
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "too_large"
    await assert_nothing_stored(client, tmp_path)


async def test_a_body_without_the_file_field_is_400(api):
    response = await upload(api, app_zip(), field="zip")
    assert response.status == 400
    assert "'file'" in (await response.json())["error"]["message"]
    response = await api.post("/v1/apps/upload", json={"file": "nope"})
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "file"


async def test_duplicate_name_and_version_is_409_and_keeps_the_first(api, tmp_path):
    first = await (await upload(api, app_zip())).json()
    again = await upload(api, app_zip())
    assert again.status == 409
    assert (await again.json())["error"]["code"] == "conflict"
    changed = await upload(api, app_zip(extra="other content, same name and version"))
    assert changed.status == 409
    assert stored_files(tmp_path) == [f"{first['sha256']}.zip"]
    assert (await api.get(first["url"])).status == 200
    other = await upload(api, app_zip(META.replace("1.0.0", "1.0.1")))
    assert other.status == 201
    assert (await api.get("/v1/apps")).headers["X-Total-Count"] == "2"


async def test_delete_removes_the_app_and_its_file(api, tmp_path):
    app = await (await upload(api, app_zip())).json()
    assert (await api.delete(f"/v1/apps/{app['artifactId']}")).status == 204
    assert stored_files(tmp_path) == []
    assert (await api.get(f"/v1/apps/{app['artifactId']}")).status == 404
    assert (await api.get(app["url"])).status == 404
    assert (await api.delete(f"/v1/apps/{app['artifactId']}")).status == 404


async def test_delete_is_409_while_a_deployment_uses_the_app(api, tmp_path):
    app = await (await upload(api, app_zip())).json()
    created = await api.post("/v1/deployments", json={
        "name": "web", "entries": [{"artifactId": app["artifactId"], "replicas": {"n1": 1}}],
    })
    assert created.status == 201, await created.text()
    deployment_id = (await created.json())["deploymentId"]
    refused = await api.delete(f"/v1/apps/{app['artifactId']}")
    assert refused.status == 409
    assert stored_files(tmp_path) == [f"{app['sha256']}.zip"]
    assert (await api.delete(f"/v1/deployments/{deployment_id}")).status == 204
    assert (await api.delete(f"/v1/apps/{app['artifactId']}")).status == 204


async def test_create_image_app(api, clock):
    body = {"name": "nginx", "version": "1.27", "imageRepository": "docker.io/library/nginx",
            "imageTag": "1.27-alpine", "portMappings": [{"containerPort": 80, "hostPort": 8080}]}
    response = await api.post("/v1/apps/create-image", json=body)
    assert response.status == 201, await response.text()
    app = await response.json()
    assert app["kind"] == "image"
    assert (app["name"], app["version"], app["url"], app["sha256"]) == ("nginx", "1.27", "", "")
    assert app["portMappings"] == [{"containerPort": 80, "hostPort": 8080, "protocol": "tcp"}]
    assert app["createdAt"] == clock.now()
    assert (await api.post("/v1/apps/create-image", json=body)).status == 409
    bad = await api.post("/v1/apps/create-image", json={**body, "version": "2",
                                                         "imageTag": "no spaces"})
    assert bad.status == 422
    assert (await bad.json())["error"]["field"] == "imageTag"


async def test_artifacts_need_the_token_when_auth_is_on(make_client):
    client, _ = await make_client(PLUM_AUTH_TOKENS="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    form = aiohttp.FormData()
    form.add_field("file", app_zip(), filename="app.zip")
    app = await (await client.post("/v1/apps/upload", data=form, headers=auth)).json()
    assert (await client.get(app["url"])).status == 401
    assert (await client.get(app["url"], headers=auth)).status == 200
