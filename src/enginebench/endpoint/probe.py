"""A short probe of a server before anything is measured: bad input is a one-line UsageError (exit 2).

1. GET /v1/models: nothing listening is an unreachable URL; an answer without OpenAI's `{"data": [{"id": ...}]}`
   is a server that is not OpenAI-compatible; a --served-model it does not list is a model it does not serve.
2. One small request of the API asked for: 404/405 (or 501) is an API it does not offer; any other failure is
   said with the server's own words.
"""

from __future__ import annotations

import json

from enginebench.endpoint.client import Connection, Target
from enginebench.errors import UsageError

PROBE_TIMEOUT_S = 30.0  # the probe's request may be the server's first (a model loading lazily)
_NOT_OFFERED = (404, 405, 501)


def probe(target: Target) -> dict:
    """What the server said of itself: {"models": [ids], "server": its Server header}. Raises UsageError."""
    short = Target(target.url, target.api, target.served_model, target.api_key_env,
                   min(target.timeout_s, PROBE_TIMEOUT_S))
    conn = Connection(short)
    where = short.base
    try:
        try:
            response = conn.request("GET", "/v1/models")
            raw = response.read()
        except (OSError, Exception) as e:  # refused, unknown host, timeout: nothing answers there
            raise UsageError(f"--endpoint {target.url}: nothing answers there ({type(e).__name__}: {e}); start the "
                             "server or fix the URL") from None
        if response.status in (401, 403):
            raise UsageError(f"--endpoint {where}: the server refused the request (HTTP {response.status}): give "
                             "its key with --api-key-env NAME (the environment variable that holds it)")
        models = _model_ids(raw) if response.status == 200 else None
        if models is None:
            raise UsageError(f"--endpoint {where} is not an OpenAI-compatible server: GET /v1/models answered "
                             f"HTTP {response.status} {raw[:80]!r}, not a list of models")
        if target.served_model not in models:
            raise UsageError(f"--served-model {target.served_model!r} is not served at {where}: it serves "
                             f"{', '.join(models) or 'no model'}")
        record = conn.send(["probe"] if target.api == "embeddings" else "Hello", max_tokens=2)
        if record["failure"] == "http" and record["status"] in _NOT_OFFERED:
            raise UsageError(f"--api {target.api}: {where} does not offer {target.path} (HTTP {record['status']})")
        if record["failure"]:
            raise UsageError(f"--api {target.api}: the probe request to {where}{target.path} failed "
                             f"({record['failure']}): {record['error']}")
        return {"models": models, "server": response.getheader("Server")}
    finally:
        conn.close()


def _model_ids(raw: bytes) -> list[str] | None:
    try:
        data = json.loads(raw)["data"]
        return [str(m["id"]) for m in data]
    except (ValueError, KeyError, TypeError):
        return None


__all__ = ["probe", "PROBE_TIMEOUT_S"]
