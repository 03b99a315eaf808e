"""Delivery guarantees of SensorFlow, proven with real flow runs against loopback servers.

Each flow run costs a few seconds, so each test tells one story over several checks:

- at-least-once: a failing webhook (HTTP 500) fails the run and leaves the baseline; the
  first check after recovery publishes the change exactly once; another @project branch
  neither reads nor moves the user branch's baseline;
- recovery: a corrupt state object is rebuilt from the announcing run's artifacts (no
  spurious event; a deleted one: test_recovery_e2e.py); force re-publishes with the same
  change id; dry-run publishes and writes nothing;
- settling: a new value is announced only after ``settle_checks`` further unchanged checks,
  and the pending state is on the card.

Other failures of the webhook (refused, hanging, redirecting) are ``publish()``'s, tested
fast in test_publish.py; the flow turns each into a failed run the same way as the 500 here.
"""

import base64
import glob
import json
import os
import re

import pytest
from conftest import s3_config

pytestmark = [pytest.mark.e2e, pytest.mark.cards]

FLOW = "SensorFlow"
USER_BRANCH = "user.tester"


# ------------------------------------------------------------------------------ helpers


def put(s3_client, bucket, key, body=b"x"):
    s3_client.put_object(Bucket=bucket, Key=key, Body=body)


def check(flow_runner, *args, ok=True, **kwargs):
    """Run one check; assert its exit status; return (run id, stdout + stderr)."""
    proc = flow_runner.run(*args, **kwargs)
    out = proc.stdout + proc.stderr
    if ok:
        assert proc.returncode == 0, out[-4000:]
    else:
        assert proc.returncode != 0, out[-4000:]
    match = re.search(r"run-id (\d+)", out)
    assert match, out[-2000:]
    return match.group(1), out


def metaflow_root(flow_runner):
    return os.path.join(flow_runner.workdir, ".metaflow")


def state_file(flow_runner, branch=USER_BRANCH, project="testproject"):
    return os.path.join(metaflow_root(flow_runner), FLOW, "sensor_state", project, branch + ".json")


def read_state(flow_runner, branch=USER_BRANCH):
    with open(state_file(flow_runner, branch)) as f:
        return json.load(f)


def card_data(flow_runner, run_id):
    """The JSON the sensor card of ``run_id`` renders, read from the local datastore."""
    pattern = os.path.join(
        metaflow_root(flow_runner),
        "mf.cards",
        FLOW,
        "runs",
        run_id,
        "steps",
        "announce_change",
        "tasks",
        "*",
        "cards",
        "blank-sensor-*.html",
    )
    paths = glob.glob(pattern)
    assert len(paths) == 1, "expected one sensor card for run %s, found %s" % (run_id, paths)
    with open(paths[0]) as f:
        html = f.read()
    match = re.search(r'__MF_DATA__\["[^"]+"\] = "([^"]+)"', html)
    assert match, "no card data in %s" % paths[0]
    return base64.b64decode(match.group(1)).decode("utf-8")


def cards_of(flow_runner, run_id):
    """Every card file ``run_id`` stored, whatever its step."""
    pattern = os.path.join(
        metaflow_root(flow_runner), "mf.cards", FLOW, "runs", run_id, "**", "*.html"
    )
    return glob.glob(pattern, recursive=True)


def steps_run(flow_runner, run_id):
    """The steps ``run_id`` ran (local metadata)."""
    folder = os.path.join(metaflow_root(flow_runner), FLOW, run_id)
    return sorted(name for name in os.listdir(folder) if not name.startswith("_"))


def has_artifact(flow_runner, run_id, step, name):
    """Whether ``run_id`` stored artifact ``name`` in ``step`` (local metadata)."""
    pattern = os.path.join(
        metaflow_root(flow_runner), FLOW, run_id, step, "*", "_meta", "0_artifact_%s.json" % name
    )
    return bool(glob.glob(pattern))


def payloads(webhook, branch=USER_BRANCH):
    return [e["payload"] for e in webhook.events if e["payload"].get("branch") == branch]


# ------------------------------------------------------------------------------ tests


def test_at_least_once_and_branch_isolation(flow_runner, s3_client, bucket, webhook):
    # A failing publish is retried until publish_timeout: keep the failing checks short.
    # The first run draws no card (an announcing run's card: steps 3 and 4 read theirs).
    flow_runner.write_config(
        s3_config(
            bucket, "events/", "files_metadata", extra_sensor="publish_timeout = 1\ncard = false"
        )
    )
    put(s3_client, bucket, "events/a.csv")
    put(s3_client, bucket, "events/b.csv")

    # 1. First check announces the first value; its listing is stored with it.
    run1, _ = check(flow_runner)
    assert len(payloads(webhook)) == 1
    first = payloads(webhook)[0]
    assert first["previous_value"] == "" and first["data_version"].startswith("sha256:")
    assert has_artifact(flow_runner, run1, "start", "listing")
    assert read_state(flow_runner)["baseline"]["run"] == "%s/%s" % (FLOW, run1)

    # 2. Unchanged: nothing published, no listing stored, and the check succeeds. It goes
    #    straight from start to end: no card (though cards are on from here), only its entry
    #    in the state's history.
    flow_runner.write_config(
        s3_config(bucket, "events/", "files_metadata", extra_sensor="publish_timeout = 1")
    )
    run2, out = check(flow_runner)
    assert len(webhook.events) == 1
    assert "unchanged since the last announcement" in out
    assert not has_artifact(flow_runner, run2, "start", "listing")
    assert not has_artifact(flow_runner, run2, "start", "changes")
    assert steps_run(flow_runner, run2) == ["end", "start"]
    assert cards_of(flow_runner, run2) == []
    history = read_state(flow_runner)["history"]
    assert [h["kind"] for h in history] == ["first", "unchanged"]
    assert history[-1]["run"] == "%s/%s" % (FLOW, run2)

    # 3. A change while the webhook answers HTTP 500: the run fails within the configured
    #    publish_timeout, the baseline stays, the failed check is in the history.
    put(s3_client, bucket, "events/c.csv")
    webhook.fail_with = 500
    run3, out = check(flow_runner, ok=False)
    assert "Could not publish" in out and "500" in out
    assert "publish_timeout = 1 s" in out
    assert webhook.rejected >= 1 and len(webhook.events) == 1
    assert read_state(flow_runner)["baseline"]["run"] == "%s/%s" % (FLOW, run1)
    history = read_state(flow_runner)["history"]
    assert history[-1]["run"] == "%s/%s" % (FLOW, run3) and history[-1]["failed"] is True
    #    The failed publish is on the announcing step's card; the run fails in end.
    card = card_data(flow_runner, run3)
    assert "Publish failed" in card and "Could not publish" in card
    assert "Event not published" in out and "/end/" in out.split("Event not published")[0]

    # 4. Back up: the next check publishes the change exactly once, against the old baseline.
    webhook.fail_with = None
    run4, out = check(flow_runner)
    assert len(webhook.events) == 2
    second = payloads(webhook)[1]
    assert second["previous_value"] == first["data_version"]
    assert second["data_version"] != first["data_version"]
    card = card_data(flow_runner, run4)
    assert "Sensor check: Published" in card
    assert "1 added, 0 removed, 0 modified" in card and "c.csv" in card
    assert "a.csv" not in card.split("Objects changed")[1].split("vegaChart")[0]

    # 5. Another change, first seen by a run on another branch: that branch announces it
    #    under its own name and state... (No card is read from here on: none is drawn.)
    flow_runner.write_config(
        s3_config(
            bucket, "events/", "files_metadata", extra_sensor="publish_timeout = 1\ncard = false"
        )
    )
    put(s3_client, bucket, "events/d.csv")
    check(flow_runner, top_args=("--branch", "feature_x"))
    branch_events = payloads(webhook, "test.feature_x")
    assert len(branch_events) == 1 and branch_events[0]["previous_value"] == ""
    assert webhook.events[-1]["name"] == "mfns.testproject.test.feature_x.data_updated"
    assert read_state(flow_runner)["baseline"]["run"] == "%s/%s" % (FLOW, run4)
    assert os.path.exists(state_file(flow_runner, "test.feature_x"))

    # 6. ...and the user branch still sees it as a change from its own baseline (run 4).
    check(flow_runner)
    third = payloads(webhook)[2]
    assert len(payloads(webhook)) == 3
    assert third["previous_value"] == second["data_version"]
    assert third["data_version"] == branch_events[0]["data_version"]
    # Same value, another branch: another change id.
    assert third["change_id"] != branch_events[0]["change_id"]
    assert len(webhook.events) == 4  # 3 user-branch events + 1 feature_x event


def test_state_recovery_dry_run_and_force(flow_runner, s3_client, bucket, webhook):
    # Only the forced and the dry run's cards are read: the first run draws none.
    flow_runner.write_config(
        s3_config(bucket, "model/weights.bin", "etag", extra_sensor="card = false")
    )
    put(s3_client, bucket, "model/weights.bin", b"v1")

    run1, _ = check(flow_runner)
    assert len(webhook.events) == 1
    announced = webhook.events[0]["payload"]
    flow_runner.write_config(s3_config(bucket, "model/weights.bin", "etag"))

    # A corrupt state object: the baseline is recovered from run 1's artifacts, and said so.
    # (A deleted one, the same: test_recovery_e2e.py, with the message in test_sensor_logic.py.)
    with open(state_file(flow_runner), "w") as f:
        f.write("{not json")
    _, out = check(flow_runner)
    assert "unreadable" in out and "recovered the baseline from run %s/%s" % (FLOW, run1) in out
    assert len(webhook.events) == 1
    assert read_state(flow_runner)["baseline"]["run"] == "%s/%s" % (FLOW, run1)

    # A forced re-publish of the announced value carries its change id.
    run3, out = check(flow_runner, "--force-trigger", "True")
    assert len(webhook.events) == 2
    forced = webhook.events[1]["payload"]
    assert forced["change_id"] == announced["change_id"]
    assert forced["data_version"] == announced["data_version"]
    assert "forced by --force-trigger" in card_data(flow_runner, run3)

    # Dry run over a change: reported, nothing published, nothing written.
    put(s3_client, bucket, "model/weights.bin", b"v2")
    with open(state_file(flow_runner), "rb") as f:
        before = f.read()
    run4, out = check(flow_runner, "--dry-run", "True")
    assert "Dry run: would publish" in out
    assert len(webhook.events) == 2
    with open(state_file(flow_runner), "rb") as f:
        assert f.read() == before
    assert "Would publish (dry run)" in card_data(flow_runner, run4)


def test_settle_checks_hold_a_new_value_back_until_a_further_check(
    flow_runner, s3_client, bucket, webhook
):
    # Settling restarting when the value moves again, and unchanged checks after the
    # announcement: test_sensor_logic.py (settle tests) and test_s3_source.py::
    # test_check_once_walks_a_sensor_through_checks_without_metaflow, on the flow's decision.
    flow_runner.write_config(
        s3_config(bucket, "events/", "files_metadata", extra_sensor="settle_checks = 1")
    )
    put(s3_client, bucket, "events/part-0.parquet")
    put(s3_client, bucket, "events/part-1.parquet")

    # Seen once: pending, shown on the card, not announced.
    run1, _ = check(flow_runner)
    assert webhook.events == []
    card = card_data(flow_runner, run1)
    assert "Settling, not announced yet" in card and "Pending change" in card
    assert read_state(flow_runner)["pending"]["seen"] == 0
    assert not has_artifact(flow_runner, run1, "start", "listing")

    # Unchanged for one further check: announced.
    run2, _ = check(flow_runner)
    assert len(webhook.events) == 1
    assert read_state(flow_runner)["pending"] is None
    assert "2 added" in card_data(flow_runner, run2)
    assert len(read_state(flow_runner)["history"]) == 2
