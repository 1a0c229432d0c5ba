"""Real servers written elsewhere, started on loopback for the endpoint tests and always ended (their whole
process group), even when a test fails: llama-cpp-python's OpenAI-compatible server on the SmolLM2 GGUF, and
Infinity (the embeddings server, in its own virtual environment made by `make servers`) on MiniLM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INFINITY = Path(os.environ.get("ENGINEBENCH_INFINITY", ROOT / ".venv-servers" / "infinity" / "bin" / "infinity_emb"))
API_KEY_ENV = "ENGINEBENCH_TEST_SERVER_KEY"  # the tests' llama.cpp server asks for this key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str, headers: dict) -> bool:
    try:
        request = urllib.request.Request(f"{url}/v1/models", headers=headers)
        with urllib.request.urlopen(request, timeout=2) as response:
            return "data" in json.load(response)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def serving(command: list[str], port: int, *, log: Path, env: dict | None = None, headers: dict | None = None,
            wait_s: float = 240.0):
    """Start `command` (listening on 127.0.0.1:`port`) in its own process group; yield its base URL once
    GET /v1/models answers; end the group however the block ends."""
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + wait_s
        while not _ready(url, headers or {}):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start (exit {proc.poll()}): {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """End the server's process group: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def llamacpp_command(gguf: str, port: int, *extra: str) -> list[str]:
    """llama-cpp-python's server through the project's launcher (endpoint/llamacpp_server.py): one request at a
    time in order (--interrupt_requests false: by default a new request cuts the streaming one short)."""
    return [sys.executable, "-m", "enginebench.endpoint.llamacpp_server", "--model", gguf, "--host", "127.0.0.1",
            "--port", str(port), "--model_alias", "smollm2", "--n_ctx", "1024", "--n_threads", "2",
            "--verbose", "false", "--interrupt_requests", "false", *extra]


def infinity_command(model_path: str, port: int) -> list[str]:
    return [str(INFINITY), "v2", "--model-id", model_path, "--served-model-name", "minilm", "--host", "127.0.0.1",
            "--port", str(port), "--engine", "torch", "--device", "cpu", "--no-bettertransformer",
            "--url-prefix", "/v1"]


INFINITY_ENV = {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
