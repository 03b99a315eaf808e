"""Iceberg table maintenance (rewrite_data_files, rewrite_manifests, expire_snapshots) and a
lost cursor: issue 18.

Snapshots are committed by pyiceberg on its SQL catalog, data and metadata on loopback S3.
pyiceberg 0.12 cannot rewrite files, so ``commit_replace`` commits what a compaction or a
manifest rewrite commits in Java: a ``replace`` snapshot holding the parent's data.
"""

import dataclasses
import time

import pytest
from test_iceberg_source import CATALOG, Sensor, catalog, new_table  # noqa: F401 (fixture)

from flowproject.sources import iceberg

pa = pytest.importorskip("pyarrow")
pytest.importorskip("pyiceberg")


def commit_replace(catalog, name="db.events"):
    """Commit a ``replace`` snapshot (same data, parent the current snapshot); its id."""
    from pyiceberg.table.snapshots import Operation, Snapshot, Summary
    from pyiceberg.table.update import (
        AddSnapshotUpdate,
        AssertRefSnapshotId,
        SetSnapshotRefUpdate,
    )

    table = catalog.load_table(name)
    parent = table.current_snapshot()
    snapshot = Snapshot(
        snapshot_id=max(s.snapshot_id for s in table.snapshots()) + 1,
        parent_snapshot_id=parent.snapshot_id,
        sequence_number=table.metadata.next_sequence_number(),
        timestamp_ms=int(time.time() * 1000),
        manifest_list=parent.manifest_list,
        summary=Summary(Operation.REPLACE, **{"added-data-files": "1", "deleted-data-files": "1"}),
        schema_id=parent.schema_id,
    )
    with table.transaction() as transaction:
        transaction._apply(
            (
                AddSnapshotUpdate(snapshot=snapshot),
                SetSnapshotRefUpdate(
                    snapshot_id=snapshot.snapshot_id,
                    parent_snapshot_id=parent.snapshot_id,
                    ref_name="main",
                    type="branch",
                ),
            ),
            (AssertRefSnapshotId(snapshot_id=parent.snapshot_id, ref="main"),),
        )
    return snapshot.snapshot_id


def append(catalog, rows, name="db.events"):
    table = catalog.load_table(name)
    table.append(pa.table({"a": rows}))
    return table.current_snapshot().snapshot_id


def expire(catalog, snapshot_ids, name="db.events"):
    catalog.load_table(name).maintenance.expire_snapshots().by_ids(list(snapshot_ids)).commit()


def forget_older_metadata(catalog, s3_client, bucket, name="db.events"):
    """Delete every metadata file but the current one, as Java does with
    ``write.metadata.delete-after-commit.enabled``: expired snapshots are then gone for good."""
    current = catalog.load_table(name).metadata_location.split("://", 1)[1].partition("/")[2]
    folder = current.rsplit("/", 1)[0] + "/"
    for obj in s3_client.list_objects_v2(Bucket=bucket, Prefix=folder)["Contents"]:
        if obj["Key"].endswith(".metadata.json") and obj["Key"] != current:
            s3_client.delete_object(Bucket=bucket, Key=obj["Key"])


def watched(catalog, how):
    if how == "catalog":
        return {"table": "db.events", "catalog": CATALOG}
    return {"location": catalog.load_table("db.events").location()}


def check(catalog, cursor=None, baseline=None, how="catalog"):
    """One ``iceberg.check`` of db.events, as the flow calls it."""
    data = Sensor(**watched(catalog, how)).config["data"]
    with iceberg.open_session(data) as session:
        return iceberg.check(data, session, cursor=cursor, baseline=baseline)


# ------------------------------------------------------------------ 1. routine maintenance


@pytest.mark.parametrize("how", ["catalog", "location"])
def test_rewrites_then_expiring_the_announced_snapshot_announce_nothing(catalog, how):
    new_table(catalog)
    appended = append(catalog, [1, 2, 3])
    sensor = Sensor(**watched(catalog, how))
    first, decided = sensor.check()
    assert decided.publish and first.value == str(appended)

    rewrite_data_files = commit_replace(catalog)
    compacted, decided = sensor.check()
    assert not decided.publish and compacted.value == str(appended)
    rewrite_manifests = commit_replace(catalog)
    assert not sensor.check()[1].publish
    expire(catalog, [appended, rewrite_data_files])  # only rewrite_manifests is left
    after, decided = sensor.check()
    assert not decided.publish, decided.reason
    assert after.value == str(appended) and "cannot_tell" not in after.summary
    assert after.summary["latest_version"] == rewrite_manifests

    added = append(catalog, [4])
    new, decided = sensor.check()
    assert decided.publish and new.value == str(added)
    assert decided.reason == "changed from %s to %s" % (appended, added)


@pytest.mark.parametrize("how", ["catalog", "location"])
def test_expired_history_is_read_from_older_metadata_files(catalog, how):
    new_table(catalog)
    appended = append(catalog, [1])
    sensor = Sensor(**watched(catalog, how))
    assert sensor.check()[1].publish
    rewrite_data_files = commit_replace(catalog)
    commit_replace(catalog)  # rewrite_manifests
    expire(catalog, [appended, rewrite_data_files])
    # No check saw the rewrites: the cursor examined the append, now expired. The metadata
    # file written before the expiry still lists it, and says the rewrites only replaced.
    after, decided = sensor.check()
    assert not decided.publish, decided.reason
    assert after.value == str(appended) and "cannot_tell" not in after.summary
    assert check(catalog, how=how).value == str(appended)  # no cursor, no baseline


def test_expiry_before_any_check_saw_the_rewrites_cannot_tell_and_says_why(
    catalog, s3_client, bucket
):
    new_table(catalog)
    appended = append(catalog, [1])
    sensor = Sensor(table="db.events", catalog=CATALOG)
    assert sensor.check()[1].publish
    rewrite_data_files = commit_replace(catalog)
    rewrite_manifests = commit_replace(catalog)
    expire(catalog, [appended, rewrite_data_files])
    forget_older_metadata(catalog, s3_client, bucket)
    # The cursor examined the append; the walk from the current snapshot ends at an expired
    # parent, having seen only replaces: not a change by itself, and the check says so.
    after = check(catalog, cursor=sensor.state.cursor, baseline=str(appended))
    assert after.value == str(rewrite_manifests)
    assert after.summary["cannot_tell"] == (
        "only replace snapshots (compactions) lead back from the current snapshot to snapshot "
        "%d, and its parent is not recorded (expired): the metadata cannot tell whether data "
        "changed since snapshot %d" % (rewrite_manifests, appended)
    )


# ------------------------------------------------------------------ 2. a lost cursor


@pytest.mark.parametrize("how", ["catalog", "location"])
def test_lost_cursor_after_a_compaction_keeps_the_announced_value(catalog, how):
    new_table(catalog)
    appended = append(catalog, [1])
    sensor = Sensor(**watched(catalog, how))
    assert sensor.check()[1].publish
    compaction = commit_replace(catalog)
    sensor.state = dataclasses.replace(sensor.state, cursor=None)  # lost
    without, decided = sensor.check()
    assert not decided.publish, decided.reason
    assert without.value == str(appended) and without.summary["latest_version"] == compaction
    with_cursor = check(catalog, cursor=sensor.state.cursor, baseline=str(appended), how=how)
    assert with_cursor.value == without.value and "cannot_tell" not in without.summary


def test_lost_cursor_walk_reaching_the_baseline_snapshot_keeps_the_baseline(catalog):
    # A replace snapshot as the baseline: what this sensor announced before the value became
    # the snapshot that changed data (it announced the newest one).
    new_table(catalog)
    append(catalog, [1])
    announced_replace = commit_replace(catalog)
    commit_replace(catalog)
    without = check(catalog, cursor=None, baseline=str(announced_replace))
    assert without.value == str(announced_replace) and "cannot_tell" not in without.summary


def test_lost_cursor_walk_reaching_a_data_change_takes_it(catalog):
    new_table(catalog)
    first = append(catalog, [1])
    second = append(catalog, [2])
    commit_replace(catalog)
    without = check(catalog, cursor=None, baseline=str(first))
    assert without.value == str(second) and "cannot_tell" not in without.summary
    assert without.value == check(catalog, cursor=check(catalog).cursor).value


@pytest.mark.parametrize("baseline", [None, "announced"])
def test_lost_cursor_walk_ending_at_an_expired_snapshot_cannot_tell(
    catalog, s3_client, bucket, baseline
):
    new_table(catalog)
    appended = append(catalog, [1])
    rewrite_data_files = commit_replace(catalog)
    first_left = commit_replace(catalog)
    commit_replace(catalog)
    expire(catalog, [appended, rewrite_data_files])
    forget_older_metadata(catalog, s3_client, bucket)
    baseline = str(appended) if baseline else None
    without = check(catalog, cursor=None, baseline=baseline)
    # The oldest snapshot reached: later compactions on top keep this value.
    assert without.value == str(first_left)
    since = (
        "which snapshot last changed data"
        if baseline is None
        else "whether data changed since snapshot %d" % appended
    )
    assert without.summary["cannot_tell"].endswith(
        "snapshot %d, and its parent is not recorded (expired): the metadata cannot tell %s"
        % (first_left, since)
    )
    commit_replace(catalog)
    forget_older_metadata(catalog, s3_client, bucket)
    assert check(catalog, cursor=None, baseline=baseline).value == str(first_left)


def test_cannot_tell_lasts_until_the_baseline_is_the_value(catalog, s3_client, bucket):
    new_table(catalog)
    appended = append(catalog, [1])
    rewrite_data_files = commit_replace(catalog)
    left = commit_replace(catalog)
    expire(catalog, [appended, rewrite_data_files])
    forget_older_metadata(catalog, s3_client, bucket)
    undecided = check(catalog, cursor=None, baseline=str(appended))
    assert "cannot_tell" in undecided.summary
    # The decision did not move the baseline (a failed publish): still cannot tell.
    again = check(catalog, cursor=undecided.cursor, baseline=str(appended))
    assert again.value == str(left) and again.summary["cannot_tell"]
    # Once the baseline is the value, the cursor's value stands.
    settled = check(catalog, cursor=undecided.cursor, baseline=str(left))
    assert settled.value == str(left) and "cannot_tell" not in settled.summary
