"""A fake OpenAI-compatible HTTP server on loopback (scripted answers, every request recorded)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeServer:
    """A fake OpenAI-compatible server on 127.0.0.1 (a fake: scripted answers, every request recorded).

    ``script[path]`` is a list of (status, body) answers used in order (the last one repeats); a body that is a
    str is sent as is (to fake a malformed body), a callable gets the request JSON. An answer may carry a third
    item, a dict of response headers (``{"Retry-After": "1"}``). ``times`` holds when each request arrived
    (``time.monotonic()``), in the order of ``requests``.
    """

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[Any, ...]]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.times: list[float] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                fake.requests.append((self.path, body))
                fake.times.append(time.monotonic())
                answers = fake.script.get(self.path) or [(404, {"detail": "Not Found"})]
                status, payload, *more = answers.pop(0) if len(answers) > 1 else answers[0]
                headers: dict[str, str] = more[0] if more else {}
                if callable(payload):
                    payload = payload(body)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def fake_server() -> Iterator[FakeServer]:
    """A :class:`FakeServer`, shut down on exit."""
    server = FakeServer()
    try:
        yield server
    finally:
        server.close()
