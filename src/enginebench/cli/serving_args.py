"""`enginebench run`'s options for the serving scenarios (server, offline), driven by MLPerf LoadGen.

Their destinations are the names of config.OPTIONS (config.py checks them)."""

from __future__ import annotations


def add_serving_arguments(run_parser) -> None:
    group = run_parser.add_argument_group(
        "serving (--scenario server / offline; MLPerf LoadGen: pip install 'enginebench[loadgen]')")
    group.add_argument("--qps", help="server: Poisson arrival rate, queries/s (seeded by --seed)")
    group.add_argument("--slo-p99", metavar="MS", help="server: p99 latency target counted from arrival, queueing "
                       "included: 50 (ms), 50ms, 0.05s; the verdict is VALID or INVALID against it")
    group.add_argument("--slo-ttft", metavar="MS", help="server, decoders: p99 target of the time to first token, "
                       "from arrival (queueing and prefill included): 2000 (ms), 2s")
    group.add_argument("--slo-tpot", metavar="MS", help="server, decoders: p99 target of the time per output token "
                       "after the first: 100 (ms), 0.1s")
    group.add_argument("--find-max-qps", action="store_true", help="server: search the highest rate that stays "
                       "VALID under --slo-p99 (starting at --qps if given), reported with its bracket")
    group.add_argument("--search-within", metavar="PCT", help="server, --find-max-qps: stop when the bracket's "
                       "ends are within PCT%% of each other; wider is quicker, each halving costs about one more "
                       "trial [5%%]")
    group.add_argument("--max-batch", metavar="B", help="dynamic batcher: group up to B queued queries per call "
                       "(offline: queries per call; decoders: sequences a worker generates at once) [1: no batcher]")
    group.add_argument("--max-wait", metavar="MS", help="server's dynamic batcher: hold a query at most this long "
                       "for a batch to fill [0]")
