"""The dashboard: static files built from `webui/` into `plum/web/dist/`, served at `/`
with SPA fallback (any unknown non-API path answers `index.html`)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

import plum
from plum.errors import NotFound

DIST = Path(plum.__file__).parent / "web" / "dist"
API_PREFIXES = ("/v1/", "/v1", "/healthz", "/metrics", "/artifacts/")

MISSING = """<!doctype html>
<html><head><meta charset="utf-8"><title>Plum</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto">
<h1>Plum is running</h1>
<p>The dashboard has not been built. Build it with <code>make run</code> (which builds it and
starts Plum), or by hand: <code>cd webui &amp;&amp; npm ci &amp;&amp; npm run build</code>, then
reload this page.</p>
<p>The REST API is live: <a href="/v1/openapi.json">/v1/openapi.json</a>,
<a href="/healthz">/healthz</a>.</p>
</body></html>
"""


def dashboard_handler(dist: Path = DIST):
    root = dist.resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith(API_PREFIXES):
            raise NotFound(f"no route for {request.method} {path}")
        index = root / "index.html"
        if not index.is_file():
            return web.Response(text=MISSING, content_type="text/html")
        candidate = (root / path.lstrip("/")).resolve()
        if candidate.is_file() and candidate.is_relative_to(root):
            cache = "public, max-age=31536000, immutable" if "/assets/" in path else "no-cache"
            return web.FileResponse(candidate, headers={"Cache-Control": cache})
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    return serve
