"""Start llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`, its `server` extra) with
the one setting its command line lacks: llama.cpp's extra weight buffer types off on a build with AMX_INT8,
whose AMX matmul segfaults on quantized weights (engines/llamacpp.py AMX_CRASH; the in-process engine decides
the same way). Everything else, the HTTP app, its scheduling and its options, is llama-cpp-python's:

    python -m enginebench.endpoint.llamacpp_server --model F.gguf --host 127.0.0.1 --port 8000 [its options]
"""

from __future__ import annotations

import sys

import llama_cpp.llama_cpp as lib  # the server extra's own dependency: this module is only run, never imported

from enginebench.engines.llamacpp import extra_buffers_decision


def main(argv: list[str] | None = None) -> None:
    lib.llama_backend_init()
    use, why = extra_buffers_decision("auto", lib.llama_print_system_info().decode())
    if not use:
        default = lib.llama_model_default_params

        def params():
            p = default()
            p.use_extra_bufts = False
            return p

        lib.llama_model_default_params = params  # read by llama_cpp.Llama for every model it loads
        print(f"enginebench: {why}", file=sys.stderr)
    from llama_cpp.server.__main__ import main as serve  # its app (fastapi, uvicorn) only once the patch holds

    sys.argv = ["llama_cpp.server", *(sys.argv[1:] if argv is None else argv)]
    serve()


if __name__ == "__main__":
    main()
