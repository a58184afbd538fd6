"""Small real HTTP servers on loopback for fault tests: one that answers garbage, and a proxy
to the gateway that loses the answers of the first requests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def answering(
    status: int, body: bytes, content_type: str, requests: list[str] | None = None
) -> type[BaseHTTPRequestHandler]:
    """A server that answers every request with `status` and `body` (and appends each
    request's path to `requests`)."""

    class Fixed(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if requests is not None:
                requests.append(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Fixed


class LossyProxy:
    """Forwards requests to the gateway; the answers of the first `lose` are dropped after the
    gateway answered: the connection closes, as when a network path fails, or with
    `lost_status` the proxy answers that instead (a 503 of a load balancer that gave up)."""

    def __init__(self, upstream: str, lose: int, lost_status: int | None = None) -> None:
        self.upstream = upstream
        self.lose = lose
        self.lost_status = lost_status
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Forward(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answer = httpx.post(
                    proxy.upstream + self.path,
                    content=body,
                    headers={
                        "Authorization": self.headers["Authorization"],
                        "Content-Type": "application/json",
                    },
                )
                with proxy.lock:
                    proxy.bodies.append(json.loads(body))
                    lost = len(proxy.bodies) <= proxy.lose
                if lost and proxy.lost_status is None:
                    self.close_connection = True
                    return
                status, content = (
                    (proxy.lost_status, b"upstream timed out")
                    if lost and proxy.lost_status is not None
                    else (answer.status_code, answer.content)
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Forward
