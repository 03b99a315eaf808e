"""Delta Lake source against tables written by the ``deltalake`` library to loopback S3.

Each check goes through ``testing.check_once`` (source, decision and state, as a flow run
does them, cursor included), so "an event" here is a decision to publish; the e2e test at the
end runs SensorFlow and asserts on what the webhook received.
"""

import textwrap

import pytest
from conftest import use_loopback_s3

from flowproject.config import FlowConfigError, parse_flowconfig
from flowproject.sensor import SensorState
from flowproject.sources import delta
from flowproject.testing import check_once

pa = pytest.importorskip("pyarrow")
deltalake = pytest.importorskip("deltalake")


@pytest.fixture(autouse=True)
def s3_endpoint(s3_server, monkeypatch):
    use_loopback_s3(monkeypatch, s3_server.endpoint_url)


def storage_options(s3_server):
    """What ``deltalake`` needs to write to the loopback S3 (moto has no locking provider,
    and the tests are the only writer)."""
    return {
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }


class Table(object):
    """A Delta table on the loopback S3, written with the real library."""

    def __init__(self, s3_server, uri):
        self.uri, self.options = uri, storage_options(s3_server)

    def write(self, values, mode="append"):
        deltalake.write_deltalake(
            self.uri, pa.table({"a": values}), mode=mode, storage_options=self.options
        )

    def open(self):
        return deltalake.DeltaTable(self.uri, storage_options=self.options)


def config_text(uri):
    return (
        textwrap.dedent(
            """\
        project_name = "lake"
        [data]
        type = "delta"
        uri = "%s"
        [sensor]
        cron_schedule = "*/5 * * * *"
        event_name = "table_updated"
        payload_key = "data_version"
        """
        )
        % uri
    )


class Sensor(object):
    """Checks one table as consecutive flow runs would, keeping the state between them."""

    def __init__(self, uri):
        self.config = parse_flowconfig(config_text(uri))
        self.state = SensorState()

    def check(self):
        observation, decision, self.state = check_once(self.config, self.state)
        return observation, decision


def requests_of_one_check(uri, cursor):
    data = parse_flowconfig(config_text(uri))["data"]
    with delta.open_session(data) as session:
        observation = delta.check(data, session, cursor)
    return observation, [r["request"] for r in session.requests]


@pytest.fixture
def table(s3_server, bucket):
    return Table(s3_server, "s3://%s/tables/events" % bucket)


def test_append_announces_the_new_version_and_unchanged_checks_cost_one_list(table):
    table.write([1, 2, 3])
    sensor = Sensor(table.uri)
    first, decided = sensor.check()
    table_id = table.open().metadata().id
    assert decided.publish and first.value == "0@%s" % table_id
    assert first.summary["payload"] == {
        "table_version": "0",
        "table_id": table_id,
        "latest_version": "0",
    }

    for _ in range(3):
        again, decided = sensor.check()
        assert not decided.publish and decided.kind == "unchanged" and again.value == first.value
    _, requests = requests_of_one_check(table.uri, sensor.state.cursor)
    assert requests == ["ListObjectsV2"]  # one LIST with StartAfter, whatever the history

    table.write([4])
    appended, decided = sensor.check()
    assert decided.publish and appended.value == "1@%s" % table_id
    assert decided.previous_value == first.value
    (commit,) = [c for c in appended.summary["commits"] if c["version"] == 1]
    assert commit["operation"] == "WRITE" and commit["rows_added"] == 1
    assert not sensor.check()[1].publish


def test_optimize_and_schema_only_commits_announce_nothing(table):
    table.write([1])
    table.write([2])
    sensor = Sensor(table.uri)
    first, _ = sensor.check()
    assert first.value.startswith("1@")

    table.open().optimize.compact()  # dataChange: false
    table.open().alter.set_table_properties({"delta.appendOnly": "false"})  # no add/remove
    after, decided = sensor.check()
    assert not decided.publish and after.value == first.value
    assert after.summary["latest_version"] == 3 and after.summary["table_version"] == 1
    # A first check of the same table (no cursor) walks back past them to the same version.
    assert Sensor(table.uri).check()[0].value == first.value


def test_overwrite_and_delete_announce(table):
    table.write([1, 2, 3])
    sensor = Sensor(table.uri)
    sensor.check()
    table.write([7, 8], mode="overwrite")
    overwritten, decided = sensor.check()
    assert decided.publish and overwritten.value.startswith("1@")
    table.open().delete("a = 7")
    deleted, decided = sensor.check()
    assert decided.publish and deleted.value.startswith("2@")
    assert deleted.summary["commits"][-1]["operation"] == "DELETE"


def test_recreated_table_announces_even_at_the_same_version(table, s3_client, bucket):
    table.write([1])
    table.write([2])
    sensor = Sensor(table.uri)
    before, _ = sensor.check()
    # Drop the table (every object under it) and create it again: versions restart at 0.
    for obj in s3_client.list_objects_v2(Bucket=bucket, Prefix="tables/events/")["Contents"]:
        s3_client.delete_object(Bucket=bucket, Key=obj["Key"])
    table.write([9])
    table.write([10])
    after, decided = sensor.check()
    assert decided.publish
    assert after.value.split("@")[0] == before.value.split("@")[0] == "1"
    assert after.summary["table_id"] != before.summary["table_id"]
    assert after.summary["table_id"] == table.open().metadata().id


def test_missing_table_is_absent_and_its_creation_announced(table):
    sensor = Sensor(table.uri)
    missing, decided = sensor.check()
    assert missing.absent and decided.kind == "absent" and not decided.publish
    assert "no Delta table at %s" % table.uri in decided.warning
    table.write([1])
    created, decided = sensor.check()
    assert decided.publish and created.value.startswith("0@")


def test_first_check_reads_from_the_checkpoint_and_ignores_other_log_files(
    table, s3_client, bucket
):
    for value in range(4):
        table.write([value])
    table.open().create_checkpoint()  # at version 3
    table.write([4])
    log = "tables/events/_delta_log/"
    # Files of the log that are neither commits nor checkpoints.
    for name in (
        "00000000000000000004.crc",
        "00000000000000000000.00000000000000000003.compacted.json",
        "_staged_commits/00000000000000000005.0f2c.json",
    ):
        s3_client.put_object(Bucket=bucket, Key=log + name, Body=b"{not json")
    # Commits before the checkpoint are not needed: clean two of them up.
    for version in (0, 1):
        s3_client.delete_object(Bucket=bucket, Key=log + "%020d.json" % version)

    observation, requests = requests_of_one_check(table.uri, None)
    assert observation.value == "4@%s" % table.open().metadata().id
    # _last_checkpoint, one LIST from the checkpoint on, commit 4, the checkpoint (table id).
    assert requests == ["GetObject", "ListObjectsV2", "GetObject", "GetObject"]
    again, requests = requests_of_one_check(table.uri, observation.cursor)
    assert again.value == observation.value and requests == ["ListObjectsV2"]


@pytest.mark.parametrize(
    "uri, message",
    [
        ("https://bucket/t", "data.uri: expected 's3://<bucket>/<path to the table>'"),
        ("s3://bucket", "data.uri: expected the path of the table inside the bucket"),
        ("s3://bucket/t/_delta_log", "data.uri: expected the table's folder, not its log"),
        ("s3://xn--bucket/t", "data.uri: 's3://xn--bucket' is not a valid S3 bucket name"),
    ],
)
def test_invalid_uri_is_named_in_the_config_error(uri, message):
    with pytest.raises(FlowConfigError) as raised:
        parse_flowconfig(config_text(uri))
    assert message in str(raised.value)


def test_unknown_key_is_named():
    text = config_text("s3://bucket/t").replace('type = "delta"', 'type = "delta"\nversion = 3')
    with pytest.raises(FlowConfigError) as raised:
        parse_flowconfig(text)
    assert "data.version" in str(raised.value)


def test_card_lists_the_commits_since_the_announced_version():
    from flowproject.cards import commit_rows, commits_since

    commits = [
        {"version": 1, "operation": "WRITE", "timestamp": 0, "data_change": True},
        {"version": 2, "operation": "OPTIMIZE", "timestamp": 0, "data_change": False},
        {"version": 3, "operation": "DELETE", "timestamp": 0, "data_change": True},
    ]
    shown = commits_since(commits, "1@abc")
    assert [c["version"] for c in shown] == [2, 3]
    assert commit_rows(shown)[0] == ["3", "DELETE", "1970-01-01T00:00:00+00:00", "yes", ""]
    assert len(commits_since(commits, None)) == 3  # nothing announced yet: all of them
    assert len(commits_since(commits, "0@abc")) == 3  # older than the commits kept


def test_step_gets_the_source_modules_packages():
    from flowproject.decorators import source_packages

    assert set(source_packages(delta)) == {"boto3", "pyarrow"}


def test_card_of_an_announcement_shows_its_commits(table):
    import json

    from flowproject.cards import render_sensor_card

    table.write([1])
    table.write([0])
    sensor = Sensor(table.uri)
    sensor.check()  # announces version 1
    table.open().optimize.compact()  # version 2
    table.write([2, 3])  # version 3
    observation, decided = sensor.check()
    card = []
    render_sensor_card(card, observation, decided, sensor.state, None, "ev", False)
    rendered = json.dumps([c.render() for c in card])
    assert "Commits since the last announcement" in rendered
    assert '["3", "WRITE"' in rendered and '"yes", "2"]' in rendered
    assert '["2", "OPTIMIZE"' in rendered and '"no", ""]' in rendered
    assert '["1", "WRITE"' not in rendered  # announced before
