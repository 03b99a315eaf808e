"""S3 clients of many checks in one process (issue 12: one run checks many sources): made from
one shared session, per AWS environment, safely from several threads, with a role assumed per
client."""

import os
import threading

import pytest
from conftest import use_loopback_s3

from flowproject.sources import s3


@pytest.fixture(autouse=True)
def s3_endpoint(s3_server, monkeypatch):
    use_loopback_s3(monkeypatch, s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3_server.endpoint_url)


def access_key(client):
    return client._request_signer._credentials.get_frozen_credentials().access_key


def test_clients_of_one_process_share_the_loaded_service_models():
    # A session of its own per client would load botocore's models again (~0.1 s of CPU each).
    first, second = s3.make_client(), s3.make_client()
    assert first is not second
    assert first._loader is second._loader


def test_a_changed_aws_environment_is_read_by_the_next_client(monkeypatch):
    assert access_key(s3.make_client()) == "testing"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "other-key")
    assert access_key(s3.make_client()) == "other-key"


def test_a_role_is_assumed_for_its_client_only(s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="events/a.parquet", Body=b"x")
    role = "arn:aws:iam::123456789012:role/reader"
    assumed = s3.make_client(role)
    assert access_key(assumed) != "testing"  # STS's temporary credentials
    listed = assumed.list_objects_v2(Bucket=bucket, Prefix="events/")
    assert [o["Key"] for o in listed["Contents"]] == ["events/a.parquet"]
    assert access_key(s3.make_client()) == "testing"  # the shared session kept its own


def test_checks_in_many_threads_each_see_their_own_prefix(s3_client, bucket):
    for i in range(8):
        for j in range(i + 1):
            s3_client.put_object(Bucket=bucket, Key="p%d/obj-%d" % (i, j), Body=b"x")
    counts, errors = {}, []

    def check(i):
        data = s3.normalize(
            {"type": "s3", "bucket": "s3://" + bucket, "key": "p%d/" % i}
            | {"check_mode": "files_metadata"}
        )
        try:
            with s3.open_session(data) as session:
                observation = s3.check(data, session)
            os.unlink(observation.detail)
            counts[i] = observation.summary["objects"]
        except Exception as e:  # reported below, with the thread's prefix
            errors.append((i, e))

    threads = [threading.Thread(target=check, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert counts == {i: i + 1 for i in range(8)}
