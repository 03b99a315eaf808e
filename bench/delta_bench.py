"""Benchmark: an unchanged check of a large Delta table, ``delta`` vs ``files_metadata``.

    python -m bench.delta_bench [--commits 1000] [--files-per-commit 100] [--reps 5]

The table (1,000 commits of 100 data files each: 100,000 data files, checkpoints every 100
commits) is written once by the ``deltalake`` library into a local folder (cached under
``$TMPDIR/flowproject-bench-delta-<commits>x<files>``), then seeded straight into the
benchmark's moto server (``bench/moto_server.py``; 100,000 PUTs over HTTP would take ~25
minutes). Every request of a check goes through a loopback proxy that counts them
(``bench/latency_proxy.py``, no added delay), so the figures are requests actually sent.

For each source the check is run once to warm up (for ``delta``: the first check, which has no
cursor, reads ``_last_checkpoint``, the checkpoint and the commits after it), then ``--reps``
unchanged checks are measured: requests per check and median wall time.
"""

import argparse
import os
import statistics
import tempfile
import time

from bench.run import SeededMoto, set_s3_env

BUCKET = "bench-lake"
PREFIX = "tables/events/"


def write_table(path, commits, files_per_commit):
    """A Delta table of ``commits`` appends, each one file in each of ``files_per_commit``
    partitions. Reused when already written."""
    done = os.path.join(path, ".complete")
    if os.path.exists(done):
        return path
    import pyarrow as pa
    from deltalake import write_deltalake

    started = time.monotonic()
    rows = pa.table({"p": list(range(files_per_commit)), "x": list(range(files_per_commit))})
    for i in range(commits):
        write_deltalake(path, rows, mode="append", partition_by=["p"])
        if (i + 1) % 100 == 0:
            print("wrote %d commits in %.0fs" % (i + 1, time.monotonic() - started), flush=True)
    open(done, "w").close()
    return path


def check(source, data, cursor=None):
    with source.open_session(data) as session:
        observation = source.check(data, session, cursor)
    if isinstance(observation.detail, str):
        os.unlink(observation.detail)
    return observation


def measure(proxy, source, data, reps):
    """``(requests per unchanged check, median seconds, value, requests of the first check)``
    after a warm-up check."""
    before = proxy.requests
    first = check(source, data)
    first_requests = proxy.requests - before
    cursor = first.cursor
    counts, seconds = [], []
    for _ in range(reps):
        before = proxy.requests
        started = time.perf_counter()
        observation = check(source, data, cursor)
        seconds.append(time.perf_counter() - started)
        counts.append(proxy.requests - before)
        assert observation.value == first.value, "the table changed during the benchmark"
        cursor = observation.cursor or cursor
    return max(counts), statistics.median(seconds), first.value, first_requests


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--files-per-commit", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)

    from bench.latency_proxy import LatencyProxy
    from flowproject.sources import delta, s3

    folder = os.path.join(
        tempfile.gettempdir(),
        "flowproject-bench-delta-%dx%d" % (args.commits, args.files_per_commit),
    )
    write_table(folder, args.commits, args.files_per_commit)
    data_files = sum(
        1 for _, _, files in os.walk(folder) for name in files if name.endswith(".parquet")
    )
    spec = [{"bucket": BUCKET, "prefix": PREFIX, "directory": folder}]
    with SeededMoto(spec) as moto, LatencyProxy(moto.endpoint_url, delay=0) as proxy:
        set_s3_env(proxy.url)
        uri = "s3://%s/%s" % (BUCKET, PREFIX.rstrip("/"))
        delta_data = delta.normalize({"type": "delta", "uri": uri})
        s3_data = s3.normalize(
            {"type": "s3", "bucket": "s3://" + BUCKET, "key": PREFIX}
            | {"check_mode": "files_metadata"}
        )
        d_requests, d_seconds, d_value, d_first = measure(proxy, delta, delta_data, args.reps)
        f_requests, f_seconds, _, _ = measure(proxy, s3, s3_data, args.reps)
    print()
    print(
        "Delta table: %d commits, %d parquet files (data and checkpoints); latest data version %s"
        % (args.commits, data_files, d_value.split("@")[0])
    )
    print("| check of the unchanged table | S3 requests | wall time (median) |")
    print("|---|---:|---:|")
    print("| `delta` (from the cursor) | %d | %.3f s |" % (d_requests, d_seconds))
    print("| `delta`, first check (no cursor) | %d | |" % d_first)
    print("| `files_metadata` on the table's prefix | %d | %.3f s |" % (f_requests, f_seconds))
    print(
        "| ratio | %.0fx fewer | %.0fx faster |"
        % (f_requests / max(1, d_requests), f_seconds / max(d_seconds, 1e-9))
    )
    return 0 if d_requests <= 2 and f_requests >= 20 * d_requests else 1


if __name__ == "__main__":
    raise SystemExit(main())
