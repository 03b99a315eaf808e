"""S3 check modes against a loopback moto server: source state in, comparable value out."""

import time

import pytest
from botocore.stub import Stubber
from conftest import use_loopback_s3

from flowproject import SourceError
from flowproject.sources import s3


@pytest.fixture(autouse=True)
def s3_endpoint(s3_server, monkeypatch):
    use_loopback_s3(monkeypatch, s3_server.endpoint_url)


def data_for(bucket, key, mode, **extra):
    table = {"type": "s3", "bucket": "s3://" + bucket, "key": key, "check_mode": mode}
    table.update(extra)
    assert s3.validate(table) == []
    return s3.normalize(table)


def check(data):
    with s3.open_session(data) as session:
        observation = s3.check(data, session)
    if isinstance(observation.detail, str):
        import os

        os.unlink(observation.detail)
    return observation


def put(client, bucket, key, body):
    client.put_object(Bucket=bucket, Key=key, Body=body)


# ----------------------------------------------------------------------- files_metadata


def test_files_metadata_sees_nested_new_files_deletions_and_overwrites(s3_client, bucket):
    put(s3_client, bucket, "events/dt=2026-01-01/part-0.parquet", b"aaaa")
    put(s3_client, bucket, "events/dt=2026-01-01/part-1.parquet", b"bbbb")
    data = data_for(bucket, "events/", "files_metadata")

    first = check(data)
    assert first.value.startswith("sha256:")
    assert first.summary["objects"] == 2 and first.summary["bytes"] == 8
    assert check(data).value == first.value  # unchanged source, same value

    put(
        s3_client, bucket, "events/dt=2026-01-01/part-2.parquet", b"cccc"
    )  # inside an existing folder
    added = check(data)
    assert added.value != first.value and added.summary["objects"] == 3

    s3_client.delete_object(Bucket=bucket, Key="events/dt=2026-01-01/part-2.parquet")
    deleted = check(data)
    assert deleted.value == first.value  # back to exactly the first state

    put(s3_client, bucket, "events/dt=2026-01-01/part-0.parquet", b"zzzz")  # same size, new content
    overwritten = check(data)
    assert overwritten.value not in (first.value, added.value)
    assert overwritten.summary["bytes"] == 8


def test_files_metadata_prefix_does_not_match_sibling_folders(s3_client, bucket):
    put(s3_client, bucket, "events/a.csv", b"1")
    data = data_for(bucket, "events", "files_metadata")  # no trailing slash in the config
    before = check(data)
    put(s3_client, bucket, "events_old/b.csv", b"2")
    assert check(data).value == before.value


def test_files_metadata_empty_prefix_is_absent_then_present(s3_client, bucket):
    data = data_for(bucket, "incoming/", "files_metadata")
    empty = check(data)
    assert empty.value is None and empty.absent and empty.summary["objects"] == 0
    put(s3_client, bucket, "incoming/x.json", b"{}")
    assert check(data).value is not None


def test_files_metadata_include_exclude_filters(s3_client, bucket):
    put(s3_client, bucket, "out/dt=1/part-0.parquet", b"p")
    data = data_for(bucket, "out/", "files_metadata", include=["*.parquet"], exclude=["_SUCCESS"])
    before = check(data)
    assert before.summary["objects"] == 1
    put(s3_client, bucket, "out/dt=1/_SUCCESS", b"")
    put(s3_client, bucket, "out/dt=1/notes.txt", b"ignored")
    assert check(data).value == before.value
    put(s3_client, bucket, "out/dt=2/part-0.parquet", b"q")
    assert check(data).summary["objects"] == 2


def test_files_metadata_listing_detail_has_one_line_per_object(s3_client, bucket):
    for i in range(3):
        put(s3_client, bucket, "d/f%d" % i, b"x" * i)
    data = data_for(bucket, "d/", "files_metadata")
    with s3.open_session(data) as session:
        observation = s3.check(data, session)
    with open(observation.detail) as f:
        lines = f.read().splitlines()
    import os

    os.unlink(observation.detail)
    assert [line.split("\t")[:2] for line in lines] == [["f0", "0"], ["f1", "1"], ["f2", "2"]]


@pytest.mark.parametrize(
    "key, include, exclude, expected",
    [
        ("dt=1/part-0.parquet", ["*.parquet"], [], True),
        ("dt=1/_SUCCESS", [], ["_SUCCESS"], False),
        ("dt=1/tmp.parquet", ["*.parquet"], ["tmp.*"], False),
        ("dt=1/a.csv", ["dt=1/*"], [], True),
        ("dt=2/a.csv", ["dt=1/*"], [], False),
    ],
)
def test_key_matches(key, include, exclude, expected):
    assert s3.key_matches(key, include, exclude) is expected


# ----------------------------------------------------------------------- one object


def test_file_size_absent_present_and_size_changes(s3_client, bucket):
    data = data_for(bucket, "model/input.csv", "file_size")
    assert check(data).value is None
    put(s3_client, bucket, "model/input.csv", b"12345")
    assert check(data).value == "5"
    put(s3_client, bucket, "model/input.csv", b"abcde")  # same size: file_size cannot see it
    assert check(data).value == "5"
    put(s3_client, bucket, "model/input.csv", b"123456")
    assert check(data).value == "6"
    s3_client.delete_object(Bucket=bucket, Key="model/input.csv")
    assert check(data).value is None


def test_etag_sees_same_size_overwrites(s3_client, bucket):
    data = data_for(bucket, "model/input.csv", "etag")
    assert check(data).absent
    put(s3_client, bucket, "model/input.csv", b"12345")
    first = check(data).value
    put(s3_client, bucket, "model/input.csv", b"abcde")
    second = check(data).value
    assert first and second and first != second
    assert '"' not in second


def test_file_modified_ts_changes_on_rewrite(s3_client, bucket):
    data = data_for(bucket, "model/input.csv", "file_modified_ts")
    put(s3_client, bucket, "model/input.csv", b"12345")
    first = check(data).value
    assert first[:4].isdigit() and "T" in first  # ISO-8601
    time.sleep(1.1)  # S3's Last-Modified has one-second resolution
    put(s3_client, bucket, "model/input.csv", b"12345")
    assert check(data).value > first


# ----------------------------------------------------------------------- errors


def test_missing_bucket_is_a_clear_error():
    for mode, key in (("files_metadata", "events/"), ("file_size", "a.csv")):
        data = data_for("no-such-bucket-here", key, mode)
        with pytest.raises(SourceError) as info:
            check(data)
        assert "Bucket 's3://no-such-bucket-here' does not exist" in str(info.value)


def test_access_denied_is_a_clear_error(bucket):
    data = data_for(bucket, "a.csv", "etag")
    with s3.open_session(data) as session:
        stubber = Stubber(session.client)
        stubber.add_client_error(
            "head_object", service_error_code="AccessDenied", http_status_code=403
        )
        with stubber, pytest.raises(SourceError) as info:
            s3.check(data, session)
    assert str(info.value).startswith("Access denied to s3://%s/a.csv" % bucket)


def test_session_records_what_was_checked(s3_client, bucket):
    put(s3_client, bucket, "a.csv", b"1")
    data = data_for(bucket, "a.csv", "etag")
    with s3.open_session(data) as session:
        s3.check(data, session)
    assert [r["request"] for r in session.requests] == ["HeadObject"]
    assert session.requests[0]["found"] is True


def test_metaflow_endpoint_variable_is_honoured(monkeypatch, s3_server, s3_client, bucket):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("METAFLOW_S3_ENDPOINT_URL", s3_server.endpoint_url)
    put(s3_client, bucket, "a.csv", b"123")
    assert check(data_for(bucket, "a.csv", "file_size")).value == "3"


def test_files_metadata_every_listing_change_is_one_announcement(s3_client, bucket):
    """Moved from test_s3_e2e.py (the flow's own decision, without running the flow): a
    nested add, a delete and a same-size overwrite each announce once, with the previous
    announced value; an unchanged listing announces nothing."""
    from conftest import s3_config

    from flowproject.testing import check_once

    config = s3_config(bucket, "events/", "files_metadata")
    put(s3_client, bucket, "events/dt=2026-01-01/part-0.parquet", b"rows-0")
    first_obs, first, state = check_once(config)
    assert first.publish and first.previous_value is None
    assert first_obs.value.startswith("sha256:")
    for _ in range(2):
        _, unchanged, state = check_once(config, state)
        assert (unchanged.kind, unchanged.publish) == ("unchanged", False)
    values = [first_obs.value]
    changes = [
        lambda: put(s3_client, bucket, "events/dt=2026-01-01/part-1.parquet", b"rows-1"),
        lambda: s3_client.delete_object(Bucket=bucket, Key="events/dt=2026-01-01/part-0.parquet"),
        lambda: put(s3_client, bucket, "events/dt=2026-01-01/part-1.parquet", b"rows-9"),
    ]
    for change in changes:
        change()
        observation, decision, state = check_once(config, state)
        assert decision.publish and decision.previous_value == values[-1]
        assert observation.value not in values
        values.append(observation.value)
    _, unchanged, state = check_once(config, state)
    assert not unchanged.publish


def test_etag_object_unchanged_then_same_size_rewrite(s3_client, bucket):
    """Moved from test_s3_e2e.py: after the object appeared and was announced, an unchanged
    check announces nothing and a same-size rewrite announces once, with the old etag as its
    previous value."""
    from conftest import s3_config

    from flowproject.testing import check_once

    config = s3_config(bucket, "features/latest.parquet", "etag")
    _, absent, state = check_once(config)
    assert not absent.publish
    put(s3_client, bucket, "features/latest.parquet", b"v1")
    etag = s3_client.head_object(Bucket=bucket, Key="features/latest.parquet")["ETag"].strip('"')
    appeared_obs, appeared, state = check_once(config, state)
    assert appeared.publish and appeared_obs.value == etag
    _, unchanged, state = check_once(config, state)
    assert not unchanged.publish
    put(s3_client, bucket, "features/latest.parquet", b"v2")
    rewritten_obs, rewritten, state = check_once(config, state)
    assert rewritten.publish and rewritten.previous_value == etag
    assert rewritten_obs.value != etag


def test_check_once_walks_a_sensor_through_checks_without_metaflow(s3_client, bucket):
    from conftest import s3_config

    from flowproject.testing import check_once

    config = s3_config(bucket, "events/", "files_metadata", extra_sensor="settle_checks = 1")
    put(s3_client, bucket, "events/a.csv", b"1")
    _, first, state = check_once(config)
    assert (first.kind, first.publish) == ("settling", False)
    announced, settled, state = check_once(config, state)
    assert (settled.kind, settled.publish) == ("first", True)
    _, unchanged, state = check_once(config, state)
    assert (unchanged.kind, unchanged.publish) == ("unchanged", False)
    put(s3_client, bucket, "events/b.csv", b"2")
    _, settling, state = check_once(config, state)
    assert settling.kind == "settling" and settling.previous_value == announced.value
    latest, changed, state = check_once(config, state)
    assert changed.publish and changed.previous_value == announced.value
    assert state.baseline.value == latest.value != announced.value
