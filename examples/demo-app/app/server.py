"""demo-app: a small HTTP service for Plum's deployments, discovery and `service` executor.

    GET  /healthz  -> ok                    (what Plum's discovery health checks ask)
    GET  /hello    -> {"hello": "world", "instanceId", "nodeId", "ip", "port", "pid"}
    POST /task     <- {taskId, name, payload}, as the `service` executor sends it
                   -> {"taskId", "greeting": "hello, <payload.name>", "servedBy": {...}}

It listens on the node's address (PLUM_NODE_IP, which the agent sets; 127.0.0.1 when run
by hand), on the port of the `service=` line in meta.ini beside it, so that the port the
controller advertises and the one the app binds cannot drift apart. Replicas on nodes with
different addresses can share the port. SIGTERM stops it cleanly (exit code 0).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_BODY = 1024 * 1024


def service_port(meta: Path = HERE / "meta.ini") -> int:
    """The port of the first `service=<name>:<protocol>:<port>` line."""
    for line in meta.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "service":
            return int(value.strip().rsplit(":", 1)[1])
    raise SystemExit("meta.ini has no service= line")


def identity(server: ThreadingHTTPServer) -> dict:
    host, port = server.server_address[:2]
    return {
        "instanceId": os.environ.get("PLUM_INSTANCE_ID", ""),
        "nodeId": os.environ.get("WORKER_NODE_ID", ""),
        "ip": host,
        "port": port,
        "pid": os.getpid(),
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "demo-app/1.0.0"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, b"ok", "text/plain")
        elif self.path == "/hello":
            self._json(200, {"hello": "world", **identity(self.server)})
        else:
            self._json(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/task":
            self._json(404, {"error": f"no route {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY:
            self._json(413, {"error": "body too large"})
            return
        try:
            task = json.loads(self.rfile.read(length) or b"{}")
            payload = task.get("payload") or {}
            name = payload.get("name", "world") if isinstance(payload, dict) else "world"
        except (ValueError, AttributeError):
            self._json(400, {"error": "expected a JSON object {taskId, name, payload}"})
            return
        self._json(200, {
            "taskId": task.get("taskId"),
            "greeting": f"hello, {name}",
            "servedBy": identity(self.server),
        })

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True


def main() -> None:
    host = os.environ.get("PLUM_NODE_IP") or "127.0.0.1"
    if ":" in host:  # an IPv6 node address
        Server.address_family = socket.AF_INET6
    server = Server((host, service_port()), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"demo-app listening on http://{host}:{server.server_address[1]}", flush=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
