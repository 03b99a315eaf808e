"""The baseline knows what it is the baseline of (issue 9, promises 6 to 8), end to end.

Real ``sensorflow.py run``s against loopback S3 and a loopback webhook; the tests assert on the
events the webhook received, exit codes, the log and the card.
"""

import base64
import glob
import json
import os
import re

import pytest
from conftest import accept_current_value, s3_config, use_loopback_s3

from flowproject.state import check_state_document
from flowproject.testing import check_once

# Every test reads the card, or needs it drawn (a chart that once crashed).
pytestmark = [pytest.mark.e2e, pytest.mark.cards]


def check(flow_runner, webhook, **kwargs):
    """Run the sensor once; return (events it published, its output). The run must succeed."""
    before = len(webhook.events)
    result = flow_runner.run(**kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return webhook.events[before:], result.stdout + result.stderr


def newest_card(flow_runner):
    """The data of the newest card (Metaflow embeds it as base64 JSON), as text."""
    cards = glob.glob(
        os.path.join(flow_runner.workdir, ".metaflow", "mf.cards", "**", "*.html"), recursive=True
    )
    assert cards
    with open(max(cards, key=os.path.getmtime), encoding="utf-8") as f:
        html = f.read()
    (data,) = re.findall(r'window\.__MF_DATA__\["[^"]+"\] = "([A-Za-z0-9+/=]+)"', html)
    return base64.b64decode(data).decode("utf-8")


def state_file(flow_runner):
    return os.path.join(
        flow_runner.workdir,
        ".metaflow",
        "SensorFlow",
        "sensor_state",
        "testproject",
        "user.tester.json",
    )


def test_editing_the_key_starts_a_new_baseline_and_says_why(
    flow_runner, webhook, s3_client, bucket, monkeypatch
):
    """The key edited twice: under on_first_check = "publish", then under "accept".

    A first check as such (announced, or accepted without an event) and the checks after it:
    test_s3_e2e.py and test_sensor_logic.py; here only what an edit adds."""
    for key in ("events/", "events-v2/", "events-v3/"):
        s3_client.put_object(Bucket=bucket, Key=key + "a.csv", Body=b"a")

    def config(key, on_first_check):
        option = 'on_first_check = "%s"' % on_first_check
        return s3_config(bucket, key, "files_metadata", extra_sensor=option)

    # The baseline of events/, set as `flowproject reset --to-current` does, in this process
    # (the flow's own decision, and the source's identity stored with it): a first run
    # announcing it would only be set-up, never examined.
    use_loopback_s3(monkeypatch, flow_runner.env["AWS_ENDPOINT_URL_S3"])
    with open(flow_runner.write_config(config("events/", "publish"))) as f:
        accept_current_value(flow_runner.workdir, f.read(), "user.tester")

    # Edited under "publish": a first check of the new source, announced, compared with nothing.
    flow_runner.write_config(config("events-v2/", "publish"))
    (event,), output = check(flow_runner, webhook)
    assert "the watched source changed from key='events/' to key='events-v2/'" in output
    assert "the watched source changed from key=" in newest_card(flow_runner)
    assert event["payload"]["previous_value"] == ""
    # The value of what events-v2/ holds now (not events/'s: the two objects' last-modified
    # times may fall in different seconds).
    observation, _, _ = check_once(s3_config(bucket, "events-v2/", "files_metadata"))
    assert event["payload"]["data_version"] == observation.value

    # Edited again, under "accept": the message names events-v2/, so the announcing run stored
    # the new source as its baseline's; the next one is accepted without an event.
    flow_runner.write_config(config("events-v3/", "accept"))
    moved, output = check(flow_runner, webhook)
    assert "the watched source changed from key='events-v2/' to key='events-v3/'" in output
    assert "the watched source changed from key=" in newest_card(flow_runner)
    assert moved == [] and "accepted as the baseline without an event" in output


def test_a_typo_in_the_key_publishes_nothing_and_warns(flow_runner, webhook, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="events/a.csv", Body=b"a")
    flow_runner.write_config(
        s3_config(bucket, "evnets/", "files_metadata", extra_sensor='on_first_check = "accept"')
    )
    result = flow_runner.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert webhook.events == [] and webhook.rejected == 0
    warning = "the first check found the source absent: no objects under s3://%s/evnets/" % bucket
    assert warning in result.stdout
    assert "no objects under s3://%s/evnets/" % bucket in newest_card(flow_runner)
    # Absent is the baseline, so the data appearing is a change, even under "accept": the
    # flow's decision in
    # test_baseline.py::test_first_check_finding_nothing_publishes_nothing_and_warns[accept],
    # and a flow announcing an absent source appearing in test_s3_e2e.py's
    # test_single_object_absent_to_present_is_one_event_and_card_turned_off.


def test_state_with_wrong_types_is_recovered_and_never_crashes(
    flow_runner, webhook, s3_client, bucket
):
    s3_client.put_object(Bucket=bucket, Key="events/a.csv", Body=b"a")
    # The first run's card is not read: only the run that reads the damaged state draws one.
    flow_runner.write_config(
        s3_config(bucket, "events/", "files_metadata", extra_sensor="card = false")
    )
    (first,), _ = check(flow_runner, webhook)
    flow_runner.write_config(s3_config(bucket, "events/", "files_metadata"))

    with open(state_file(flow_runner)) as f:
        doc = json.load(f)
    doc["history"] = "not a list"  # the card's chart crashed on this, after publishing
    doc["baseline"]["value"] = 5
    with open(state_file(flow_runner), "w") as f:
        json.dump(doc, f)
    s3_client.put_object(Bucket=bucket, Key="events/b.csv", Body=b"b")

    (changed,), output = check(flow_runner, webhook)
    assert "is unreadable (wrong shape, baseline.value: expected string or null)" in output
    assert "recovered the baseline from run SensorFlow/" in output
    assert changed["payload"]["previous_value"] == first["payload"]["data_version"]

    # The announcing run wrote the state object whole again: of the right shape, as the next
    # check reads it (a well-formed state read: every other e2e test).
    with open(state_file(flow_runner)) as f:
        doc = json.load(f)
    check_state_document(doc)
    assert isinstance(doc["history"], list)
    assert doc["baseline"]["value"] == changed["payload"]["data_version"]
