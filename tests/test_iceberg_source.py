"""Iceberg source against tables written by ``pyiceberg`` (a SQL catalog on sqlite, the only
catalog testable offline) with their data and metadata on loopback S3.

Checks go through ``testing.check_once`` (source, decision and state with the cursor, as
consecutive flow runs), so "an event" is a decision to publish.
"""

import json
import textwrap
import uuid

import pytest

from flowproject.config import FlowConfigError, parse_flowconfig
from flowproject.sensor import SensorState
from flowproject.sources import iceberg
from flowproject.testing import check_once

pa = pytest.importorskip("pyarrow")
pytest.importorskip("pyiceberg")

CATALOG = "lake"


@pytest.fixture
def catalog(s3_server, bucket, tmp_path, monkeypatch):
    """A pyiceberg SQL catalog named ``lake``, configured the way a user would: with
    ``PYICEBERG_CATALOG__LAKE__*`` environment variables, never in flowconfig.toml."""
    import pyiceberg.catalog
    from pyiceberg.catalog import load_catalog
    from pyiceberg.utils.config import Config

    for name, value in {
        "AWS_ENDPOINT_URL_S3": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYICEBERG_HOME": str(tmp_path),  # no ~/.pyiceberg.yaml of the machine
        "PYICEBERG_CATALOG__LAKE__TYPE": "sql",
        "PYICEBERG_CATALOG__LAKE__URI": "sqlite:///%s" % (tmp_path / "catalog.db"),
        "PYICEBERG_CATALOG__LAKE__WAREHOUSE": "s3://%s/warehouse" % bucket,
        "PYICEBERG_CATALOG__LAKE__S3__ENDPOINT": s3_server.endpoint_url,
        "PYICEBERG_CATALOG__LAKE__S3__ACCESS_KEY_ID": "testing",
        "PYICEBERG_CATALOG__LAKE__S3__SECRET_ACCESS_KEY": "testing-secret",
        "PYICEBERG_CATALOG__LAKE__S3__REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    # pyiceberg reads its configuration once, when imported; a flow run is a new process.
    monkeypatch.setattr(pyiceberg.catalog, "_ENV_CONFIG", Config())
    lake = load_catalog(CATALOG)
    lake.create_namespace("db")
    return lake


def config_text(**data):
    lines = "\n".join("%s = %s" % (k, json.dumps(v)) for k, v in data.items())
    return textwrap.dedent(
        """\
        project_name = "lake"
        [data]
        type = "iceberg"
        %s
        [sensor]
        cron_schedule = "*/5 * * * *"
        event_name = "table_updated"
        payload_key = "data_version"
        """
    ) % lines.replace("\n", "\n        ")


class Sensor(object):
    """Checks one table as consecutive flow runs would, keeping the state between them."""

    def __init__(self, **data):
        self.config = parse_flowconfig(config_text(**data))
        self.state = SensorState()

    def check(self):
        observation, decision, self.state = check_once(self.config, self.state)
        return observation, decision


def new_table(catalog, name="db.events"):
    return catalog.create_table(name, schema=pa.schema([("a", pa.int64())]))


def test_append_overwrite_delete_announce_and_unchanged_checks_do_not(catalog):
    table = new_table(catalog)
    sensor = Sensor(table="db.events", catalog=CATALOG)
    empty, decided = sensor.check()
    assert empty.absent and not decided.publish  # created, no snapshot yet

    table.append(pa.table({"a": [1, 2, 3]}))
    appended, decided = sensor.check()
    assert decided.publish and appended.value == str(table.current_snapshot().snapshot_id)
    assert appended.summary["payload"]["table_id"] == str(table.metadata.table_uuid)
    for _ in range(2):
        again, decided = sensor.check()
        assert not decided.publish and again.value == appended.value

    table.overwrite(pa.table({"a": [7]}))
    overwritten, decided = sensor.check()
    assert decided.publish and overwritten.value == str(table.current_snapshot().snapshot_id)

    table.delete("a = 7")
    deleted, decided = sensor.check()
    assert decided.publish and deleted.summary["current_operation"] == "delete"
    assert not sensor.check()[1].publish


def test_missing_table_is_absent_and_a_recreated_table_announced(catalog):
    sensor = Sensor(table="db.events", catalog=CATALOG)
    missing, decided = sensor.check()
    assert missing.absent and "no Iceberg table db.events" in decided.warning
    new_table(catalog).append(pa.table({"a": [1]}))
    first, decided = sensor.check()
    assert decided.publish
    catalog.drop_table("db.events")
    new_table(catalog).append(pa.table({"a": [1]}))
    second, decided = sensor.check()
    assert decided.publish and second.value != first.value
    assert second.summary["table_id"] != first.summary["table_id"]


def test_catalog_errors_never_show_its_secrets(catalog, monkeypatch):
    import pyiceberg.catalog
    from pyiceberg.utils.config import Config

    monkeypatch.setenv("PYICEBERG_CATALOG__LAKE__URI", "sqlite:////nonexistent/hunter2/x.db")
    monkeypatch.setattr(pyiceberg.catalog, "_ENV_CONFIG", Config())
    data = parse_flowconfig(config_text(table="db.events", catalog=CATALOG))["data"]
    with pytest.raises(Exception) as raised:
        with iceberg.open_session(data) as session:
            iceberg.check(data, session)
    assert "testing" not in str(raised.value) and "testing-secret" not in str(raised.value)
    assert "catalog 'lake'" in str(raised.value)
    # A database URL's credentials are scrubbed from any message quoting it.
    text = iceberg.scrub(ValueError("postgresql://u:hunter2@db/x failed"), ["testing-secret"])
    assert text == "ValueError: postgresql://[redacted]@db/x failed"


# ------------------------------------------------------------------ location, replace fixture


def write_replace_snapshot(s3_client, bucket, table):
    """Commit a ``replace`` snapshot by hand, since pyiceberg 0.12 cannot write one.

    The table's newest metadata file is copied to the next version number with one more
    snapshot: operation ``replace`` (what compaction writes: the same rows in new files),
    parent the current snapshot, which it becomes. Its manifest list is the parent's (the
    data is the same), which is all a reader of the metadata needs.
    """
    key = table.metadata_location.split("://", 1)[1].partition("/")[2]
    doc = json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    parent = next(s for s in doc["snapshots"] if s["snapshot-id"] == doc["current-snapshot-id"])
    snapshot_id = parent["snapshot-id"] + 1
    doc["snapshots"].append(
        dict(
            parent,
            **{
                "snapshot-id": snapshot_id,
                "parent-snapshot-id": parent["snapshot-id"],
                "sequence-number": doc["last-sequence-number"] + 1,
                "timestamp-ms": parent["timestamp-ms"] + 1,
                "summary": {"operation": "replace", "added-data-files": "1"},
            },
        )
    )
    doc["last-sequence-number"] += 1
    doc["current-snapshot-id"] = snapshot_id
    doc["refs"] = {"main": {"snapshot-id": snapshot_id, "type": "branch"}}
    folder, name = key.rsplit("/", 1)
    number = int(name.split("-", 1)[0]) + 1
    new_key = "%s/%05d-%s.metadata.json" % (folder, number, uuid.uuid4())
    s3_client.put_object(Bucket=bucket, Key=new_key, Body=json.dumps(doc).encode())
    return snapshot_id


def test_location_replace_alone_is_not_announced_but_append_then_replace_is(
    catalog, s3_client, bucket
):
    table = new_table(catalog)
    table.append(pa.table({"a": [1]}))
    location = table.location()
    sensor = Sensor(location=location)
    first, decided = sensor.check()
    assert decided.publish and first.value == str(table.current_snapshot().snapshot_id)

    replace_id = write_replace_snapshot(s3_client, bucket, table)
    compacted, decided = sensor.check()
    assert compacted.summary["latest_version"] == replace_id
    assert compacted.summary["current_operation"] == "replace"
    assert not decided.publish and compacted.value == first.value

    # The catalog does not know the fixture's snapshot: its append's parent is the first one,
    # and the next fixture puts a replace on top of that append.
    table = catalog.load_table("db.events")
    table.append(pa.table({"a": [2]}))
    table = catalog.load_table("db.events")
    append_id = table.current_snapshot().snapshot_id
    replace_id = write_replace_snapshot(s3_client, bucket, table)
    after, decided = sensor.check()
    # The value is the append's: the snapshot that changed data (the replace holds its data).
    assert decided.publish and after.value == str(append_id)
    assert after.summary["latest_version"] == replace_id
    assert [c["operation"] for c in after.summary["commits"][-2:]] == ["append", "replace"]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"table": "db.events"}, "data.catalog: missing"),
        ({"catalog": "lake"}, "data: set either table (with catalog) or location, found neither"),
        (
            {"location": "s3://bucket/t/metadata/00001-a.metadata.json"},
            "data.location: a single metadata file never changes",
        ),
        ({"table": "events", "catalog": "lake"}, "data.table: expected 'namespace.table'"),
        (
            {"table": "db.events", "catalog": "lake", "token": "abc"},
            "data.token: secrets never go in flowconfig.toml",
        ),
    ],
)
def test_invalid_config_names_the_key(data, message):
    with pytest.raises(FlowConfigError) as raised:
        parse_flowconfig(config_text(**data))
    assert message in str(raised.value)
    assert "abc" not in str(raised.value)
