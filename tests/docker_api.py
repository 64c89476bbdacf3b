"""A stand-in for an older Docker daemon: a proxy in front of the real one that speaks
Docker Engine API 1.41 only (Debian 12's docker.io), as such a daemon does.

Requests under a newer ``/vX.Y/`` prefix get the daemon's own refusal (HTTP 400, "client
version X.Y is too new. Maximum supported API version is 1.41"); ``/version`` and ``/_ping``
report 1.41. Everything else goes to the real daemon unchanged.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

MAX_API = (1, 41)
MAX_TEXT = "1.41"
_VERSIONED = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 120.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    upstream = "/var/run/docker.sock"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return None

    def address_string(self) -> str:
        return "unix"

    def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Api-Version", MAX_TEXT)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self) -> None:
        path = self.path
        found = _VERSIONED.match(path)
        if found and (int(found[1]), int(found[2])) > MAX_API:
            message = (
                f"client version {found[1]}.{found[2]} is too new. "
                f"Maximum supported API version is {MAX_TEXT}"
            )
            body = json.dumps({"message": message}).encode()
            self._reply(400, {"Content-Type": "application/json"}, body)
            return
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else None
        skip = {"connection", "content-length", "transfer-encoding", "host"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        upstream = _UnixConnection(self.server.upstream)
        try:
            upstream.request(self.command, path, payload, headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        bare = found[3] if found else path.split("?")[0]
        if bare.split("?")[0] == "/version" and response.status == 200:
            info = json.loads(data)
            info["ApiVersion"] = MAX_TEXT
            data = json.dumps(info).encode()
        drop = skip | {"api-version", "content-length"}
        out = {k: v for k, v in response.getheaders() if k.lower() not in drop}
        self._reply(response.status, out, data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward


@contextmanager
def api_1_41_daemon(folder: Path) -> Iterator[str]:
    """A ``DOCKER_HOST`` value for a daemon that speaks API 1.41 at most."""
    # A unix socket path is limited to about 107 bytes: pytest's folders can be longer.
    short = Path(tempfile.mkdtemp(prefix="pgsb-api-", dir="/tmp"))
    path = short / "docker.sock"
    server = _Server(str(path), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        server.shutdown()
        server.server_close()
        path.unlink(missing_ok=True)
        short.rmdir()
