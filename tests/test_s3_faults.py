"""A listing page that is not a well-formed ListObjectsV2 answer is an error, never the last page.

Real boto3 over HTTP through ``FaultyS3Proxy``, which spoils chosen answers of the loopback moto
server the way a misbehaving S3-compatible store or proxy does (with a 200 status).
"""

import os

import pytest
from configs import local_metaflow_home
from conftest import REPO, FlowRunner, accept_current_value, s3_config, use_loopback_s3

from flowproject.exceptions import SourceError
from flowproject.sources import s3
from flowproject.testing import FaultyS3Proxy, sensor_env

# A prefix whose listing, with a small PAGE_SIZE, takes several pages and every path of the
# concurrent listing: first page, delimiter pages, sub-prefixes listed on their own.
KEYS = (
    ["events/a.csv", "events/b.csv"]
    + ["events/p=%d/part-%d.parquet" % (i % 3, i) for i in range(9)]
    + ["events/z.csv", "other/x.csv"]
)


@pytest.fixture(scope="module")
def faulty_proxy(moto_server):
    with FaultyS3Proxy(moto_server.endpoint_url) as running:
        yield running


@pytest.fixture
def proxy(faulty_proxy, s3_server):
    """The proxy, forwarding every answer unchanged, in front of an emptied S3 server."""
    faulty_proxy.clear()
    return faulty_proxy


@pytest.fixture
def through_proxy(proxy, monkeypatch):
    use_loopback_s3(monkeypatch, proxy.endpoint_url)
    return proxy


def put(client, bucket, keys):
    for i, key in enumerate(keys):
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * (i % 5))


def check_prefix(bucket, key="events/", **extra):
    data = {"type": "s3", "bucket": "s3://" + bucket, "key": key, "check_mode": "files_metadata"}
    data.update(extra)
    data = s3.normalize(data)
    with s3.open_session(data) as session:
        observation = s3.check(data, session)
    os.unlink(observation.detail)
    return observation


@pytest.mark.parametrize(
    "fault, expected",
    [
        ("empty_body", "an empty body (HTTP 200 without a ListObjectsV2 result)"),
        ("no_is_truncated", "an answer without IsTruncated"),
        ("no_key_count", "an answer without KeyCount"),
        ("wrong_key_count", "KeyCount 4, but the page holds 3 objects"),
        ("truncated_without_token", "a truncated page without a NextContinuationToken"),
    ],
)
def test_each_malformed_page_is_a_source_error(through_proxy, s3_client, bucket, fault, expected):
    put(s3_client, bucket, ["events/a.csv", "events/b.csv", "events/c.csv"])
    through_proxy.inject(fault)
    with pytest.raises(SourceError) as raised:
        check_prefix(bucket, list_concurrency=1)
    assert through_proxy.spoiled == 1
    message = str(raised.value)
    assert message.startswith("S3 answered the listing of s3://%s/events/ with " % bucket)
    assert expected in message, message
    assert "the baseline is kept" in message


def test_key_count_with_a_delimiter_counts_common_prefixes(through_proxy, s3_client, bucket):
    put(s3_client, bucket, KEYS)
    data = s3.normalize(
        {"type": "s3", "bucket": "s3://" + bucket, "key": "events/", "check_mode": "etag"}
    )
    with s3.open_session(data) as session:
        page = s3._list_page(session, data, Prefix="events/", Delimiter="/")
        assert s3.page_problem(page, "/") is None  # 3 objects + 3 common prefixes
        through_proxy.inject("wrong_key_count")
        with pytest.raises(SourceError, match="KeyCount 7, but the page holds 3 objects and 3 "):
            s3._list_page(session, data, Prefix="events/", Delimiter="/")


def test_an_answer_that_is_not_xml_is_retried_then_an_error(through_proxy, s3_client, bucket):
    put(s3_client, bucket, ["events/a.csv"])
    through_proxy.inject("cut_body")
    assert check_prefix(bucket).summary["objects"] == 1  # botocore retried the request
    through_proxy.inject("cut_body", times=None)
    with pytest.raises(SourceError, match="while listing s3://%s/events/" % bucket):
        check_prefix(bucket)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_every_page_of_every_listing_path_is_checked(
    through_proxy, s3_client, bucket, monkeypatch, concurrency
):
    monkeypatch.setattr(s3, "PAGE_SIZE", 2)
    put(s3_client, bucket, KEYS)
    healthy = check_prefix(bucket, list_concurrency=concurrency)
    assert healthy.summary["objects"] == len(KEYS) - 1
    requests = through_proxy.listings
    assert requests >= 5
    if concurrency > 1:
        assert healthy.summary["pages"] == requests  # sub-prefixes were listed on their own
    faults = ["empty_body", "wrong_key_count", "truncated_without_token", "no_is_truncated"]
    for nth in range(1, requests + 1):
        fault = faults[nth % len(faults)]
        through_proxy.inject(fault, nth=nth)
        with pytest.raises(SourceError, match="not a well-formed ListObjectsV2 page"):
            check_prefix(bucket, list_concurrency=concurrency)
        assert through_proxy.spoiled == 1, "listing %d of %d was not spoiled" % (nth, requests)
    through_proxy.clear()
    assert check_prefix(bucket, list_concurrency=concurrency).value == healthy.value


@pytest.mark.e2e
def test_malformed_page_fails_the_run_and_the_next_healthy_run_publishes_nothing(
    tmp_path, through_proxy, webhook, s3_client, bucket
):
    proxy = through_proxy
    put(s3_client, bucket, ["events/a.csv", "events/b.csv", "events/c.csv"])
    env = sensor_env(
        proxy.endpoint_url,
        webhook.url,
        local_metaflow_home(tmp_path / "metaflow-home"),
        user="t",
        workdir=str(tmp_path),
    )
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    runner = FlowRunner(tmp_path, env)
    config = runner.write_config(s3_config(bucket, "events/", "files_metadata"))
    # The baseline: the three objects (a flow's first check announcing it: test_s3_e2e.py).
    with open(config) as f:
        assert accept_current_value(tmp_path, f.read(), "user.t").baseline.value

    # Today's failure: an empty 200 read as "no objects", a spurious event, then one back.
    proxy.inject("empty_body")
    spoiled = runner.run()
    output = spoiled.stdout + spoiled.stderr
    assert proxy.spoiled == 1
    assert spoiled.returncode != 0
    assert "Data source check failed" in output, output
    assert "S3 answered the listing of s3://%s/events/ with an empty body" % bucket in output
    assert webhook.events == [] and webhook.rejected == 0

    healthy = runner.run()
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "unchanged since the last announcement" in healthy.stdout + healthy.stderr
    assert webhook.events == []


@pytest.mark.parametrize("mode, header", [("etag", "ETag"), ("file_modified_ts", "Last-Modified")])
def test_a_head_answer_without_the_compared_header_is_a_source_error(
    through_proxy, s3_client, bucket, mode, header
):
    s3_client.put_object(Bucket=bucket, Key="model/latest.bin", Body=b"weights")
    data = s3.normalize(
        {"type": "s3", "bucket": "s3://" + bucket, "key": "model/latest.bin", "check_mode": mode}
    )
    with s3.open_session(data) as session:
        healthy = s3.check(data, session)
    assert healthy.value and not healthy.absent
    through_proxy.head_without = {header}
    with s3.open_session(data) as session:
        with pytest.raises(SourceError, match="answered without a %s header" % header):
            s3.check(data, session)
    # The other mode's header may be missing: only the compared one matters.
    other = "file_size"
    data = dict(data, check_mode=other)
    with s3.open_session(data) as session:
        assert s3.check(data, session).value == "7"
