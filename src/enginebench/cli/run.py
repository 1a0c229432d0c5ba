"""`enginebench run`: measure engines on a model, or finish a stopped run with --resume RUN_ID (a thin layer
over enginebench.api)."""

from __future__ import annotations

from enginebench.cli.args import DEFAULT_DB
from enginebench.cli.serving_args import add_serving_arguments
from enginebench.config import OPTIONS, RunConfig
from enginebench.errors import UsageError
from enginebench.scenarios.registry import (add_scenario_arguments, default_scenarios, runnable_scenarios,
                                            scenario_options)
from enginebench.store.database import ResultStore

# the options given a default here (the others default to None: not given)
DEFAULTS = {"seed": "0", "timeout": "10m", "load_timeout": "30m", "retries": "0", "option": [], "quick": False,
            "find_max_qps": False}


def add_parsers(sub) -> None:
    run = sub.add_parser("run", help="measure engines on a model (--quick: the quick suite)")
    lst = dict(action="append", default=None)
    run.add_argument("--model", help="registry name (minilm) or a local model folder [minilm]")
    run.add_argument("--engine", **lst, help="engines, comma list or repeated [every installed engine]")
    run.add_argument("--precision", **lst,
                     help="precisions [the model's own where it has one (a GGUF file: native), else fp32]")
    run.add_argument("--workload", **lst, help="corpus, titles [both]; decoders: the tests to run, e.g. tg128 "
                     "[every pp and tg test that --prompt-len and --gen-len make]")
    run.add_argument("--scenario", **lst, help=f"{', '.join(runnable_scenarios())} "
                     f"[{', '.join(default_scenarios('encoder'))}; decoders: {', '.join(default_scenarios('decoder'))}]")
    run.add_argument("--batch-size", **lst, help="batch sizes [1,16,32,64; decoders and --quick: 1]")
    run.add_argument("--workers", **lst, help="parallel workers in the throughput scenario [number of CPUs]")
    run.add_argument("--threads", **lst, help="threads per session in the latency scenario [number of CPUs]")
    run.add_argument("--threads-per-worker", **lst, help="threads per worker in the throughput scenario [CPUs / workers]")
    run.add_argument("--seq-len", help="corpus tokens per input, truncated or padded [128]")
    run.add_argument("--prompt-len", **lst, help="decoders: prompt tokens prefilled, one pp test each [128,512]")
    run.add_argument("--gen-len", **lst, help="decoders: tokens generated, one tg test each [128]")
    run.add_argument("--llm-config", metavar="FILE", help="decoders: a JSON file of Llama config fields; "
                     "benchmarks a Llama of that shape with random weights (instead of --model)")
    run.add_argument("--padding", help="fixed: every input padded to --seq-len; dynamic: each batch cut to its "
                     "longest input, as serving stacks do and sentence-transformers always does "
                     "[fixed]")
    run.add_argument("--corpus", help="corpus file: .txt (a document per line), .jsonl (field text), .parquet (column text) [Python's docs]")
    run.add_argument("--seed", default=DEFAULTS["seed"],
                     help="seeds the workload sampling and the order of cells per repetition [0]")
    run.add_argument("--quick", action="store_true", help="the quick suite: batch 1, cells of 1s and 5 calls after "
                     "0.3s warm-up, 1 process per cell; options given still apply")
    run.add_argument("--duration", help="time to measure each cell, at least: 10s, 500ms, 2m, 1.5h [10s; --quick: 1s]")
    run.add_argument("--min-samples", help="calls to measure each cell, at least [10; --quick: 5]")
    run.add_argument("--warmup", help="warm-up time per cell, not counted [1s; --quick: 0.3s]")
    run.add_argument("--repeat", help="independent processes that measure each cell [3; --quick: 1]")
    run.add_argument("--timeout", default=DEFAULTS["timeout"],
                     help="time before a cell's measurement is abandoned as hung; a LoadGen run (a --find-max-qps "
                     "trial) gets it beyond its least length [10m]")
    run.add_argument("--load-timeout", default=DEFAULTS["load_timeout"],
                     help="time a model's load (conversion, compilation) may take [30m]")
    run.add_argument("--max-memory", metavar="SIZE", help="end a cell's process (with its workers) holding more "
                     "resident memory than this, recorded as failed: 500MB, 4GB [no limit]")
    run.add_argument("--retries", default=DEFAULTS["retries"], help="further attempts for a failed cell (crash, "
                     "timeout, memory), each in a fresh process and recorded [0]")
    run.add_argument("--option", "-o", action="append", default=DEFAULTS["option"], metavar="ENGINE.KEY=VALUE",
                     help="engine option, e.g. onnxruntime.graph_optimization=basic (see `enginebench engines`)")
    run.add_argument("--cpus", help="pin the benchmark to these CPUs, taskset syntax: 0-7 or 0,2,4")
    run.add_argument("--ray", metavar="ADDRESS", help="run the jobs on a Ray cluster, each holding a whole node: "
                     "HOST:PORT of its head, ray://HOST:PORT, or local (a Ray started here) [this machine]")
    run.add_argument("--client-nodes", metavar="N", help="with --ray, against --endpoint: share each concurrency "
                     "cell's clients out over N nodes of the cluster, started together, when one client machine "
                     "cannot drive the load; the result lists the nodes [1]")
    run.add_argument("--db", default=DEFAULT_DB, help=f"SQLite database for results [{DEFAULT_DB}]")
    run.add_argument("--resume", metavar="RUN_ID", help="finish a stopped run (Ctrl-C, kill -9, a reboot) with its "
                     "stored options: only the cells and repetitions not stored yet, into the same run")
    run.add_argument("--retry-failed", action="store_true", help="with --resume: measure again the repetitions "
                     "stored as failed")
    run.add_argument("--json", action="store_true", help="print the run as one JSON object on stdout")
    run.add_argument("--until", metavar="NODE", help="run the model cut at this ONNX node's output (see `enginebench nodes`); "
                     "only engines that load ONNX run it, compared with onnxruntime fp32 on the same cut")
    add_serving_arguments(run)
    add_scenario_arguments(run)
    server = run.add_argument_group("a running server (--endpoint URL --api API)")
    server.add_argument("--endpoint", metavar="URL", help="benchmark the OpenAI-compatible server at this URL "
                        "(http://host:port) instead of engines; --model gives the tokenizer and the fidelity reference")
    server.add_argument("--api", help="with --endpoint: embeddings (/v1/embeddings), completions "
                        "(/v1/completions) or chat (/v1/chat/completions), streamed")
    server.add_argument("--served-model", metavar="NAME", help="with --endpoint: the model name sent in requests "
                        "[the one model the server lists]")
    server.add_argument("--api-key-env", metavar="NAME", help="with --endpoint: the environment variable that holds "
                        "the server's key (sent as a bearer token; never stored, printed or recorded)")


def cmd_run(args) -> int:
    from rich.console import Console

    from enginebench.api import new_run_id, pin_cpus
    from enginebench.planning import plan_from_config

    if args.resume:
        return _resume(args)
    if args.retry_failed:
        raise UsageError("--retry-failed is for --resume RUN_ID: it measures again a stopped run's failed repetitions")
    pin_cpus(args.cpus)
    ResultStore(args.db).close()  # fail on an unwritable database before measuring anything
    config = RunConfig.from_cli(args)
    plan = plan_from_config(config)
    err = Console(stderr=True, soft_wrap=True)
    if config.quick:
        engines = sorted({c.engine for c in plan.cells})
        err.print(f"[dim]quick suite: {plan.model.name} on {', '.join(engines)}; {len(plan.cells)} cells of "
                  f"{plan.rule.duration_s:g} s (drop --quick for the full defaults; see enginebench run --help)[/dim]")
    return _measure(args, plan, _launcher(plan, args.ray, client_nodes=args.client_nodes), err,
                    run_id=new_run_id(), config=config)


def _resume(args) -> int:
    """`run --resume RUN_ID`: the stored run's options, only what is missing, into the same run."""
    from rich.console import Console

    from enginebench.api import resumption

    names = [o.name for o in OPTIONS] + list(scenario_options())
    given = [f"--{name.replace('_', '-')}" for name in names
             if getattr(args, name, None) not in (None, DEFAULTS.get(name))]
    if given:
        raise UsageError(f"--resume measures with run {args.resume}'s stored options: drop {', '.join(given)}")
    resuming = resumption(args.resume, db=args.db, retry_failed=args.retry_failed, pin=True)
    err = Console(stderr=True, soft_wrap=True)
    run = resuming.run
    if not resuming.left:
        failed = (f"; {resuming.failed} repetitions failed (--retry-failed measures them again)"
                  if resuming.failed else "")
        err.print(f"enginebench: run {run.run_id} is already complete: all its {len(resuming.stored)} results are "
                  f"stored in {args.db}{failed}; `enginebench show {run.run_id} --db {args.db}` shows it",
                  highlight=False, markup=False, soft_wrap=True)
        if args.json:
            from enginebench.formats.json import to_json

            print(to_json(run))
        return 0
    err.print(f"[dim]resuming run {run.run_id}: {resuming.left} measurements left ({len(resuming.stored)} results "
              "stored)[/dim]")
    return _measure(args, resuming.plan, _launcher(resuming.plan, args.ray, resuming, args.client_nodes), err,
                    run_id=run.run_id, config=resuming.config, resuming=resuming)


def _measure(args, plan, launcher, err, *, run_id: str, **execute_args) -> int:
    """Measure with a progress bar, then print the run; Ctrl-C prints the command that resumes it (exit 130)."""
    from rich.console import Console

    from enginebench.api import execute
    from enginebench.cli.progress import cell_progress
    from enginebench.formats.console import render
    from enginebench.formats.json import to_json
    from enginebench.sweep.estimate import expected

    with ResultStore(args.db) as store:
        line, expected_s = expected(plan, launcher, store)
    err.print(line, style="dim", highlight=False, soft_wrap=True)
    bar = cell_progress(err, expected_s=expected_s)
    launcher.on_load = bar.on_load
    try:
        with bar.progress:
            bar.on_total(launcher.deliveries())
            run = execute(plan, db=args.db, on_start=bar.on_start, on_result=bar.on_result, launcher=launcher,
                          run_id=run_id, on_note=lambda text: err.print(text, style="dim", highlight=False,
                                                                        soft_wrap=True), **execute_args)
    except KeyboardInterrupt:
        return _interrupted(run_id, args, err)
    if args.json:
        print(to_json(run))
    else:
        render(run, Console())
        err.print(f"[dim]stored in {args.db} as run {run.run_id}: `enginebench show {run.run_id} --format json` "
                  "to export[/dim]")
    return 0 if any(r.status == "ok" for r in run.results) else 1


def _interrupted(run_id: str, args, err) -> int:
    """Say what is stored and the exact command that finishes the run (exit 130)."""
    import shlex

    with ResultStore(args.db) as store:
        stored = {run: n for run, _, n in store.run_ids()}
    if run_id not in stored:  # stopped before the run was stored: nothing to resume
        raise KeyboardInterrupt
    command = (["enginebench", "run", "--resume", run_id, "--db", args.db] + (["--ray", args.ray] if args.ray else [])
               + (["--client-nodes", str(args.client_nodes)] if args.client_nodes else []))
    n = stored[run_id]
    err.print(f"enginebench: interrupted; {n} result{' is' if n == 1 else 's are'} stored in {args.db} as run "
              f"{run_id}. Resume with: {shlex.join(command)}", highlight=False, markup=False, soft_wrap=True)
    return 130


def _launcher(plan, ray: str | None, resuming=None, client_nodes=None):
    """The launcher of a new run, or of a resumed one (which measures only what is missing)."""
    nodes = 1
    if ray or client_nodes is not None:
        from enginebench.execution.ray import check_client_nodes, connect

        nodes = check_client_nodes([plan], ray, client_nodes)
        connect(ray, nodes)  # a missing Ray, a wrong address or too few nodes fails here, before measuring
    if resuming:
        return resuming.launcher(ray, nodes)
    if not ray:
        from enginebench.execution.local import LocalLauncher

        return LocalLauncher(plan)
    from enginebench.execution.ray import RayLauncher

    return RayLauncher(plan, ray, client_nodes=nodes)


COMMANDS = {"run": cmd_run}
