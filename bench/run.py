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
import re
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
FLOW_SIZES = (1_000, 10_000)  # the no-change run against the floor
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
    """Bytes an unchanged check writes: run the sensor twice (the first run announces)."""
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
            metadata += grown  # Metaflow's per-run metadata and task logs
    return artifacts, state, metadata, cards


_TASK_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \[\d+/(\w+)/\d+ \(pid \d+\)\] "
    r"Task (is starting|finished successfully)"
)


def step_seconds(output):
    """{step: seconds from 'Task is starting' to 'Task finished'} of one run's log."""
    began, took = {}, {}
    for line in output.splitlines():
        match = _TASK_LINE.match(line)
        if not match:
            continue
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if match.group(3) == "is starting":
            began[match.group(2)] = at
        else:
            took[match.group(2)] = at - began.pop(match.group(2))
    return took


def artifacts_of_last_run(work, flow):
    """(names, bytes) of the artifacts the newest run of ``flow`` stored in its start step."""
    root = os.path.join(work.path, ".metaflow", flow)
    runs = [r for r in os.listdir(root) if r.isdigit()]
    meta = os.path.join(root, max(runs, key=int), "start", "1", "_meta")
    names = sorted(
        n[len("0_artifact_") : -len(".json")] for n in os.listdir(meta) if "_artifact_" in n
    )
    return names


IMPORT_PROBE = (
    "import time, sys; t = time.perf_counter(); import metaflow%s; print(time.perf_counter() - t)"
)


def import_seconds(extra, env, reps):
    """Median seconds a fresh interpreter takes to import metaflow (+ ``extra``)."""
    times = []
    for _ in range(reps):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE % extra],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(out.stdout.strip()))
    return median(times)


def measure_runs(endpoint, webhook_url, reps):
    """The sensor's runs against the floor (bench/floorflow.py), same prefix, interleaved."""
    results = {"stored": {}, "no_change": {}, "floor": {}, "steps": {}, "announcing": None}
    for size in SIZES:
        work = Workdir(endpoint, webhook_url, size)
        work.env["FLOOR_BUCKET"], work.env["FLOOR_PREFIX"] = BUCKET, prefix_of(size)
        try:
            results["stored"][size] = stored_bytes(work)
            if size not in FLOW_SIZES:
                continue
            work.run("bench/floorflow.py")  # warm-up of the floor's first-run costs
            if size == FLOW_SIZES[0]:
                results["artifacts"] = artifacts_of_last_run(work, "SensorFlow")  # unchanged
                results["floor_artifacts"] = artifacts_of_last_run(work, "FloorFlow")
            sensor, floor, announcing = [], [], []
            steps = {"sensor": [], "floor": [], "announcing": []}
            for _ in range(reps):  # interleaved, so drift of the noisy machine hits all alike
                t, result = work.run("bench/floorflow.py")
                floor.append(t)
                steps["floor"].append(step_seconds(result.stdout))
                t, result = work.run("sensorflow.py")
                assert "unchanged since" in result.stdout, result.stdout[-2000:]
                sensor.append(t)
                steps["sensor"].append(step_seconds(result.stdout))
                if size == FLOW_SIZES[0]:
                    t, result = work.run("sensorflow.py", "--force-trigger", "True")
                    assert "Published" in result.stdout, result.stdout[-2000:]
                    announcing.append(t)
                    steps["announcing"].append(step_seconds(result.stdout))
            results["no_change"][size] = median(sensor)
            results["floor"][size] = median(floor)
            results["steps"][size] = {
                kind: {
                    step: median([run[step] for run in runs if step in run])
                    for step in ("start", "announce_change", "end")
                    if any(step in run for run in runs)
                }
                for kind, runs in steps.items()
                if runs
            }
            if announcing:
                results["announcing"] = median(announcing)
            if size == FLOW_SIZES[0]:
                results["imports"] = {
                    "metaflow": import_seconds("", work.env, reps + 2),
                    "flowproject": import_seconds(", flowproject", work.env, reps + 2),
                    "boto3": import_seconds(", boto3", work.env, reps + 2),
                }
        finally:
            work.cleanup()
    return results


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


def write_section(path, heading, text):
    """Replace the section of ``path`` under the level-1 ``heading`` by ``text`` (appended when
    absent), keeping the other benchmarks' sections."""
    sections = []  # [heading, text] in file order
    if os.path.exists(path):
        with open(path) as f:
            for line in f.read().splitlines(keepends=True):
                if line.startswith("# ") or not sections:
                    sections.append([line.rstrip("\n"), ""])
                sections[-1][1] += line
    body = text if text.endswith("\n") else text + "\n"
    for section in sections:
        if section[0] == heading:
            section[1] = body
            break
    else:
        sections.append([heading, body])
    with open(path, "w") as f:
        f.write("\n".join(s[1].rstrip("\n") + "\n" for s in sections))


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
    run_reps = 2 if quick else 5
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
        runs = measure_runs(server.endpoint_url, webhook.url, run_reps)
        for size in SIZES:
            artifacts, state, metadata, cards = runs["stored"][size]
            total = artifacts + state + cards
            add(
                "stored bytes per unchanged check, %s objects (artifacts + state growth + cards)"
                % label(size),
                "%d B (%d artifacts + %d state + %d cards); besides: Metaflow metadata/logs %d B"
                % (total, artifacts, state, cards, metadata),
                "< 4 KB",
                total < 4096,
            )
        for size in FLOW_SIZES:
            sensor, floor = runs["no_change"][size], runs["floor"][size]
            add(
                "no-change `sensorflow.py run` / floor (bench/floorflow.py), %s objects"
                % label(size),
                "%.2fx (%s vs %s)" % (sensor / floor, fmt_s(sensor), fmt_s(floor)),
                "<= 1.15x",
                sensor / floor <= 1.15,
            )
        floor = runs["floor"][FLOW_SIZES[0]]
        add(
            "announcing run (`--force-trigger True`: publish, card) / floor, %s objects"
            % label(FLOW_SIZES[0]),
            "%.2fx (%s vs %s)"
            % (runs["announcing"] / floor, fmt_s(runs["announcing"]), fmt_s(floor)),
        )
        for size in FLOW_SIZES:
            steps = runs["steps"][size]
            for kind in ("sensor", "floor", "announcing"):
                if kind not in steps:
                    continue
                add(
                    "per-step task time, %s, %s objects (log: Task is starting .. finished)"
                    % (
                        {
                            "sensor": "no-change sensor run",
                            "floor": "floor",
                            "announcing": "announcing run",
                        }[kind],
                        label(size),
                    ),
                    ", ".join("%s %s" % (step, fmt_s(t)) for step, t in steps[kind].items()),
                )
        imports = runs["imports"]
        add(
            "import in a fresh interpreter: metaflow / + flowproject / + boto3",
            "%s / +%.3f s / +%.3f s"
            % (
                fmt_s(imports["metaflow"]),
                imports["flowproject"] - imports["metaflow"],
                imports["boto3"] - imports["metaflow"],
            ),
        )
        own = [name for name in runs["artifacts"] if name not in runs["floor_artifacts"]]
        add(
            "artifacts of an unchanged check's start step besides the floor's (Metaflow's own)",
            "%s (%d; the floor: %d)" % (", ".join(own), len(own), len(runs["floor_artifacts"])),
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
    write_section(os.path.join(HERE, "results.md"), "# Scale benchmark", text)
    return 0


if __name__ == "__main__":
    main()
