"""``python -m bench``: run the scale benchmark (see bench/run.py).

``python -m bench many-sources [--write ...]``: the many-sources-per-run benchmark (see
bench/multi_source_bench.py).

``python -m bench delta-backlog [--commits 10000] [--timeout 10]``: a Delta backlog read across
checks that run out of time (see bench/delta_backlog_bench.py).

``python -m bench downstream [--reps N]``: the changes manifest and the processed-once claim
(see bench/downstream_bench.py).
"""

import sys

if sys.argv[1:2] == ["many-sources"]:
    from bench.multi_source_bench import main as many_sources

    raise SystemExit(many_sources(sys.argv[2:]))

if sys.argv[1:2] == ["delta-backlog"]:
    from bench.delta_backlog_bench import main as delta_backlog

    raise SystemExit(delta_backlog(sys.argv[2:]))

if sys.argv[1:2] == ["downstream"]:
    from bench.downstream_bench import main as downstream

    raise SystemExit(downstream(sys.argv[2:]))

from bench.run import main  # noqa: E402

main()
