"""A real HTTP backend on 127.0.0.1 for proxy tests: records every request, answers each path
with a function of the request (set by the test), in a thread of the test process."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[dict[str, Any]], Any]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Backend:
    port: int = 0
    #: path -> answer(body) -> the JSON answer (or an int: that HTTP status, empty body).
    answers: dict[str, Answer] = field(default_factory=dict)
    #: path -> seconds to wait before answering.
    delays: dict[str, float] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def seen(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


def _handler(backend: Backend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            with backend.lock:
                backend.requests.append(
                    Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
            time.sleep(backend.delays.get(self.path, 0))
            answer = backend.answers.get(self.path)
            result = answer(body) if answer is not None else 404
            if isinstance(result, int):
                self.send_response(result)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = json.dumps(result).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def backend(port: int = 0) -> Iterator[Backend]:
    state = Backend()
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(state))
    server.daemon_threads = True
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
