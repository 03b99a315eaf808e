"""The downstream benchmark (issue 21): the changes manifest and the processed-once claim.

    python -m bench downstream [--reps N] [--no-write]

1. Writing: a sensor whose baseline has 1 object sees 100,000 added (the bench moto server
   seeds them between two checks, bench/moto_server.py). The announcing run is timed; the
   time it spent writing the manifest is what its own log line says (``Changes manifest: ...
   (N s)``). Target: the manifest adds under 10% to the announcing run.
2. Reading: a fresh process streams a 1,000- and a 100,000-record manifest
   (``Changes``); its peak RSS is printed. Target: flat (100k within 5 MB of 1k).
3. The claim: deciding a delivery among 1,000 processed changes (one marker read).

Prints one markdown table and writes it to bench/results.md (section "Downstream").
"""

import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.run import SeededMoto, write_section  # noqa: E402
from flowproject.testing import WebhookReceiver, sensor_env  # noqa: E402

HEADING = "# Downstream"
ADDED = 100_000
CONFIG = textwrap.dedent(
    """\
    project_name = "bench"
    [data]
    type = "s3"
    bucket = "s3://%s"
    key = "events/"
    check_mode = "files_metadata"
    [sensor]
    cron_schedule = "*/5 * * * *"
    event_name = "data_updated"
    payload_key = "data_version"
    """
)
_MANIFEST_LINE = re.compile(r"Changes manifest: (\d+) objects listed, (\S+) \(([\d.]+) s\)")


def timed_run(argv, cwd, env):
    """``(seconds, output)`` of one flow run; raises when it fails."""
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("%s failed:\n%s" % (argv[1], proc.stderr[-3000:]))
    return time.perf_counter() - started, proc.stdout + proc.stderr


def announcing_run(reps):
    """``[(run seconds, manifest seconds, objects, manifest bytes)]``, one per repetition."""
    results = []
    for rep in range(reps):
        work = tempfile.mkdtemp(prefix="flowproject-bench-downstream-")
        go = os.path.join(work, "seed")
        bucket = "bench-downstream-%d" % rep
        spec = [
            {"bucket": bucket, "prefix": "events/day=1/", "count": 1},
            {
                "bucket": bucket,
                "prefix": "events/day=2/",
                "count": ADDED,
                "partitions": 16,
                "when": go,
            },
        ]
        try:
            with SeededMoto(spec) as server, WebhookReceiver() as webhook:
                env = sensor_env(server.endpoint_url, webhook.url, os.path.join(work, "home"))
                env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = work
                env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
                config = os.path.join(work, "flowconfig.toml")
                with open(config, "w") as f:
                    f.write(CONFIG % bucket)
                argv = [sys.executable, os.path.join(REPO, "sensorflow.py")]
                argv += ["--config", "flowconfig", config, "run"]

                timed_run(argv, work, env)  # the first check: 1 object
                open(go, "w").close()
                while not os.path.exists(go + ".done"):
                    time.sleep(0.2)
                seconds, output = timed_run(argv, work, env)
                match = _MANIFEST_LINE.search(output)
                if match is None:
                    raise RuntimeError("no manifest line in the announcing run:\n" + output[-3000:])
                objects, url, manifest_seconds = match.groups()
                size = os.path.getsize(url)
                results.append((seconds, float(manifest_seconds), int(objects), size))
                print(
                    "rep %d: announcing run %.2f s, manifest %s s, %s objects"
                    % (rep + 1, seconds, manifest_seconds, objects),
                    flush=True,
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return results


READER = textwrap.dedent(
    """\
    import resource, sys, time
    from flowproject.changes import Changes
    started = time.perf_counter()
    n = sum(1 for change in Changes(sys.argv[1]) if change.kind != "removed")
    seconds = time.perf_counter() - started
    print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, seconds)
    """
)


def reading():
    """``{count: (peak RSS MB, seconds)}`` of a fresh process streaming a manifest."""
    from metaflow.plugins.datastores.local_storage import LocalStorage

    from flowproject.changes import write_manifest

    work = tempfile.mkdtemp(prefix="flowproject-bench-downstream-")
    found = {}
    try:
        storage = LocalStorage(os.path.join(work, ".metaflow"))
        for count in (1_000, ADDED):
            records = (
                {
                    "kind": "added",
                    "key": "events/part=%02d/obj-%06d.parquet" % (i % 16, i),
                    "size": i % 97,
                    "etag": "%032x" % i,
                    "last_modified": "2026-12-01T00:00:00+00:00",
                }
                for i in range(count)
            )
            header = {"kind": "changes", "complete": True, "bucket": "b", "added": count}
            url = write_manifest(storage, "SensorFlow", header, records)
            proc = subprocess.run(
                [sys.executable, "-c", READER, url],
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONPATH=REPO),
            )
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            n, peak, seconds = proc.stdout.split()
            assert int(n) == count
            found[count] = (int(peak), float(seconds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return found


def claim_decision():
    """Milliseconds to decide a delivery of a processed and of a new change among 1,000."""
    from metaflow.plugins.datastores.local_storage import LocalStorage

    from flowproject.once import ProcessedOnce

    work = tempfile.mkdtemp(prefix="flowproject-bench-downstream-")
    try:
        storage = LocalStorage(os.path.join(work, ".metaflow"))

        def marker(cid):
            # As a real delivery: the change id and the announcement's changes_url.
            return ProcessedOnce(
                storage, "TrainFlow", "bench", "user.b", {"default": cid}, {"default": "m-" + cid}
            )

        for i in range(1000):
            marker("c%04d" % i).claim("TrainFlow/%d" % i)
            marker("c%04d" % i).mark_done("TrainFlow/%d" % i)
        started = time.perf_counter()
        assert not marker("c0500").claim("TrainFlow/2000").proceed
        duplicate = time.perf_counter() - started
        started = time.perf_counter()
        assert marker("c9999").claim("TrainFlow/2001").proceed
        new = time.perf_counter() - started
        return duplicate * 1000, new * 1000
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    reps = int(argv[argv.index("--reps") + 1]) if "--reps" in argv else 3
    began = time.perf_counter()
    load_before = os.getloadavg()
    rows = []

    def add(measure, value, target="", met=None):
        rows.append((measure, value, target, "" if met is None else ("yes" if met else "**no**")))
        print("| %s | %s | %s | %s |" % rows[-1], flush=True)

    results = announcing_run(reps)
    run_s = statistics.median(r[0] for r in results)
    manifest_s = statistics.median(r[1] for r in results)
    share = statistics.median(r[1] / (r[0] - r[1]) for r in results)
    add(
        "announcing run, 100k objects added (sensorflow.py run, wall time)",
        "%.2f s (reps: %s)" % (run_s, ", ".join("%.2f" % r[0] for r in results)),
    )
    add(
        "of which writing the manifest (log line: listings read, diffed, gzip'd, stored)",
        "%.2f s; %d objects, %d bytes" % (manifest_s, results[0][2], results[0][3]),
    )
    add(
        "manifest / rest of the announcing run",
        "%.1f%%" % (share * 100),
        "< 10%",
        share < 0.10,
    )
    found = reading()
    peak_1k, seconds_1k = found[1_000]
    peak_100k, seconds_100k = found[ADDED]
    add("peak RSS streaming a 1k-record manifest (fresh process)", "%d MB" % peak_1k)
    add(
        "peak RSS streaming a 100k-record manifest (fresh process)",
        "%d MB (+%d MB over 1k); %.2f s to stream" % (peak_100k, peak_100k - peak_1k, seconds_100k),
        "<= 1k + 5 MB",
        peak_100k <= peak_1k + 5,
    )
    duplicate_ms, new_ms = claim_decision()
    add(
        "processed-once decision among 1,000 processed changes (local datastore)",
        "%.2f ms (a duplicate), %.2f ms (a new change: read + create)" % (duplicate_ms, new_ms),
        "< 1 s",
        max(duplicate_ms, new_ms) < 1000,
    )
    total = time.perf_counter() - began
    header = (
        "%s\n\nCommand: `python -m bench downstream` (repository root). Machine: %s, %d cores "
        "(nproc), Python %s, %s. Load average (1/5/15 min) before: %s, after: %s. Total: %.0f "
        "s. Medians of %d announcing runs, each on a fresh bench moto server "
        "(bench/moto_server.py) seeded with 1 object, checked, then 100,000 more.\n\n"
        "| Measure | Result | Target | Met |\n|---|---|---|---|\n"
        % (
            HEADING,
            platform.platform(),
            os.cpu_count(),
            platform.python_version(),
            datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            " / ".join("%.2f" % v for v in load_before),
            " / ".join("%.2f" % v for v in os.getloadavg()),
            total,
            reps,
        )
    )
    text = header + "".join("| %s | %s | %s | %s |\n" % row for row in rows)
    if "--no-write" not in argv:
        write_section(os.path.join(HERE, "results.md"), HEADING, text)
    print(text)
    return 0 if all(row[3] != "**no**" for row in rows) else 2


if __name__ == "__main__":
    raise SystemExit(main())
