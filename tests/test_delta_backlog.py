"""Delta source: a backlog of commits is read across checks that run out of time (issue 18).

The logs are what a writer appending and compacting leaves, written straight to the store.
The 1,500-commit backlog is held by ``LogStore``, an in-process stand-in for the session's
S3 client with a fixed latency per GET (moto answers ~100 GETs a second on this machine, so
one read of the backlog would take 15 s); a smaller backlog on the loopback moto server checks
the same through real requests.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import use_loopback_s3

# The log a writer appending and compacting leaves: the benchmark's, so both read one log.
from bench.delta_backlog_bench import TABLE_ID, changes_data, commit_text
from flowproject.exceptions import SourceIncomplete
from flowproject.sources import delta

BACKLOG = 1500


@pytest.fixture(autouse=True)
def s3_endpoint(s3_server, monkeypatch):
    use_loopback_s3(monkeypatch, s3_server.endpoint_url)


def write_commits(client, bucket, versions, workers=8):
    def put(version):
        key = "tables/events/_delta_log/" + delta.commit_name(version)
        client.put_object(Bucket=bucket, Key=key, Body=commit_text(version).encode())

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, versions))


class LogStore(object):
    """The S3 calls the Delta check makes (ListObjectsV2, GetObject) on objects in memory,
    each GET taking ``latency`` seconds (a sleep: concurrent GETs overlap, as on a network)."""

    def __init__(self, bucket, latency=0.002):
        import threading

        self.bucket, self.latency, self.objects = bucket, latency, {}
        self.lock, self.in_flight, self.most_in_flight = threading.Lock(), 0, 0

    def put_object(self, Bucket, Key, Body):
        self.objects[Key] = Body

    def list_objects_v2(
        self, Bucket, Prefix, MaxKeys=1000, Delimiter=None, StartAfter=None, ContinuationToken=None
    ):
        after = ContinuationToken or StartAfter or ""
        keys = sorted(k for k in self.objects if k.startswith(Prefix) and k > after)
        contents, folders = [], []
        for key in keys:
            rest = key[len(Prefix) :]
            if Delimiter and Delimiter in rest:
                folder = Prefix + rest.split(Delimiter, 1)[0] + Delimiter
                if folder not in folders:
                    folders.append(folder)
                continue
            contents.append({"Key": key, "ETag": '"%d"' % len(self.objects[key]), "Size": 1})
            if len(contents) == MaxKeys:
                break
        truncated = len(contents) == MaxKeys and contents[-1]["Key"] != keys[-1]
        page = {"IsTruncated": truncated, "KeyCount": len(contents), "Contents": contents}
        if Delimiter:
            page["CommonPrefixes"] = [{"Prefix": f} for f in folders]
            page["KeyCount"] += len(folders)
        if truncated:
            page["NextContinuationToken"] = contents[-1]["Key"]
        return page

    def get_object(self, Bucket, Key):
        import io

        from botocore.exceptions import ClientError

        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.latency)
        with self.lock:
            self.in_flight -= 1
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}

    def close(self):
        pass


def check(uri, cursor=None, deadline=None, client=None, **data):
    """``(observation or SourceIncomplete, versions of the commits read)``."""
    data = dict(delta.normalize({"type": "delta", "uri": uri}), **data)
    with delta.open_session(data) as session:
        session.deadline = deadline
        if client is not None:
            session.client = client
        try:
            outcome = delta.check(data, session, cursor)
        except SourceIncomplete as e:
            outcome = e
    read = {
        int(r["key"][:20])
        for r in session.requests
        if r.get("found") and r["key"].endswith(".json")
    }
    return outcome, read


def last_data_change(upto):
    return max(v for v in range(upto + 1) if changes_data(v))


def until_done(uri, cursor, seconds, client=None, backlog=BACKLOG):
    """Check from ``cursor`` with ``seconds`` each until a check completes, as the flow does
    (feeding back each SourceIncomplete's cursor); ``(observation, checks)``."""
    checks = 0
    while True:
        checks += 1
        before = cursor["version"] if cursor else -1
        outcome, read = check(uri, cursor, time.monotonic() + seconds, client)
        if not isinstance(outcome, SourceIncomplete):
            return outcome, checks
        cursor = outcome.cursor
        # Contiguous progress: every version up to the cursor's was read.
        assert cursor["version"] > before and set(range(before + 1, cursor["version"] + 1)) <= read
        assert cursor["data_version"] == last_data_change(cursor["version"])
        # Each check reads one batch at least: a bounded number of checks.
        assert checks <= backlog // delta.READ_CONCURRENCY + 1


def backlog_survives_time_outs(uri, bucket, client, backlog, seconds):
    """A cursor at version 0, then ``backlog`` new commits read with a close deadline."""
    write_commits(client, bucket, [0])
    first, _ = check(uri, client=client)
    assert first.value == "0@%s" % TABLE_ID
    write_commits(client, bucket, range(1, backlog + 1))

    # A deadline already close: the check reads one batch and says how far it got.
    incomplete, read = check(uri, first.cursor, time.monotonic() + 0.05, client)
    assert isinstance(incomplete, SourceIncomplete)
    cursor = incomplete.cursor
    assert 0 < cursor["version"] < backlog and set(range(1, cursor["version"] + 1)) <= read
    assert cursor["data_version"] == last_data_change(cursor["version"])
    assert "Read the commits of s3://%s/tables/events/_delta_log/ up to version %d of %d" % (
        bucket,
        cursor["version"],
        backlog,
    ) in str(incomplete)
    assert "the next check continues from version %d" % cursor["version"] in str(incomplete)

    done, checks = until_done(uri, cursor, seconds, client, backlog)
    uninterrupted, _ = check(uri, first.cursor, client=client)
    assert done.value == uninterrupted.value == "%d@%s" % (last_data_change(backlog), TABLE_ID)
    assert done.cursor["version"] == backlog and done.summary == uninterrupted.summary

    # Without a cursor (no checkpoint: the log from version 0) the same.
    fresh, _ = until_done(uri, None, seconds, client, backlog)
    assert fresh.value == uninterrupted.value and fresh.summary == uninterrupted.summary
    return checks


def test_backlog_of_1500_commits_survives_time_outs():
    bucket = "backlog"
    checks = backlog_survives_time_outs(
        "s3://%s/tables/events" % bucket, bucket, LogStore(bucket), BACKLOG, seconds=0.3
    )
    assert checks > 1  # the deadline did interrupt reading


def test_backlog_on_loopback_s3_survives_time_outs(s3_client, bucket):
    backlog_survives_time_outs(
        "s3://%s/tables/events" % bucket, bucket, s3_client, backlog=120, seconds=0.7
    )


def test_no_deadline_reads_everything_at_once():
    store = LogStore("backlog")
    write_commits(store, "backlog", range(0, 100))
    observation, read = check("s3://backlog/tables/events", client=store)
    assert observation.value == "%d@%s" % (last_data_change(99), TABLE_ID)
    assert read == set(range(100))
    assert [c["version"] for c in observation.summary["commits"]] == list(range(50, 100))


@pytest.mark.parametrize("bound, most", [(None, delta.READ_CONCURRENCY), (2, 2)])
def test_readers_stay_within_the_bound(bound, most):
    store = LogStore("backlog", latency=0.01)
    write_commits(store, "backlog", range(0, 200))
    extra = {} if bound is None else {"list_concurrency": bound}
    observation, read = check("s3://backlog/tables/events", client=store, **extra)
    assert observation.value == "%d@%s" % (last_data_change(199), TABLE_ID)
    assert 1 < store.most_in_flight <= most


def test_a_manifest_reads_its_commits_as_the_check_does_many_at_once():
    """The announcing run lists the data files of every commit since the last announcement:
    one GET at a time, a backlog of 300 commits on a store 50 ms away would take 15 s."""
    from flowproject.changes import delta_commit_records, delta_range_records

    store = LogStore("backlog", latency=0.01)
    write_commits(store, "backlog", range(0, 300))
    data = delta.normalize({"type": "delta", "uri": "s3://backlog/tables/events"})
    with delta.open_session(data) as session:
        session.client = store
        records, complete = delta_range_records(session, data, 9, 299)
        assert 1 < store.most_in_flight <= 2 * delta.READ_CONCURRENCY
        expected = [r for v in range(10, 300) for r in delta_commit_records(commit_text(v), v)]
        assert complete and records == expected
        assert {r["version"] for r in records} == {v for v in range(10, 300) if changes_data(v)}
        # A commit cleaned from the log: the range cannot be listed.
        del store.objects["tables/events/_delta_log/" + delta.commit_name(150)]
        assert delta_range_records(session, data, 9, 299) == ([], False)
