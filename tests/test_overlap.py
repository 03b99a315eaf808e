"""Overlapping runs of one branch, with real flow runs (issue 9, promise 10).

Metaflow's CronWorkflow lets a slow check overlap the next one. Two runs are interleaved
exactly with the state write barrier (``FLOWPROJECT_TEST_WRITE_BARRIER``, a pause between a
run's read of the state and its write), or started together; the webhook must receive one
event per change and the state must keep every run's history entry.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import REPO, s3_config

pytestmark = pytest.mark.e2e

FLOW, BRANCH = "SensorFlow", "user.tester"


def start_run(flow_runner, env=None):
    """Start ``sensorflow.py run`` without waiting for it."""
    argv = [sys.executable, os.path.join(REPO, "sensorflow.py")]
    argv += ["--config", "flowconfig", flow_runner.config_path, "run"]
    return subprocess.Popen(
        argv,
        cwd=flow_runner.workdir,
        env=dict(flow_runner.env, **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process, timeout=300):
    """Wait for a started run; return (exit code, run id, output)."""
    out, _ = process.communicate(timeout=timeout)
    match = re.search(r"run-id (\d+)", out)
    return process.returncode, match.group(1) if match else None, out


def wait_for(path, process, timeout=180):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if process.poll() is not None:
            pytest.fail("run exited before reaching the barrier:\n" + process.stdout.read()[-3000:])
        assert time.monotonic() < deadline, "the run never reached the barrier"
        time.sleep(0.1)


def barrier(tmp_path, nth):
    folder = tmp_path / ("barrier-%d" % nth)
    folder.mkdir()
    env = {"FLOWPROJECT_TEST_WRITE_BARRIER": "%s:%d" % (folder, nth)}
    return env, folder / ("write-%d.waiting" % nth), folder / ("write-%d.go" % nth)


def read_state(flow_runner):
    path = os.path.join(
        flow_runner.workdir, ".metaflow", FLOW, "sensor_state", "testproject", BRANCH + ".json"
    )
    with open(path) as f:
        return json.load(f)


def run_ids_in_history(flow_runner):
    return [h["run"].split("/")[-1] for h in read_state(flow_runner)["history"]]


def test_interleaved_runs_publish_once_and_keep_every_history_entry(
    flow_runner, s3_client, bucket, webhook, tmp_path
):
    flow_runner.write_config(s3_config(bucket, "events/", "files_metadata"))
    s3_client.put_object(Bucket=bucket, Key="events/a.csv", Body=b"a")

    # 1. Run A decides "first check" and pauses before claiming the change (its first state
    #    write). Run B, started later, announces the same value meanwhile. Today A publishes
    #    it again when it resumes.
    env, waiting, go = barrier(tmp_path, 1)
    run_a = start_run(flow_runner, env)
    wait_for(waiting, run_a)
    code_b, run_b, out_b = finish(start_run(flow_runner))
    assert code_b == 0, out_b[-3000:]
    assert len(webhook.events) == 1
    go.touch()
    code_a, run_a_id, out_a = finish(run_a)
    assert code_a == 0, out_a[-3000:]
    assert "announced this value while this run was checking" in out_a, out_a[-3000:]
    assert len(webhook.events) == 1, [e["payload"]["run_id"] for e in webhook.events]
    assert webhook.events[0]["payload"]["run_id"] == run_b
    state = read_state(flow_runner)
    assert state["baseline"]["run"] == "%s/%s" % (FLOW, run_b)
    assert sorted(run_ids_in_history(flow_runner)) == sorted([run_a_id, run_b])
    assert "claim" not in state

    # 2. The data changes. Run C publishes it and pauses before committing (its second state
    #    write: after the claim and the publish). Run D checks meanwhile: C's claim tells it
    #    the change is being announced, so it publishes nothing and records its check. C's
    #    commit then loses the compare-and-swap, re-reads and succeeds: D's history write does
    #    not fail the announcing run, and no entry is lost.
    s3_client.put_object(Bucket=bucket, Key="events/b.csv", Body=b"b")
    env, waiting, go = barrier(tmp_path, 2)
    run_c = start_run(flow_runner, env)
    wait_for(waiting, run_c)
    assert len(webhook.events) == 2
    code_d, run_d, out_d = finish(start_run(flow_runner))
    assert code_d == 0, out_d[-3000:]
    assert "is announcing this change" in out_d, out_d[-3000:]
    go.touch()
    code_c, run_c_id, out_c = finish(run_c)
    assert code_c == 0, out_c[-3000:]
    assert len(webhook.events) == 2
    assert webhook.events[1]["payload"]["run_id"] == run_c_id
    state = read_state(flow_runner)
    assert state["baseline"]["run"] == "%s/%s" % (FLOW, run_c_id)
    assert sorted(run_ids_in_history(flow_runner)) == sorted([run_a_id, run_b, run_c_id, run_d])
    assert "claim" not in state


def test_runs_started_together_publish_once(flow_runner, s3_client, bucket, webhook):
    flow_runner.write_config(s3_config(bucket, "events/", "files_metadata"))
    s3_client.put_object(Bucket=bucket, Key="events/a.csv", Body=b"a")

    runs = [start_run(flow_runner), start_run(flow_runner)]
    results = [finish(run) for run in runs]
    for code, _run_id, out in results:
        assert code == 0, out[-3000:]
    assert len(webhook.events) == 1, [e["payload"]["run_id"] for e in webhook.events]
    assert sorted(run_ids_in_history(flow_runner)) == sorted(r[1] for r in results)
    kinds = sorted(h["kind"] for h in read_state(flow_runner)["history"])
    assert kinds in (["concurrent", "first"], ["first", "unchanged"]), kinds
