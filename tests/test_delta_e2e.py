"""SensorFlow watching a Delta table end to end: the events the webhook received, the
requests a check made (the ``checked`` artifact), and the card of an announcing run."""

import glob
import json
import os
import subprocess
import sys

import pytest
from conftest import client_data, without_cards
from test_delta_source import Table, config_text

pytestmark = pytest.mark.e2e

pytest.importorskip("deltalake")

EVENT = "mfns.lake.user.tester.table_updated"


def check(flow_runner, webhook):
    before = len(webhook.events)
    result = flow_runner.run()
    assert result.returncode == 0, result.stdout + result.stderr
    return webhook.events[before:]


def last_check_requests(flow_runner):
    """The requests of the latest run's check, read with Metaflow's client."""
    checked = client_data(
        flow_runner, "Flow('SensorFlow').latest_run['start'].task['checked'].data"
    )
    return [r["request"] for r in checked["requests"]]


def in_microseconds(s3_client, bucket, key):
    """Version 0's ``commitInfo.timestamp`` rewritten in microseconds, as a Delta writer bug
    seen in the wild records it."""
    lines = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    actions = [json.loads(line) for line in lines]
    for action in actions:
        if "commitInfo" in action:
            action["commitInfo"]["timestamp"] *= 1000
    body = "\n".join(json.dumps(a) for a in actions).encode()
    s3_client.put_object(Bucket=bucket, Key=key, Body=body)


@pytest.mark.cards  # the first run's card is read
def test_sensorflow_announces_data_versions_and_skips_compaction(
    flow_runner, webhook, s3_server, s3_client, bucket
):
    table = Table(s3_server, "s3://%s/tables/events" % bucket)
    table.write([1, 2, 3])
    # The card can never fail an announcement that already happened (issue 19 #2): the card
    # of a commit time in microseconds was drawn as a date of the year 55840 and failed
    # announce_change after the event was out. The first run announces such a commit.
    in_microseconds(s3_client, bucket, "tables/events/_delta_log/%020d.json" % 0)
    flow_runner.write_config(config_text(table.uri))
    table_id = table.open().metadata().id

    (first,) = check(flow_runner, webhook)
    assert first["name"] == EVENT
    assert first["payload"]["table_version"] == "0"
    assert first["payload"]["table_id"] == table_id
    # Its card was drawn, and `flowproject replay` finds the run.
    cards = glob.glob(
        os.path.join(flow_runner.workdir, ".metaflow", "mf.cards", "**", "blank-sensor-*.html"),
        recursive=True,
    )
    assert len(cards) == 1
    replay = subprocess.run(
        [sys.executable, "-m", "flowproject", "replay", "--dry-run", "--project", "lake"],
        cwd=flow_runner.workdir,
        env=flow_runner.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert first["payload"]["change_id"] in replay.stdout
    flow_runner.write_config(without_cards(config_text(table.uri)))  # no card read below

    table.write([4])
    table.open().optimize.compact()  # version 2 changes no data
    (second,) = check(flow_runner, webhook)
    assert second["payload"]["table_version"] == "1"
    assert second["payload"]["latest_version"] == "2"
    assert second["payload"]["previous_value"] == first["payload"]["table_version"] + "@" + table_id

    assert check(flow_runner, webhook) == []
    # The cursor reached the next run through the sensor state: one LIST, no GET.
    assert last_check_requests(flow_runner) == ["ListObjectsV2"]


# The example flow reading exactly the announced version, not a later one:
# test_examples.py::test_the_table_version_example_reads_a_delta_table_on_loopback_s3.
