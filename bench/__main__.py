"""``python -m bench``: run the scale benchmark (see bench/run.py).

``python -m bench many-sources [--write ...]``: the many-sources-per-run benchmark (see
bench/multi_source_bench.py).
"""

import sys

if sys.argv[1:2] == ["many-sources"]:
    from bench.multi_source_bench import main as many_sources

    raise SystemExit(many_sources(sys.argv[2:]))

from bench.run import main  # noqa: E402

main()
