"""Recoverable by construction (issue 18): a lost state object never causes an event.

What a source's next check depends on (baseline, identity, cursor, settling count) is written
as its state object and kept as the ``sensor_records`` artifact of the step that wrote it, so
the real SensorFlow rebuilds each source from the newest run that recorded it, whatever
happened to its other sources or to ``end``. Each test deletes a state object and asserts on
the events a recording webhook received.
"""

import json
import os
import textwrap

import pytest
from conftest import accept_current_value, client_data, s3_config, use_loopback_s3
from test_iceberg_source import catalog  # noqa: F401 (fixture)
from test_s3_faults import faulty_proxy, proxy  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e


def state_file(runner, project, source=None, branch="user.tester"):
    folder = os.path.join(runner.workdir, ".metaflow", "SensorFlow", "sensor_state", project)
    if source is None:
        return os.path.join(folder, "%s.json" % branch)
    return os.path.join(folder, branch, "%s.json" % source)


def run_sensor(runner, webhook, ok=True, **kwargs):
    """Run the sensor once: ``(output, [payloads published])``."""
    before = len(webhook.events)
    result = runner.run(**kwargs)
    out = result.stdout + result.stderr
    assert (result.returncode == 0) == ok, out
    return out, [event["payload"] for event in webhook.events[before:]]


# ------------------------------------------------------------------ many sources, one fails


def two_prefixes(good_bucket, flaky_bucket):
    return textwrap.dedent(
        """\
        project_name = "recovery"
        [sensor]
        cron_schedule = "*/5 * * * *"
        [sources.good]
        type = "s3"
        bucket = "s3://%s"
        key = "good/"
        check_mode = "files_metadata"
        event_name = "good_updated"
        payload_key = "good_version"
        [sources.flaky]
        type = "s3"
        bucket = "s3://%s"
        key = "flaky/"
        check_mode = "files_metadata"
        event_name = "flaky_updated"
        payload_key = "flaky_version"
        """
    ) % (good_bucket, flaky_bucket)


@pytest.fixture
def proxied_runner(flow_runner, proxy):
    flow_runner.env["AWS_ENDPOINT_URL_S3"] = proxy.endpoint_url
    return flow_runner


def test_a_source_announced_in_a_run_where_another_failed_is_recovered(
    proxied_runner, webhook, proxy, s3_client, bucket
):
    runner = proxied_runner
    flaky = bucket + "-flaky"
    s3_client.create_bucket(Bucket=flaky)
    s3_client.put_object(Bucket=bucket, Key="good/a.csv", Body=b"a")
    s3_client.put_object(Bucket=flaky, Key="flaky/a.csv", Body=b"a")
    runner.write_config(two_prefixes(bucket, flaky))

    # `good` publishes while `flaky` is denied: `end` fails the run.
    proxy.deny(flaky)
    out, published = run_sensor(runner, webhook, ok=False)
    assert [p["source"] for p in published] == ["good"]
    assert "1 of 2 sources failed" in out

    # good.json is lost: rebuilt from that run's announcing step, so no event for `good`.
    os.unlink(state_file(runner, "recovery", "good"))
    proxy.allow(flaky)
    out, published = run_sensor(runner, webhook)
    assert [p["source"] for p in published] == ["flaky"]
    assert "good: unchanged since the last announcement" in out
    assert "recovered the baseline from run SensorFlow/" in out
    # That a quiet check (as `good`'s here) records its state too, for a later loss to be
    # rebuilt from: the records asserted in the next test.


def test_a_failed_publish_is_not_taken_for_an_announcement_and_every_check_records_its_state(
    flow_runner, webhook, s3_client, bucket
):
    """A failed publish is recorded, not taken for a baseline by recovery; and every check that
    writes the state (announcing, unchanged) records it in the step that wrote it."""
    flow_runner.write_config(
        s3_config(
            bucket,
            "events/",
            "files_metadata",
            project="recovery",
            extra_sensor="publish_timeout = 2",
        )
    )
    s3_client.put_object(Bucket=bucket, Key="events/a.csv", Body=b"a")
    webhook.fail_events = {"mfns.recovery.user.tester.data_updated": 400}
    _, published = run_sensor(flow_runner, webhook, ok=False)
    assert published == []

    # The failed attempt is recorded (history), not a baseline: after losing the state
    # object, the change is still to announce, exactly once.
    os.unlink(state_file(flow_runner, "recovery"))
    webhook.fail_events = {}
    _, published = run_sensor(flow_runner, webhook)
    assert len(published) == 1 and published[0]["previous_value"] == ""
    _, published = run_sensor(flow_runner, webhook)  # unchanged: recorded by start
    assert published == []

    # What the two newest runs (announcing, then unchanged) recorded, step by step.
    unchanged, announced = client_data(
        flow_runner,
        "[{s.id: sorted((s.task['sensor_records'].data or {})) "
        "for s in r if 'sensor_records' in s.task} for r in list(Flow('SensorFlow').runs())[:2]]",
    )
    assert unchanged == {"start": ["default"], "end": ["default"]}
    assert announced["announce_change"] == ["default"]
    with open(state_file(flow_runner, "recovery")) as f:
        stored = json.load(f)
    assert stored["baseline"]["run"].startswith("SensorFlow/")


# ------------------------------------------------------------------ table sources' cursors


deltalake = pytest.importorskip("deltalake")


def test_delta_state_lost_after_log_cleanup_publishes_nothing(
    flow_runner, webhook, s3_server, s3_client, bucket, monkeypatch
):
    from test_delta_source import Table, config_text

    table = Table(s3_server, "s3://%s/tables/events" % bucket)
    table.write([1, 2, 3])  # version 0: the data
    config = flow_runner.write_config(config_text(table.uri))
    table_id = table.open().metadata().id
    # The baseline, version 0, set as `flowproject reset --to-current` does, in this process:
    # a flow's first check of a Delta table announcing version 0 is test_delta_e2e.py::
    # test_sensorflow_announces_data_versions_and_skips_compaction; what recovery rebuilds
    # from here is the next run's record.
    use_loopback_s3(monkeypatch, s3_server.endpoint_url)
    with open(config) as f:
        accepted = accept_current_value(flow_runner.workdir, f.read(), "user.tester")
    assert accepted.baseline.value == "0@%s" % table_id

    # Versions 1-12 change no data (table properties); a checkpoint at 10; the next check
    # continues from its cursor and announces nothing.
    for n in range(1, 13):
        table.open().alter.set_table_properties({"delta.checkpointInterval": str(100 + n)})
        if n == 10:
            table.open().create_checkpoint()
    _, published = run_sensor(flow_runner, webhook)
    assert published == []

    # Log cleanup removes commits 0-9, then the state object is lost.
    for n in range(10):
        s3_client.delete_object(Bucket=bucket, Key="tables/events/_delta_log/%020d.json" % n)
    os.unlink(state_file(flow_runner, "lake"))
    out, published = run_sensor(flow_runner, webhook)
    assert published == [], out
    assert "unchanged since the last announcement: 0@%s" % table_id in out


def test_iceberg_state_lost_after_a_compaction_publishes_nothing(
    catalog, flow_runner, webhook, s3_client, bucket
):
    import pyarrow as pa
    from test_iceberg_source import config_text, new_table, write_replace_snapshot

    table = new_table(catalog)
    table.append(pa.table({"a": [1]}))
    appended = table.current_snapshot().snapshot_id
    flow_runner.write_config(config_text(location=table.location()))
    env = {k: v for k, v in os.environ.items() if k.startswith(("PYICEBERG_", "AWS_"))}
    _, (first,) = run_sensor(flow_runner, webhook, env=env)
    assert first["data_version"] == str(appended)

    write_replace_snapshot(s3_client, bucket, table)  # a compaction: same data
    os.unlink(state_file(flow_runner, "lake"))
    out, published = run_sensor(flow_runner, webhook, env=env)
    assert published == [], out
    assert "unchanged since the last announcement: %d" % appended in out


# ------------------------------------------------------------------ a backlog past the timeout


TIMEOUT, LATENCY, BACKLOG = 4, 0.5, 110


def test_a_delta_backlog_longer_than_source_timeout_clears_over_a_few_runs(
    proxied_runner, webhook, proxy, s3_client, bucket, monkeypatch
):
    from test_delta_backlog import TABLE_ID, last_data_change, write_commits

    flow_runner = proxied_runner
    write_commits(s3_client, bucket, [0])
    config = flow_runner.write_config(
        textwrap.dedent(
            """\
            project_name = "lake"
            [sensor]
            cron_schedule = "*/5 * * * *"
            source_timeout = %d
            [sources.events]
            type = "delta"
            uri = "s3://%s/tables/events"
            event_name = "table_updated"
            payload_key = "data_version"
            """
        )
        % (TIMEOUT, bucket)
    )
    # The baseline, version 0, set as `flowproject reset --to-current` does, in this process
    # (a flow's first check of a Delta table announcing version 0:
    # test_delta_e2e.py::test_sensorflow_announces_data_versions_and_skips_compaction).
    use_loopback_s3(monkeypatch, proxy.endpoint_url)
    with open(config) as f:
        baseline = accept_current_value(flow_runner.workdir, f.read(), "user.tester", "events")
    assert baseline.baseline.value == "0@%s" % TABLE_ID

    # 110 new commits behind a store that answers each request after 0.5 s: a check lists the
    # log (one request), then reads at most 16 commits at a time (delta.READ_CONCURRENCY) until
    # 0.6 s before its 4 s are up (the deadline's margins), so at most 16 * 2.9 / 0.5 < 93 of
    # them, on any machine; the backlog takes at least two runs (on a busy 2-core machine,
    # two: 64 commits, then 46). The 4 s leave a check's first 16 commits, read whatever the
    # time, time enough to finish before source_timeout.
    write_commits(s3_client, bucket, range(1, BACKLOG + 1), workers=16)
    proxy.latency = LATENCY
    outcomes = []
    for _ in range(12):
        result = flow_runner.run()
        out = result.stdout + result.stderr
        published = [e["payload"] for e in webhook.events]
        if published:
            break
        assert result.returncode != 0, out
        assert "events: check incomplete: " in out and "next check continues" in out, out
        outcomes.append(out)
    else:
        pytest.fail("the backlog did not clear in 12 runs")
    assert len(outcomes) >= 1  # at least one run ran out of time and kept its progress
    newest = "%d@%s" % (last_data_change(BACKLOG), TABLE_ID)
    assert [p["data_version"] for p in published] == [newest]
    assert published[0]["previous_value"] == baseline.baseline.value
