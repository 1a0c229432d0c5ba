"""A minimal OpenAI-compatible server that answers at once, for one purpose only: measuring the client's own
ceiling (the requests per second enginebench's client reaches when the server costs next to nothing), so a
figure measured against a real server can say how close it came to what the client itself can drive.

It answers /v1/embeddings with `--dim` zeros per input and /v1/completions and /v1/chat/completions with a
stream of `max_tokens` one-word chunks (server-sent events over chunked HTTP/1.1 keep-alive, as real servers
send them), then `usage` and `[DONE]`; GET /v1/models names one model. No model runs: it stands in for no server
under test.

    python -m enginebench.endpoint.minimal_server --dim 384    # prints `port N` once it listens on 127.0.0.1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from enginebench.measuring_process import die_with_parent

MODEL = "minimal"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connections expect
    disable_nagle_algorithm = True  # headers and body are two writes: without it each answer waits ~40 ms
    dim = 384

    def log_message(self, *args) -> None:  # no line per request
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        path = self.path.rstrip("/")
        if path == "/v1/embeddings":
            texts = body.get("input") or []
            texts = [texts] if isinstance(texts, str) else texts
            zeros = [0.0] * self.dim
            self._json(200, {"object": "list", "model": MODEL, "usage": {"prompt_tokens": 0, "total_tokens": 0},
                             "data": [{"object": "embedding", "index": i, "embedding": zeros}
                                      for i in range(len(texts))]})
        elif path in ("/v1/completions", "/v1/chat/completions"):
            self._stream(int(body.get("max_tokens") or 16), chat=path.endswith("chat/completions"))
        else:
            self._json(404, {"error": {"message": f"no {self.path}"}})

    def _stream(self, tokens: int, chat: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(tokens):
            last = i == tokens - 1
            choice = {"index": 0, "finish_reason": "length" if last else None}
            choice.update({"delta": {"content": " word"}} if chat else {"text": " word"})
            self._event({"object": "chat.completion.chunk" if chat else "text_completion", "model": MODEL,
                         "choices": [choice]})
        self._event({"model": MODEL, "choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": tokens}})
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _event(self, body: dict) -> None:
        self._chunk(b"data: " + json.dumps(body).encode() + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def serve(dim: int, port: int = 0) -> None:
    _Handler.dim = dim
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


@contextmanager
def minimal_server(dim: int = 384):
    """Start the server in a process of its own (as a real server would be) and yield its URL; it is ended on
    leaving, and dies with the process that started it."""
    proc = subprocess.Popen([sys.executable, "-m", "enginebench.endpoint.minimal_server", "--dim", str(dim)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError(f"the minimal server did not start (exit {proc.poll()}): {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=384, help="numbers per embedding [384]")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 [any free one]")
    args = parser.parse_args()
    die_with_parent()
    serve(args.dim, args.port)


if __name__ == "__main__":
    main()


__all__ = ["minimal_server", "serve", "MODEL"]
