"""A running OpenAI-compatible server as the thing measured: `enginebench run --endpoint URL --api API`.

Not an engine loaded in-process but a target the scenarios send requests to (Engine.remote): its "load" builds
the client and the local tokenizer of --model, which counts tokens and turns the workload's token ids into the
texts the server receives (the ids decoded; the server tokenizes them itself). The scenarios drive it with
request clients (scenarios/requests.py); its options (URL, API, served model, the *name* of the environment
variable holding the key, the SLOs) are recorded with every result like any engine's. The key itself never is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from enginebench.endpoint.client import APIS, Connection, Target
from enginebench.engines.base import Engine, EngineOptions
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch
from enginebench.workloads.tokenize import load_tokenizer

SERVED = "served"  # the precision of an endpoint: whatever the server runs


@dataclass(frozen=True)
class EndpointOptions(EngineOptions):
    url: str = ""
    api: str = field(default="embeddings", metadata={"choices": tuple(APIS)})
    served_model: str = ""
    api_key_env: str = ""  # the environment variable that holds the key ("" for none)
    request_timeout: float = field(default=60.0, metadata={"min": 0.001})  # s, a deadline from sending to the last byte
    slo_p99_ms: float = 0.0  # goodput's targets per request (0: none): end to end (embeddings) ...
    slo_ttft_ms: float = 0.0  # ... time to first token and time per output token (generation)
    slo_tpot_ms: float = 0.0


class EndpointSession:
    """The client side of a server: the target, the local tokenizer, and the inputs as the API takes them."""

    executed_precision = SERVED

    def __init__(self, model: ModelSpec, options: EndpointOptions):
        t0 = time.perf_counter()
        self.target = Target(options.url, options.api, options.served_model, options.api_key_env or None,
                             options.request_timeout)
        self.tokenizer = load_tokenizer(model.path)
        self.embedding_dim = model.hidden_size  # what the client's ceiling is measured with (scenarios/requests.py)
        self.tokenizer.no_padding()  # a tokenizer.json may pad every text to a fixed length (MiniLM's: 128)
        self.tokenizer.no_truncation()
        slo = {k: getattr(options, k) for k in ("slo_p99_ms", "slo_ttft_ms", "slo_tpot_ms") if getattr(options, k)}
        self.details = {"endpoint": {"url": self.target.base, "api": options.api, "path": self.target.path,
                                     "served_model": options.served_model, "slo": slo,
                                     "tokenizer": f"{model.name} (local tokenizer.json)"}}
        self.load_s = time.perf_counter() - t0

    # -- inputs as the API takes them --------------------------------------------------------------------
    def _decode(self, ids: np.ndarray) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def count_tokens(self, text: str, special: bool = False) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=special).ids)

    def texts(self, pool: TokenBatch, batch_size: int) -> tuple[list[list[str]], list[int]]:
        """Requests of `batch_size` texts (the pool's ids decoded, padding dropped), cycling through the pool;
        with each request's input tokens counted by the local tokenizer (special tokens included, as a BERT
        server counts them)."""
        texts = [self._decode(ids[mask > 0]) for ids, mask in zip(pool.input_ids, pool.attention_mask)]
        n = len(texts)
        requests = [[texts[(k * batch_size + i) % n] for i in range(batch_size)]
                    for k in range(max(1, n // batch_size))]
        return requests, [sum(self.count_tokens(t, special=True) for t in r) for r in requests]

    def prompts(self, prompts: np.ndarray) -> tuple[list[str], list[int]]:
        """The prompts' text (their ids decoded) and each one's tokens as the local tokenizer counts them."""
        texts = [self._decode(row) for row in prompts]
        return texts, [self.count_tokens(t) for t in texts]

    # -- fidelity -----------------------------------------------------------------------------------------
    def prepare(self, batch: TokenBatch) -> list[str]:
        return [self._decode(ids[mask > 0]) for ids, mask in zip(batch.input_ids, batch.attention_mask)]

    def run(self, texts: list[str]) -> np.ndarray:
        """Embeddings of `texts` from the server (for fidelity: not timed). Raises on a failed request."""
        conn = Connection(self.target)
        try:
            record = conn.send(texts)
        finally:
            conn.close()
        if record["failure"]:
            raise RuntimeError(f"the fidelity request failed ({record['failure']}): {record['error']}")
        return np.asarray(record["embeddings"], dtype=np.float32)

    def stream(self, prompt: np.ndarray, new_tokens: int):
        """Greedy generation (temperature 0) of each prompt row by the server; yields each step's token ids
        [batch] as the local tokenizer reads the server's text, -1 past where the server stopped. Every row is
        generated before the first yield: this serves fidelity, not timing."""
        conn = Connection(self.target)
        rows = []
        try:
            for ids in prompt:
                record = conn.send(self._decode(ids), new_tokens)
                if record["failure"]:
                    raise RuntimeError(f"the fidelity request failed ({record['failure']}): {record['error']}")
                got = self.tokenizer.encode(record.get("text", ""), add_special_tokens=False).ids[:new_tokens]
                rows.append(got + [-1] * (new_tokens - len(got)))
        finally:
            conn.close()
        table = np.asarray(rows, dtype=np.int64)
        for step in range(new_tokens):
            yield table[:, step]

    def next_tokens(self, contexts: list[np.ndarray]) -> list[int]:
        """The server's greedy next token after each context (its text, asked for 1 token at temperature 0),
        read back with the local tokenizer (-1: none)."""
        conn = Connection(self.target)
        out = []
        try:
            for ids in contexts:
                record = conn.send(self._decode(ids), 1)
                if record["failure"]:
                    raise RuntimeError(f"the fidelity request failed ({record['failure']}): {record['error']}")
                got = self.tokenizer.encode(record.get("text", ""), add_special_tokens=False).ids
                out.append(got[0] if got else -1)
        finally:
            conn.close()
        return out

    def close(self) -> None:
        pass


class EndpointEngine(Engine):
    name = "endpoint"
    library = "enginebench"
    requires = ()
    extra = "endpoint"
    precisions = (SERVED,)
    formats = ("OpenAI-compatible HTTP",)
    Options = EndpointOptions
    model_kinds = ("encoder", "decoder")
    remote = True
    backend = "the server's"

    @classmethod
    def install_hint(cls) -> str:
        return "nothing to install: give --endpoint URL of a running OpenAI-compatible server"

    def load(self, model: ModelSpec, precision: str, options: EndpointOptions) -> EndpointSession:
        return EndpointSession(model, options)


__all__ = ["EndpointEngine", "EndpointOptions", "EndpointSession", "SERVED"]
