"""SensorFlow end to end against loopback S3 and a loopback webhook.

The tests assert on the events the webhook actually received.
"""

import glob
import os

import pytest
from conftest import accept_current_value, s3_config, use_loopback_s3

pytestmark = pytest.mark.e2e

EVENT = "mfns.testproject.user.tester.data_updated"


def check(flow_runner, webhook):
    """Run the sensor once; return the events it published (asserting the run succeeded)."""
    before = len(webhook.events)
    result = flow_runner.run()
    assert result.returncode == 0, result.stdout + result.stderr
    return webhook.events[before:]


def test_files_metadata_a_nested_change_is_one_event(
    flow_runner, webhook, s3_client, bucket, monkeypatch
):
    # Each kind of listing change (nested add, delete, same-size overwrite) is one event:
    # test_s3_source.py::test_files_metadata_every_listing_change_is_one_announcement, with
    # the flow's own decision (check_once). Here the real flow: a change under a partition
    # folder, one event against the baseline. A flow's first check announcing (previous_value
    # empty, a sha256 value) and its unchanged check publishing nothing (no card, no listing):
    # test_delivery.py::test_at_least_once_and_branch_isolation, steps 1 and 2; the event's
    # name from the config: test_newcomer.py.
    s3_client.put_object(Bucket=bucket, Key="events/dt=2026-01-01/part-0.parquet", Body=b"rows-0")
    config = flow_runner.write_config(s3_config(bucket, "events/", "files_metadata"))
    # The baseline, set as `flowproject reset --to-current` does, in this process.
    use_loopback_s3(monkeypatch, flow_runner.env["AWS_ENDPOINT_URL_S3"])
    with open(config) as f:
        baseline = accept_current_value(flow_runner.workdir, f.read(), "user.tester").baseline

    s3_client.put_object(Bucket=bucket, Key="events/dt=2026-01-01/part-1.parquet", Body=b"rows-1")
    (nested,) = check(flow_runner, webhook)
    assert nested["name"] == EVENT
    assert nested["payload"]["previous_value"] == baseline.value
    assert nested["payload"]["data_version"].startswith("sha256:")
    assert nested["payload"]["data_version"] != baseline.value
    assert len(webhook.events) == 1


def test_single_object_absent_to_present_is_one_event_and_card_turned_off(
    flow_runner, webhook, s3_client, bucket, monkeypatch
):
    """Absent, then present: one event; with ``card = false`` the announcing run draws no card."""
    config = flow_runner.write_config(
        s3_config(bucket, "features/latest.parquet", "etag", extra_sensor="card = false")
    )

    # Absent is the baseline (issue 9, promise 8), set here as `flowproject reset
    # --to-current` does, in this process. A first check finding nothing announcing nothing:
    # the flow's decision in test_baseline.py::test_first_check_finding_nothing_publishes_
    # nothing_and_warns (publish and accept), and a flow run making it in test_baseline_e2e.py::
    # test_a_typo_in_the_key_publishes_nothing_and_warns.
    use_loopback_s3(monkeypatch, flow_runner.env["AWS_ENDPOINT_URL_S3"])
    with open(config) as f:
        state = accept_current_value(flow_runner.workdir, f.read(), "user.tester")
    assert state.baseline.value is None  # absent

    s3_client.put_object(Bucket=bucket, Key="features/latest.parquet", Body=b"v1")
    (appeared,) = check(flow_runner, webhook)
    assert appeared["payload"]["state"] == "present"
    assert appeared["payload"]["previous_value"] == ""
    etag = s3_client.head_object(Bucket=bucket, Key="features/latest.parquet")["ETag"].strip('"')
    assert appeared["payload"]["data_version"] == etag
    # The card can be turned off: the announcing run drew none.
    cards = glob.glob(
        os.path.join(flow_runner.workdir, ".metaflow", "mf.cards", "**", "*.html"), recursive=True
    )
    assert cards == []
    # Then unchanged (no event) and a same-size rewrite (one event, previous_value = this
    # etag): test_s3_source.py::test_etag_object_unchanged_then_same_size_rewrite, with the
    # flow's own decision (check_once); the flow's path from decision to event is shown above.


def test_missing_bucket_fails_the_run_and_publishes_nothing(flow_runner, webhook):
    flow_runner.write_config(s3_config("bucket-that-does-not-exist", "events/", "files_metadata"))
    result = flow_runner.run()
    assert result.returncode != 0
    assert (
        "Bucket 's3://bucket-that-does-not-exist' does not exist" in result.stdout + result.stderr
    )
    assert webhook.events == [] and webhook.rejected == 0


def test_unset_webhook_fails_clearly(flow_runner, webhook, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="events/a.csv", Body=b"a")  # a change to publish
    flow_runner.write_config(s3_config(bucket, "events/", "files_metadata"))
    env = dict(flow_runner.env)
    del env["METAFLOW_ARGO_EVENTS_WEBHOOK_URL"]
    flow_runner.env = env
    result = flow_runner.run()
    assert result.returncode != 0
    assert "METAFLOW_ARGO_EVENTS_WEBHOOK_URL is not set" in result.stdout + result.stderr


def test_first_check_can_be_accepted_without_an_event(flow_runner, webhook, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="features/latest.parquet", Body=b"v1")
    flow_runner.write_config(
        s3_config(
            bucket, "features/latest.parquet", "etag", extra_sensor='on_first_check = "accept"'
        )
    )
    result = flow_runner.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepted as the baseline without an event" in result.stdout + result.stderr
    assert webhook.events == []
    first_etag = s3_client.head_object(Bucket=bucket, Key="features/latest.parquet")["ETag"].strip(
        '"'
    )

    # The accepted value is the baseline: the next change is announced against it. (An
    # unchanged check after it publishes nothing: the flow's decision in test_sensor_logic.py::
    # test_first_value_can_be_accepted_without_an_event.)
    s3_client.put_object(Bucket=bucket, Key="features/latest.parquet", Body=b"v2")
    (changed,) = check(flow_runner, webhook)
    assert changed["payload"]["previous_value"] == first_etag
