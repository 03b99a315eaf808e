"""Scale benchmark of the S3 files_metadata sensor (issue 6). Not part of the test run.

    python -m bench            # from the repository root (or: python bench/run.py)
    python -m bench --quick    # fewer repetitions, for a smoke run

Starts a loopback moto S3 server (bench/moto_server.py: seeded in-process, fast listing), seeds
prefixes of 1,000, 10,000 and 100,000 objects (16 sub-prefixes each), measures side by side in
this process and in fresh subprocesses, prints one markdown table and writes it to
bench/results.md. Medians of several repetitions.
"""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from flowproject.testing import WebhookReceiver, free_port, sensor_env  # noqa: E402

BUCKET = "bench-scale"
SIZES = (1_000, 10_000, 100_000)
PARTITIONS = 16


def prefix_of(size):
    return "s%dk/" % (size // 1000)


def label(size):
    return "%dk" % (size // 1000)


# ------------------------------------------------------------------------------- servers


class SeededMoto(object):
    def __init__(self, spec):
        self.port = free_port()
        self.endpoint_url = "http://127.0.0.1:%d" % self.port
        self.spec = spec
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "moto_server.py"),
                str(self.port),
                json.dumps(self.spec),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        for line in self.process.stdout:
            print("moto: " + line.strip(), flush=True)
            if line.startswith("ready"):
                return self
        raise RuntimeError("the bench moto server exited before it was ready")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def set_s3_env(endpoint):
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


# ------------------------------------------------------------------------------- listings


def bare_listing(prefix, same_client=False):
    """The floor: a plain boto3 client paginating ListObjectsV2 over the prefix.

    ``same_client``: the client the check uses (``s3.make_client``, with its faster timestamp
    parser), to show the check's own overhead apart from that gain.
    """
    import boto3

    from flowproject.sources import s3

    client = s3.make_client() if same_client else boto3.client("s3")
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        count += len(page.get("Contents", ()))
    client.close()
    return count


def sensor_check(prefix, concurrency=None):
    """``flowproject.sources.s3.check`` as the flow calls it (session opened per check)."""
    from flowproject.sources import s3

    data = {"type": "s3", "bucket": "s3://" + BUCKET, "key": prefix, "check_mode": "files_metadata"}
    if concurrency is not None:
        data["list_concurrency"] = concurrency
    data = s3.normalize(data)
    with s3.open_session(data) as session:
        observation = s3.check(data, session)
    if observation.detail:
        os.unlink(observation.detail)
    return observation


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def median(values):
    return statistics.median(values)


def measure_listing(size, reps):
    prefix = prefix_of(size)
    bare, default, sequential, same = [], [], [], []
    values = set()
    for _ in range(reps):  # interleaved, so drift of the noisy machine hits all alike
        t, n = timed(bare_listing, prefix)
        assert n == size, (n, size)
        bare.append(t)
        t, n = timed(bare_listing, prefix, True)
        same.append(t)
        t, obs = timed(sensor_check, prefix)
        default.append(t)
        values.add(obs.value)
        t, obs = timed(sensor_check, prefix, 1)
        sequential.append(t)
        values.add(obs.value)
    assert len(values) == 1, values
    return median(bare), median(default), median(sequential), median(same)


# ------------------------------------------------------------------------------- peak memory

RSS_CHILD = r"""
import os, resource, sys, json
sys.path.insert(0, %(repo)r)
from flowproject.sources import s3
import boto3, botocore
data = s3.normalize({"type": "s3", "bucket": "s3://%(bucket)s", "key": %(prefix)r,
                     "check_mode": "files_metadata"})
with s3.open_session(data) as session:
    session.client.list_objects_v2(Bucket=data["bucket"], Prefix="none/", MaxKeys=1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    observation = s3.check(data, session)
os.unlink(observation.detail)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
objects = observation.summary["objects"]
print(json.dumps({"before_kb": before, "peak_kb": after, "objects": objects}))
"""


def measure_rss(size):
    code = RSS_CHILD % {"repo": REPO, "bucket": BUCKET, "prefix": prefix_of(size)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["objects"] == size
    return doc["peak_kb"] / 1024.0, doc["before_kb"] / 1024.0


# ------------------------------------------------------------------------------- flow runs

CONFIG = """\
project_name = "benchproject"
[data]
type = "s3"
bucket = "s3://%s"
key = "%s"
check_mode = "files_metadata"
[sensor]
cron_schedule = "*/5 * * * *"
event_name = "data_updated"
payload_key = "data_version"
"""


class Workdir(object):
    """A private folder with its own .metaflow, config and environment for flow runs."""

    def __init__(self, endpoint, webhook_url, size, card=True):
        self.path = tempfile.mkdtemp(prefix="flowproject-bench-")
        self.config = os.path.join(self.path, "flowconfig.toml")
        with open(self.config, "w") as f:
            f.write(CONFIG % (BUCKET, prefix_of(size)))
            if not card:
                f.write("card = false\n")
        self.env = sensor_env(endpoint, webhook_url, os.path.join(self.path, "mfhome"))
        self.env["PYTHONPATH"] = REPO + os.pathsep + self.env.get("PYTHONPATH", "")

    def run(self, flow, *args):
        argv = [sys.executable, os.path.join(REPO, flow)]
        if flow == "sensorflow.py":
            argv += ["--config", "flowconfig", self.config]
        argv += ["run"] + list(args)
        started = time.perf_counter()
        result = subprocess.run(argv, cwd=self.path, env=self.env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError("%s failed:\n%s" % (flow, result.stderr[-3000:]))
        return elapsed, result

    def snapshot(self):
        root = os.path.join(self.path, ".metaflow")
        files = {}
        for folder, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                files[os.path.relpath(path, root)] = os.path.getsize(path)
        return files

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


def stored_bytes(work):
    """Run the sensor twice (first run announces, second is unchanged); bytes the second wrote."""
    work.run("sensorflow.py")
    before = work.snapshot()
    _elapsed, result = work.run("sensorflow.py")
    assert "unchanged" in result.stdout + result.stderr, result.stdout[-2000:]
    after = work.snapshot()
    artifacts = state = metadata = cards = 0
    for path, size in after.items():
        grown = size - before.get(path, 0)
        if grown <= 0:
            continue
        if "mf.cards" in path:
            cards += grown
        elif "/sensor_state/" in path.replace(os.sep, "/"):
            state += grown
        elif "/data/" in path.replace(os.sep, "/"):
            artifacts += grown  # content-addressed artifact blobs new in this run
        else:
            metadata += grown  # Metaflow's per-run metadata, task logs and the card
    return artifacts, state, metadata, cards


def measure_runs(endpoint, webhook_url, reps):
    sensor_times, bare_times, card_times, stored = [], [], [], {}
    nocard_times = []
    for size in SIZES:
        work = Workdir(endpoint, webhook_url, size)
        try:
            stored[size] = stored_bytes(work)
            if size == SIZES[0]:
                work.run("bench/bareflow.py")  # warm-up of both flows' first-run costs
                for _ in range(reps):
                    bare_times.append(work.run("bench/bareflow.py")[0])
                    sensor_times.append(work.run("sensorflow.py")[0])
                    card_times.append(work.run("bench/bareflow_card.py")[0])
                # The same no-change run with [sensor] card = false.
                nocard = Workdir(endpoint, webhook_url, size, card=False)
                try:
                    nocard.run("sensorflow.py")  # the first check announces
                    for _ in range(reps):
                        nocard_times.append(nocard.run("sensorflow.py")[0])
                finally:
                    nocard.cleanup()
        finally:
            work.cleanup()
    return (
        median(sensor_times),
        median(bare_times),
        median(card_times),
        median(nocard_times),
        stored,
    )


# ------------------------------------------------------------------------------- latency


def measure_latency(endpoint, reps, delay=0.020):
    from bench.latency_proxy import LatencyProxy

    size = SIZES[-1]
    prefix = prefix_of(size)
    rows = {"bare": [], "sequential": [], "concurrent": []}
    values = {}
    with LatencyProxy(endpoint, delay=delay) as proxy:
        os.environ["AWS_ENDPOINT_URL_S3"] = proxy.url
        try:
            for _ in range(reps):
                t, n = timed(bare_listing, prefix)
                assert n == size
                rows["bare"].append(t)
                t, obs = timed(sensor_check, prefix, 1)
                rows["sequential"].append(t)
                values.setdefault("sequential", set()).add(obs.value)
                t, obs = timed(sensor_check, prefix, 16)
                rows["concurrent"].append(t)
                values.setdefault("concurrent", set()).add(obs.value)
        finally:
            os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    agree = len(values["sequential"] | values["concurrent"]) == 1
    return {k: median(v) for k, v in rows.items()}, agree


# ------------------------------------------------------------------------------- report


def fmt_s(seconds):
    return "%.2f s" % seconds


def baseline_rows():
    try:
        from bench import baseline_lookup
    except ImportError:
        return None
    try:
        return list(baseline_lookup.run(sizes=(10, 1000, 3000)))
    except Exception as e:  # its own failure must not lose the rest of the table
        return ["failed: %s: %s" % (e.__class__.__name__, e)]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    reps_list = (
        {1_000: 5, 10_000: 5, 100_000: 3} if not quick else {1_000: 2, 10_000: 2, 100_000: 1}
    )
    run_reps = 2 if quick else 3
    latency_reps = 1 if quick else 2
    began = time.perf_counter()
    spec = [
        {"bucket": BUCKET, "prefix": prefix_of(size), "count": size, "partitions": PARTITIONS}
        for size in SIZES
    ]
    rows = []  # (measure, value, target, met)

    def add(measure, value, target="", met=None):
        rows.append((measure, value, target, "" if met is None else ("yes" if met else "**no**")))
        print("| %s | %s | %s | %s |" % rows[-1], flush=True)

    with SeededMoto(spec) as server, WebhookReceiver() as webhook:
        set_s3_env(server.endpoint_url)
        bare_listing(prefix_of(SIZES[0]))  # warm imports and connections
        sensor_check(prefix_of(SIZES[0]))
        for size in SIZES:
            bare, default, sequential, same = measure_listing(size, reps_list[size])
            target = size >= 10_000
            add(
                "check time / bare ListObjectsV2, %s objects (default: concurrency 8)"
                % label(size),
                "%.2fx (%s vs %s)" % (default / bare, fmt_s(default), fmt_s(bare)),
                "<= 1.2x" if target else "",
                default / bare <= 1.2 if target else None,
            )
            add(
                "check time / bare ListObjectsV2, %s objects (list_concurrency = 1)" % label(size),
                "%.2fx (%s vs %s)" % (sequential / bare, fmt_s(sequential), fmt_s(bare)),
                "<= 1.2x" if target else "",
                sequential / bare <= 1.2 if target else None,
            )
            add(
                "check (list_concurrency = 1) / bare listing with the check's own client, %s"
                % label(size),
                "%.2fx (%s vs %s): the digest + spool overhead alone"
                % (sequential / same, fmt_s(sequential), fmt_s(same)),
            )
        peaks = {size: measure_rss(size) for size in SIZES}
        for size in SIZES:
            peak, before = peaks[size]
            ratio = peak / peaks[SIZES[0]][0]
            add(
                "peak RSS of an unchanged check, %s objects" % label(size),
                "%.0f MB (%.2fx of 1k; +%.0f MB over the process before the check)"
                % (peak, ratio, peak - before),
                "<= 1.5x of 1k" if size == SIZES[-1] else "",
                ratio <= 1.5 if size == SIZES[-1] else None,
            )
        sensor_run, bare_run, card_run, nocard_run, stored = measure_runs(
            server.endpoint_url, webhook.url, run_reps
        )
        for size in SIZES:
            artifacts, state, metadata, cards = stored[size]
            add(
                "stored bytes per unchanged check, %s objects (artifacts + state growth)"
                % label(size),
                "%d B (%d artifacts + %d state); besides: Metaflow metadata/logs %d B, card %d B"
                % (artifacts + state, artifacts, state, metadata, cards),
                "< 2 KB, constant",
                artifacts + state < 2048,
            )
        add(
            "no-change `sensorflow.py run` (1k) / bare two-step flow",
            "%.2fx (%s vs %s)" % (sensor_run / bare_run, fmt_s(sensor_run), fmt_s(bare_run)),
            "<= 1.5x",
            sensor_run / bare_run <= 1.5,
        )
        add(
            "no-change `sensorflow.py run` (1k) / bare two-step flow with the same blank @card",
            "%.2fx (%s vs %s)" % (sensor_run / card_run, fmt_s(sensor_run), fmt_s(card_run)),
        )
        add(
            "no-change `sensorflow.py run` (1k) with `[sensor] card = false` / bare two-step flow",
            "%.2fx (%s vs %s)" % (nocard_run / bare_run, fmt_s(nocard_run), fmt_s(bare_run)),
            "<= 1.5x",
            nocard_run / bare_run <= 1.5,
        )
        lookup = baseline_rows()
        if lookup is None:
            add("baseline lookup vs 10 / 1,000 / 3,000 past runs", "not available")
        else:
            for row in lookup:
                if isinstance(row, dict) and "runs" in row:
                    text = ", ".join(
                        "%s %s" % (k, ("%.3g" % v) if isinstance(v, float) else v)
                        for k, v in row.items()
                        if k not in ("runs", "workdir")
                    )
                    add(
                        "baseline lookup vs %s past runs (bench/baseline_lookup.py)" % row["runs"],
                        text,
                    )
                else:
                    add("baseline lookup (bench/baseline_lookup.py)", str(row))
        latency, agree = measure_latency(server.endpoint_url, latency_reps)
        ratio = latency["concurrent"] / latency["bare"]
        add(
            "20 ms/request, 100k over 16 sub-prefixes: "
            "concurrent check (16) / sequential bare listing",
            "%.2fx (%s vs %s); fingerprints agree: %s"
            % (
                ratio,
                fmt_s(latency["concurrent"]),
                fmt_s(latency["bare"]),
                "yes" if agree else "NO",
            ),
            "<= 0.35x, same fingerprint",
            ratio <= 0.35 and agree,
        )
        add(
            "20 ms/request, 100k: "
            "sequential check (list_concurrency = 1) / sequential bare listing",
            "%.2fx (%s)" % (latency["sequential"] / latency["bare"], fmt_s(latency["sequential"])),
        )
    machine = "%s, %d cores (nproc), Python %s, %s, %s" % (
        platform.platform(),
        os.cpu_count(),
        platform.python_version(),
        datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick run" if quick else "full run",
    )
    lines = [
        "| Measure | Result | Target | Met |",
        "|---|---|---|---|",
    ] + ["| %s | %s | %s | %s |" % row for row in rows]
    text = "\n".join(
        [
            "# Scale benchmark",
            "",
            "Command: `python -m bench` (repository root). Machine: %s. Total: %.0f s."
            % (machine, time.perf_counter() - began),
            "Medians of %d/%d/%d listings (1k/10k/100k), %d flow runs, %d latency runs."
            % (reps_list[1_000], reps_list[10_000], reps_list[100_000], run_reps, latency_reps),
            "",
        ]
        + lines
        + [""]
    )
    print()
    print(text)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    main()
