"""Bearer-token auth for REST, SSE and the agent link, when tokens are configured.

Browsers' EventSource cannot send headers, so streaming routes also accept `access_token`
in the query string. App artifacts (`/artifacts/`) need the token too. `/healthz` and the
dashboard's static files stay open; the dashboard asks for the token once and sends it with
every call.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from plum.errors import Unauthorized

OPEN_PATHS = ("/healthz",)


def auth_middleware(tokens: tuple[str, ...]):
    encoded = [t.encode() for t in tokens]

    def accepted(candidate: str) -> bool:
        raw = candidate.encode()
        return any(hmac.compare_digest(raw, token) for token in encoded)

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        path = request.path
        if path.startswith(("/v1", "/artifacts/")) or path == "/metrics":
            header = request.headers.get("Authorization", "")
            scheme, _, credential = header.partition(" ")
            if scheme.lower() == "bearer" and accepted(credential.strip()):
                return await handler(request)
            query_token = request.query.get("access_token")
            if query_token is not None and accepted(query_token):
                return await handler(request)
            raise Unauthorized("missing or wrong bearer token")
        return await handler(request)

    return middleware
