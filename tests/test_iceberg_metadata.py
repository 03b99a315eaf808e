"""Odd Iceberg metadata folders (issue 19 #5): which metadata file is current, by Iceberg's
own naming and ``version-hint.text`` rules, and every field read checked for its type.

The folders are built on loopback S3 from metadata files pyiceberg wrote for a real table.
"""

import gzip
import json
import uuid

import pytest
from test_iceberg_source import Sensor, catalog, new_table  # noqa: F401 (fixture)

from flowproject.exceptions import SourceError
from flowproject.sources import iceberg

pa = pytest.importorskip("pyarrow")
pytest.importorskip("pyiceberg")

FOLDER = "odd/events"


@pytest.fixture
def docs(catalog, s3_client, bucket):
    """The metadata documents pyiceberg wrote after each of three appends, oldest first."""
    table = new_table(catalog)
    found = []
    for rows in ([1], [2], [3]):
        table.append(pa.table({"a": rows}))
        key = table.metadata_location.split("://", 1)[1].partition("/")[2]
        found.append(json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()))
    return found


class Folder(object):
    """A table folder on loopback S3, its ``metadata/`` filled by hand."""

    def __init__(self, s3_client, bucket):
        self.client, self.bucket = s3_client, bucket
        self.sensor = Sensor(location="s3://%s/%s" % (bucket, FOLDER))

    def put(self, name, body):
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        self.client.put_object(Bucket=self.bucket, Key="%s/metadata/%s" % (FOLDER, name), Body=body)

    def where(self, name):
        return "s3://%s/%s/metadata/%s" % (self.bucket, FOLDER, name)

    def check(self):
        data = self.sensor.config["data"]
        with iceberg.open_session(data) as session:
            return iceberg.check(data, session)

    def error(self):
        with pytest.raises(SourceError) as raised:
            self.check()
        return str(raised.value)


@pytest.fixture
def folder(s3_client, bucket):
    return Folder(s3_client, bucket)


def catalog_name(version):
    return "%05d-%s.metadata.json" % (version, uuid.uuid4())


def current(doc):
    return str(doc["current-snapshot-id"])


def test_a_metadata_file_that_is_a_json_list_is_an_error_naming_it(docs, folder):
    name = catalog_name(1)
    folder.put(name, json.dumps([docs[0]]).encode())
    assert folder.error() == (
        "%s is not an Iceberg metadata file (a JSON list, not an object)" % folder.where(name)
    )


def test_bad_gzip_is_an_error_naming_the_file(docs, folder):
    name = "%05d-%s.gz.metadata.json" % (1, uuid.uuid4())
    folder.put(name, gzip.compress(json.dumps(docs[0]).encode())[:40])
    assert folder.error() == (
        "%s is not an Iceberg metadata file (not readable gzip: EOFError)" % folder.where(name)
    )


def test_gzip_metadata_is_read(docs, folder):
    folder.put(
        "%05d-%s.gz.metadata.json" % (1, uuid.uuid4()), gzip.compress(json.dumps(docs[0]).encode())
    )
    assert folder.check().value == current(docs[0])


def test_names_outside_icebergs_patterns_are_ignored(docs, folder):
    folder.put(catalog_name(1), docs[0])
    # A stray name that sorted first by its number would pin the value for good.
    folder.put("99999999999-z.metadata.json", docs[1])
    # Hadoop's temporary file before its rename, a backup copy.
    folder.put("%s.metadata.json" % uuid.uuid4(), docs[1])
    folder.put("v7-backup.metadata.json", docs[1])
    first, decided = folder.sensor.check()
    assert decided.publish and first.value == current(docs[0])
    folder.put(catalog_name(2), docs[2])
    second, decided = folder.sensor.check()
    assert decided.publish and second.value == current(docs[2])


def test_version_hint_names_the_current_version_of_a_hadoop_table(docs, folder):
    folder.put("v1.metadata.json", docs[0])
    folder.put("v2.metadata.json", docs[1])
    folder.put("v9.metadata.json", docs[2])  # left by a failed writer: not in the sequence
    folder.put("version-hint.text", b"1\n")
    # The hint may lag one commit behind its file (written after it): v2 follows v1.
    assert folder.check().value == current(docs[1])
    folder.put("version-hint.text", b"not a number")
    assert folder.check().value == current(docs[2])  # ignored, as Java does: highest v<N>


def test_version_hint_naming_a_missing_version_is_an_error(docs, folder):
    folder.put("v1.metadata.json", docs[0])
    folder.put("version-hint.text", b"4")
    assert folder.error() == (
        "metadata/version-hint.text names version 4, but there is no metadata/v4.metadata.json"
    )


def _set(path, value):
    """A change to a metadata document: ``path`` is a list of keys and indexes."""

    def change(doc):
        target = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    "change, field, found",
    [
        (_set(["current-snapshot-id"], "123"), "current-snapshot-id", "an integer, found a string"),
        (_set(["snapshots"], {"0": {}}), "snapshots", "a list, found an object"),
        (_set(["snapshots", 0], "x"), "snapshots[0]", "an object, found a string"),
        (
            _set(["snapshots", 1, "snapshot-id"], 1.5),
            "snapshots[1].snapshot-id",
            "an integer, found 1.5",
        ),
        (
            _set(["snapshots", 1, "parent-snapshot-id"], "7"),
            "snapshots[1].parent-snapshot-id",
            "an integer, found a string",
        ),
        (
            _set(["snapshots", 0, "summary"], ["append"]),
            "snapshots[0].summary",
            "an object, found a list",
        ),
        (
            _set(["snapshots", 1, "summary", "operation"], True),
            "snapshots[1].summary.operation",
            "a string, found true",
        ),
        (
            _set(["snapshots", 0, "timestamp-ms"], "yesterday"),
            "snapshots[0].timestamp-ms",
            "an integer, found a string",
        ),
        (_set(["table-uuid"], 7), "table-uuid", "a string, found 7"),
        (
            _set(["metadata-log", 0, "metadata-file"], None),
            "metadata-log[0].metadata-file",
            "a string, found null",
        ),
    ],
)
def test_a_field_of_the_wrong_type_is_an_error_naming_file_and_field(
    docs, folder, change, field, found
):
    doc = json.loads(json.dumps(docs[1]))
    change(doc)
    name = catalog_name(2)
    folder.put(name, doc)
    assert folder.error() == "%s: field %s: expected %s" % (folder.where(name), field, found)


def test_a_current_snapshot_missing_from_snapshots_is_an_error(docs, folder):
    doc = dict(docs[1], **{"current-snapshot-id": 42})
    name = catalog_name(2)
    folder.put(name, doc)
    assert folder.error() == (
        "%s: field current-snapshot-id: snapshot 42 is not in snapshots" % folder.where(name)
    )
