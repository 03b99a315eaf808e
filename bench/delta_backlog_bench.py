"""Benchmark: a Delta backlog of 10,000 new commits, read across checks of ``source_timeout``.

    python -m bench delta-backlog [--commits 10000] [--timeout 10] [--sequential-sample 10]

A log of ``--commits`` commits after version 0 (no checkpoint: a writer that never writes one,
the worst case) is written to a local folder and seeded into the benchmark's moto server
(``bench/moto_server.py``: seeded in-process, fast listing; GetObject is moto's own code). The
sensor's cursor is at version 0. The check loop of a flow is simulated: each check gets the
deadline a flow gives it (``source_check.check_deadline(--timeout)``: the timeout less the
margin kept to commit the progress); a ``SourceIncomplete`` is fed back as the next check's
cursor, until a check returns the value. The target: the backlog is announced within 3 checks
at ``--timeout 10``, and the value equals one uninterrupted read.

For comparison, one check reading one commit at a time (``READ_CONCURRENCY = 1``, as before
this change) runs for ``--sequential-sample`` seconds: commits read per second, and the checks
a backlog would take at that rate.
"""

import argparse
import json
import os
import platform
import tempfile
import time

from bench.run import SeededMoto, set_s3_env

BUCKET = "bench-backlog"
PREFIX = "tables/events/"
TABLE_ID = "5485e822-4b5a-4c38-9c2b-1f0d1d2a0b7e"


def changes_data(version):
    """Two appends, then a compaction (``dataChange: false``), and again."""
    return version == 0 or version % 3 != 0


def commit_text(version):
    actions = [
        {
            "commitInfo": {
                "timestamp": 1_700_000_000_000 + version,
                "operation": "WRITE" if changes_data(version) else "OPTIMIZE",
            }
        }
    ]
    if version == 0:
        actions.append({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})
        actions.append({"metaData": {"id": TABLE_ID, "format": {"provider": "parquet"}}})
    actions.append(
        {
            "add": {
                "path": "part-%05d.parquet" % version,
                "size": 100,
                "modificationTime": 0,
                "dataChange": changes_data(version),
                "stats": json.dumps({"numRecords": 1}),
            }
        }
    )
    return "\n".join(json.dumps(a) for a in actions) + "\n"


def write_log(folder, commits):
    from flowproject.sources import delta

    log = os.path.join(folder, "_delta_log")
    os.makedirs(log, exist_ok=True)
    for version in range(commits + 1):
        with open(os.path.join(log, delta.commit_name(version)), "w") as f:
            f.write(commit_text(version))


def cursor_at_zero(data):
    """The cursor a check of the table at version 0 left (its ETag from a HEAD)."""
    from flowproject.sources import delta, s3

    client = s3.make_client(None)
    head = client.head_object(Bucket=BUCKET, Key=PREFIX + "_delta_log/" + delta.commit_name(0))
    return {
        "uri": data["uri"],
        "version": 0,
        "etag": head["ETag"].strip('"'),
        "table_id": TABLE_ID,
        "data_version": 0,
        "data_timestamp": 1_700_000_000_000,
        "commits": [],
    }


def one_check(data, cursor, timeout):
    """``(observation or SourceIncomplete, seconds, GETs)`` of one check given ``timeout``."""
    from flowproject.exceptions import SourceIncomplete
    from flowproject.source_check import check_deadline
    from flowproject.sources import delta

    started = time.monotonic()
    with delta.open_session(data) as session:
        session.deadline = None if timeout is None else check_deadline(timeout, started)
        try:
            outcome = delta.check(data, session, cursor)
        except SourceIncomplete as e:
            outcome = e
    gets = sum(1 for r in session.requests if r["request"] == "GetObject")
    return outcome, time.monotonic() - started, gets


def cpu_seconds(pid=None):
    """CPU (user + system) seconds of process ``pid`` (this one by default), from /proc."""
    with open("/proc/%s/stat" % (pid or "self")) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=10000)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--sequential-sample", type=float, default=10.0)
    parser.add_argument("--max-checks", type=int, default=3)
    args = parser.parse_args(argv)

    from flowproject.exceptions import SourceIncomplete
    from flowproject.sources import delta

    load = os.getloadavg()[0]
    folder = tempfile.mkdtemp(prefix="flowproject-bench-backlog-")
    write_log(folder, args.commits)
    spec = [{"bucket": BUCKET, "prefix": PREFIX, "directory": folder}]
    began = time.monotonic()
    with SeededMoto(spec) as moto:
        set_s3_env(moto.endpoint_url)
        data = delta.normalize({"type": "delta", "uri": "s3://%s/%s" % (BUCKET, PREFIX)})
        start = cursor_at_zero(data)

        rows, cursor, checks = [], start, 0
        cpu = (cpu_seconds(), cpu_seconds(moto.process.pid), time.monotonic())
        while True:
            checks += 1
            outcome, seconds, gets = one_check(data, cursor, args.timeout)
            done = not isinstance(outcome, SourceIncomplete)
            reached = outcome.cursor["version"]
            rows.append((checks, cursor["version"], reached, gets, seconds, done))
            cursor = outcome.cursor
            if done or checks >= 20:
                break
        value = outcome.value if done else None
        cpu = (
            cpu_seconds() - cpu[0],
            cpu_seconds(moto.process.pid) - cpu[1],
            time.monotonic() - cpu[2],
        )

        uninterrupted, u_seconds, u_gets = one_check(data, start, None)

        concurrency = delta.READ_CONCURRENCY
        delta.READ_CONCURRENCY = 1
        try:
            sample, s_seconds, s_gets = one_check(data, start, args.sequential_sample)
        finally:
            delta.READ_CONCURRENCY = concurrency
    per_second = s_gets / s_seconds

    print()
    print(
        "Command: `python -m bench delta-backlog --commits %d --timeout %g`. Machine: %s, %d "
        "cores (nproc), Python %s, %s UTC. Total: %.0f s."
        % (
            args.commits,
            args.timeout,
            platform.platform(),
            os.cpu_count(),
            platform.python_version(),
            time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            time.monotonic() - began,
        )
    )
    print(
        "%d new commits after the cursor (version 0), no checkpoint, loopback moto; "
        "READ_CONCURRENCY %d, DEADLINE_MARGIN %.1f s. Load average (1 min) before: %.2f."
        % (args.commits, concurrency, delta.DEADLINE_MARGIN, load)
    )
    print()
    print("| check | cursor before | cursor after | GETs | wall time | outcome |")
    print("|---:|---:|---:|---:|---:|---|")
    for number, before, after, gets, seconds, finished in rows:
        print(
            "| %d | %d | %d | %d | %.2f s | %s |"
            % (
                number,
                before,
                after,
                gets,
                seconds,
                "value %s" % value.split("@")[0] if finished else "SourceIncomplete",
            )
        )
    print()
    same = done and value == uninterrupted.value and outcome.summary == uninterrupted.summary
    print("| Measure | Result | Target | Met |")
    print("|---|---|---|---|")
    print(
        "| checks until the backlog is announced (source_timeout %g s) | %d | <= %d | %s |"
        % (
            args.timeout,
            checks,
            args.max_checks,
            "yes" if done and checks <= args.max_checks else "**no**",
        )
    )
    print(
        "| value after the interrupted checks = one uninterrupted read (%.1f s, %d GETs) | %s | "
        "same | %s |"
        % (u_seconds, u_gets, "same" if same else "differs", "yes" if same else "**no**")
    )
    print(
        "| one GET at a time (the code before): commits read per second | %.0f (%d in %.1f s): "
        "%d checks of %g s for the backlog |  |  |"
        % (
            per_second,
            s_gets,
            s_seconds,
            -(-args.commits // max(1, int(per_second * args.timeout))),
            args.timeout,
        )
    )
    print(
        "| concurrent reading: commits read per second (all checks) | %.0f |  |  |"
        % (sum(r[3] for r in rows) / sum(r[4] for r in rows))
    )
    print(
        "| CPU during the checks (%.1f s of wall time): the checking process / moto | "
        "%.1f s / %.1f s |  |  |" % (cpu[2], cpu[0], cpu[1])
    )
    return 0 if done and checks <= args.max_checks and same else 1


if __name__ == "__main__":
    raise SystemExit(main())
