"""The card can never fail an announcement that already happened (issue 19 #2).

A Delta writer bug seen in the wild records ``commitInfo.timestamp`` in microseconds; the card
of the run that announced such a commit drew it as a date of the year 55840 and failed
``announce_change`` after the event was out and the baseline had moved. Through the real
SensorFlow: the run succeeds, the webhook got exactly one event, the card was written, and
``flowproject replay`` finds the run.
"""

import glob
import json
import os
import subprocess
import sys

import pytest
from test_delta_source import Table, config_text

pytestmark = [pytest.mark.e2e, pytest.mark.cards]

pytest.importorskip("deltalake")


def test_a_commit_time_in_microseconds_is_announced_and_its_card_drawn(
    flow_runner, webhook, s3_server, s3_client, bucket
):
    table = Table(s3_server, "s3://%s/tables/events" % bucket)
    table.write([1, 2, 3])
    key = "tables/events/_delta_log/%020d.json" % 0
    lines = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    actions = [json.loads(line) for line in lines]
    for action in actions:
        if "commitInfo" in action:
            action["commitInfo"]["timestamp"] *= 1000  # microseconds
    body = "\n".join(json.dumps(a) for a in actions).encode()
    s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    flow_runner.write_config(config_text(table.uri))

    result = flow_runner.run()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert len(webhook.events) == 1
    assert webhook.events[0]["payload"]["table_version"] == "0"
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
    assert webhook.events[0]["payload"]["change_id"] in replay.stdout
