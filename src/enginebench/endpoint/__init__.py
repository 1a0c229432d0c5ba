"""A running OpenAI-compatible server as what is measured: the HTTP client (client.py), the probe that refuses
bad input before measuring (probe.py), and the launcher of llama-cpp-python's server (llamacpp_server.py)."""
