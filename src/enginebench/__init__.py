"""enginebench: benchmark ML inference engines side by side on real models.

    import enginebench as eb
    run = eb.run(model="minilm", engines=["torch", "onnxruntime"], workloads=["titles"], duration="2s")
    run.to_pandas()                 # one row per result
    eb.compare(eb.load(old_id), run)
    eb.recommend([run], objective="throughput", min_fidelity=0.99)

The names below load on first use, so `import enginebench` stays cheap.
"""

__version__ = "0.1.0"
__all__ = ["run", "resume", "load", "compare", "recommend", "command_line", "Run", "Result", "UsageError"]


def __getattr__(name):
    if name in ("run", "resume", "load", "compare", "recommend", "command_line"):
        from enginebench import api

        return getattr(api, name)
    if name in ("Run", "Result"):
        from enginebench.store import model

        return getattr(model, name)
    if name == "UsageError":
        from enginebench.errors import UsageError

        return UsageError
    raise AttributeError(f"module 'enginebench' has no attribute {name!r}")
