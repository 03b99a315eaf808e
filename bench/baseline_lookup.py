"""Benchmark: cost of finding the sensor's baseline with 10, 1,000 and 3,000 past runs.

    python bench/baseline_lookup.py                 # sizes 10, 1000, 3000
    python bench/baseline_lookup.py 10 1000 10000   # other sizes

What is measured, per history size:

- ``state object``: ``StateStore.load()``, what every check does (one read of
  ``<FlowName>/sensor_state/<project>/<branch>.json`` in the local datastore);
- ``client walk``: ``recover_from_runs()``, the fallback used only when the state object is
  missing or unreadable (walks the branch's runs newest first with the Metaflow client until
  one announced a value).

How the history is made (simulated, cheaply): two real ``SensorFlow`` runs against loopback
S3 and webhook (moto server, ``WebhookReceiver``): one that announced a value and one
unchanged check. The unchanged run's local metadata and datastore entries are then copied
N-2 times under new run ids and later creation times (artifacts are content-addressed, so the
copies share them), giving N runs of which the oldest announced: the worst case for the
walk, and the common one (one announcement, then unchanged checks). Logs are not copied.

Each lookup runs in a fresh Python process per size (no client cache shared between sizes);
the figure is the median of several lookups in that process (the first, cold one included).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOW = "SensorFlow"
PROJECT = "benchproject"
BRANCH = "user.bench"
STATE_REPEATS = 31
WALK_REPEATS = 3


# ------------------------------------------------------------------------------ history


def _config(bucket):
    return (
        'project_name = "%s"\n[data]\ntype = "s3"\nbucket = "s3://%s"\nkey = "events/"\n'
        'check_mode = "files_metadata"\n[sensor]\ncron_schedule = "*/5 * * * *"\n'
        'event_name = "data_updated"\npayload_key = "data_version"\n' % (PROJECT, bucket)
    )


def real_runs(workdir):
    """One announcing and one unchanged SensorFlow run in ``workdir``; their run ids."""
    sys.path.insert(0, REPO)
    from flowproject.testing import MotoS3Server, WebhookReceiver, sensor_env

    with MotoS3Server() as s3, WebhookReceiver() as webhook:
        client = s3.client()
        client.create_bucket(Bucket="bench")
        for i in range(5):
            client.put_object(Bucket="bench", Key="events/part-%d.parquet" % i, Body=b"x" * i)
        config = os.path.join(workdir, "flowconfig.toml")
        with open(config, "w") as f:
            f.write(_config("bench"))
        env = sensor_env(s3.endpoint_url, webhook.url, os.path.join(workdir, "mfhome"))
        env["METAFLOW_USER"] = BRANCH.split(".", 1)[1]
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        ids = []
        for _ in range(2):
            proc = subprocess.run(
                [
                    sys.executable,
                    os.path.join(REPO, "sensorflow.py"),
                    "--config",
                    "flowconfig",
                    config,
                    "run",
                ],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
            ids.append(_run_id(proc.stdout + proc.stderr))
        if len(webhook.events) != 1:
            raise RuntimeError("expected one announcement, got %d" % len(webhook.events))
    return ids


def _run_id(text):
    import re

    return re.search(r"run-id (\d+)", text).group(1)


class History(object):
    """A local ``.metaflow`` with N runs of SensorFlow in one branch, grown by cloning."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.flow_dir = os.path.join(workdir, ".metaflow", FLOW)
        self.announced_run, self.template_run = real_runs(workdir)
        self.template = self._read_template()
        with open(os.path.join(self.flow_dir, self.template_run, "_meta", "_self.json")) as f:
            self.base_ts = json.load(f)["ts_epoch"]
        self.count = 2
        self.next_id = int(self.template_run) + 1

    def _read_template(self):
        root = os.path.join(self.flow_dir, self.template_run)
        files = []
        for folder, _dirs, names in os.walk(root):
            for name in names:
                if name.endswith(".log"):
                    continue
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    files.append((os.path.relpath(path, root), f.read()))
        return files

    def grow_to(self, n):
        old = self.template_run.encode()
        while self.count < n:
            new_id = str(self.next_id)
            self.next_id += 1
            new = new_id.encode()
            ts_old = str(self.base_ts).encode()
            ts_new = str(self.base_ts + self.count).encode()  # each clone newer than the last
            root = os.path.join(self.flow_dir, new_id)
            for rel, body in self.template:
                path = os.path.join(root, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                body = body.replace(old, new)
                if rel == os.path.join("_meta", "_self.json"):
                    body = body.replace(ts_old, ts_new)
                with open(path, "wb") as f:
                    f.write(body)
            self.count += 1


# ------------------------------------------------------------------------------ measuring

_MEASURE = r"""
import json, os, statistics, sys, time
sys.path.insert(0, %(repo)r)
from flowproject.state import StateStore, datastore_storage, recover_from_runs

def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter(); result = fn(); times.append(time.perf_counter() - t)
    return statistics.median(times), times[0], result

store = StateStore(datastore_storage(), %(flow)r, %(project)r, %(branch)r)
state_s, state_cold, state = timed(store.load, %(state_repeats)d)
walk_s, walk_cold, walked = timed(lambda: recover_from_runs(%(flow)r, %(project)r, %(branch)r),
                                  %(walk_repeats)d)
assert state.baseline is not None and walked.baseline is not None
assert state.baseline.run == walked.baseline.run, (state.baseline.run, walked.baseline.run)
print(json.dumps({"state_s": state_s, "state_cold_s": state_cold, "walk_s": walk_s,
                  "walk_cold_s": walk_cold, "baseline_run": state.baseline.run}))
"""


def measure(workdir, walk_repeats=WALK_REPEATS, state_repeats=STATE_REPEATS):
    """Time both lookups in a fresh process whose working folder holds the history."""
    code = _MEASURE % {
        "repo": REPO,
        "flow": FLOW,
        "project": PROJECT,
        "branch": BRANCH,
        "state_repeats": state_repeats,
        "walk_repeats": walk_repeats,
    }
    env = dict(
        os.environ,
        METAFLOW_DEFAULT_DATASTORE="local",
        METAFLOW_DEFAULT_METADATA="local",
        METAFLOW_HOME=os.path.join(workdir, "mfhome"),
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(sizes=(10, 1000, 3000), walk_repeats=WALK_REPEATS, keep=False):
    """Measure the baseline lookup at each history size.

    Parameters
    ----------
    sizes : tuple of int
        Numbers of past runs (at least 2), measured in increasing order.
    walk_repeats : int
        Lookups per size for the client walk (slow; median taken).
    keep : bool
        Keep the temporary history folder (its path is in each row).

    Returns
    -------
    list of dict
        One row per size: ``runs``, ``state_ms`` (median), ``walk_ms`` (median),
        ``state_cold_ms``, ``walk_cold_ms``, ``build_s`` (time to create the history so far),
        ``simulated`` (how the runs were made), ``workdir``; the last row also carries
        ``state_ratio`` and ``walk_ratio`` (largest size / smallest size).
    """
    workdir = tempfile.mkdtemp(prefix="flowproject-bench-")
    rows = []
    try:
        started = time.monotonic()
        history = History(workdir)
        for n in sorted(sizes):
            history.grow_to(max(n, 2))
            build_s = time.monotonic() - started
            m = measure(workdir, walk_repeats=walk_repeats)
            rows.append(
                {
                    "runs": history.count,
                    "state_ms": m["state_s"] * 1e3,
                    "state_cold_ms": m["state_cold_s"] * 1e3,
                    "walk_ms": m["walk_s"] * 1e3,
                    "walk_cold_ms": m["walk_cold_s"] * 1e3,
                    "build_s": build_s,
                    "simulated": "2 real runs + %d cloned unchanged runs" % (history.count - 2),
                    "workdir": workdir,
                }
            )
        rows[-1]["state_ratio"] = rows[-1]["state_ms"] / rows[0]["state_ms"]
        rows[-1]["walk_ratio"] = rows[-1]["walk_ms"] / rows[0]["walk_ms"]
        return rows
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv):
    sizes = tuple(int(a) for a in argv) or (10, 1000, 3000)
    rows = run(sizes)
    print(
        "Baseline lookup, local datastore (median of %d state reads / %d walks per size)"
        % (STATE_REPEATS, WALK_REPEATS)
    )
    print("%8s  %16s  %16s" % ("runs", "state object ms", "client walk ms"))
    for r in rows:
        print("%8d  %16.2f  %16.1f" % (r["runs"], r["state_ms"], r["walk_ms"]))
    last = rows[-1]
    print(
        "ratio %d/%d runs: state object %.2fx, client walk %.1fx"
        % (last["runs"], rows[0]["runs"], last["state_ratio"], last["walk_ratio"])
    )
    print("history: %s; built in %.0fs" % (last["simulated"], last["build_s"]))
    ok = last["state_ratio"] <= 2.0
    print("target (state object within 2x): %s" % ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
