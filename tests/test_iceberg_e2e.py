"""SensorFlow watching an Iceberg table through its catalog, end to end (issue 18 #1): routine
maintenance (rewrite_data_files, rewrite_manifests, expire_snapshots) publishes nothing; the
next append does. Asserts on the events the recording webhook received."""

import os

import pytest
from test_iceberg_maintenance import append, commit_replace, expire
from test_iceberg_source import CATALOG, catalog, config_text, new_table  # noqa: F401

pytestmark = pytest.mark.e2e

pytest.importorskip("pyiceberg")


def check(flow_runner, webhook):
    before = len(webhook.events)
    # pyiceberg's catalog settings, as a scheduled run gets them: environment variables.
    env = {k: v for k, v in os.environ.items() if k.startswith(("PYICEBERG_", "AWS_"))}
    result = flow_runner.run(env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out, [event["payload"] for event in webhook.events[before:]]


def test_compactions_and_expiring_the_announced_snapshot_publish_nothing(
    catalog, flow_runner, webhook
):
    new_table(catalog)
    appended = append(catalog, [1, 2, 3])
    flow_runner.write_config(config_text(table="db.events", catalog=CATALOG))
    _, (first,) = check(flow_runner, webhook)
    assert first["data_version"] == str(appended)

    # No run between the rewrites: that each one alone publishes nothing, and the cursor a check
    # of them leaves, are test_iceberg_maintenance.py's (check by check, in-process); a cursor
    # reaching the next run through the flow's state is test_delta_e2e.py's. This run reads
    # the expired history from older metadata files, as a sensor on a slow schedule would.
    rewrite_data_files = commit_replace(catalog)
    rewrite_manifests = commit_replace(catalog)
    expire(catalog, [appended, rewrite_data_files])  # only rewrite_manifests is left
    out, published = check(flow_runner, webhook)
    assert published == [], out
    assert "unchanged since the last announcement: %d" % appended in out

    added = append(catalog, [4])
    _, (new,) = check(flow_runner, webhook)
    assert new["data_version"] == str(added)
    assert new["previous_value"] == str(appended)
    assert new["latest_version"] == str(added) != str(rewrite_manifests)
