"""The command line: one module per command group, each with `add_parsers(sub)` and `COMMANDS` (name ->
function of the parsed arguments). No command module imports another; shared argument helpers live in
cli/args.py, and the work itself in enginebench.api and below. Every command module loads to build the parser, so
what only its commands use (the API, rich, the tables) it imports inside them."""

from __future__ import annotations

import importlib
import os
import sys

from enginebench.cli.args import Parser, attach_negative_durations
from enginebench.errors import UsageError
from enginebench.measure import cpu_features

GROUPS = ["run", "sweep", "tune", "results", "compare", "recommend", "report", "ops", "system", "graph"]  # modules of this package, in the order --help lists them


def _modules():
    return [importlib.import_module(f"enginebench.cli.{name}") for name in GROUPS]


def build_parser() -> Parser:
    parser = Parser(prog="enginebench", description="Benchmark ML inference engines side by side on real models.")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for module in _modules():
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    program = argv is None  # the command itself, not a caller in this process (which must not be replaced)
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(attach_negative_durations(argv))
        if args.command is None:
            build_parser().print_help()
            return 2
        commands = {name: f for module in _modules() for name, f in module.COMMANDS.items()}
        cpu_features.apply_kernel_caps()  # a bad ENGINEBENCH_CPU_FEATURES stops here, before anything runs
        if program:
            cpu_features.reexec_masked()  # this process measures too (`machine`): as the smaller CPU
        return commands[args.command](args)
    except UsageError as e:
        print(f"enginebench: error: {e}", file=sys.stderr)
        return UsageError.exit_code
    except KeyboardInterrupt:
        print("enginebench: interrupted; results measured so far are in the database", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug of ours: one line, and the database keeps what was measured
        if os.environ.get("ENGINEBENCH_DEBUG"):
            raise
        print(f"enginebench: internal error: {type(e).__name__}: {e} (results measured so far are in the "
              "database; ENGINEBENCH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


__all__ = ["main", "build_parser"]
