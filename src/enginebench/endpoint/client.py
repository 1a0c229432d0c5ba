"""The HTTP client of an OpenAI-compatible server: one keep-alive connection per client, every request's record.

Standard library only (http.client): one connection per client thread, the socket read while the GIL is
released, server-sent events read line by line as they arrive. Each request gives a record (a dict, stored with
the result as it is):

  client, sent_ns (and scheduled_ns where an arrival was scheduled), first_ns (the first chunk that carried
  text, or the embeddings' answer), chunk_ns (every chunk that carried text), done_ns, status (HTTP), failure
  (None, or one of FAILURES) and error (its words), finish_reason (generation: the server's, e.g. length or
  stop), usage_prompt_tokens / usage_completion_tokens (the server's
  `usage`, where it reported one), and the text generated (counted with the local tokenizer afterwards,
  outside the clock: input_tokens / output_tokens).

Times are time.perf_counter_ns() of the measuring process. A failed request is a record too: it is counted
and shown, never dropped.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from enginebench.errors import UsageError

APIS = {"embeddings": "/v1/embeddings", "completions": "/v1/completions", "chat": "/v1/chat/completions"}
GENERATION_APIS = ("completions", "chat")
#: refused: no connection (or it was reset); timeout: the whole answer not read within the target's timeout_s
#: (a deadline from sending, so a stream that trickles on is one too); http: a status
#: other than 200; malformed: an answer that is not what the API promises (bad JSON, a stream cut short)
FAILURES = ("refused", "timeout", "http", "malformed")

_clock = time.perf_counter_ns


@dataclass(frozen=True)
class Target:
    """Where requests go and what they ask for. Picklable; the API key is read from the environment variable
    `api_key_env` when a request is sent, so it is never stored, printed or part of a run's argv."""

    url: str  # http://host:port (a trailing /v1 is accepted and dropped)
    api: str  # embeddings, completions or chat
    served_model: str  # the `model` sent in requests
    api_key_env: str | None = None
    timeout_s: float = 60.0  # a deadline for the whole request, from sending to its last byte

    @property
    def base(self) -> str:
        return base_url(self.url)

    @property
    def path(self) -> str:
        return APIS[self.api]

    @property
    def generates(self) -> bool:
        return self.api in GENERATION_APIS

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return headers


def base_url(url: str) -> str:
    """`http://host:port[/prefix]` without a trailing slash or /v1; UsageError for anything but http(s)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--endpoint {url!r} is not an http(s) URL: give e.g. --endpoint http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return f"{parts.scheme}://{parts.netloc}{path}"


def payload(target: Target, item, max_tokens: int | None = None) -> dict:
    """The request body for one input: a list of texts (embeddings) or a prompt's text (generation, greedy:
    temperature 0, streamed)."""
    if target.api == "embeddings":
        return {"model": target.served_model, "input": list(item)}
    body = {"model": target.served_model, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    if target.api == "chat":
        return {**body, "messages": [{"role": "user", "content": item}]}
    return {**body, "prompt": item}


class Connection:
    """One client's keep-alive connection to the target's host."""

    def __init__(self, target: Target):
        self.target = target
        parts = urlsplit(target.base)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._timeout_s = target.timeout_s  # for the next wait: what is left of the request's deadline
        self._make = lambda: cls(parts.hostname, parts.port, timeout=self._timeout_s)
        self._prefix = parts.path
        self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, body: dict | None = None):
        """Send and return the response (headers read); a connection the server closed while idle is opened
        again once."""
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = self._make()
            try:
                self.conn.request(method, self._prefix + path, body=data, headers=self.target.headers())
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if fresh or attempt:
                    raise
        raise AssertionError("unreachable")

    def _within(self, deadline_ns: int) -> None:
        """TimeoutError once the deadline has passed; otherwise the socket's next wait (connecting, or reading)
        is bounded by the time left, so a request never outlives its deadline by more than one read's work."""
        left = (deadline_ns - _clock()) / 1e9
        if left <= 0:
            raise TimeoutError("the deadline passed")
        self._timeout_s = left
        if self.conn is None:
            return
        self.conn.timeout = left
        if self.conn.sock is not None:
            self.conn.sock.settimeout(left)

    def get_json(self, path: str):
        """(status, the decoded JSON or None) of a GET, within the target's timeout."""
        self._within(_clock() + int(self.target.timeout_s * 1e9))
        response = self.request("GET", path)
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, None

    def send(self, item, max_tokens: int | None = None, client: int = 0, scheduled_ns: int | None = None,
             on_first=None) -> dict:
        """One request of the target's API: its record (see the module's docstring). `on_first()` is called
        when the first chunk carrying text arrives (LoadGen's FirstTokenComplete)."""
        record = {"client": client, "scheduled_ns": scheduled_ns, "sent_ns": _clock(), "first_ns": None,
                  "done_ns": None, "status": None, "failure": None, "error": None}
        deadline_ns = record["sent_ns"] + int(self.target.timeout_s * 1e9)
        try:
            self._within(deadline_ns)
            response = self.request("POST", self.target.path, payload(self.target, item, max_tokens))
            record["status"] = response.status
            if response.status != 200:
                text = response.read()[:200].decode(errors="replace")
                return _failed(record, "http", f"HTTP {response.status}: {text}")
            self._within(deadline_ns)
            record = (_embeddings(record, response, len(item)) if self.target.api == "embeddings"
                      else _stream(record, response, self.target.api, on_first, lambda: self._within(deadline_ns)))
            if record["failure"] or not response.isclosed():
                self.close()  # a body left unread (a malformed answer) cannot be followed on this connection
            return record
        except (socket.timeout, TimeoutError) as e:
            self.close()
            return _failed(record, "timeout", f"not answered in full within {self.target.timeout_s:g} s ({e})")
        except (ConnectionError, http.client.RemoteDisconnected, OSError) as e:
            self.close()
            return _failed(record, "refused", f"{type(e).__name__}: {e}")
        except http.client.HTTPException as e:
            self.close()
            return _failed(record, "malformed", f"{type(e).__name__}: {e}")


def _failed(record: dict, kind: str, error: str) -> dict:
    record.update(failure=kind, error=error[:300], done_ns=_clock())
    return record


def _embeddings(record: dict, response, count: int) -> dict:
    raw = response.read()
    record["done_ns"] = record["first_ns"] = _clock()
    try:
        body = json.loads(raw)
        rows = sorted(body["data"], key=lambda d: d.get("index", 0))
        vectors = [list(map(float, d["embedding"])) for d in rows]
    except (ValueError, KeyError, TypeError) as e:
        return _failed(record, "malformed", f"not an embeddings answer ({type(e).__name__}: {e}): {raw[:120]!r}")
    if len(vectors) != count or len({len(v) for v in vectors}) != 1:
        return _failed(record, "malformed", f"{len(vectors)} embeddings for {count} inputs")
    usage = body.get("usage") or {}
    record["usage_prompt_tokens"] = usage.get("prompt_tokens")
    record["embeddings"] = vectors  # taken out by the caller: kept for fidelity only
    return record


def _delta_text(chunk: dict, api: str) -> str | None:
    choices = chunk.get("choices")
    if not choices:
        return None
    choice = choices[0]
    if api == "chat":
        return (choice.get("delta") or {}).get("content")
    return choice.get("text")


def _stream(record: dict, response, api: str, on_first=None, within=lambda: None) -> dict:
    """Read the server-sent events: a chunk with text is a token's arrival (its time kept), `usage` where the
    server sends it, `data: [DONE]` the end. Anything else than JSON after `data:` is a malformed stream.
    `within()` raises TimeoutError once the request's deadline has passed (it is called before each line)."""
    kind = response.getheader("Content-Type", "")
    if "text/event-stream" not in kind:
        raw = response.read()
        return _failed(record, "malformed", f"asked for a stream, got {kind or 'no content type'}: {raw[:120]!r}")
    chunks: list[int] = []
    texts: list[str] = []
    done, finished = False, None
    usage = {}
    while True:
        within()
        line = response.readline()
        if not line:
            break
        now = _clock()
        line = line.strip()
        if not line.startswith(b"data:"):
            continue  # comments (`: ping`), event names, blank separators
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            response.read()  # the rest of the body (the chunked encoding's end): the connection is reused
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            return _failed(record, "malformed", f"a stream chunk is not JSON: {data[:120]!r}")
        if not isinstance(chunk, dict):
            return _failed(record, "malformed", f"a stream chunk is not an object: {data[:120]!r}")
        if "error" in chunk:
            return _failed(record, "malformed", f"the stream reported an error: {str(chunk['error'])[:200]}")
        usage = chunk.get("usage") or usage
        text = _delta_text(chunk, api)
        if text:
            chunks.append(now)
            texts.append(text)
            if on_first is not None and len(chunks) == 1:
                on_first()
        reasons = [c.get("finish_reason") for c in chunk.get("choices") or [] if c.get("finish_reason")]
        if reasons:
            finished = reasons[0]
    record["done_ns"] = _clock()
    if not (done or finished):
        return _failed(record, "malformed", f"the stream ended after {len(chunks)} chunks without [DONE]")
    # a stream that carried no text (the model ended at once) is an answer of 0 tokens, with no first token
    record.update(first_ns=chunks[0] if chunks else None, chunk_ns=chunks, text="".join(texts), finish_reason=finished,
                  usage_prompt_tokens=usage.get("prompt_tokens"),
                  usage_completion_tokens=usage.get("completion_tokens"))
    return record


__all__ = ["APIS", "GENERATION_APIS", "FAILURES", "Target", "Connection", "base_url", "payload"]
