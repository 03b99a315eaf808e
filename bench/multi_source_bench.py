"""Many sources per run (issue 12): one run checking 20 sources against one run checking 1 and
against 20 single-source runs. Not part of the test run.

    python -m bench.multi_source_bench            # 20 prefixes of 1,000 objects, 3 repetitions
    python -m bench.multi_source_bench --write    # also write its section of bench/results.md
    python -m bench many-sources [--write]        # the same, through bench/__main__.py

Starts the benchmark's loopback moto server (bench/moto_server.py, seeded in-process), seeds
``--sources`` prefixes of ``--objects`` objects each, and writes three kinds of flowconfig in a
temporary folder, each with its own ``.metaflow``:

- (a) the single-source form (``[data]``) watching prefix 0;
- (b) the multi-source form, one ``[sources.pNN]`` table (``files_metadata``) per prefix;
- (c) one single-source config per prefix (each in its own folder: one deployment each).

Each is run once with ``python sensorflow.py --config flowconfig PATH run`` to set its baselines
(not timed; the webhook must receive one event per source), then ``--reps`` unchanged checks of
each are timed, interleaved (a, b, c, a, b, c, ...) so the machine's drift hits all alike. An
unchanged check is one whose run exits 0 and publishes nothing. Reported: the median wall time
of (a) one run, (b) one run and (c) the sum of the single-source runs; the ratios b/a (target
<= 2) and c/b (target >= 8); per-step task times; CPU seconds of the flow processes and of the
moto server; the peak RSS of the 20-source run (one extra, untimed run).

The card setting is the default (``card = true``): an unchanged check draws no card. Exits 0
when every target is met, 2 when one is missed.
"""

import argparse
import os
import platform
import resource
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

from bench.run import SeededMoto, step_seconds, write_section  # noqa: E402
from flowproject.testing import WebhookReceiver, sensor_env  # noqa: E402

BUCKET = "bench-many"
SECTION = "# Many sources per run"
TARGET_B_OVER_A = 2.0
TARGET_C_OVER_B = 8.0
# Exit status when the run worked but a target was missed (a crash exits 1).
TARGET_MISSED = 2

HEADER = """\
project_name = "benchmany"
"""

SINGLE = """\
[data]
type = "s3"
bucket = "s3://%(bucket)s"
key = "%(key)s"
check_mode = "files_metadata"

[sensor]
cron_schedule = "*/30 * * * *"
event_name = "data_updated"
payload_key = "data_version"
"""

MULTI_SENSOR = """\
[sensor]
cron_schedule = "*/30 * * * *"
"""

MULTI_SOURCE = """
[sources.%(name)s]
type = "s3"
bucket = "s3://%(bucket)s"
key = "%(key)s"
check_mode = "files_metadata"
event_name = "%(name)s_updated"
payload_key = "%(name)s_version"
"""


def source_name(i):
    return "p%02d" % i


def prefix(i):
    return "%s/" % source_name(i)


def single_config(i):
    return HEADER + SINGLE % {"bucket": BUCKET, "key": prefix(i)}


def multi_config(count):
    return (
        HEADER
        + MULTI_SENSOR
        + "".join(
            MULTI_SOURCE % {"name": source_name(i), "bucket": BUCKET, "key": prefix(i)}
            for i in range(count)
        )
    )


class Deployment(object):
    """One flowconfig in a private folder (its own ``.metaflow`` and Metaflow home)."""

    def __init__(self, root, name, config_text, endpoint, webhook_url):
        self.path = os.path.join(root, name)
        os.makedirs(self.path)
        self.config = os.path.join(self.path, "flowconfig.toml")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.env = sensor_env(
            endpoint, webhook_url, os.path.join(self.path, "mfhome"), workdir=self.path
        )
        self.env["PYTHONPATH"] = REPO + os.pathsep + self.env.get("PYTHONPATH", "")

    def argv(self):
        return [
            sys.executable,
            os.path.join(REPO, "sensorflow.py"),
            "--config",
            "flowconfig",
            self.config,
            "run",
        ]

    def run(self):
        """``(wall seconds, CPU seconds of the flow's processes, CompletedProcess)``."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run(
            self.argv(), cwd=self.path, env=self.env, capture_output=True, text=True
        )
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if result.returncode != 0:
            raise RuntimeError(
                "sensorflow.py run failed in %s (exit %d):\n%s"
                % (self.path, result.returncode, (result.stdout + result.stderr)[-4000:])
            )
        return elapsed, cpu, result

    def peak_rss_mb(self):
        """Peak RSS (MB) of the largest process of one run (the run process or a task)."""
        code = (
            "import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code] + self.argv(),
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        returncode, kb = out.stdout.split()
        if returncode != "0":
            raise RuntimeError("the run measured for its RSS failed in %s" % self.path)
        return int(kb) / 1024.0


def process_cpu_seconds(pid):
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average():
    return "%.2f / %.2f / %.2f" % os.getloadavg()


class Case(object):
    """A benchmark case: one or more deployments run one after the other per repetition."""

    def __init__(self, key, title, deployments, sources):
        self.key = key
        self.title = title
        self.deployments = deployments
        self.sources = sources
        self.wall, self.cpu, self.moto_cpu, self.steps = [], [], [], []

    def run_once(self, moto_pid):
        moto_before = process_cpu_seconds(moto_pid)
        wall = cpu = 0.0
        steps = {}
        for deployment in self.deployments:
            t, c, result = deployment.run()
            wall += t
            cpu += c
            for step, seconds in step_seconds(result.stdout + result.stderr).items():
                steps[step] = steps.get(step, 0.0) + seconds
        return wall, cpu, process_cpu_seconds(moto_pid) - moto_before, steps

    def measure(self, moto_pid):
        wall, cpu, moto_cpu, steps = self.run_once(moto_pid)
        self.wall.append(wall)
        self.cpu.append(cpu)
        self.moto_cpu.append(moto_cpu)
        self.steps.append(steps)

    def median(self, what):
        return statistics.median(getattr(self, what))

    def median_steps(self):
        names = []
        for run in self.steps:
            names.extend(n for n in run if n not in names)
        return {
            name: statistics.median([run[name] for run in self.steps if name in run])
            for name in names
        }


def fmt_s(seconds):
    return "%.2f s" % seconds


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.multi_source_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--sources", type=int, default=20, help="prefixes (sources); 20")
    parser.add_argument("--objects", type=int, default=1000, help="objects per prefix; 1,000")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions; 3")
    parser.add_argument(
        "--cases", default="abc", help="which cases to run (a, b, c; default all three)"
    )
    parser.add_argument("--no-rss", action="store_true", help="skip the peak RSS run")
    parser.add_argument(
        "--write", action="store_true", help="write the '%s' section of bench/results.md" % SECTION
    )
    args = parser.parse_args(argv)
    cases_wanted = set(args.cases)

    began = time.perf_counter()
    load_before = load_average()
    spec = [
        {"bucket": BUCKET, "prefix": prefix(i), "count": args.objects, "partitions": 0}
        for i in range(args.sources)
    ]
    root = tempfile.mkdtemp(prefix="flowproject-bench-many-")
    try:
        with SeededMoto(spec) as moto, WebhookReceiver() as webhook:
            endpoint, url = moto.endpoint_url, webhook.url

            def deployment(name, text):
                return Deployment(root, name, text, endpoint, url)

            cases = []
            if "a" in cases_wanted:
                cases.append(Case("a", "one run, 1 source", [deployment("a", single_config(0))], 1))
            if "b" in cases_wanted:
                cases.append(
                    Case(
                        "b",
                        "one run, %d sources" % args.sources,
                        [deployment("b", multi_config(args.sources))],
                        args.sources,
                    )
                )
            if "c" in cases_wanted:
                cases.append(
                    Case(
                        "c",
                        "%d single-source runs (sum)" % args.sources,
                        [deployment("c%02d" % i, single_config(i)) for i in range(args.sources)],
                        args.sources,
                    )
                )

            for case in cases:  # baselines: the first check of each source announces it
                before = len(webhook.events)
                started = time.perf_counter()
                case.run_once(moto.process.pid)
                published = len(webhook.events) - before
                print(
                    "baseline (%s) %s: %d events in %.1f s"
                    % (case.key, case.title, published, time.perf_counter() - started),
                    flush=True,
                )
                if published != case.sources:
                    raise RuntimeError(
                        "case (%s): the first run published %d events, expected %d"
                        % (case.key, published, case.sources)
                    )

            for rep in range(args.reps):  # interleaved
                for case in cases:
                    before = len(webhook.events)
                    case.measure(moto.process.pid)
                    if len(webhook.events) != before:
                        raise RuntimeError(
                            "case (%s): an unchanged check published %d events"
                            % (case.key, len(webhook.events) - before)
                        )
                    print(
                        "rep %d (%s) %s: %s wall, %s CPU, moto %s CPU"
                        % (
                            rep + 1,
                            case.key,
                            case.title,
                            fmt_s(case.wall[-1]),
                            fmt_s(case.cpu[-1]),
                            fmt_s(case.moto_cpu[-1]),
                        ),
                        flush=True,
                    )

            by_key = {case.key: case for case in cases}
            rss = None
            if "b" in by_key and not args.no_rss:
                rss = by_key["b"].deployments[0].peak_rss_mb()
            rss_a = None
            if "a" in by_key and not args.no_rss:
                rss_a = by_key["a"].deployments[0].peak_rss_mb()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    load_after = load_average()
    rows = []  # (measure, value, target, met)

    def add(measure, value, target="", met=None):
        rows.append((measure, value, target, "" if met is None else ("yes" if met else "**no**")))

    for case in cases:
        add(
            "(%s) %s: wall time of an unchanged check" % (case.key, case.title),
            "%s (CPU: flow processes %s, moto %s)"
            % (
                fmt_s(case.median("wall")),
                fmt_s(case.median("cpu")),
                fmt_s(case.median("moto_cpu")),
            ),
        )
    if "a" in by_key and "b" in by_key:
        ratio = by_key["b"].median("wall") / by_key["a"].median("wall")
        add(
            "b / a: %d sources in one run vs 1 source" % args.sources,
            "%.2fx" % ratio,
            "<= %gx" % TARGET_B_OVER_A,
            ratio <= TARGET_B_OVER_A,
        )
    if "b" in by_key and "c" in by_key:
        ratio = by_key["c"].median("wall") / by_key["b"].median("wall")
        add(
            "c / b: %d single-source runs vs one %d-source run" % (args.sources, args.sources),
            "%.1fx cheaper" % ratio,
            ">= %gx" % TARGET_C_OVER_B,
            ratio >= TARGET_C_OVER_B,
        )
    for case in cases:
        steps = case.median_steps()
        add(
            "(%s) per-step task time%s (log: Task is starting .. finished)"
            % (case.key, ", summed over the runs" if len(case.deployments) > 1 else ""),
            ", ".join("%s %s" % (step, fmt_s(t)) for step, t in steps.items()),
        )
    if rss_a is not None:
        add("(a) peak RSS of the largest process of the run", "%.0f MB" % rss_a)
    if rss is not None:
        add("(b) peak RSS of the largest process of the run", "%.0f MB" % rss)

    machine = "%s, %d cores (nproc), Python %s, %s" % (
        platform.platform(),
        os.cpu_count(),
        platform.python_version(),
        datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    lines = [
        SECTION,
        "",
        "Command: `python -m bench.multi_source_bench` (repository root). Machine: %s. "
        "Load average (1/5/15 min) before: %s, after: %s. Total: %.0f s."
        % (machine, load_before, load_after, time.perf_counter() - began),
        "%d S3 prefixes of %s objects (loopback moto, bench/moto_server.py), unchanged checks, "
        "default card setting; medians of %d interleaved repetitions; (c) is the sum of its %d "
        "runs." % (args.sources, format(args.objects, ","), args.reps, args.sources),
        "",
        "| Measure | Result | Target | Met |",
        "|---|---|---|---|",
    ] + ["| %s | %s | %s | %s |" % row for row in rows]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.write:
        write_section(os.path.join(HERE, "results.md"), SECTION, text)
    met = [row[3] for row in rows if row[3]]
    return 0 if all(m == "yes" for m in met) else TARGET_MISSED


if __name__ == "__main__":
    raise SystemExit(main())
