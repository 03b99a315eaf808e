"""SensorFlow watching a Delta table end to end: the events the webhook received, and the
requests a check made (the ``checked`` artifact)."""

import pytest
from conftest import client_data
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


def test_sensorflow_announces_data_versions_and_skips_compaction(
    flow_runner, webhook, s3_server, bucket
):
    table = Table(s3_server, "s3://%s/tables/events" % bucket)
    table.write([1, 2, 3])
    flow_runner.write_config(config_text(table.uri))
    table_id = table.open().metadata().id

    (first,) = check(flow_runner, webhook)
    assert first["name"] == EVENT
    assert first["payload"]["table_version"] == "0"
    assert first["payload"]["table_id"] == table_id

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
