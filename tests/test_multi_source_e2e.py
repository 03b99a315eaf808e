"""One SensorFlow run watching three sources (two S3 prefixes, one Snowflake table), end to end.

S3 goes through ``FaultyS3Proxy`` in front of moto (to deny one bucket as S3 does), Snowflake
through fakesnow's server, events to a loopback webhook. Each run costs seconds: 10 runs here.
"""

import datetime
import decimal
import glob
import os
import textwrap

import pytest
from configs import local_metaflow_home
from conftest import REPO, FlowRunner, accept_current_value, s3_config, use_loopback_s3
from conftest_snowflake import fakesnow_server, snowflake_home, warehouse  # noqa: F401
from test_card import card_data, leaves
from test_s3_faults import faulty_proxy, proxy  # noqa: F401 (fixtures)

from flowproject.testing import sensor_env

pytestmark = pytest.mark.e2e

PREFIX = "mfns.multiproject.user.tester."


def three_sources(events_bucket, features_bucket, table, extra_sensor=""):
    return textwrap.dedent(
        """\
        project_name = "multiproject"

        [sensor]
        cron_schedule = "*/5 * * * *"
        %s

        [sources.events]
        type = "s3"
        bucket = "s3://%s"
        key = "events/"
        check_mode = "files_metadata"
        event_name = "events_updated"
        payload_key = "events_version"

        [sources.features]
        type = "s3"
        bucket = "s3://%s"
        key = "features/latest.parquet"
        check_mode = "etag"
        event_name = "features_updated"
        payload_key = "features_version"

        [sources.orders]
        type = "snowflake"
        template = "row_count"
        connection_name = "fakesnow"
        params = { table = "%s" }
        event_name = "orders_updated"
        payload_key = "orders_version"
        """
    ) % (extra_sensor, events_bucket, features_bucket, table)


@pytest.fixture
def runner(request, tmp_path, proxy, webhook, snowflake_home):
    env = sensor_env(
        proxy.endpoint_url,
        webhook.url,
        local_metaflow_home(tmp_path / "metaflow-home"),
        user="tester",
        workdir=str(tmp_path),
    )
    env = {k: v for k, v in env.items() if not k.startswith("SNOWFLAKE_")}
    env["SNOWFLAKE_HOME"] = str(snowflake_home)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return FlowRunner(tmp_path, env, cards=request.node.get_closest_marker("cards") is not None)


@pytest.fixture
def two_buckets(s3_client, bucket):
    other = bucket + "-f"
    s3_client.create_bucket(Bucket=other)
    s3_client.put_object(Bucket=bucket, Key="events/part-0.csv", Body=b"a")
    s3_client.put_object(Bucket=other, Key="features/latest.parquet", Body=b"v1")
    return bucket, other


def output(result):
    return result.stdout + result.stderr


def check(runner, webhook, ok=True):
    """Run the sensor once: ``(result, {source: payload})`` of the events it published."""
    before = len(webhook.events)
    result = runner.run()
    if ok:
        assert result.returncode == 0, output(result)
    published = {}
    for event in webhook.events[before:]:
        payload = event["payload"]
        assert event["name"] == PREFIX + "%s_updated" % payload["source"]
        assert payload["source"] not in published, "two events for %s" % payload["source"]
        published[payload["source"]] = payload
    return result, published


def newest_card_rows(runner):
    """The table rows of the newest sensor card of the runner's runs."""
    cards = glob.glob(
        os.path.join(runner.workdir, ".metaflow", "mf.cards", "**", "blank-sensor-*.html"),
        recursive=True,
    )
    with open(max(cards, key=os.path.getmtime)) as f:
        page = list(leaves(card_data(f.read())["components"]))
    return [row for c in page if c["type"] == "table" for row in c["data"]]


def insert_order(warehouse, n):
    warehouse.insert((n, "o%d" % n, decimal.Decimal("1.00"), datetime.datetime(2024, 1, n)))


def test_each_source_announces_its_own_changes_and_failing_sources_do_not_stop_the_others(
    runner, webhook, proxy, s3_client, two_buckets, warehouse
):
    """Every source announced by the first check, each under its own event; unchanged sources
    quiet; two sources failing in one run, one way each (a bucket that denies the sensor, one
    whose requests hang past source_timeout): the run fails naming both, the third source is
    announced all the same, and the next check announces the two once they work."""
    events_bucket, features_bucket = two_buckets
    insert_order(warehouse, 1)
    config = three_sources(
        events_bucket, features_bucket, warehouse.table, extra_sensor="source_timeout = 3"
    )
    # Cards off (the runner's default) but for the one run whose card is read: a card costs a
    # process per announcing run, and [sensor] card is no part of a source's state.
    runner.write_config(config)

    # The first check announces every source, each under its own event and payload key.
    _, first = check(runner, webhook)
    assert sorted(first) == ["events", "features", "orders"]
    assert first["orders"]["orders_version"] == "1"
    assert first["events"]["events_version"].startswith("sha256:")
    assert len(first["features"]["features_version"]) == 32  # the object's ETag (MD5)
    assert len({p["change_id"] for p in first.values()}) == 3
    assert "events_version" not in first["orders"]

    result, again = check(runner, webhook)
    assert again == {}
    assert output(result).count("unchanged since the last announcement") == 3

    # Every source changes while the features bucket stops allowing the sensor and the events
    # bucket stops answering (its requests are never answered): the run fails naming both,
    # and orders is announced all the same.
    s3_client.put_object(Bucket=features_bucket, Key="features/latest.parquet", Body=b"v2")
    s3_client.put_object(Bucket=events_bucket, Key="events/part-1.csv", Body=b"b")
    insert_order(warehouse, 2)
    proxy.deny(features_bucket)
    proxy.stall(events_bucket)
    runner.write_config(
        three_sources(
            events_bucket,
            features_bucket,
            warehouse.table,
            extra_sensor="source_timeout = 3\ncard = true",
        )
    )
    result, during = check(runner, webhook, ok=False)
    assert result.returncode != 0
    assert sorted(during) == ["orders"]
    assert during["orders"]["orders_version"] == "2"
    assert during["orders"]["previous_value"] == first["orders"]["orders_version"]
    assert "2 of 3 sources failed" in output(result)
    assert "features: check failed: Access denied to s3://%s/" % features_bucket in output(result)
    assert (
        "events: check failed: it did not finish within [sensor] source_timeout = 3 seconds"
        in output(result)
    )
    # The card has a row per source: what happened to it, its event, why.
    rows = {row[0]: row for row in newest_card_rows(runner) if len(row) == 4}
    assert rows["features"][1] == "failed" and "Access denied" in rows["features"][3]
    assert rows["events"][1] == "failed" and "source_timeout" in rows["events"][3]
    assert rows["orders"][1] == "published"
    assert rows["orders"][2].startswith(PREFIX + "orders_updated (id ")

    # Once both buckets work again, the next check announces exactly the sources whose change
    # was not announced, each from its own baseline; orders, announced above, stays quiet.
    runner.write_config(config)
    proxy.allow(features_bucket)
    proxy.allow(events_bucket)
    _, after = check(runner, webhook)
    assert sorted(after) == ["events", "features"]
    assert after["events"]["previous_value"] == first["events"]["events_version"]
    assert after["features"]["previous_value"] == first["features"]["features_version"]


def test_webhook_down_for_one_event_only_that_event_is_published_again_dry_run_and_force(
    runner, webhook, s3_client, two_buckets, warehouse
):
    """A dry run reports every source and moves no baseline; the webhook refusing one event
    fails the run and only that event is published again; a lost state object of one source
    is recovered (from a run another source failed); --force-trigger re-publishes every source
    with its change id."""
    events_bucket, features_bucket = two_buckets
    insert_order(warehouse, 1)
    runner.write_config(three_sources(events_bucket, features_bucket, warehouse.table))

    dry = runner.run("--dry-run", "True")
    assert dry.returncode == 0, output(dry)
    assert webhook.events == []
    for name in ("events", "features", "orders"):
        assert "%s: Dry run: would publish %s%s_updated" % (name, PREFIX, name) in output(dry)

    # The dry run moved no baseline: the next check publishes events and features, and
    # orders (refused by the webhook) once it is back, each as a first check.
    webhook.fail_events = {PREFIX + "orders_updated": 400}
    result, first = check(runner, webhook, ok=False)
    assert result.returncode != 0
    assert sorted(first) == ["events", "features"]
    assert "orders: " in output(result) and "1 of 3 sources failed" in output(result)

    # Once the webhook is back, only the refused event is published. In the same run (one run
    # for both), the lost state object of another source is rebuilt from the run that announced
    # it, a run that failed for the refused event: no event for it.
    webhook.fail_events = {}
    states = os.path.join(runner.workdir, ".metaflow", "SensorFlow", "sensor_state")
    os.unlink(os.path.join(states, "multiproject", "user.tester", "events.json"))
    result, retried = check(runner, webhook)
    assert sorted(retried) == ["orders"]
    assert retried["orders"]["previous_value"] == ""
    assert "recovered the baseline from run SensorFlow/" in output(result)

    # A forced check re-publishes every source with the change id it was announced with.
    before = len(webhook.events)
    forced = runner.run("--force-trigger", "True")
    assert forced.returncode == 0, output(forced)
    again = {e["payload"]["source"]: e["payload"] for e in webhook.events[before:]}
    assert sorted(again) == ["events", "features", "orders"]
    announced = dict(first, **retried)
    assert {n: p["change_id"] for n, p in again.items()} == {
        n: p["change_id"] for n, p in announced.items()
    }


def test_single_source_baseline_carries_over_to_the_same_named_source(
    runner, webhook, s3_server, s3_client, two_buckets, warehouse, monkeypatch
):
    events_bucket, features_bucket = two_buckets
    insert_order(warehouse, 1)
    # The single-source form's baseline, set in-process as `flowproject reset --to-current`
    # does, instead of a first run whose event the test does not read (a single-source first
    # check announcing: test_cli_state.py's first run).
    single = s3_config(events_bucket, "events/", "files_metadata", project="multiproject")
    use_loopback_s3(monkeypatch, s3_server.endpoint_url)
    legacy = accept_current_value(runner.workdir, single, "user.tester").baseline

    # The same prefix as a named source: its baseline carries over, so no event for it; the
    # two new sources are first checks.
    runner.write_config(three_sources(events_bucket, features_bucket, warehouse.table))
    result, published = check(runner, webhook)
    assert sorted(published) == ["features", "orders"]
    assert "source 'events' carries over the baseline of" in output(result)

    s3_client.put_object(Bucket=events_bucket, Key="events/part-1.csv", Body=b"b")
    _, changed = check(runner, webhook)
    assert sorted(changed) == ["events"]
    assert changed["events"]["previous_value"] == legacy.value
